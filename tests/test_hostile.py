"""Hostile and broken files, and bad streams: nothing runs code, nothing crashes, every refusal is one line.

A model file, checkpoint, state file or frame file may come from anyone. The promises tested here:
a pickle that would run code is refused and its code never runs (only `--unsafe-load` unpickles,
and it says so); a truncated, empty, random or wrong-format file, metadata that is malformed or
contradicts its graph, or a state from another model each get one line starting "Error: " and
exit 2, never a traceback; bad frames mid-stream stop the stream with the state of the good frames
saved, so that a restart continues exactly.

CLI runs are in-process (click's CliRunner, the same code path as the console script) except where
a separate process is the point.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import wave
import zipfile

import numpy as np
import pytest

from conftest import ROOT, run_cli
from edgernn.runtime import Runtime

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")


def cli(*args, input=None):
    """`edgernn ARGS` in this process; returns click's Result (exit_code, stdout, stderr, exception)."""
    from click.testing import CliRunner

    from edgernn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def one_line(r) -> str:
    """Exit 2 with exactly one non-warning line on stderr, "Error: …", and no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.stdout[-500:], r.stderr[-2000:], r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A tiny LSTM (3 features, hidden 8, 2 outputs): its checkpoint, its ONNX file, and 20 frames."""
    from conftest import export_tiny

    d = tmp_path_factory.mktemp("good")
    export_tiny(d)
    xs = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    np.save(d / "xs.npy", xs)
    return {"pt": d / "m.pt", "onnx": d / "m.onnx", "xs": xs, "npy": d / "xs.npy", "dir": d}


# -- 1. pickles that would run code ------------------------------------------------------------------

