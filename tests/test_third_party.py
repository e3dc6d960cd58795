"""A stateful model edgernn did not make: other names, one combined state, a constant, rank-2 input.

It must stream through Runtime and `edgernn stream` with the numbers a hand-written
onnxruntime loop gives.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgernn.core.errors import InputError, ModelFileError
from edgernn.runtime import Runtime

from conftest import run_cli

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F, H, O = 4, 8, 3


def _model(path, *, state_in="state", state_out="stateN"):
    """y = tanh(x W + h U + b * sr/16000) V;  state (2, N, H) = [h, c] with c = 0.5 c + h."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("W", rng.standard_normal((F, H)) * 0.5), ("U", rng.standard_normal((H, H)) * 0.3),
        ("b", rng.standard_normal(H)), ("V", rng.standard_normal((H, O))), ("k", np.array(1 / 16000.0)),
        ("half", np.array(0.5)))]
    init += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("i0", 0), ("i1", 1))]
    nodes = [
        helper.make_node("Gather", [state_in, "i0"], ["h"], axis=0),
        helper.make_node("Gather", [state_in, "i1"], ["c"], axis=0),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["srf", "k"], ["scale"]),
        helper.make_node("Mul", ["b", "scale"], ["bs"]),
        helper.make_node("MatMul", ["input", "W"], ["xw"]),
        helper.make_node("MatMul", ["h", "U"], ["hu"]),
        helper.make_node("Add", ["xw", "hu"], ["s1"]),
        helper.make_node("Add", ["s1", "bs"], ["s2"]),
        helper.make_node("Tanh", ["s2"], ["h2"]),
        helper.make_node("Mul", ["c", "half"], ["ch"]),
        helper.make_node("Add", ["ch", "h2"], ["c2"]),
        helper.make_node("MatMul", ["h2", "V"], ["output"]),
        helper.make_node("Unsqueeze", ["h2", "axes0"], ["h2u"]),
        helper.make_node("Unsqueeze", ["c2", "axes0"], ["c2u"]),
        helper.make_node("Concat", ["h2u", "c2u"], [state_out], axis=0),
    ]
    init.append(numpy_helper.from_array(np.array([0], np.int64), "axes0"))
    graph = helper.make_graph(nodes, "third_party", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", F]),
        helper.make_tensor_value_info(state_in, TensorProto.FLOAT, [2, "N", H]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ], [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", O]),
        helper.make_tensor_value_info(state_out, TensorProto.FLOAT, [2, "N", H])], initializer=init)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _reference(path, xs, sr=16000, state_in="state"):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    st = np.zeros((2, 1, H), np.float32)
    ys = []
    for x in xs:
        y, st = sess.run(None, {"input": x[None], state_in: st, "sr": np.array(sr, np.int64)})
        ys.append(y[0])
    return np.stack(ys)


@pytest.fixture
def third_party(tmp_path):
    return _model(tmp_path / "tp.onnx")


def test_runtime_pairs_names_and_matches_handwritten_loop(third_party):
    xs = np.random.default_rng(1).standard_normal((200, F)).astype(np.float32)
    rt = Runtime(third_party, constants={"sr": 8000})
    assert rt.signature.pairing == "guessed" and [(s.input, s.output) for s in rt.signature.states] == [("state", "stateN")]
    assert rt.signature.frame_shape == (F,) and not rt.signature.has_time and rt.signature.y == "output"
    s = rt.stream()
    got = np.stack([s.step(x) for x in xs])
    assert np.max(np.abs(got - _reference(third_party, xs, sr=8000))) <= 1e-6
    s2 = rt.stream()
    assert np.allclose(s2.feed(xs), got, atol=1e-6)  # rank-2 models feed step by step
    b = rt.batch()
    i, j = b.open(), b.open()
    outs = [b.step({i: x, j: -x}) for x in xs[:20]]
    assert np.allclose(np.stack([o[i] for o in outs]), got[:20], atol=1e-6)


def test_explicit_pairs_and_odd_names(tmp_path):
    path = _model(tmp_path / "odd.onnx", state_in="memory", state_out="memory_next")
    with pytest.raises(ModelFileError, match="cannot tell the frame input"):
        Runtime(path, constants={"sr": 16000})  # 'memory' cannot be guessed: it looks like a second input
    rt = Runtime(path, states={"memory": "memory_next"}, constants={"sr": 16000})
    xs = np.random.default_rng(2).standard_normal((50, F)).astype(np.float32)
    s = rt.stream()
    got = np.stack([s.step(x) for x in xs])
    assert np.allclose(got, _reference(path, xs, state_in="memory"), atol=1e-6)
    with pytest.raises(ModelFileError, match="not in the graph"):
        Runtime(path, states={"memory": "nope"}, constants={"sr": 16000})


def test_missing_constant_is_named(third_party):
    with pytest.raises(ModelFileError, match=r"inputs \[.sr.\] are neither.*--const NAME=VALUE"):
        Runtime(third_party)
    with pytest.raises(InputError, match="constant 'rate' is not an input"):
        Runtime(third_party, constants={"rate": 1})


def test_cli_streams_third_party_torch_free(third_party, tmp_path):
    xs = np.random.default_rng(3).standard_normal((40, F)).astype(np.float32)
    np.save(tmp_path / "x.npy", xs)
    r = run_cli("stream", "--model", third_party, "--input", tmp_path / "x.npy", "--state", "state=stateN",
                "--const", "sr=8000", torch_free=True)
    assert r.returncode == 0, r.stderr
    got = np.array([json.loads(line)["y"] for line in r.stdout.splitlines()], np.float32)
    assert np.max(np.abs(got - _reference(third_party, xs, sr=8000))) <= 1e-5
    r = run_cli("info", third_party, torch_free=True)
    assert r.returncode == 0 and "state   state -> stateN" in r.stdout and "pairing guessed" in r.stdout


def test_raw_sample_model_with_window_and_hop(tmp_path):
    """--window 4 --hop 2: each step sees the previous 2 samples and 2 new ones, zeros first."""
    path = _model(tmp_path / "raw.onnx")
    samples = np.random.default_rng(4).standard_normal(21).astype(np.float32)
    (tmp_path / "s.csv").write_text("\n".join(f"{v:.9g}" for v in samples))
    windows = np.stack([np.concatenate([np.zeros(2, np.float32), samples])[k * 2:k * 2 + 4] for k in range(10)])
    ref = _reference(path, windows)
    r = run_cli("stream", "--model", path, "--input", tmp_path / "s.csv", "--window", "4", "--hop", "2",
                "--const", "sr=16000", torch_free=True)
    assert r.returncode == 0, r.stderr
    got = np.array([json.loads(line)["y"] for line in r.stdout.splitlines()], np.float32)
    assert got.shape == (10, O) and np.max(np.abs(got - ref)) <= 1e-5
    stdin = "\n".join(f"{v:.9g}" for v in samples) + "\n"
    r = run_cli("stream", "--model", path, "--input", "-", "--window", "4", "--hop", "2", "--const", "sr=16000",
                stdin=stdin, torch_free=True)
    got2 = np.array([json.loads(line)["y"] for line in r.stdout.splitlines()], np.float32)
    assert np.allclose(got2, got, atol=1e-6)
