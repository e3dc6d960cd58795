"""edgernn.runtime.native: onnxruntime's C API through ctypes must be indistinguishable from the Python
binding (same inputs/outputs/metadata, same numbers), step through its bound buffers exactly like
an ordinary session call, keep every state promise (untouched on refusal, NaN policies, restore),
and leave a runtime-only process without the Python binding loaded."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgernn.runtime import native
from edgernn.runtime import ortapi
from edgernn.core.errors import InputError, ModelFileError
from edgernn.runtime.native import open_session
from edgernn.runtime import Runtime

from conftest import ROOT, run_torch_free

pytestmark = pytest.mark.skipif(not native.available(), reason="this onnxruntime wheel has no usable libonnxruntime")
ort = pytest.importorskip("onnxruntime")


def _binding(path):
    return open_session(str(path), use_native=False)


def test_function_table_matches_the_c_header(tmp_path):
    """Every slot in ortapi.TABLE is the index of that function in the OrtApi struct (the vendored
    header, tools/embed/include; ORT_INCLUDE=DIR checks another release's)."""
    header_dirs = [os.environ["ORT_INCLUDE"]] if os.environ.get("ORT_INCLUDE") else []
    header_dirs.append(str(ROOT / "tools" / "embed" / "include"))
    header_dirs = [os.path.join(d, "onnxruntime_c_api.h") for d in header_dirs
                   if os.path.isfile(os.path.join(d, "onnxruntime_c_api.h"))]
    assert header_dirs, "tools/embed/include/onnxruntime_c_api.h is missing"
    assert shutil.which("gcc"), "gcc is needed to read the OrtApi struct (apt-get install gcc)"
    src = tmp_path / "slots.c"
    lines = "".join(f'printf("{n} %zu\\n", offsetof(OrtApi, {n}) / sizeof(void*));\n' for n in ortapi.TABLE)
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "onnxruntime_c_api.h"\nint main(void){\n'
                   + lines + "return 0;}\n")
    subprocess.run(["gcc", f"-I{os.path.dirname(header_dirs[0])}", str(src), "-o", str(tmp_path / "slots")], check=True)
    out = subprocess.run([str(tmp_path / "slots")], capture_output=True, text=True, check=True).stdout
    slots = {name: int(i) for name, i in (line.split() for line in out.splitlines())}
    assert slots == {name: entry[0] for name, entry in ortapi.TABLE.items()}


@pytest.mark.parametrize("kw", [dict(cell="lstm", layers=2), dict(cell="gru"), dict(cell="rnn_tanh", vocab=11, embed=4),
                                dict(cell="lstm", bidirectional=True)])
def test_session_describes_and_runs_like_the_binding(tiny_export, kw):
    _, _, path = tiny_export(**kw)
    nat, ref = open_session(str(path)), _binding(path)
    assert isinstance(nat, native.NativeSession) and not isinstance(ref, native.NativeSession)
    for mine, theirs in ((nat.get_inputs(), ref.get_inputs()), (nat.get_outputs(), ref.get_outputs())):
        assert [(a.name, list(a.shape), a.type) for a in mine] == [(a.name, list(a.shape), a.type) for a in theirs]
    assert nat.get_modelmeta().custom_metadata_map == ref.get_modelmeta().custom_metadata_map
    rng = np.random.default_rng(1)
    feed = {}
    for a in ref.get_inputs():
        shape = [3 if i == 0 else 5 if i == 1 else d for i, d in enumerate(a.shape)] if a.name == "x" else \
            [d if isinstance(d, int) else 3 for d in a.shape]
        feed[a.name] = (rng.integers(0, 11, shape) if "int64" in a.type else rng.standard_normal(shape)).astype(
            np.int64 if "int64" in a.type else np.float32)
    for mine, theirs in zip(nat.run(None, feed), ref.run(None, feed)):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        np.testing.assert_array_equal(mine, theirs)


def test_refusals_carry_onnxruntime_message_and_bad_files_are_model_errors(tiny_export, tmp_path):
    _, _, path = tiny_export()
    nat = open_session(str(path))
    bad = {"x": np.zeros((1, 1, 3), np.float64), "h0": np.zeros((1, 1, 8), np.float32),
           "c0": np.zeros((1, 1, 8), np.float32)}
    with pytest.raises(native.NativeError, match="double"):
        nat.run(None, bad)
    with pytest.raises(native.NativeError, match="not a tensor type"):
        nat.run(None, {**bad, "x": np.array([["a"]], dtype=object)})
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelFileError, match="onnxruntime cannot load it"):
        open_session(str(junk))
    with pytest.raises(ModelFileError, match="onnxruntime cannot load it"):
        open_session(b"\x00\x01\x02")


def test_bound_steps_equal_offline_and_outputs_are_not_aliased(tiny_export):
    _, _, path = tiny_export(cell="lstm", layers=2)
    rt = Runtime(path)
    frames = np.random.default_rng(2).standard_normal((300, 3)).astype(np.float32)
    s = rt.stream()
    ys = [s.step(f) for f in frames]  # kept: a later step must not overwrite an earlier result
    assert s.bound, "the stream should step through bound buffers once its call shape repeats"
    np.testing.assert_allclose(np.stack(ys), rt.offline(frames), rtol=0, atol=2e-6)
    saved = s.get_state()
    s.step(frames[0])
    assert not np.array_equal(saved["h0"], s.get_state()["h0"])  # get_state is a copy, not a buffer


