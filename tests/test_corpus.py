"""Stateful graphs shaped like the ones users bring, built here from ONNX ops, none written by edgernn:

- torch-style long symbolic dim names (16+ characters);
- Silero-style raw samples `[batch, sequence]` (a symbolic frame size), a `[2, batch, H]` state
  and an `If` on the `sr` constant;
- fixed-shape states `[1, 1, H]` with a batchless `[seq_len, F]` input and a rank-1 output;
- int64 token ids `[batch, time]`;
- time-major `[time, batch, F]`;
- dynamo's static output dims (y declared with the example's length).

Each streams through Runtime (both backends: the C API and the Python binding), `edgernn info`
and `edgernn stream`, and equals a hand-written onnxruntime loop within 1e-6.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgernn.runtime import Runtime

from conftest import run_cli

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

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


SAMPLES = 8  # the Silero-like model's frame: any length works, the caller picks one


def _frames(name, rng, steps=25):
    if name == "tokens":
        return rng.integers(0, V, steps).astype(np.int64)
    width = SAMPLES if name == "silero_like" else F
    return (rng.standard_normal((steps, width)) * (0.3 if name == "silero_like" else 1.0)).astype(np.float32)


def _hand_loop(path, name, frames, sr=16000):
    """What a user would write: one session.run per frame, in the file's own layout."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    x_name = "input" if "input" in inputs else "x"
    states = {n: np.zeros([d if isinstance(d, int) else 1 for d in a.shape], np.float32)
              for n, a in inputs.items() if n not in (x_name, "sr")}
    outs = [o.name for o in sess.get_outputs()]
    pair = {"h0": "hn", "c0": "cn", "h": "hn", "c": "cn", "state": "stateN"}
    ys = []
    for f in frames:
        x = {"long_names": f[None, None], "silero_like": f[None], "fixed_states": f[None], "tokens": np.array([[f]]),
             "time_major": f[None, None], "static_output": f[None, None]}[name]
        feed = {x_name: x, **states}
        if "sr" in inputs:
            feed["sr"] = np.array(sr, np.int64)
        got = dict(zip(outs, sess.run(None, feed)))
        ys.append(got[outs[0]].reshape(-1))
        states = {n: got[pair[n]] for n in states}
    return np.stack(ys)


BUILDERS = {f.__name__: f for f in (long_names, silero_like, fixed_states, tokens, time_major, static_output)}
LAYOUT = {"long_names": "btf", "silero_like": "bf", "fixed_states": "tf", "tokens": "bt", "time_major": "tbf",
          "static_output": "btf"}


@pytest.fixture(params=sorted(BUILDERS))
def corpus(request, tmp_path):
    name = request.param
    path = BUILDERS[name](tmp_path / f"{name}.onnx", np.random.default_rng(sorted(BUILDERS).index(name)))
    frames = _frames(name, np.random.default_rng(1))
    return name, path, frames, _hand_loop(path, name, frames)


def _consts(name):
    return {"sr": 16000} if name == "silero_like" else None


@pytest.mark.parametrize("use_native", [True, False], ids=["c-api", "binding"])
def test_runtime_streams_it_like_a_hand_written_loop(corpus, use_native):
    name, path, frames, want = corpus
    rt = Runtime(path, constants=_consts(name), use_native=use_native)
    assert rt.backend.kind == ("native" if use_native else "binding")
    assert rt.signature.layout == LAYOUT[name]
    s = rt.stream()
    got = np.stack([s.step(f) for f in frames])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    if rt.signature.has_time:  # the whole sequence in one call, and in chunks, carries the same state
        np.testing.assert_allclose(rt.stream().feed(frames), want, rtol=0, atol=1e-6)
        c = rt.stream()
        np.testing.assert_allclose(np.concatenate([c.feed(frames[i:i + 7]) for i in range(0, len(frames), 7)]), want,
                                   rtol=0, atol=1e-6)
    if all(p.batch_axis >= 0 for p in rt.signature.states) and "b" in rt.signature.layout:
        b = rt.batch()
        ids = [b.open() for _ in range(3)]
        rows = [b.step({i: f for i in ids}) for f in frames]
        for i in ids:
            np.testing.assert_allclose(np.stack([r[i] for r in rows]), want, rtol=0, atol=1e-6)