class Marker:
    """Unpickling this creates a file: the observable proof that the loader ran the file's code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class EvilModule(torch.nn.Module):
    """A whole pickled model (torch.save(model)): its class must be imported to load it."""

    def __init__(self, marker):
        super().__init__()
        self.rnn = torch.nn.LSTM(3, 8, batch_first=True)
        self.marker = Marker(marker)


def _hostile_pt(kind: str, path, marker, good) -> None:
    from edgernn.train import checkpoint

    if kind == "raw_pickle":
        path.write_bytes(pickle.dumps(Marker(marker), protocol=2))
    elif kind == "inside_checkpoint":  # a real-looking checkpoint with one poisoned entry
        torch.save({**torch.load(good["pt"], weights_only=True), "format": checkpoint.FORMAT,
                    "metrics": Marker(marker)}, path)
    elif kind == "whole_module":
        torch.save(EvilModule(marker), path)
    else:
        raise AssertionError(kind)


PT_READERS = {  # how each command that reads a .pt is pointed at the file
    "export": lambda pt, g: ["export", pt, "-o", pt.with_suffix(".out.onnx")],
    "verify": lambda pt, g: ["verify", pt, g["onnx"]],
    "info": lambda pt, g: ["info", pt],
    "train --resume": lambda pt, g: ["train", "--task", "adding", "--hidden", "8", "--steps", "2", "--resume", pt,
                                     "-o", pt.with_suffix(".new.pt")],
    "train --init": lambda pt, g: ["train", "--task", "adding", "--hidden", "8", "--steps", "2", "--init", pt,
                                   "-o", pt.with_suffix(".new.pt")],
}


@pytest.mark.parametrize("kind", ["raw_pickle", "inside_checkpoint", "whole_module"])
@pytest.mark.parametrize("command", list(PT_READERS))
def test_a_pickle_that_runs_code_is_refused_by_every_command(good, tmp_path, kind, command):
    marker = tmp_path / "MARKER"
    pt = tmp_path / "evil.pt"
    _hostile_pt(kind, pt, marker, good)
    line = one_line(cli(*PT_READERS[command](pt, good)))
    assert "refused to unpickle" in line and str(pt) in line, line
    assert not marker.exists(), "the file's code ran"
    assert not list(tmp_path.glob("*.out.onnx")) and not list(tmp_path.glob("*.new.pt"))


@pytest.mark.parametrize("command", ["verify", "info", "train --resume", "train --init"])
def test_the_refusal_names_only_a_fix_the_command_has(good, tmp_path, command):
    pt = tmp_path / "evil.pt"
    _hostile_pt("raw_pickle", pt, tmp_path / "MARKER", good)
    assert "--unsafe-load" not in one_line(cli(*PT_READERS[command](pt, good)))


def test_unsafe_load_is_the_only_way_and_says_so(good, tmp_path):
    """The control: the same file with --unsafe-load does run its code (so the refusals above
    are what stopped it), and the command warns before it loads anything."""
    marker = tmp_path / "MARKER"
    pt = tmp_path / "evil.pt"
    _hostile_pt("raw_pickle", pt, marker, good)
    r = cli("export", pt, "--unsafe-load", "-o", tmp_path / "o.onnx")
    assert r.stderr.startswith("warning: --unsafe-load unpickles arbitrary objects: a malicious file can run code")
    assert marker.exists()
    assert re.search("not a readable PyTorch file|neither an edgernn checkpoint", one_line(r))  # still no model


def test_a_pickle_in_a_frame_file_or_state_file_is_refused(good, tmp_path):
    marker = tmp_path / "MARKER"
    np.save(tmp_path / "evil.npy", np.array([Marker(marker)], dtype=object), allow_pickle=True)
    line = one_line(cli("stream", "--model", good["onnx"], "--input", tmp_path / "evil.npy"))
    assert "allow_pickle" in line or "not a readable .npy" in line, line
    buf = io.BytesIO()
    np.savez(buf, __header__=np.array([Marker(marker)], dtype=object), **{"state:h0": np.zeros((1, 1, 8))})
    (tmp_path / "evil.npz").write_bytes(buf.getvalue())
    line = one_line(cli("stream", "--model", good["onnx"], "--input", good["npy"],
                        "--state-file", tmp_path / "evil.npz"))
    assert "not a readable edgernn state file" in line
    assert not marker.exists()


# -- 1. broken and wrong-format files ----------------------------------------------------------------

def _broken(kind: str, good: dict, suffix: str) -> bytes:
    blob = good[suffix].read_bytes()
    other = good["onnx" if suffix == "pt" else "pt"].read_bytes()
    return {"empty": b"", "half": blob[: len(blob) // 2], "one_byte_short": blob[:-1],
            "random": np.random.default_rng(1).bytes(4000), "text": b"hello, world\n" * 40,
            "png": b"\x89PNG\r\n\x1a\n" + bytes(300), "the_other_format": other,
            "zip_of_nothing": _zip({"a.txt": b"hi"})}[kind]


def _zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return buf.getvalue()


BROKEN = ["empty", "half", "one_byte_short", "random", "text", "png", "the_other_format", "zip_of_nothing"]


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_onnx_is_one_line(good, tmp_path, kind):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(_broken(kind, good, "onnx"))
    for args in (["stream", "--model", bad, "--input", good["npy"]], ["info", bad],
                 ["bench", "--model", bad, "--steps", "2", "--rounds", "1", "--streams", "1"]):
        line = one_line(cli(*args))
        assert str(bad) in line and "expected" in line, line


@pytest.mark.parametrize("kind", ["empty", "half", "random"])
def test_verify_against_a_broken_onnx_is_bad_input(good, tmp_path, kind):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(_broken(kind, good, "onnx"))
    assert str(bad) in one_line(cli("verify", good["pt"], bad))


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_pt_is_one_line(good, tmp_path, kind):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(_broken(kind, good, "pt"))
    for args in (["export", bad, "-o", tmp_path / "o.onnx"], ["info", bad], ["verify", bad, good["onnx"]]):
        line = one_line(cli(*args))
        assert str(bad) in line and "expected" in line, line
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("data", [b"\x80", b"\x80\x02", b"\x80\x04\x95", b"\x80\x02}q\x00(X"],
                         ids=["marker_only", "protocol_only", "protocol4_cut", "dict_cut"])
def test_a_pickle_cut_short_is_one_line(tmp_path, data):
    """Bytes that start like a pickle and stop: torch's unpickler raises IndexError, struct.error,
    EOFError... (found by a 1,000-example fuzz run); each is the same one line, nothing else."""
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data)
    r = cli("info", bad)
    line = one_line(r)
    assert str(bad) in line and "expected a checkpoint" in line, line
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("native", ["1", "0"], ids=["c_api", "python_binding"])
def test_onnxruntime_logs_nothing_of_its_own_for_a_model_it_refuses(good, tmp_path, native):
    """A graph onnxruntime rejects while initialising (here an LSTM direction that is not UTF-8)
    must give our one line, not also onnxruntime's own coloured log line (found by fuzzing)."""
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(good["onnx"]))
    lstm = next(n for n in m.graph.node if n.op_type == "LSTM")
    next(a for a in lstm.attribute if a.name == "direction").s = b"\xeaorward"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(m.SerializeToString())
    env = dict(os.environ, PYTHONPATH=str(ROOT), EDGERNN_NATIVE=native)
    r = subprocess.run([sys.executable, "-c", "from edgernn.cli import main; main()", "info", str(bad)],
                       capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "onnxruntime cannot load it" in r.stderr and "\x1b[" not in r.stderr


def _graph_with_external_weights(path, location: str) -> None:
    from onnx import TensorProto, helper

    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 2], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", "24")):
        w.external_data.add(key=k, value=v)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 2])],
                          initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path.write_bytes(m.SerializeToString())


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_a_model_cannot_read_files_outside_its_folder(good, tmp_path, where):
    """ONNX 'external data' names a file to read weights from; one outside the model's folder
    (a secret, /etc/passwd) is refused, through a symlink too."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(6, dtype=np.float32).tobytes())
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.onnx"
    location = {"absolute": str(secret), "parent": "../secret.bin", "symlink": "w.bin"}[where]
    if where == "symlink":
        (tmp_path / "models" / "w.bin").symlink_to(secret)
    _graph_with_external_weights(model, location)
    r = cli("stream", "--model", model, "--input", good["npy"])
    assert "onnxruntime cannot load it" in one_line(r) and r.stdout == ""


def test_a_model_cannot_ask_for_code_edgernn_does_not_have(good, tmp_path):
    """A node from a custom-op domain would need a native library; none is ever registered."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Payload", ["x"], ["y"], domain="com.evil")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)])
    m.ir_version = 8
    (tmp_path / "c.onnx").write_bytes(m.SerializeToString())
    assert "not a registered function/op" in one_line(cli("stream", "--model", tmp_path / "c.onnx", "--input",
                                                          good["npy"]))