def test_state_restore_reset_and_feed_mix_with_bound_steps(tiny_export):
    _, _, path = tiny_export(cell="gru", layers=2)
    rt = Runtime(path)
    frames = np.random.default_rng(3).standard_normal((40, 3)).astype(np.float32)
    want = rt.offline(frames)
    a = rt.stream()
    for f in frames[:10]:
        a.step(f)
    snap = a.get_state()
    b = rt.stream()
    b.step(frames[0])
    b.step(frames[1])  # b steps through bound buffers now; set_state must be copied into them
    assert b.bound
    b.set_state(snap)
    b.steps = 10
    got = [b.step(f) for f in frames[10:20]] + list(b.feed(frames[20:30])) + [b.step(f) for f in frames[30:]]
    np.testing.assert_allclose(np.stack(got), want[10:], atol=2e-6)
    b.reset()
    np.testing.assert_allclose(np.stack([b.step(f) for f in frames[:5]]), want[:5], atol=2e-6)


@pytest.mark.parametrize("policy", ["raise", "skip", "reset"])
def test_bad_frames_on_the_bound_path_keep_the_state(tiny_export, policy):
    _, _, path = tiny_export()
    rt = Runtime(path)
    frames = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    s = rt.stream(nan_policy=policy)
    for f in frames[:3]:
        s.step(f)
    before = s.get_state()
    bad = frames[3].copy()
    bad[1] = np.inf
    if policy == "raise":
        with pytest.raises(InputError, match="frame 3 holds NaN or Inf"):
            s.step(bad)
        assert s.steps == 3
        np.testing.assert_array_equal(s.get_state()["h0"], before["h0"])
    else:
        assert np.isnan(s.step(bad)).all() and s.steps == 4
        expect = before if policy == "skip" else rt.zero_state(1)
        for k in before:
            np.testing.assert_array_equal(s.get_state()[k], expect[k])
    ref = rt.stream()
    ref.set_state(s.get_state())
    np.testing.assert_allclose(s.step(frames[4]), ref.feed(frames[4:5])[0], atol=2e-6)


def test_a_diverging_state_is_refused_on_the_bound_path(tmp_path):
    """hn = h0 * 1e10 + x: infinite by the fifth step; that step is refused and the state kept."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Mul", ["h0", "k"], ["hk"]), helper.make_node("Add", ["hk", "x_t"], ["hn"]),
             helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2]), helper.make_node("Identity", ["x"], ["y"])]
    f = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "boom", [helper.make_tensor_value_info("x", f, ["N", 1, 2]),
                                              helper.make_tensor_value_info("h0", f, [1, "N", 2])],
                              [helper.make_tensor_value_info("y", f, ["N", 1, 2]),
                               helper.make_tensor_value_info("hn", f, [1, "N", 2])],
                              initializer=[numpy_helper.from_array(np.array(1e10, np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "boom.onnx"
    path.write_bytes(model.SerializeToString())
    s = Runtime(path).stream()
    one = np.ones(2, np.float32)
    for _ in range(4):
        s.step(one)
    assert s.bound
    kept = s.get_state()
    with pytest.raises(ModelFileError, match="became non-finite"):
        s.step(one)
    assert s.steps == 4
    np.testing.assert_array_equal(s.get_state()["h0"], kept["h0"])


def test_runtime_only_process_never_loads_the_python_binding(tiny_export):
    _, _, path = tiny_export()
    code = (f"import numpy as np\nfrom edgernn.runtime import Runtime\nrt = Runtime({str(path)!r})\n"
            "s = rt.stream(); [s.step(np.ones(3, np.float32)) for _ in range(3)]; rt.offline(np.ones((4, 3), np.float32))\n"
            "import sys; print(type(rt.session).__name__, 'onnxruntime.capi' in sys.modules)\n")
    r = run_torch_free(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["NativeSession", "False"]


def test_edgernn_native_0_uses_the_python_binding(tiny_export):
    _, _, path = tiny_export()
    env = dict(os.environ, PYTHONPATH=str(ROOT), EDGERNN_NATIVE="0")
    code = (f"import numpy as np\nfrom edgernn.runtime import Runtime\nrt = Runtime({str(path)!r})\n"
            "s = rt.stream(); y = [s.step(np.ones(3, np.float32)) for _ in range(3)]\n"
            "print(type(rt.session).__name__, s.bound)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["InferenceSession", "False"]


def test_repeated_call_shapes_bind_and_stay_exact(tiny_export):
    """The second call of a shape binds it; bound calls equal the binding's numbers, return fresh
    arrays, and a shape that stops fitting is dropped, not wrong."""
    _, _, path = tiny_export(cell="lstm", layers=2)
    nat, ref = open_session(str(path)), _binding(path)
    rng = np.random.default_rng(5)
    kept = []
    for i in range(6):
        feed = {"x": rng.standard_normal((2, 7, 3)).astype(np.float32),
                "h0": rng.standard_normal((2, 2, 8)).astype(np.float32),
                "c0": rng.standard_normal((2, 2, 8)).astype(np.float32)}
        got = nat.run(None, feed)
        kept.append((got, ref.run(None, feed)))
    assert nat.bound_shapes == 1
    for got, want in kept:  # earlier results were not overwritten by later bound calls
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_value_dependent_output_shapes_fall_back(tmp_path):
    """NonZero's output length depends on the values: the bound call refuses, the ordinary one runs."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nz",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [1, "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    nat = open_session(model.SerializeToString())
    for x in ([1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]):
        got = nat.run(None, {"x": np.array(x, np.float32)})[0]
        np.testing.assert_array_equal(got, np.nonzero(np.array(x))[0][None])
    assert nat.bound_shapes == 0 and nat.unbindable_shapes == 1  # found out once, not bound again


