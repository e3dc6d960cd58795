"""Bidirectional models streamed with bounded lookahead: the chunked rule in PyTorch, and the
companion ONNX graph that computes one window of it.

The rule (a latency-controlled bidirectional RNN). Frames are cut into chunks of C; the output
of the chunk [t0, t0+C) is computed over the window [t0, min(t0+C+R, L)):
  - in every layer the forward direction starts from the state that layer carried at t0, runs
    over the whole window, and carries on the state it had after frame t0+C-1;
  - in every layer the backward direction starts from zeros at the window's end;
  - the next layer reads this layer's output over the window;
  - the head reads the C chunk frames.
R >= L is the offline model; R = 0 lets the backward direction see only the chunk.

The main file cannot do this alone: the forward state must be taken mid-window in every layer,
and an LSTM's cell state mid-sequence is no output of the ONNX LSTM op. So a bidirectional
model gets a companion graph, NAME.lookahead.onnx (see `build_companion`), that the torch-free
runtime (edgernn.lookahead) drives one window at a time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from edgernn.export import graph as export_mod
from edgernn.core import fileio
from edgernn.runtime import lookahead as lookahead_mod
from edgernn.core.errors import InputError, ParityError
from edgernn.runtime.lookahead import check_options
from edgernn.train.models import RNNModel

# One direction of one layer, as nn.RNN/LSTM/GRU call it: (input, hx, params, has_biases,
# num_layers, dropout, train, bidirectional, batch_first).
_VF_RNN = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn_tanh": torch._VF.rnn_tanh,
           "rnn_relu": torch._VF.rnn_relu}
TOLERANCE = 1e-5  # on |err| / max(1, |reference|), as edgernn.parity
LENGTHS = (1, 6, 37)
BATCHES = (1, 3)
CHUNKS = (1, 4)
LOOKAHEADS = (0, 5, None)


# ---------------------------------------------------------------- the rule, in PyTorch


def _params(model: RNNModel, layer: int, reverse: bool) -> list[torch.Tensor]:
    suffix = "_reverse" if reverse else ""
    return [getattr(model.rnn, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _run(cell: str, params, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
    """One direction of one layer, forward in time: x (N, T, I), state of (1, N, H) -> (N, T, H), state."""
    if cell == "lstm":
        out, h, c = _VF_RNN[cell](x, state, params, True, 1, 0.0, False, False, True)
        return out, (h, c)
    out, h = _VF_RNN[cell](x, state[0], params, True, 1, 0.0, False, False, True)
    return out, (h,)


def _window(model: RNNModel, u: torch.Tensor, carried: list, c: int) -> tuple[torch.Tensor, list]:
    """One window through every layer: u (N, W, I) -> last layer's (N, W, 2H), forward states after frame c-1."""
    spec = model.spec
    new = []
    for layer in range(spec.layers):
        if layer and model.training and spec.dropout:
            u = F.dropout(u, spec.dropout, training=True)  # between layers, as nn.LSTM does
        fwd = _params(model, layer, False)
        # The forward run over the window, split after the chunk: its state there is carried on.
        head, state = _run(spec.cell, fwd, u[:, :c], carried[layer])
        parts = [head]
        if c < u.shape[1]:
            parts.append(_run(spec.cell, fwd, u[:, c:], state)[0])
        zeros = tuple(torch.zeros_like(s) for s in state)
        back = _run(spec.cell, _params(model, layer, True), u.flip(1), zeros)[0].flip(1)
        u = torch.cat([torch.cat(parts, 1), back], dim=-1)  # (N, W, 2H): as torch concatenates
        new.append(state)
    return u, new


def _front(model: RNNModel, x: torch.Tensor) -> torch.Tensor:
    """Normalisation and embedding, as RNNModel.features does before its RNN."""
    if not model.spec.vocab:
        x = (x - model.in_mean) / model.in_std
    return model.embed(x) if model.embed is not None else x