def _not_utf8(good, path, where: str) -> None:
    """The good model with one string (metadata, an input's name, an op's name) made invalid UTF-8."""
    proto = onnx.load(str(good["onnx"]))
    mark = "QQQQQQQQ"
    if where == "metadata":
        (entry,) = [p for p in proto.metadata_props if p.key == "edgernn"]
        m = json.loads(entry.value)
        m["export"]["note"] = mark
        entry.value = json.dumps(m)
    elif where == "input_name":  # c0, renamed everywhere it appears
        for n in proto.graph.node:
            n.input[:] = [mark if i == "c0" else i for i in n.input]
        proto.graph.input[2].name = mark
        (entry,) = [p for p in proto.metadata_props if p.key == "edgernn"]
        entry.value = entry.value.replace('"c0"', '"%s"' % mark)
    else:
        proto.graph.node[0].op_type = mark
    blob = proto.SerializeToString()
    assert mark.encode() in blob
    path.write_bytes(blob.replace(mark.encode(), b"\xff\xfe\xfd\xfc" * 2))


@pytest.mark.parametrize("where", ["metadata", "input_name", "op_name"])
def test_strings_that_are_not_utf8_are_refused_quietly(good, tmp_path, where):
    """One line on stderr, and nothing at all on stdout (a consumer parses every stdout line)."""
    path = tmp_path / f"{where}.onnx"
    _not_utf8(good, path, where)
    r = cli("stream", "--model", path, "--input", good["npy"])
    assert str(path) in one_line(r)
    assert r.stdout == "", r.stdout


# -- 1. metadata that is malformed or contradicts the graph --------------------------------------------

def _set(path_keys, value):
    def edit(m):
        *head, last = path_keys
        d = m
        for k in head:
            d = d[k]
        d[last] = value
    return edit