def test_threads_sharing_a_bound_shape_get_their_own_answers(tiny_export):
    import threading

    _, _, path = tiny_export()
    rt = Runtime(path)
    rng = np.random.default_rng(6)
    inputs = [rng.standard_normal((50, 5, 3)).astype(np.float32) for _ in range(4)]
    want = [[rt.offline(chunk) for chunk in xs] for xs in inputs]
    errors = []

    def work(k):
        try:
            for chunk, w in zip(inputs[k], want[k]):
                np.testing.assert_allclose(rt.offline(chunk), w, atol=1e-6)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_batch_binds_its_stacked_states_and_matches_single_streams(tiny_export):
    _, _, path = tiny_export(cell="gru", layers=2)
    rt = Runtime(path)
    rng = np.random.default_rng(7)
    b = rt.batch()
    ids = [b.open() for _ in range(5)]
    alone = {i: rt.stream() for i in ids}
    for step in range(30):
        if step == 12:  # one leaves, one joins: the binding is rebuilt for the new count
            b.close(ids[1])
            del alone[ids[1]]
            ids = [i for i in ids if i != ids[1]] + [b.open()]
            alone[ids[-1]] = rt.stream()
        frames = {i: rng.standard_normal(3).astype(np.float32) for i in reversed(ids)}
        got = b.step(frames)
        for i in ids:
            np.testing.assert_allclose(got[i], alone[i].step(frames[i]), atol=2e-6)
    assert b.bound


def test_the_installed_onnxruntime_is_in_the_tested_range_pyproject_pins():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("onnxruntime"))
    assert pin == f"onnxruntime>={ortapi.TESTED[0]},<{ortapi.TESTED[1]}"
    assert ortapi.tested(ort.__version__) and ortapi.reason() is None
    assert not ortapi.tested("1.23.2") and not ortapi.tested("1.33.0") and ortapi.tested("1.32.1+cpu")


def test_a_library_outside_the_tested_range_falls_back_with_its_reason(tiny_export):
    _, _, path = tiny_export()
    code = ("import numpy as np\nimport edgernn.runtime.ortapi as o\no.TESTED = ('0.1', '0.2')\n"
            f"from edgernn.runtime import Runtime\nrt = Runtime({str(path)!r})\n"
            "s = rt.stream(); [s.step(np.ones(3, np.float32)) for _ in range(3)]\n"
            "print(type(rt.session).__name__, rt.backend.kind); print(o.reason())\n")
    r = run_torch_free(code)
    assert r.returncode == 0, r.stderr
    kind, why = r.stdout.splitlines()
    assert kind == "InferenceSession binding" and "outside the range this C path is tested with" in why


def test_a_wheel_without_the_library_falls_back_to_the_binding(tiny_export):
    _, _, path = tiny_export()
    code = ("import numpy as np\nimport edgernn.runtime.ortapi as o\no._library_path = lambda: None\n"
            f"from edgernn.runtime import Runtime\nrt = Runtime({str(path)!r})\n"
            "s = rt.stream(); [s.step(np.ones(3, np.float32)) for _ in range(3)]\n"
            "print(type(rt.session).__name__, o.available())\n")
    r = run_torch_free(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["InferenceSession", "False"]


def test_a_bad_input_does_not_unbind_its_call_shape(tiny_export):
    """A refusal onnxruntime would give any way (a token id out of range) keeps the binding."""
    _, _, path = tiny_export(cell="gru", vocab=11, embed=4)
    nat = open_session(str(path))
    feed = {"x": np.ones((1, 4), np.int64), "h0": np.zeros((1, 1, 8), np.float32)}
    want = [nat.run(None, feed) for _ in range(3)][-1]
    assert nat.bound_shapes == 1
    with pytest.raises(native.NativeError):
        nat.run(None, {**feed, "x": np.full((1, 4), 99, np.int64)})
    assert nat.bound_shapes == 1 and nat.unbindable_shapes == 0
    for g, w in zip(nat.run(None, feed), want):
        np.testing.assert_array_equal(g, w)
