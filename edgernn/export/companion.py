"""The lookahead companion of a bidirectional model: NAME.lookahead.onnx, the graph that computes
one window of the chunked rule (edgernn.train.chunked has the rule and its PyTorch reference).

The main file cannot stream under the rule alone: the forward state must be taken mid-window in
every layer, and an LSTM's cell state mid-sequence is no output of the ONNX LSTM op. The
companion takes x (N, W, F), chunk int64 [1] and the forward states, and returns the chunk's
output and each layer's forward state after frame chunk-1; the torch-free runtime
(edgernn.runtime.lookahead) drives it one window at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from edgernn.core import fileio
from edgernn.core.errors import InputError, ParityError
from edgernn.export import graph as export_mod
from edgernn.export.onnxmeta import DEFAULT_OPSET, make_model, set_meta
from edgernn.runtime import lookahead as lookahead_mod
from edgernn.train.chunked import chunked_forward
from edgernn.train.models import RNNModel

TOLERANCE = 1e-5  # on |err| / max(1, |reference|), as edgernn.export.parity
LENGTHS = (1, 6, 37)
BATCHES = (1, 3)
CHUNKS = (1, 4)
LOOKAHEADS = (0, 5, None)



def _layer(g, model: RNNModel, layer: int, x: str, cell_attrs: dict) -> tuple[str, list[str]]:
    """One layer over the window: x (W, N, I) -> (W, N, 2H) and its forward states after the chunk."""
    W, R, B = export_mod.layer_weights(model, layer)
    p = f"f{layer}"
    lstm = model.spec.cell == "lstm"
    op = export_mod.OP[model.spec.cell]
    fw = [g.const(f"{p}.Wf", W[:1]), g.const(f"{p}.Rf", R[:1]), g.const(f"{p}.Bf", B[:1])]
    lo, hi = g.const(f"{p}.lo", np.array([layer], np.int64)), g.const(f"{p}.hi", np.array([layer + 1], np.int64))
    states = [g.op("Slice", ["h0", lo, hi, "axis0"], [f"{p}.h0"])]
    if lstm:
        states.append(g.op("Slice", ["c0", lo, hi, "axis0"], [f"{p}.c0"]))
    # Forward over the chunk frames from the carried state: its final state is what carries on.
    xa = g.op("Slice", [x, "zero1", "chunk", "axis0"], [f"{p}.xa"])
    outs_a = [f"{p}.Ya", f"{p}.hn"] + ([f"{p}.cn"] if lstm else [])
    g.op(op, [xa, *fw, "", *states], outs_a, direction="forward", **cell_attrs)
    # ... and on over the rest of the window from there. One spare frame (the last, repeated)
    # keeps this run non-empty when the chunk fills the window; its output is dropped.
    rest = g.op("Slice", [x, "chunk", "big1", "axis0"], [f"{p}.xrest"])
    spare = g.op("Slice", [x, "minus1", "big1", "axis0"], [f"{p}.xlast"])
    xb = g.op("Concat", [rest, spare], [f"{p}.xb"], axis=0)
    g.op(op, [xb, *fw, "", *outs_a[1:]], [f"{p}.Yb_spare"], direction="forward", **cell_attrs)
    yb = g.op("Slice", [f"{p}.Yb_spare", "zero1", "minus1", "axis0"], [f"{p}.Yb"])
    yf = g.op("Concat", [outs_a[0], yb], [f"{p}.Yf"], axis=0)  # (W, 1, N, H)
    # Backward over the window from zeros at its end.
    bw = [g.const(f"{p}.Wb", W[1:]), g.const(f"{p}.Rb", R[1:]), g.const(f"{p}.Bb", B[1:])]
    g.op(op, [x, *bw], [f"{p}.Yr"], direction="reverse", **cell_attrs)
    y = g.op("Concat", [yf, f"{p}.Yr"], [f"{p}.Y"], axis=1)  # (W, 2, N, H)
    y = g.op("Transpose", [y], [f"{p}.Y_wndh"], perm=[0, 2, 1, 3])
    return g.op("Reshape", [y, "shape_wnk"], [f"{p}.out"]), outs_a[1:]


def companion_states(spec) -> list[dict]:
    """The companion's state pairs: forward directions only, one slot per layer."""
    return [{"input": i, "output": o, "shape": [spec.layers, "batch", spec.hidden], "batch_axis": 1}
            for i, o in spec.state_names]


def companion_meta(spec, *, file: str, parity: dict | None = None) -> dict:
    """The key the MAIN file's metadata gains: where its companion is and what it takes."""
    return {"lookahead": {"file": file, "format": lookahead_mod.COMPANION_FORMAT, "window_input": "x",
                          "chunk_input": "chunk", "states": companion_states(spec),
                          "rule": lookahead_mod.RULE, "parity": parity}}


