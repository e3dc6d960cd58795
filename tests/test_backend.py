"""edgernn.runtime.backend: the one interface every session call goes through.

The device implementation cannot meet a GPU here, so it runs on the CPU through the Python
binding with device "cpu": the same two IO bindings, buffers and ping-pong a CUDA stream uses.
"""

import numpy as np
import pytest

from edgernn.core.errors import EdgeRNNError, ModelFileError, NativeError
from edgernn.runtime import Runtime, backend, checks
from edgernn.runtime.native import NativeSession, open_session

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


class CountingSession:
    """An InferenceSession that counts the IO bindings made on it."""

    def __init__(self, session):
        self._s, self.bindings_made = session, 0

    def io_binding(self):
        self.bindings_made += 1
        return self._s.io_binding()

    def __getattr__(self, name):
        return getattr(self._s, name)


def _on_device(path):
    rt = Runtime(path)
    session = CountingSession(open_session(str(path), use_native=False))
    rt.backend = backend.DeviceBackend(session, device="cpu")
    return rt, session


def test_each_runtime_gets_one_backend(tiny_export):
    _, _, path = tiny_export()
    rt = Runtime(path)
    assert rt.backend.kind == ("native" if isinstance(rt.session, NativeSession) else "binding")
    assert rt.backend.session is rt.session


def test_device_stream_keeps_its_bindings_and_equals_the_cpu(tiny_export, tmp_path):
    _, _, path = tiny_export(cell="lstm", layers=2)
    rt, session = _on_device(path)
    frames = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    want = Runtime(path).offline(frames)
    s = rt.stream()
    got = [s.step(f) for f in frames[:10]]
    assert s.bound and session.bindings_made == 2  # two bindings, made once, for all ten steps
    snap = s.get_state()
    got += list(s.feed(frames[10:20]))  # a chunk on the host, then back to the device
    got += [s.step(f) for f in frames[20:30]]
    s.save_state(tmp_path / "s.npz")
    got += [s.step(f) for f in frames[30:]]
    np.testing.assert_allclose(np.stack(got), want, atol=2e-6)
    assert session.bindings_made == 2
    s.load_state(tmp_path / "s.npz")  # restored into the device buffers
    np.testing.assert_allclose(np.stack([s.step(f) for f in frames[30:]]), want[30:], atol=2e-6)
    s.set_state(snap)
    np.testing.assert_allclose(s.feed(frames[10:20]), want[10:20], atol=2e-6)
    s.reset()
    np.testing.assert_allclose(s.step(frames[0]), want[0], atol=2e-6)


def test_device_stream_refuses_a_bad_frame_and_keeps_the_state(tiny_export):
    _, _, path = tiny_export(cell="gru")
    rt, _ = _on_device(path)
    s = rt.stream()
    for _ in range(3):
        s.step(np.ones(3, np.float32))
    kept = s.get_state()
    with pytest.raises(EdgeRNNError, match="frame 3 holds NaN or Inf"):
        s.step(np.array([1, np.nan, 0], np.float32))
    np.testing.assert_array_equal(s.get_state()["h0"], kept["h0"])


def test_device_batch_uses_host_states(tiny_export):
    _, _, path = tiny_export(cell="gru")
    rt, _ = _on_device(path)
    b = rt.batch()
    a, c = b.open(), b.open()
    alone = Runtime(path).stream()
    for i in range(5):
        f = np.full(3, i / 5, np.float32)
        np.testing.assert_allclose(b.step({a: f, c: f})[a], alone.step(f), atol=2e-6)