def _each_state(key, value):
    def edit(m):
        for s in m["states"]:
            s[key] = value
    return edit


def _classifier_with_one_label(m):
    m["output"].update(size=1, labels=["only"])
    m["model"]["task"] = "classify"


def _two_states_into_one_output(m):
    m["states"][0]["output"] = m["states"][1]["output"]


_BUG_SHAPES = ("signature: state shapes in metadata are trusted over the graph's fixed dims; the first step fails "
               "in onnxruntime")
_BUG_PAIRS = "signature: state pairs are not checked for outputs used twice or the y output used as a state"
_BUG_SIZE = "signature: metadata output size is not checked against the graph's y width"
_BUG_TYPES = "meta.parse: 'model', 'frontend' and 'export' are not checked to be objects of the right shape"
_BUG_DEEP = "meta.parse: json.loads RecursionError (deeply nested metadata) is not caught"
_BUG_NEG = "signature: a negative state dim from metadata reaches np.zeros"

METADATA = [
    ("not_json", "{not json", None),
    ("a_list", "[1, 2]", None),
    ("keys_missing", json.dumps({"format": 1}), None),
    ("newer_format", _set(["format"], 99), None),
    ("more_features_than_the_graph", _set(["input", "features"], 5), None),
    ("tokens_for_a_float_graph", _set(["input", "dtype"], "int64"), None),
    ("state_not_in_graph", _set(["states", 0, "input"], "nope"), None),
    ("state_dim_symbolic", _each_state("shape", [1, "batch", "eight"]), None),
    ("labels_not_strings", _set(["output", "labels"], [1, 2]), None),
    ("hidden_16_for_a_hidden_8_graph", _each_state("shape", [1, "batch", 16]), _BUG_SHAPES),
    ("two_layers_for_a_one_layer_graph", _each_state("shape", [2, "batch", 8]), _BUG_SHAPES),
    ("negative_state_dim", _each_state("shape", [1, "batch", -8]), _BUG_NEG),
    ("two_states_into_one_output", _two_states_into_one_output, _BUG_PAIRS),
    ("y_is_a_state_output", _set(["output", "name"], "hn"), _BUG_PAIRS),
    ("one_label_for_two_outputs", _classifier_with_one_label, _BUG_SIZE),
    ("model_not_an_object", _set(["model"], "lstm"), _BUG_TYPES),
    ("frontend_missing_keys", _set(["frontend"], {"kind": "logmel"}), _BUG_TYPES),
    ("frontend_not_an_object", _set(["frontend"], "logmel"), _BUG_TYPES),
    ("export_not_an_object", _set(["export"], "today"), _BUG_TYPES),
    ("nested_100000_deep", "[" * 100000 + "]" * 100000, _BUG_DEEP),
]


def _with_metadata(good, path, edit) -> None:
    from edgernn.core import meta as meta_mod

    proto = onnx.load(str(good["onnx"]))
    (entry,) = [p for p in proto.metadata_props if p.key == meta_mod.KEY]
    if callable(edit):
        m = copy.deepcopy(json.loads(entry.value))
        edit(m)
        entry.value = json.dumps(m)
    else:
        entry.value = edit
    path.write_bytes(proto.SerializeToString())


@pytest.mark.parametrize("name,edit", [
    pytest.param(n, e, id=n) for n, e, bug in METADATA])
def test_bad_metadata_is_refused_in_one_line_by_every_command(good, tmp_path, name, edit):
    """Refused when the model is opened, before any output: stream, info and bench alike."""
    path = tmp_path / f"{name}.onnx"
    _with_metadata(good, path, edit)
    for args in (["stream", "--model", path, "--input", good["npy"]], ["info", path],
                 ["bench", "--model", path, "--steps", "2", "--rounds", "1", "--streams", "2"]):
        r = cli(*args)
        line = one_line(r)
        assert str(path) in line and r.stdout == "", (args[0], line)


# -- 1. state files that do not belong ----------------------------------------------------------------