def build_companion(model: RNNModel, meta: dict, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The window graph: x (N, W, F), chunk int64 [1], h0[, c0] (layers, N, H) -> y (N, chunk, outputs),
    hn[, cn]: each layer's forward state after frame chunk-1. `meta` is the main file's metadata."""
    spec = model.spec
    if not spec.bidirectional:
        raise InputError("a lookahead companion is for bidirectional models; a unidirectional one streams as it is")
    g = export_mod.Graph()
    for name, value in (("zero1", [0]), ("minus1", [-1]), ("big1", [2**62]), ("axis0", [0]), ("shape_wnk", [0, 0, -1])):
        g.const(name, np.array(value, np.int64))
    x = export_mod.input_nodes(g, model)  # (W, N, I), normalised and embedded exactly as the main graph
    hs, cs = [], []
    attrs = export_mod.cell_attrs(spec.cell, spec.hidden)
    for layer in range(spec.layers):
        x, states = _layer(g, model, layer, x, attrs)
        hs.append(states[0])
        cs.extend(states[1:])
    x = g.op("Slice", [x, "zero1", "chunk", "axis0"], ["chunk_out"])  # the head reads the chunk frames only
    export_mod.head_nodes(g, model, x)
    export_mod.merge(g, hs, "hn")
    if cs:
        export_mod.merge(g, cs, "cn")
    return _finish(g, model, meta, opset)


def _finish(g, model: RNNModel, meta: dict, opset: int) -> onnx.ModelProto:
    spec = model.spec
    shape = [spec.layers, "batch", spec.hidden]
    if spec.vocab:
        x_info = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "window"])
    else:
        x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "window", spec.features])
    inputs = [x_info, helper.make_tensor_value_info("chunk", TensorProto.INT64, [1])]
    inputs += [helper.make_tensor_value_info(i, TensorProto.FLOAT, shape) for i, _ in spec.state_names]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "chunk", spec.outputs])]
    outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for _, o in spec.state_names]
    graph = helper.make_graph(g.nodes, "edgernn-lookahead", inputs, outputs, initializer=g.inits)
    return make_model(graph, _own_meta(meta, spec), opset=opset)


def _own_meta(meta: dict, spec, parity: dict | None = None) -> dict:
    """The companion's own metadata: the main file's, with its forward-only states and its role."""
    export = dict(meta.get("export") or {}, parity=parity)
    return dict(meta, states=companion_states(spec), export=export,
                lookahead={"role": "companion", "format": lookahead_mod.COMPANION_FORMAT, "window_input": "x",
                           "chunk_input": "chunk", "rule": lookahead_mod.RULE})


# ---------------------------------------------------------------- verification and writing


def verify_companion(model: RNNModel, proto, *, seed: int = 0, lengths=LENGTHS, batches=BATCHES, chunks=CHUNKS,
                     lookaheads=LOOKAHEADS) -> dict:
    """Run the companion through the torch-free driver against `chunked_forward`; 'ok' says it passed."""
    model.eval()
    comp = lookahead_mod.Companion(proto.SerializeToString() if isinstance(proto, onnx.ModelProto) else proto)
    rng = np.random.default_rng(seed)
    spec, worst, cases = model.spec, 0.0, []
    for t in lengths:
        for n in batches:
            x = (rng.integers(0, spec.vocab, (n, t)) if spec.vocab
                 else rng.standard_normal((n, t, spec.features)).astype(np.float32))
            if not spec.vocab:  # raw units: the network sees unit-scale inputs
                x = (x * model.in_std.numpy() + model.in_mean.numpy()).astype(np.float32)
            for c in chunks:
                for r in lookaheads:
                    with torch.no_grad():
                        ref = chunked_forward(model, torch.from_numpy(x), chunk=c, lookahead=r).numpy()
                    got = comp.sequence(x, chunk=c, lookahead=r)
                    err = float(np.max(np.abs(ref - got)) / max(1.0, float(np.max(np.abs(ref))))) if ref.size else 0.0
                    cases.append({"length": t, "batch": n, "chunk": c, "lookahead": r, "err": err})
                    worst = max(worst, err)
    return {"ok": bool(worst <= TOLERANCE), "max_abs_err": worst, "tolerance": TOLERANCE, "lengths": list(lengths),
            "batches": list(batches), "chunks": list(chunks), "lookaheads": list(lookaheads), "cases": cases}


def write_companion(model: RNNModel, meta: dict, main_path, *, opset: int = DEFAULT_OPSET,
                    verify: bool = True) -> dict:
    """Build, verify and write NAME.lookahead.onnx beside `main_path`; returns the key to merge into the
    main file's metadata (`meta.update(...)`). Raises ParityError (nothing written) if it disagrees."""
    path = lookahead_mod.companion_path(main_path)
    proto = build_companion(model, meta, opset=opset)
    parity = None
    if verify:
        report = verify_companion(model, proto)
        if not report["ok"]:
            worst = max(report["cases"], key=lambda c: c["err"])
            raise ParityError(f"lookahead companion parity FAILED: max error {report['max_abs_err']:.3g} > tolerance "
                              f"{TOLERANCE:g} (worst: {worst}); no file written", report)
        parity = {k: report[k] for k in ("max_abs_err", "tolerance", "lengths", "batches", "chunks", "lookaheads")}
    set_meta(proto, _own_meta(meta, model.spec, parity))
    fileio.write_bytes(path, proto.SerializeToString())
    return companion_meta(model.spec, file=Path(path).name, parity=parity)
