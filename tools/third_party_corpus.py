#!/usr/bin/env python3
"""Stateful ONNX graphs shaped the way other exporters write them, and their per-step speed.

    python tools/third_party_corpus.py DIR            # write the six graphs into DIR
    python tools/third_party_corpus.py --bench        # edgernn Stream.step vs a hand-written loop

The graphs (built from ONNX ops; none is written by edgernn): torch-style long dim names,
Silero-style raw samples with an `If` on `sr`, fixed-shape states with a batchless input,
int64 tokens, time-major, and dynamo's static output dims. tests/test_corpus.py streams each
through Runtime, `info` and `stream`; `--bench` adds the two real Silero files in
models/third_party and reports, per model, edgernn's step time over the hand-written
onnxruntime loop's (medians of interleaved rounds; edgernn.runtime.bench).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]

F, H, O, V = 4, 6, 3, 7
FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def _w(rng, name, *shape, scale=0.4):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _lstm_init(rng, inputs):
    return [_w(rng, "W", 1, 4 * H, inputs), _w(rng, "R", 1, 4 * H, H), _w(rng, "B", 1, 8 * H),
            _w(rng, "V", H, O)]


def _batch_first(x: str, y: str) -> list:
    """x [B, T, I] -> the LSTM op (time-major: onnxruntime has no layout=1) -> y [B, T, O], as torch writes it."""
    return [helper.make_node("Transpose", [x], ["xt"], perm=[1, 0, 2]),
            helper.make_node("LSTM", ["xt", "W", "R", "B", "", "h0", "c0"], ["Y", "hn", "cn"], hidden_size=H),
            helper.make_node("Squeeze", ["Y", "ax1"], ["Ys"]), helper.make_node("Transpose", ["Ys"], ["Yb"], perm=[1, 0, 2]),
            helper.make_node("MatMul", ["Yb", "V"], [y])]


def _save(path, nodes, ins, outs, init):
    graph = helper.make_graph(nodes, path.stem, ins, outs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def long_names(path, rng):
    b, t = "Sliceconv_out_dim_0_batch", "Transposeinput_dim_1_sequence_length"
    nodes = _batch_first("x", "y")
    init = _lstm_init(rng, F) + [numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    ins = [_vi("x", FLOAT, [b, t, F]), _vi("h0", FLOAT, [1, b, H]), _vi("c0", FLOAT, [1, b, H])]
    outs = [_vi("y", FLOAT, [b, t, O]), _vi("hn", FLOAT, [1, b, H]), _vi("cn", FLOAT, [1, b, H])]
    return _save(path, nodes, ins, outs, init)


def silero_like(path, rng):
    """Raw samples of any length: mean and energy of the frame (times 1 at 16 kHz, 0.5 else, by an
    If) drive a tanh cell whose [h, c] live in one state tensor; output P(speech) [batch, 1]."""
    def branch(name, value):
        return helper.make_graph([helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
            np.array(value, np.float32)))], name, [], [_vi("k", FLOAT, [])])
    nodes = [helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
             helper.make_node("If", ["is16k"], ["k"], then_branch=branch("at16k", 1.0), else_branch=branch("other", 0.5)),
             helper.make_node("Mul", ["input", "k"], ["xs"]),
             helper.make_node("ReduceMean", ["xs"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["xs", "xs"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["e"], axes=[1], keepdims=1),
             helper.make_node("Concat", ["m", "e"], ["feat"], axis=1),
             helper.make_node("Gather", ["state", "i0"], ["h"], axis=0),
             helper.make_node("Gather", ["state", "i1"], ["c"], axis=0),
             helper.make_node("MatMul", ["feat", "Wf"], ["a"]), helper.make_node("MatMul", ["h", "U"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Tanh", ["s"], ["h2"]),
             helper.make_node("Mul", ["c", "half"], ["ch"]), helper.make_node("Add", ["ch", "h2"], ["c2"]),
             helper.make_node("MatMul", ["h2", "Vp"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["output"]),
             helper.make_node("Unsqueeze", ["h2", "ax0"], ["hu"]), helper.make_node("Unsqueeze", ["c2", "ax0"], ["cu"]),
             helper.make_node("Concat", ["hu", "cu"], ["stateN"], axis=0)]
    init = [_w(rng, "Wf", 2, H, scale=2.0), _w(rng, "U", H, H), _w(rng, "Vp", H, 1),
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
            numpy_helper.from_array(np.array(16000, np.int64), "rate16k"),
            numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
            numpy_helper.from_array(np.array([0], np.int64), "ax0")]
    ins = [_vi("input", FLOAT, ["batch", "sequence"]), _vi("state", FLOAT, [2, "batch", H]), _vi("sr", INT64, [])]
    outs = [_vi("output", FLOAT, ["batch", 1]),
            _vi("stateN", FLOAT, ["AddstateN_dim_0", "batch", "AddstateN_dim_2"])]
    return _save(path, nodes, ins, outs, init)


def fixed_states(path, rng):
    """Silero v6's shape: [seq_len, F] in, h/c [1, 1, H], speech_probs [seq_len] out."""
    nodes = [helper.make_node("Unsqueeze", ["input", "ax1"], ["x3"]),
             helper.make_node("LSTM", ["x3", "W", "R", "B", "", "h", "c"], ["Y", "hn", "cn"], hidden_size=H),
             helper.make_node("Reshape", ["Y", "flat"], ["Y2"]), helper.make_node("MatMul", ["Y2", "Vp"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["p"]), helper.make_node("Reshape", ["p", "minus1"], ["speech_probs"])]
    init = _lstm_init(rng, F) + [_w(rng, "Vp", H, 1), numpy_helper.from_array(np.array([1], np.int64), "ax1"),
                                 numpy_helper.from_array(np.array([-1, H], np.int64), "flat"),
                                 numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    ins = [_vi("input", FLOAT, ["seq_len", F]), _vi("h", FLOAT, [1, 1, H]), _vi("c", FLOAT, [1, 1, H])]
    outs = [_vi("speech_probs", FLOAT, ["Reshapespeech_probs_dim_0"]), _vi("hn", FLOAT, [1, 1, H]),
            _vi("cn", FLOAT, [1, 1, H])]
    return _save(path, nodes, ins, outs, init)


def tokens(path, rng):
    nodes = [helper.make_node("Gather", ["E", "x"], ["emb"])] + _batch_first("emb", "logits")
    init = _lstm_init(rng, F) + [_w(rng, "E", V, F, scale=1.0), numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    ins = [_vi("x", INT64, ["batch", "time"]), _vi("h0", FLOAT, [1, "batch", H]), _vi("c0", FLOAT, [1, "batch", H])]
    outs = [_vi("logits", FLOAT, ["batch", "time", O]), _vi("hn", FLOAT, [1, "batch", H]),
            _vi("cn", FLOAT, [1, "batch", H])]
    return _save(path, nodes, ins, outs, init)


def time_major(path, rng):
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["Y", "hn", "cn"], hidden_size=H),
             helper.make_node("Squeeze", ["Y", "ax1"], ["Ys"]), helper.make_node("MatMul", ["Ys", "V"], ["y"])]
    init = _lstm_init(rng, F) + [numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    ins = [_vi("x", FLOAT, ["time", "batch", F]), _vi("h0", FLOAT, [1, "batch", H]), _vi("c0", FLOAT, [1, "batch", H])]
    outs = [_vi("y", FLOAT, ["time", "batch", O]), _vi("hn", FLOAT, [1, "batch", H]), _vi("cn", FLOAT, [1, "batch", H])]
    return _save(path, nodes, ins, outs, init)


def static_output(path, rng):
    nodes = _batch_first("x", "y")
    init = _lstm_init(rng, F) + [numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    ins = [_vi("x", FLOAT, ["batch", "sequence", F]), _vi("h0", FLOAT, [1, "batch", H]),
           _vi("c0", FLOAT, [1, "batch", H])]
    outs = [_vi("y", FLOAT, ["batch", 9, O]), _vi("hn", FLOAT, [1, "batch", H]), _vi("cn", FLOAT, [1, "batch", H])]
    return _save(path, nodes, ins, outs, init)


BUILDERS = {f.__name__: f for f in (long_names, silero_like, fixed_states, tokens, time_major, static_output)}
CONSTANTS = {"silero_like": {"sr": 16000}}
FRAME = {"silero_like": 512}


def write_all(folder) -> dict:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: build(folder / f"{name}.onnx", np.random.default_rng(sorted(BUILDERS).index(name)))
            for name, build in BUILDERS.items()}


def bench(steps: int = 1000, rounds: int = 7) -> list[tuple]:
    sys.path.insert(0, str(ROOT))
    from edgernn.runtime import Runtime
    from edgernn.runtime import bench as b

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: (path, dict(constants=CONSTANTS.get(name), frame=FRAME.get(name)))
                  for name, path in write_all(tmp).items()}
        models["silero v5 (real)"] = (ROOT / "models/third_party/silero_vad_v5.onnx", dict(constants={"sr": 16000},
                                                                                         frame=576))
        models["silero v6 (real)"] = (ROOT / "models/third_party/silero_vad_v6.onnx", {})
        for name, (path, kw) in models.items():
            rt = Runtime(path, **kw)
            rng = np.random.default_rng(0)
            sig = rt.signature
            frames = (rng.integers(0, 7, (steps,) + sig.frame_shape) if sig.dtype == np.int64
                      else rng.standard_normal((steps,) + sig.frame_shape)).astype(sig.dtype)
            sess = b._session(str(path))
            res = b.measure({"edgernn": (b.edgernn_step_loop(rt, frames), steps),
                             "loop": (b.raw_step_loop(sess, rt, frames), steps)}, rounds=rounds)
            rows.append((name, res["edgernn"]["us"], res["loop"]["us"], b.ratio(res, "edgernn", "loop")))
            print(f"{name:20s} edgernn {rows[-1][1]:8.1f} µs  hand loop {rows[-1][2]:8.1f} µs  ratio {rows[-1][3]:.2f}",
                  flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", help="write the graphs here")
    ap.add_argument("--bench", action="store_true", help="measure edgernn's step against a hand-written loop")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    if a.folder:
        for name, path in write_all(a.folder).items():
            print(f"wrote {path}")
    if a.bench:
        bench(a.steps, a.rounds)
    if not (a.folder or a.bench):
        ap.error("give a folder to write the graphs into, or --bench")


if __name__ == "__main__":
    main()