def chunked_forward(model: RNNModel, x: torch.Tensor, *, chunk: int = 1, lookahead=None, normalized: bool = False,
                    batched: bool = False) -> torch.Tensor:
    """The chunked rule over whole sequences: x (N, L, F) or (N, L) -> y (N, L, outputs).

    lookahead None or math.inf is unbounded: the offline model. A unidirectional model ignores
    both options. `normalized=True` skips the output de-normalisation, as RNNModel.forward.
    Differentiable: train with it to make a model exact at its streaming latency; pass
    `batched=True` there (the same numbers, the windows of a layer run as one batch: about 3x
    faster at chunk 1). The default is the reference: one window after the other, as streamed.
    """
    c, r = check_options(chunk, lookahead)
    if not model.spec.bidirectional:
        return model(x, normalized=normalized)[0]
    u = _front(model, x)  # (N, L, I)
    n, length = u.shape[:2]
    r = length if math.isinf(r) else int(r)
    zero = torch.zeros(1, n, model.spec.hidden, dtype=u.dtype, device=u.device)
    carried = [(zero, zero) if model.spec.cell == "lstm" else (zero,)] * model.spec.layers
    if batched and length:
        out = _batched(model, u, carried, c, min(c + r, max(length, c)))  # no window outgrows the input
    else:
        outs = []
        for t0 in range(0, length, c):
            cc = min(c, length - t0)
            out, carried = _window(model, u[:, t0:min(t0 + c + r, length)], carried, cc)
            outs.append(out[:, :cc])
        out = torch.cat(outs, 1) if outs else u.new_zeros(n, 0, 2 * model.spec.hidden)
    y = model.head(out) if model.head is not None else out
    return y if normalized else y * model.out_std + model.out_mean