def test_silero_like_sr_selects_its_branch(tmp_path):
    path = silero_like(tmp_path / "s.onnx", np.random.default_rng(3))
    frames = _frames("silero_like", np.random.default_rng(2))
    at8k = Runtime(path, constants={"sr": 8000}).stream()
    got = np.stack([at8k.step(f) for f in frames])
    np.testing.assert_allclose(got, _hand_loop(path, "silero_like", frames, sr=8000), rtol=0, atol=1e-6)
    assert np.abs(got - _hand_loop(path, "silero_like", frames, sr=16000)).max() > 1e-3


def _cli_args(name, path, tmp_path, frames):
    if name == "silero_like":  # raw samples, framed by the CLI: --window gives the symbolic length
        (tmp_path / "in.csv").write_text("\n".join(f"{v:.9g}" for v in frames.reshape(-1)))
        return ["--input", tmp_path / "in.csv", "--window", SAMPLES, "--hop", SAMPLES, "--const", "sr=16000"]
    np.save(tmp_path / "in.npy", frames)
    return ["--input", tmp_path / "in.npy"]


@pytest.mark.parametrize("native", ["1", "0"], ids=["c-api", "binding"])
def test_info_and_stream_take_it_torch_free(corpus, tmp_path, native):
    name, path, frames, want = corpus
    env = {"EDGERNN_NATIVE": native}
    extra = ["--const", "sr=16000"] if name == "silero_like" else []
    r = run_cli("info", path, *extra, torch_free=True, env=env)
    assert r.returncode == 0, r.stderr
    assert f"layout {LAYOUT[name]}" in r.stdout and ("C API" in r.stdout) == (native == "1")
    if name == "silero_like":
        assert "size symbolic ('sequence')" in r.stdout
    if name == "fixed_states":
        assert "no batch axis" in r.stdout
    r = run_cli("stream", "--model", path, *_cli_args(name, path, tmp_path, frames), "-v", torch_free=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "pairing guessed" in r.stderr and f"layout {LAYOUT[name]}" in r.stderr
    got = np.array([json.loads(line)["y"] for line in r.stdout.splitlines()], np.float32).reshape(len(want), -1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_a_symbolic_frame_is_fixed_once(tmp_path):
    path = silero_like(tmp_path / "s.onnx", np.random.default_rng(3))
    rt = Runtime(path, constants={"sr": 16000})
    assert rt.signature.frame_open and rt.signature.frame_symbol == "sequence"
    s = rt.stream()
    s.step(np.zeros(SAMPLES, np.float32))
    assert rt.signature.frame_shape == (SAMPLES,)
    with pytest.raises(Exception, match=r"frame of shape \(5,\); expected \(8,\)"):
        s.step(np.zeros(5, np.float32))
    assert s.steps == 1
    assert Runtime(path, constants={"sr": 16000}, frame=512).signature.frame_shape == (512,)


def test_fixed_state_models_refuse_batching_in_one_line(tmp_path):
    path = fixed_states(tmp_path / "f.onnx", np.random.default_rng(0))
    rt = Runtime(path)
    assert [p.batch_axis for p in rt.signature.states] == [-1, -1]
    assert rt.zero_state(1)["h"].shape == (1, 1, H)
    with pytest.raises(Exception, match="no batch axis"):
        rt.batch()


def test_a_layout_the_rank_cannot_have_is_refused(tmp_path):
    path = time_major(tmp_path / "t.onnx", np.random.default_rng(0))
    with pytest.raises(Exception, match=r"layout 'bf' for input 'x' of rank 3.*expected one of btf, tbf"):
        Runtime(path, layout="bf")
    # the dim names say time-major; told otherwise, the runtime follows the user (and the numbers differ)
    assert Runtime(path, layout="btf").signature.layout == "btf"