def _static_output_model(tmp_path):
    """What torch's dynamo exporter writes: y declared with the example's length (9), while a
    streaming call gives T=1. hn = h0 + x[:, -1]; y = x * 2."""
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Mul", ["x", "two"], ["y"]),
             helper.make_node("Gather", ["x", "last"], ["x_last"], axis=1),
             helper.make_node("Unsqueeze", ["x_last", "zero"], ["x_u"]),
             helper.make_node("Add", ["h0", "x_u"], ["hn"])]
    graph = helper.make_graph(
        nodes, "static_y",
        [helper.make_tensor_value_info("x", f, ["batch", "time", 4]),
         helper.make_tensor_value_info("h0", f, [1, "batch", 4])],
        [helper.make_tensor_value_info("y", f, ["batch", 9, 4]),
         helper.make_tensor_value_info("hn", f, [1, "batch", 4])],
        initializer=[helper.make_tensor("two", f, [], [2.0]),
                     helper.make_tensor("last", TensorProto.INT64, [], [-1]),
                     helper.make_tensor("zero", TensorProto.INT64, [1], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "static_y.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_static_output_dims_step_where_the_ordinary_call_runs(tmp_path):
    path = _static_output_model(tmp_path)
    s = Runtime(path).stream()
    total = np.zeros(4, np.float32)
    for i in range(6):
        x = np.arange(4, dtype=np.float32) + i
        total += x
        np.testing.assert_array_equal(s.step(x), 2 * x)
    np.testing.assert_array_equal(s.get_state()["h0"][0, 0], total)


def test_a_shape_one_stream_found_unbindable_is_not_tried_again_by_the_next(tmp_path, monkeypatch):
    path = _static_output_model(tmp_path)
    rt = Runtime(path)
    if rt.backend.kind != "native":
        pytest.skip("the C-API session is unavailable here")
    tries = []
    real = backend.stateloop.StateLoop.for_signature
    monkeypatch.setattr(backend.stateloop.StateLoop, "for_signature",
                        classmethod(lambda cls, *a, **k: tries.append(1) or real(*a, **k)))
    for _ in range(3):
        s = rt.stream()
        for i in range(4):
            x = np.arange(4, dtype=np.float32) + i
            np.testing.assert_array_equal(s.step(x), 2 * x)
        assert not s.bound
    assert len(tries) == 1  # the first stream found out; the others went straight to the ordinary call


@pytest.mark.parametrize("size", [1, 6, checks.SMALL, checks.SMALL + 1, 300])
def test_the_nan_screen_sees_every_nonfinite_value(size):
    v = np.ones(size, np.float32)
    assert not checks.may_be_nonfinite(v)
    for bad in (np.nan, np.inf, -np.inf):
        for at in {0, size // 2, size - 1}:
            w = v.copy()
            w[at] = bad
            assert checks.may_be_nonfinite(w), (bad, at)
    if size > 1:
        w = v.copy()
        w[0], w[-1] = np.inf, -np.inf  # a sum of the two is NaN, not a finite number
        assert checks.may_be_nonfinite(w)


def test_huge_finite_states_are_not_refused(tmp_path):
    """The screen may fire on finite values whose sum overflows; the exact test then lets them pass."""
    path = _static_output_model(tmp_path)
    s = Runtime(path).stream()
    big = np.full(4, 3e38, np.float32)
    s.step(big)
    s.step(np.zeros(4, np.float32))
    assert np.isfinite(s.get_state()["h0"]).all()


def test_onnxruntime_cause_line_is_kept(tiny_export):
    _, _, path = tiny_export()
    for session in (open_session(str(path)), open_session(str(path), use_native=False)):
        with pytest.raises(Exception) as e:
            session.run(None, {"x": np.ones((1, 1, 3), np.float32), "h0": np.zeros((1, 1, 5), np.float32)})
        message = str(checks.run_error(e.value))
        assert "h0" in message and "Please fix" not in message, message
        assert "state unchanged" in message and "\n" not in message


def test_cause_line_picks_the_line_that_names_the_cause():
    text = ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: h for the following "
            "indices\n index: 2 Got: 64 Expected: 128\n Please fix either the inputs/outputs or the model.")
    line = checks.cause_line(RuntimeError(text))
    assert "Expected: 128" in line and "Please fix" not in line
    assert checks.cause_line(RuntimeError("")) == "RuntimeError"


def test_one_error_root():
    assert issubclass(NativeError, EdgeRNNError) and issubclass(NativeError, RuntimeError)
    assert issubclass(ModelFileError, EdgeRNNError)


def test_one_nan_policy_definition(tiny_export):
    _, _, path = tiny_export()
    rt = Runtime(path)
    for make in (rt.stream, rt.batch):
        with pytest.raises(EdgeRNNError) as e:
            make(nan_policy="ignore")
        assert str(e.value) == "nan_policy='ignore'; expected one of raise, skip, reset"
    assert checks.NAN_POLICIES == ("raise", "skip", "reset")
