"""Write one stateful ONNX file per model, straight from the weights.

We emit the ONNX LSTM/GRU/RNN operators ourselves rather than tracing through torch.onnx: the
dynamo exporter in torch 2.13 bakes in the example length for RNNs and writes GRU with the
wrong `linear_before_reset`; writing the ops from the weights is exact for every cell and does
not move when torch's exporters do. Gate order differs: torch LSTM is i,f,g,o and ONNX is
i,o,f,c; torch GRU is r,z,n and ONNX is z,r,h with linear_before_reset=1.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edgernn.core import meta as meta_mod
from edgernn.export.onnxmeta import DEFAULT_OPSET, make_model, set_meta  # noqa: F401  (set_meta: its old home)
from edgernn.train.models import RNNModel

EXPORTER = "edgernn-direct/1"
_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}
OP = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}  # the ONNX operator of each cell


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _reorder(w: np.ndarray, cell: str, hidden: int) -> np.ndarray:
    """Permute gate blocks (rows of H) from torch's order into ONNX's."""
    blocks = [w[i * hidden:(i + 1) * hidden] for i in range(len(_GATE_ORDER[cell]))]
    return np.concatenate([blocks[i] for i in _GATE_ORDER[cell]], axis=0)


class Graph:
    """A tiny builder: nodes plus initializers with unique names."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs, outputs, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), **attrs))
        return outputs[0]


def layer_weights(model: RNNModel, layer: int):
    spec, sd = model.spec, model.rnn.state_dict()
    W, R, B = [], [], []
    for suffix in ("", "_reverse")[: spec.directions]:
        k = f"l{layer}{suffix}"
        W.append(_reorder(_np(sd[f"weight_ih_{k}"]), spec.cell, spec.hidden))
        R.append(_reorder(_np(sd[f"weight_hh_{k}"]), spec.cell, spec.hidden))
        B.append(np.concatenate([_reorder(_np(sd[f"bias_ih_{k}"]), spec.cell, spec.hidden),
                                 _reorder(_np(sd[f"bias_hh_{k}"]), spec.cell, spec.hidden)]))
    return np.stack(W), np.stack(R), np.stack(B)


def input_nodes(g: Graph, model: RNNModel) -> str:
    """x (N, L, F) or (N, L) -> (L, N, rnn_input), normalised and embedded."""
    spec = model.spec
    if spec.vocab:
        xt = g.op("Transpose", ["x"], ["x_tn"], perm=[1, 0])
        return g.op("Gather", [g.const("embed.weight", _np(model.embed.weight)), xt], ["x_emb"])
    x = g.op("Transpose", ["x"], ["x_tnf"], perm=[1, 0, 2])
    mean, std = _np(model.in_mean), _np(model.in_std)
    if np.any(mean != 0) or np.any(std != 1):
        x = g.op("Sub", [x, g.const("in_mean", mean)], ["x_centered"])
        x = g.op("Mul", [x, g.const("in_scale", (1.0 / std).astype(np.float32))], ["x_norm"])
    if spec.embed:
        x = g.op("MatMul", [x, g.const("proj.weight", _np(model.embed.weight).T.copy())], ["x_proj_mm"])
        x = g.op("Add", [x, g.const("proj.bias", _np(model.embed.bias))], ["x_proj"])
    return x


def _split_states(g: Graph, name: str, layers: int, d: int) -> list[str]:
    """h0 (L*D, N, H) -> one (D, N, H) input per layer: no node at all for one layer."""
    if layers == 1:
        return [name]
    outs = [f"l{i}.{name}" for i in range(layers)]
    g.op("Split", [name, g.const(f"split.{name}", np.full(layers, d, np.int64))], outs, axis=0)
    return outs


def cell_attrs(cell: str, hidden: int, directions: int = 1) -> dict:
    """The attributes of the ONNX LSTM/GRU/RNN node that computes `cell` as torch does."""
    attrs = {"hidden_size": hidden}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    if cell.startswith("rnn"):
        attrs["activations"] = ["Relu" if cell == "rnn_relu" else "Tanh"] * directions
    return attrs