def _npz(path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _header(sha, **kw):
    h = {"format": "edgernn-state/1", "model_sha256": sha, "steps": 3, **kw}
    return np.frombuffer(json.dumps(h).encode(), np.uint8)


def _huge_member(shape) -> bytes:
    """An .npy member that declares `shape` float32 but holds 64 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(64)


def _state_file(kind: str, path, good, tmp_path) -> None:
    rt = Runtime(good["onnx"])
    z = np.zeros((1, 1, 8), np.float32)
    sha = rt.model_sha256
    if kind == "other_model":
        from edgernn.train import checkpoint
        from edgernn.export import graph as export_mod

        loaded = checkpoint.load(good["pt"])
        with torch.no_grad():
            loaded.model.head.bias += 1  # same shapes, different weights: a different model
        other = tmp_path / "other.onnx"
        other.write_bytes(export_mod.build(loaded.model, export_mod.metadata_for(loaded, opset=17)).SerializeToString())
        s = Runtime(other).stream()
        s.step(np.ones(3, np.float32))
        s.save_state(path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        s = rt.stream()
        s.save_state(path)
        path.write_bytes(path.read_bytes()[:-30])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif kind == "wrong_shape":
        _npz(path, __header__=_header(sha), **{"state:h0": np.zeros((1, 1, 16), np.float32), "state:c0": z})
    elif kind == "nan_state":
        _npz(path, __header__=_header(sha), **{"state:h0": z + np.nan, "state:c0": z})
    elif kind == "missing_state":
        _npz(path, __header__=_header(sha), **{"state:h0": z})
    elif kind == "steps_not_a_number":
        _npz(path, __header__=_header(sha, steps="many"), **{"state:h0": z, "state:c0": z})
    elif kind == "steps_negative":
        _npz(path, __header__=_header(sha, steps=-5), **{"state:h0": z, "state:c0": z})
    elif kind == "header_nested_deep":
        _npz(path, __header__=np.frombuffer(b"[" * 100000 + b"]" * 100000, np.uint8), **{"state:h0": z, "state:c0": z})
    elif kind == "unknown_zip_compression":
        rt.stream().save_state(path)
        blob = bytearray(path.read_bytes())
        for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local and central headers
            i = blob.find(sig)
            while i >= 0:
                blob[i + at:i + at + 2] = struct.pack("<H", 99)
                i = blob.find(sig, i + 4)
        path.write_bytes(bytes(blob))
    elif kind == "declares_3_tib":
        buf = io.BytesIO()
        np.save(buf, _header(sha))
        path.write_bytes(_zip({"__header__.npy": buf.getvalue(), "state:h0.npy": _huge_member((10**12,)),
                               "state:c0.npy": _huge_member((1, 1, 8))}))
    else:
        raise AssertionError(kind)


_BUG_STEPS = "statefile.load: the header's 'steps' is not checked (int(header['steps']) in Stream.load_state)"
STATE_FILES = [
    ("other_model", "belongs to another model", None),
    ("empty", "not a readable edgernn state file", None),
    ("truncated", "not a readable edgernn state file", None),
    ("random", "not a readable edgernn state file", None),
    ("wrong_shape", "expected float32[1, 1, 8]", None),
    ("nan_state", "NaN or Inf", None),
    ("missing_state", "expected ['c0', 'h0']", None),
    ("steps_not_a_number", "steps", _BUG_STEPS),
    ("steps_negative", "steps", _BUG_STEPS),
    ("header_nested_deep", "not a readable edgernn state file", "statefile.load: json RecursionError not caught"),
    ("unknown_zip_compression", "not a readable edgernn state file",
     "statefile.load: zipfile's NotImplementedError (unsupported compression or zip version) is not caught"),
    ("declares_3_tib", "state", "statefile.load: array sizes declared in the file are allocated before they are "
                                "checked (MemoryError, or gigabytes taken on a device)"),
]


@pytest.mark.parametrize("kind,match", [
    pytest.param(k, m, id=k) for k, m, bug in STATE_FILES])
def test_a_state_file_that_does_not_belong_is_refused_and_left_alone(good, tmp_path, kind, match):
    state_file = tmp_path / "s.npz"
    _state_file(kind, state_file, good, tmp_path)
    before = state_file.read_bytes()
    r = cli("stream", "--model", good["onnx"], "--input", good["npy"], "--state-file", state_file)
    assert match in one_line(r) and r.stdout == ""
    assert state_file.read_bytes() == before  # a refused state file is not overwritten


# -- 2. bad streams ------------------------------------------------------------------------------------

def _lines(frames) -> str:
    return "".join(" ".join(format(float(v), ".9g") for v in f) + "\n" for f in frames)


def _ys(stdout) -> np.ndarray:
    return np.array([json.loads(x)["y"] for x in stdout.splitlines()], np.float32)


@pytest.mark.parametrize("bad,match", [
    ("1 2\n", r"<stdin>:3: 2 values; expected 3"),
    ("1 2 3 4\n", r"<stdin>:3: 4 values; expected 3"),
    ("1 2 x\n", r"<stdin>:3: 'x' is not a number"),
    ("nan 1 2\n", r"frame 2 holds NaN or Inf"),
    ("1 inf 2\n", r"frame 2 holds NaN or Inf"),
    ("1 1e39 2\n", r"frame 2 holds NaN or Inf"),  # finite text, infinite as float32
    ("1 2", r"<stdin>:3: 2 values; expected 3"),  # stdin closed mid-line: nothing follows
])
def test_a_bad_line_mid_stream_stops_it_with_the_good_state_saved(good, tmp_path, bad, match):
    """Two good frames, one bad line, then more: the output so far stays, exit 2 names the line,
    and the state file holds exactly the good frames, so a restart continues where it stopped."""
    xs, rt = good["xs"], Runtime(good["onnx"])
    state_file = tmp_path / "s.npz"
    rest = _lines(xs[2:5]) if bad.endswith("\n") else ""
    r = cli("stream", "--model", good["onnx"], "--input", "-", "--state-file", state_file,
            input=_lines(xs[:2]) + bad + rest)
    assert re.search(match, one_line(r))
    assert np.max(np.abs(_ys(r.stdout) - rt.offline(xs[:2]))) <= 1e-6
    r = cli("stream", "--model", good["onnx"], "--input", "-", "--state-file", state_file, input=_lines(xs[2:5]))
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["t"] for x in r.stdout.splitlines()] == [2, 3, 4]
    assert np.max(np.abs(_ys(r.stdout) - rt.offline(xs[:5])[2:])) <= 1e-5


def test_stdin_closed_mid_line_with_a_whole_frame_is_that_frame(good):
    xs = good["xs"]
    r = cli("stream", "--model", good["onnx"], "--input", "-", input=_lines(xs[:3]).rstrip("\n"))
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3, r.stderr


@pytest.mark.parametrize("text", ["", "\n\n   \n", "# only a comment\n"])
def test_empty_stdin_is_no_output_and_success(good, tmp_path, text):
    r = cli("stream", "--model", good["onnx"], "--input", "-", input=text)
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


@pytest.mark.parametrize("name,content,match", [
    ("empty.csv", b"", "empty"),
    ("header_only.csv", b"a,b,c\n", "a header but no rows"),
    ("latin1.csv", "1,2,\xe9\n".encode("latin-1"), "cannot be read as text"),
    ("strings.npy", None, "expected a numeric array"),
    ("three_d.npy", None, r"expected \(T, 3\)"),
    ("header_cut.npy", None, "not a readable .npy array"),
    ("data.json", b"[[1, 2, 3]]", "unsupported input type '.json'"),
])
def test_bad_frame_files_are_one_line_and_no_output(good, tmp_path, name, content, match):
    path = tmp_path / name
    if name == "strings.npy":
        np.save(path, np.array([["a", "b", "c"]]))
    elif name == "three_d.npy":
        np.save(path, np.zeros((2, 3, 1)))
    elif name == "header_cut.npy":  # "(5, 3)" -> "(5, 3 ": the header's Python literal never closes
        buf = io.BytesIO()
        np.save(buf, np.ones((5, 3), np.float32))
        path.write_bytes(buf.getvalue().replace(b"(5, 3)", b"(5, 3 "))
    else:
        path.write_bytes(content)
    r = cli("stream", "--model", good["onnx"], "--input", path)
    assert re.search(match, one_line(r)) and r.stdout == ""


@pytest.mark.parametrize("name,sep", [("frames.tsv", "\t"), ("frames.txt", " ")])
def test_tsv_and_txt_frame_files_read_like_csv(good, tmp_path, name, sep):
    xs = good["xs"][:4]
    (tmp_path / name).write_text("".join(sep.join(format(float(v), ".9g") for v in f) + "\n" for f in xs))
    r = cli("stream", "--model", good["onnx"], "--input", tmp_path / name)
    assert r.exit_code == 0, r.stderr
    assert np.max(np.abs(_ys(r.stdout) - Runtime(good["onnx"]).offline(xs))) <= 1e-6


_BUG_NAN_POLICY = ("edgernn stream feeds every chunk through Stream.feed, which raises on NaN whatever "
                   "--nan-policy says: skip and reset never apply")



@pytest.mark.parametrize("policy", ["skip", "reset"])
def test_nan_policy_applies_to_the_cli_stream(good, policy):
    """skip: the bad frame changes nothing and the good frames read as if it never came;
    reset: the stream starts over after it. Exit 0 either way."""
    xs, rt = good["xs"], Runtime(good["onnx"])
    r = cli("stream", "--model", good["onnx"], "--input", "-", "--nan-policy", policy,
            input=_lines(xs[:3]) + "nan 0 0\n" + _lines(xs[3:6]))
    assert r.exit_code == 0, r.stderr
    ys = [np.array(json.loads(x)["y"], np.float32) for x in r.stdout.splitlines()]
    ys = np.stack([y for y in ys if np.isfinite(y).all()])  # the bad frame may print a line of NaN
    want = rt.offline(xs[:6]) if policy == "skip" else np.concatenate([rt.offline(xs[:3]), rt.offline(xs[3:6])])
    assert ys.shape == want.shape and np.max(np.abs(ys - want)) <= 1e-5


def _stereo_wav(path, left, right, rate) -> None:
    pcm = np.round(np.stack([left, right], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory):
    """A model that takes one raw sample per step (1 feature, no front end)."""
    from edgernn.export import graph as export_mod
    from edgernn.core import meta
    from edgernn.train.models import RNNModel
    from edgernn.core.spec import ModelSpec

    torch.manual_seed(1)
    model = RNNModel(ModelSpec(cell="gru", features=1, hidden=8, outputs=1)).eval()
    path = tmp_path_factory.mktemp("raw") / "raw.onnx"
    path.write_bytes(export_mod.build(model, meta.build(model.spec, export={})).SerializeToString())
    return path


def test_a_wav_at_another_rate_and_in_stereo_is_resampled_and_mixed(raw_model, tmp_path):
    """8 kHz stereo into a 16 kHz model: averaged to mono, resampled, then streamed, exactly as
    the library's own resampler does it."""
    from edgernn.audio.wav import resample

    t = np.arange(800) / 8000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)
    _stereo_wav(tmp_path / "a.wav", left, right, 8000)
    r = cli("stream", "--model", raw_model, "--input", tmp_path / "a.wav", "--sample-rate", "16000", "--chunk", "64")
    assert r.exit_code == 0, r.stderr
    pcm = (np.round(np.stack([left, right], 1) * 32767) / 32768).astype(np.float32).mean(axis=1)
    want = Runtime(raw_model).offline(resample(pcm, 8000, 16000)[:, None])
    got = _ys(r.stdout)
    assert len(got) == 1600 and np.max(np.abs(got - want)) <= 1e-4


@pytest.mark.parametrize("content,match", [
    (b"", "not a RIFF/WAVE file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "truncated|no 'fmt ' chunk|expected"),
    (b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 7, 1, 8000, 8000, 1, 8)
     + b"data" + struct.pack("<I", 0), "mu-law"),
])
def test_a_broken_or_unsupported_wav_is_one_line(raw_model, tmp_path, content, match):
    (tmp_path / "b.wav").write_bytes(content)
    r = cli("stream", "--model", raw_model, "--input", tmp_path / "b.wav")
    assert re.search(match, one_line(r)) and r.stdout == ""


def test_bad_input_in_a_real_process_is_one_line_and_torch_free(good, tmp_path):
    """The same promise end to end: a separate process, torch unimportable, the console's stderr."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 10)
    r = run_cli("stream", "--model", bad, "--input", "-", stdin="", torch_free=True)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr
