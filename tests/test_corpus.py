"""Stateful graphs shaped like the ones users bring, built here from ONNX ops, none written by edgernn:

- torch-style long symbolic dim names (16+ characters);
- Silero-style raw samples `[batch, sequence]` (a symbolic frame size), a `[2, batch, H]` state
  and an `If` on the `sr` constant;
- fixed-shape states `[1, 1, H]` with a batchless `[seq_len, F]` input and a rank-1 output;
- int64 token ids `[batch, time]`;
- time-major `[time, batch, F]`;
- dynamo's static output dims (y declared with the example's length).

The graphs are built by tools/third_party_corpus.py (which also measures their step speed).

Each streams through Runtime (both backends: the C API and the Python binding), `edgernn info`
and `edgernn stream`, and equals a hand-written onnxruntime loop within 1e-6.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgernn.runtime import Runtime

from conftest import run_cli

onnx = pytest.importorskip("onnx")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from third_party_corpus import BUILDERS, O, V, F, H, fixed_states, silero_like, time_major  # noqa: E402,F401

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
        one = rt.stream()  # one frame a feed (a live source's hop) takes the step path: same rows, same shape
        rows = [one.feed(frames[i:i + 1]) for i in range(len(frames))]
        assert {r.shape for r in rows} == {(1,) + rt.stream().feed(frames[:2]).shape[1:]}  # as a general call's rows
        np.testing.assert_allclose(np.concatenate(rows), want, rtol=0, atol=1e-6)
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