def _recurrent(g: Graph, model: RNNModel, x: str) -> tuple[str, list[str], list[str]]:
    """Stack the layers; returns the last layer's (L, N, D*H) output and per-layer states.

    Few nodes on purpose: a streaming step costs about one onnxruntime dispatch per node.
    """
    spec = model.spec
    d, n = spec.directions, spec.layers
    attrs = dict(cell_attrs(spec.cell, spec.hidden, d), direction="bidirectional" if d == 2 else "forward")
    h0s = _split_states(g, "h0", n, d)
    c0s = _split_states(g, "c0", n, d) if spec.cell == "lstm" else []
    hs, cs = [], []
    for layer in range(n):
        W, R, B = layer_weights(model, layer)
        ins = [x, g.const(f"l{layer}.W", W), g.const(f"l{layer}.R", R), g.const(f"l{layer}.B", B), "", h0s[layer]]
        # One layer: the op writes the graph's state outputs directly.
        outs = [f"l{layer}.Y", "hn" if n == 1 else f"l{layer}.hn"]
        if spec.cell == "lstm":
            ins.append(c0s[layer])
            outs.append("cn" if n == 1 else f"l{layer}.cn")
        g.op(OP[spec.cell], ins, outs, **attrs)
        hs.append(outs[1])
        if spec.cell == "lstm":
            cs.append(outs[2])
        if d == 1:  # Y is (L, 1, N, H)
            x = g.op("Squeeze", [outs[0], g.const(f"l{layer}.axis1", np.array([1], np.int64))], [f"l{layer}.out"])
        else:  # (L, 2, N, H): bring directions next to H and merge them, as torch concatenates
            y = g.op("Transpose", [outs[0]], [f"l{layer}.Y_lndh"], perm=[0, 2, 1, 3])
            x = g.op("Reshape", [y, g.const(f"l{layer}.shape", np.array([0, 0, -1], np.int64))], [f"l{layer}.out"])
    return x, hs, cs


def head_nodes(g: Graph, model: RNNModel, x: str) -> None:
    """(L, N, D*H) -> y (N, L, outputs), de-normalised."""
    if model.head is not None:
        x = g.op("MatMul", [x, g.const("head.weight", _np(model.head.weight).T.copy())], ["head_mm"])
        x = g.op("Add", [x, g.const("head.bias", _np(model.head.bias))], ["head_out"])
    mean, std = _np(model.out_mean), _np(model.out_std)
    if np.any(mean != 0) or np.any(std != 1):
        x = g.op("Mul", [x, g.const("out_std", std)], ["y_scaled"])
        x = g.op("Add", [x, g.const("out_mean", mean)], ["y_tn"])
    g.op("Transpose", [x], ["y"], perm=[1, 0, 2])


def merge(g: Graph, parts: list[str], name: str) -> None:
    """Concatenate per-layer states into the graph's one state output (nothing for one layer)."""
    if parts != [name]:
        g.op("Concat", parts, [name], axis=0)


def build(model: RNNModel, meta: dict, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The ONNX model for `model`, with inputs x, h0[, c0] and outputs y, hn[, cn]."""
    spec = model.spec
    g = Graph()
    x = input_nodes(g, model)
    x, hs, cs = _recurrent(g, model, x)
    head_nodes(g, model, x)
    merge(g, hs, "hn")
    if cs:
        merge(g, cs, "cn")
    inputs, outputs = io_infos(spec)
    graph = helper.make_graph(g.nodes, "edgernn", inputs, outputs, initializer=g.inits)
    return make_model(graph, meta, opset=opset)


def io_infos(spec) -> tuple[list, list]:
    """The contract's graph inputs (x, h0[, c0]) and outputs (y, hn[, cn]) for `spec`."""
    state_shape = [spec.layers * spec.directions, "batch", spec.hidden]
    if spec.vocab:
        x_info = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "time"])
    else:
        x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", spec.features])
    inputs = [x_info] + [helper.make_tensor_value_info(i, TensorProto.FLOAT, state_shape) for i, _ in spec.state_names]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", spec.outputs])]
    outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, state_shape) for _, o in spec.state_names]
    return inputs, outputs


def metadata_for(loaded, *, opset: int) -> dict:
    """The metadata of a model loaded from a checkpoint or state_dict (parity filled in later)."""
    model = loaded.model
    normalize = None
    if not model.spec.vocab and (torch.any(model.in_mean != 0) or torch.any(model.in_std != 1)
                                 or torch.any(model.out_mean != 0) or torch.any(model.out_std != 1)):
        # Applied inside the graph: callers feed raw values and read raw values.
        normalize = {"mean": _np(model.in_mean).tolist(), "std": _np(model.in_std).tolist(),
                     "target_mean": _np(model.out_mean).tolist(), "target_std": _np(model.out_std).tolist(),
                     "in_graph": True}
    export = {"exporter": EXPORTER, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
              "opset": opset, "source": loaded.kind}
    extra = {"tokens": loaded.extra["tokens"]} if loaded.extra.get("tokens") else {}
    if loaded.extra.get("ensemble"):
        extra["ensemble"] = loaded.extra["ensemble"]
    return meta_mod.build(model.spec, labels=loaded.labels, frontend=loaded.frontend, normalize=normalize,
                          export=export, metrics=loaded.metrics or None, **extra)