def _batched(model: RNNModel, u: torch.Tensor, carried: list, c: int, w: int) -> torch.Tensor:
    """All K windows of each layer at once: (N, L, I) -> the chunk frames' outputs (N, L, 2H).

    Windows are zero-padded past the input's end to W frames; padding is only ever read after
    the valid frames in time, so it never reaches a valid output (the backward run reverses
    each window's valid part only). The forward state still passes chunk to chunk in a loop.
    """
    n, length = u.shape[:2]
    k = -(-length // c)
    pad = u.new_zeros(n, max(0, (k - 1) * c + w - length), u.shape[2])
    idx = torch.arange(k)[:, None] * c + torch.arange(w)  # (K, W): frame of each window position
    v = torch.cat([u, pad], 1)[:, idx].transpose(0, 1)  # (K, N, W, I)
    lens = (length - torch.arange(k) * c).clamp(max=w)  # valid frames per window
    j = torch.arange(w)
    rev = torch.where(j < lens[:, None], lens[:, None] - 1 - j, j).to(u.device)  # (K, W), an involution
    spec = model.spec
    for layer in range(spec.layers):
        if layer and model.training and spec.dropout:
            v = F.dropout(v, spec.dropout, training=True)
        fwd = _params(model, layer, False)
        state, heads, starts = carried[layer], [], []
        for i, chunk_in in enumerate(v[:, :, :c].unbind(0)):  # unbind: one gradient stack, not K scatters
            cc = min(c, int(lens[i]))
            out, state = _run(spec.cell, fwd, chunk_in[:, :cc], state)
            heads.append(F.pad(out, (0, 0, 0, c - cc)))
            starts.append(state)
        yf = torch.stack(heads)  # (K, N, C, H)
        if w > c:
            init = tuple(torch.cat([s[i] for s in starts], 1) for i in range(len(state)))  # (1, K*N, H)
            rest = _run(spec.cell, fwd, v[:, :, c:].reshape(k * n, w - c, -1), init)[0]
            yf = torch.cat([yf, rest.reshape(k, n, w - c, -1)], 2)
        back_in = _time_gather(v, rev).reshape(k * n, w, -1)
        zeros = tuple(torch.zeros(1, k * n, spec.hidden, dtype=u.dtype, device=u.device) for _ in state)
        back = _time_gather(_run(spec.cell, _params(model, layer, True), back_in, zeros)[0].reshape(k, n, w, -1), rev)
        v = torch.cat([yf, back], -1)  # (K, N, W, 2H)
    return v[:, :, :c].transpose(0, 1).reshape(n, k * c, -1)[:, :length]


def _time_gather(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """v (K, N, W, D) with positions permuted per window: out[k, :, j] = v[k, :, index[k, j]]."""
    k, n, w, d = v.shape
    return v.gather(2, index[:, None, :, None].expand(k, n, w, d))


def chunked_predictor(model: RNNModel, *, chunk: int, lookahead):
    """numpy in, numpy out, no gradients, under the chunked rule: what a task's evaluate() takes."""
    def predict(x: np.ndarray) -> np.ndarray:
        was = model.training
        model.eval()
        with torch.no_grad():
            y = chunked_forward(model, torch.from_numpy(x), chunk=chunk, lookahead=lookahead)
        model.train(was)
        return y.numpy()
    return predict


# ---------------------------------------------------------------- the companion graph


def _layer(g, model: RNNModel, layer: int, x: str, cell_attrs: dict) -> tuple[str, list[str]]:
    """One layer over the window: x (W, N, I) -> (W, N, 2H) and its forward states after the chunk."""
    W, R, B = export_mod._layer_weights(model, layer)
    p = f"f{layer}"
    lstm = model.spec.cell == "lstm"
    op = export_mod._OP[model.spec.cell]
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


def _cell_attrs(cell: str, hidden: int) -> dict:
    attrs = {"hidden_size": hidden}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    if cell.startswith("rnn"):
        attrs["activations"] = ["Relu" if cell == "rnn_relu" else "Tanh"]
    return attrs


def companion_states(spec) -> list[dict]:
    """The companion's state pairs: forward directions only, one slot per layer."""
    return [{"input": i, "output": o, "shape": [spec.layers, "batch", spec.hidden], "batch_axis": 1}
            for i, o in spec.state_names]


def companion_meta(spec, *, file: str, parity: dict | None = None) -> dict:
    """The key the MAIN file's metadata gains: where its companion is and what it takes."""
    return {"lookahead": {"file": file, "format": lookahead_mod.COMPANION_FORMAT, "window_input": "x",
                          "chunk_input": "chunk", "states": companion_states(spec),
                          "rule": lookahead_mod.RULE, "parity": parity}}


def build_companion(model: RNNModel, meta: dict, *, opset: int = export_mod.DEFAULT_OPSET) -> onnx.ModelProto:
    """The window graph: x (N, W, F), chunk int64 [1], h0[, c0] (layers, N, H) -> y (N, chunk, outputs),
    hn[, cn]: each layer's forward state after frame chunk-1. `meta` is the main file's metadata."""
    spec = model.spec
    if not spec.bidirectional:
        raise InputError("a lookahead companion is for bidirectional models; a unidirectional one streams as it is")
    g = export_mod._Graph()
    for name, value in (("zero1", [0]), ("minus1", [-1]), ("big1", [2**62]), ("axis0", [0]), ("shape_wnk", [0, 0, -1])):
        g.const(name, np.array(value, np.int64))
    x = export_mod._input(g, model)  # (W, N, I), normalised and embedded exactly as the main graph
    hs, cs = [], []
    attrs = _cell_attrs(spec.cell, spec.hidden)
    for layer in range(spec.layers):
        x, states = _layer(g, model, layer, x, attrs)
        hs.append(states[0])
        cs.extend(states[1:])
    x = g.op("Slice", [x, "zero1", "chunk", "axis0"], ["chunk_out"])  # the head reads the chunk frames only
    export_mod._head(g, model, x)
    export_mod._merge(g, hs, "hn")
    if cs:
        export_mod._merge(g, cs, "cn")
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
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgernn",
                              producer_version=__import__("edgernn").__version__)
    proto.ir_version = min(proto.ir_version, 8)
    export_mod.set_meta(proto, _own_meta(meta, spec))
    onnx.checker.check_model(proto, full_check=True)
    return proto


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


def write_companion(model: RNNModel, meta: dict, main_path, *, opset: int = export_mod.DEFAULT_OPSET,
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
    export_mod.set_meta(proto, _own_meta(meta, model.spec, parity))
    fileio.write_bytes(path, proto.SerializeToString())
    return companion_meta(model.spec, file=Path(path).name, parity=parity)
