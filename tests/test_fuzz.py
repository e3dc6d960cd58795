"""Fuzzing the loaders and the input parsers (hypothesis): whatever the bytes, the answer is a
result or an EdgeRNNError (one line and exit 2 at the CLI), never another exception.

Sizes are bounded so the file runs in seconds; runs are derandomized, so a failure found once is
found every time (and `xfail(strict=True)` marks stay stable until the bug is fixed). For a longer
hunt: EDGERNN_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import NO_TORCH, ROOT
from edgernn.core.errors import EdgeRNNError, InputError
from edgernn.runtime import Runtime

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

N = int(os.environ.get("EDGERNN_FUZZ_EXAMPLES", "0")) or None


def fuzz(examples: int):
    """Bounded, repeatable hypothesis settings (the environment can raise the bound)."""
    return settings(max_examples=N or examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@st.composite
def mutated(draw, base: bytes):
    """`base` with a few byte flips, cuts, insertions and deletions: the files that corrupt in transit."""
    b = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = draw(st.integers(0, 2**20)) % (len(b) + 1)  # spread over the file, not bunched at its start
        if op == "flip" and b:
            b[min(i, len(b) - 1)] = draw(st.integers(0, 255) | st.integers(0x80, 0xFF))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 64))]
    return bytes(b)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny LSTM's checkpoint and ONNX file, a state file, a .npy and a .wav to mutate."""
    pytest.importorskip("torch")
    from conftest import export_tiny
    from edgernn.audio import wav as audio

    d = tmp_path_factory.mktemp("fuzz")
    export_tiny(d)
    rt = Runtime(d / "m.onnx")
    s = rt.stream()
    s.step(np.ones(3, np.float32))
    s.save_state(d / "s.npz")
    np.save(d / "x.npy", np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32))
    audio.write_wav(d / "a.wav", 0.5 * np.sin(np.arange(400) / 5.0), 16000)
    return {"dir": d, "pt": d / "m.pt", "onnx": d / "m.onnx", "state": d / "s.npz", "npy": d / "x.npy",
            "wav": d / "a.wav", "rt": rt}


def _write(d: Path, name: str, data: bytes) -> Path:
    p = d / name
    p.write_bytes(data)
    return p


# -- loaders ----------------------------------------------------------------------------------------

def test_fuzz_checkpoint_loader(files):
    from edgernn.train import checkpoint

    @fuzz(60)
    @given(mutated(files["pt"].read_bytes()))
    def check(data):
        p = _write(files["dir"], "f.pt", data)
        try:
            loaded = checkpoint.load(p)
        except EdgeRNNError:
            return
        assert loaded.model.spec.features == 3

    check()


ONNX_FUZZ = r"""
import contextlib, io, sys
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from edgernn.core.errors import EdgeRNNError
from edgernn.runtime import Runtime
sys.path.insert(0, sys.argv[3])
from test_fuzz import mutated

base, work, n = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[4])

@settings(max_examples=n, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated(base))
def check(data):
    open(work, "wb").write(data)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            rt = Runtime(work)
            s = rt.stream()
            s.step(np.ones(rt.signature.frame_shape, rt.signature.dtype))
    except EdgeRNNError:
        pass
    assert out.getvalue() == "", "stdout: " + out.getvalue()[:300]

check()
print("ok")
"""


def test_fuzz_onnx_loader_in_a_separate_process(files):
    """onnxruntime parses the bytes natively: a crash there must not take the test run with it."""
    r = subprocess.run([sys.executable, "-c", NO_TORCH + ONNX_FUZZ, str(files["onnx"]), str(files["dir"] / "f.onnx"),
                        str(ROOT / "tests"), str(N or 120)], capture_output=True, encoding="utf-8",
                       errors="replace", timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode, r.stdout[-3000:], r.stderr[-3000:])


def test_fuzz_state_file_loader(files):
    """A mutated state file loads as a valid state or is refused, and a refusal changes nothing."""
    rt = files["rt"]
    ref = rt.stream()
    ref.step(np.full(3, 0.5, np.float32))
    before = ref.get_state()

    @fuzz(80)
    @given(mutated(files["state"].read_bytes()))
    def check(data):
        p = _write(files["dir"], "f.npz", data)
        s = rt.stream()
        s.set_state(before)
        try:
            s.load_state(p)
        except EdgeRNNError:
            assert all(np.array_equal(v, before[k]) for k, v in s.get_state().items())
            return
        assert all(np.isfinite(v).all() and v.shape == before[k].shape for k, v in s.get_state().items())
        assert isinstance(s.steps, int) and s.steps >= 0

    check()


