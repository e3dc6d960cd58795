"""The ONNX graph of an ensemble (edgernn.train.ensemble): the members' graphs side by side.

    h0 [sum of layers, N, H] --Split--> m0.h0, m1.h0 ...   (c0 the same, for LSTM)
    x --> member 0's graph --> LogSoftmax --\
    x --> member 1's graph --> LogSoftmax --+--> Sum x 1/K --> y
    m0.hn, m1.hn ... --Concat--> hn

Each member's subgraph is exactly the one `edgernn export` writes for it alone (its own
normalisation included), renamed under the prefix `m<k>.`; parity is checked against the torch
Ensemble as for any model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import compose, helper

from edgernn.export import graph as graph_mod
from edgernn.export.onnxmeta import DEFAULT_OPSET, make_model


def build(model, meta: dict, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The one-file graph of `model` (an Ensemble), inputs x, h0[, c0], outputs y, hn[, cn]."""
    spec = model.spec
    g = graph_mod.Graph()
    state_pairs = list(spec.state_names)
    prefixes = [f"m{k}." for k in range(len(model.members))]
    for i, _ in state_pairs:
        g.op("Split", [i, g.const(f"ensemble.split.{i}", np.array(model.layer_counts, np.int64))],
             [p + i for p in prefixes], axis=0)
    logps = []
    for p, member in zip(prefixes, model.members):
        sub = compose.add_prefix(graph_mod.build(member, meta, opset=opset), p, rename_inputs=True,
                                 rename_outputs=True)
        for node in sub.graph.node:  # every member reads the one x
            node.input[:] = ["x" if name == p + "x" else name for name in node.input]
        g.nodes.extend(sub.graph.node)
        g.inits.extend(sub.graph.initializer)
        logps.append(g.op("LogSoftmax", [p + "y"], [p + "logp"], axis=-1))
    total = g.op("Sum", logps, ["ensemble.sum"])
    g.op("Mul", [total, g.const("ensemble.weight", np.array(1.0 / len(logps), np.float32))], ["y"])
    for _, o in state_pairs:
        g.op("Concat", [p + o for p in prefixes], [o], axis=0)
    inputs, outputs = graph_mod.io_infos(spec)
    return make_model(helper.make_graph(g.nodes, "edgernn-ensemble", inputs, outputs, initializer=g.inits), meta,
                      opset=opset)