def test_fuzz_npy_reader(files):
    from edgernn.runtime import sources

    @fuzz(80)
    @given(mutated(files["npy"].read_bytes()))
    def check(data):
        p = _write(files["dir"], "f.npy", data)
        try:
            x = sources.read_npy(p, width=3)
        except InputError:
            return
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 3

    check()


def test_fuzz_wav_reader(files):
    from edgernn.audio import wav as audio

    @fuzz(80)
    @given(mutated(files["wav"].read_bytes()), st.sampled_from([None, 8000, 16000, 44100]))
    def check(data, rate):
        p = _write(files["dir"], "f.wav", data)
        try:
            x, got = audio.read_wav(p, sample_rate=rate)
        except InputError:
            return
        assert x.dtype == np.float32 and x.ndim == 1 and np.isfinite(x).all()
        assert got == rate if rate else np.abs(x).max(initial=0) <= 1.0  # resampling may ring past full scale

    check()


# -- metadata ----------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def _paths(obj, prefix=()):
    """Every place in a JSON document: (path, ...) for the dicts' keys and the lists' items."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def test_fuzz_metadata(files):
    """The model's own metadata with one value replaced or removed, anywhere in the document:
    opening, stepping, batching and `edgernn stream` either work or fail with one line."""
    onnx = pytest.importorskip("onnx")
    from edgernn.core import meta as meta_mod
    from test_hostile import cli

    proto = onnx.load(str(files["onnx"]))
    (entry,) = [p for p in proto.metadata_props if p.key == meta_mod.KEY]
    base = json.loads(entry.value)
    places = [p for p in _paths(base) if p]

    @fuzz(120)
    @given(st.sampled_from(places), st.one_of(JSON, st.just("<delete>")))
    def check(place, value):
        m = json.loads(json.dumps(base))  # a fresh copy each time
        *head, last = place
        parent = m
        for k in head:
            parent = parent[k]
        if value == "<delete>":
            del parent[last]
        else:
            parent[last] = value
        entry.value = json.dumps(m)
        path = files["dir"] / "meta.onnx"
        path.write_bytes(proto.SerializeToString())
        try:
            rt = Runtime(path)
            rt.stream().step(np.ones(3, np.float32))
            b = rt.batch()
            b.step({b.open(): np.ones(3, np.float32), b.open(): np.zeros(3, np.float32)})
        except EdgeRNNError:
            pass
        r = cli("stream", "--model", path, "--input", files["npy"])
        assert r.exit_code in (0, 2) and isinstance(r.exception, (SystemExit, type(None))), (place, value, r.exception)

    try:
        check()
    finally:
        entry.value = meta_mod.dumps(base)


# -- the CLI's input parsers -----------------------------------------------------------------------------

def test_fuzz_stdin_lines(files):
    """Any text on stdin: frames out, or one line and exit 2 naming the line; never a traceback."""
    from test_hostile import cli

    cells = st.one_of(st.floats(width=32).map(repr), st.integers(-10**40, 10**40).map(str),
                      st.sampled_from(["nan", "inf", "-inf", "1e39", "", "x", "1,", "0x10", "1_0", "\ufeff1", "--"]),
                      st.text(max_size=4))
    lines = st.lists(st.lists(cells, max_size=5).map(lambda c: " ".join(c)), max_size=6)

    @fuzz(60)
    @given(lines, st.booleans())
    def check(rows, newline_at_end):
        text = "\n".join(rows) + ("\n" if newline_at_end and rows else "")
        r = cli("stream", "--model", files["onnx"], "--input", "-", input=text)
        assert r.exit_code in (0, 2) and isinstance(r.exception, (SystemExit, type(None))), (text, r.exception)
        if r.exit_code == 2:
            errors = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("warning:")]
            assert len(errors) == 1 and errors[0].startswith("Error: "), r.stderr
        for line in r.stdout.splitlines():
            y = json.loads(line)["y"]
            assert len(y) == 2 and np.isfinite(y).all()

    check()


def test_fuzz_csv_reader(files):
    from edgernn.runtime import sources

    @fuzz(80)
    @given(st.binary(max_size=200) | st.text(alphabet="0123456789.,-e \n\"abnifx", max_size=200).map(str.encode))
    def check(data):
        p = _write(files["dir"], "f.csv", data)
        try:
            x = sources.read_csv(p, width=3)
        except InputError:
            return
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 3 and len(x) >= 1

    check()


@pytest.fixture(scope="module")
def const_model(tmp_path_factory):
    """A third-party model with a constant int64 input `sr` and a state h0 -> hn."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "W")
    k = numpy_helper.from_array(np.array(1e-4, np.float32), "k")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]),
             helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["srf", "k"], ["b"]), helper.make_node("Add", ["a", "b"], ["y"]),
             helper.make_node("Identity", ["h0"], ["hn"])]
    g = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 3]),
                                           helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "batch", 2]),
                                           helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 2]),
                           helper.make_tensor_value_info("hn", TensorProto.FLOAT, [1, "batch", 2])], initializer=[w, k])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path_factory.mktemp("const") / "c.onnx"
    path.write_bytes(m.SerializeToString())
    return path


def test_fuzz_const_and_state_options(files, const_model):
    """`--const NAME=VALUE` and `--state IN=OUT` as anyone might type them."""
    from test_hostile import cli

    values = st.one_of(JSON.map(json.dumps), st.text(max_size=12))

    @fuzz(80)
    @given(st.sampled_from(["sr", "x", "nope", ""]), values, st.sampled_from(["h0=hn", "h0=y", "h0", "=hn", "a=b"]))
    def check(name, value, pair):
        r = cli("stream", "--model", const_model, "--input", files["npy"], "--const", f"{name}={value}",
                "--state", pair)
        assert isinstance(r.exception, (SystemExit, type(None))), (name, value, pair, r.exception)
        assert r.exit_code in (0, 2), (name, value, pair, r.stderr)

    check()


# -- frames into a live stream -----------------------------------------------------------------------------

FRAME = st.one_of(
    st.lists(st.floats(-1e3, 1e3, width=32), min_size=3, max_size=3),  # good
    st.lists(st.floats(width=32), min_size=3, max_size=3),  # NaN, Inf, huge
    st.lists(st.floats(-10, 10), min_size=0, max_size=6),  # wrong width
    st.lists(st.one_of(st.none(), st.text(max_size=3), st.floats()), min_size=3, max_size=3),  # not numbers
    st.just([[1.0, 2.0, 3.0]]), st.just("1 2 3"), st.just(None), st.just({"a": 1}),
)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39 -> inf is the point
@pytest.mark.parametrize("policy", ["raise", "skip", "reset"])
def test_fuzz_frames_into_a_stream_and_a_batch(files, policy):
    """Each frame is taken (finite output, state advanced as for a clean run of the taken frames)
    or refused with InputError and nothing changed. Batched streams keep the same promise."""
    rt = files["rt"]

    @fuzz(40)
    @given(st.lists(FRAME, min_size=1, max_size=12))
    def check(frames):
        s, b = rt.stream(nan_policy=policy), rt.batch(nan_policy=policy)
        a, other = b.open(), b.open()
        clean = rt.stream()
        for f in frames:
            before, bbefore = s.get_state(), (b.get_state(a), b.get_state(other))
            try:
                y = s.step(f)
            except InputError:
                assert all(np.array_equal(v, before[k]) for k, v in s.get_state().items())
                with pytest.raises(InputError):
                    b.step({a: f, other: np.zeros(3, np.float32)})
                for sid, st_before in zip((a, other), bbefore):
                    assert all(np.array_equal(v, st_before[k]) for k, v in b.get_state(sid).items())
                continue
            x = np.asarray(f, np.float32)
            if np.isfinite(x).all():
                want = clean.step(x)
                assert np.isfinite(y).all() and np.max(np.abs(y - want)) <= 1e-5
                ys = b.step({a: f, other: np.zeros(3, np.float32)})
                assert np.max(np.abs(ys[a] - want)) <= 1e-5
            elif policy == "reset":
                clean.reset()
                b.step({a: f})
            else:  # skip: nothing happened
                b.step({a: f})
            assert all(np.array_equal(v, clean.get_state()[k]) for k, v in s.get_state().items())

    check()
