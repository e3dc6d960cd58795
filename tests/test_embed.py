"""tools/embed: the C++ streamer built against onnxruntime's C++ API gives the Python runtime's numbers.

Built once per session into a temporary folder with tools/embed/Makefile: headers from npm
(cached), the library from the onnxruntime wheel this Python uses.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

EMBED = ROOT / "tools" / "embed"


@pytest.fixture(scope="module")
def embed_bin(tmp_path_factory) -> Path:
    for tool in ("g++", "make", "readelf"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: apt-get install g++ make binutils to build tools/embed")
    ort = pytest.importorskip("onnxruntime")
    if not glob.glob(os.path.join(os.path.dirname(ort.__file__), "capi", "libonnxruntime.so*")):
        pytest.skip("this onnxruntime wheel has no capi/libonnxruntime.so* to link against")
    build = tmp_path_factory.mktemp("embed")
    r = subprocess.run(["make", "-C", str(EMBED), f"BUILD={build}", f"PYTHON={sys.executable}"],
                       capture_output=True, text=True, timeout=900)
    headers = Path(os.environ.get("ORT_INCLUDE", build / "ort" / "include")) / "onnxruntime_cxx_api.h"
    if r.returncode != 0 and not headers.is_file():
        why = next((line for line in r.stderr.splitlines() if line.startswith("error:")), r.stderr.strip()[-300:])
        pytest.skip(f"onnxruntime C++ headers unavailable (tools/embed/fetch_ort_headers.sh: npm pack): {why}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]  # a compile error is a failure, not a skip
    return build / "edgernn_embed"


def _embed(binary, model, frames: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), str(model), *args], input=frames, capture_output=True, text=True, timeout=120)


def _lines(frames: np.ndarray) -> str:
    return "".join(", ".join(repr(float(v)) for v in np.atleast_1d(f)) + "\n" for f in frames)


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("lstm", 2), ("gru", 2), ("rnn_tanh", 1), ("rnn_relu", 1)])
def test_embed_matches_the_python_runtime_step_by_step(embed_bin, tiny_export, cell, layers):
    from edgernn.runtime import Runtime

    _, _, path = tiny_export(cell=cell, layers=layers)
    frames = np.random.default_rng(1).standard_normal((60, 3)).astype(np.float32)
    s = Runtime(path).stream()
    want = np.stack([s.step(f) for f in frames])
    r = _embed(embed_bin, path, _lines(frames))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["t"] for row in rows] == list(range(60))
    np.testing.assert_allclose(np.array([row["y"] for row in rows]), want, atol=1e-5, rtol=0)


def test_embed_streams_a_token_model(embed_bin, tiny_export):
    from edgernn.runtime import Runtime

    _, _, path = tiny_export(cell="gru", vocab=11, embed=4, outputs=11, task="lm")
    ids = np.random.default_rng(2).integers(0, 11, 40)
    s = Runtime(path).stream()
    want = np.stack([s.step(np.int64(i)) for i in ids])
    r = _embed(embed_bin, path, "".join(f"{i}\n" for i in ids), "--format", "csv")
    assert r.returncode == 0, r.stderr
    head, *rows = r.stdout.splitlines()
    assert head == "t," + ",".join(f"y{i}" for i in range(11))
    got = np.array([[float(v) for v in row.split(",")[1:]] for row in rows])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    r = _embed(embed_bin, path, "3\n11\n")
    assert r.returncode == 2 and "<stdin>:2: token 11 is out of range; expected an id in 0..10" in r.stderr


def test_embed_labels_a_classifier_like_the_cli(embed_bin, tiny_export, tmp_path):
    """Labels and softmax probability from the metadata, as `edgernn stream --format jsonl` writes them."""
    onnx = pytest.importorskip("onnx")
    from edgernn.core import meta as meta_mod

    _, _, path = tiny_export(outputs=3, task="classify")
    proto = onnx.load(str(path))
    meta = json.loads(proto.metadata_props[0].value)
    meta["output"]["labels"] = ["ja", "nein", "\u00e4rger \"quoted\""]
    proto.metadata_props[0].value = meta_mod.dumps(meta)
    onnx.save(proto, str(tmp_path / "cls.onnx"))
    frames = _lines(np.random.default_rng(3).standard_normal((25, 3)) * 3)
    cli = run_cli("stream", "--model", tmp_path / "cls.onnx", "--input", "-", "--format", "jsonl", stdin=frames)
    assert cli.returncode == 0, cli.stderr
    r = _embed(embed_bin, tmp_path / "cls.onnx", frames)
    assert r.returncode == 0, r.stderr
    want = [json.loads(line) for line in cli.stdout.splitlines()]
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert [g["label"] for g in got] == [w["label"] for w in want] and len(got) == 25
    np.testing.assert_allclose([g["p"] for g in got], [w["p"] for w in want], atol=1e-5)
    np.testing.assert_allclose([g["y"] for g in got], [w["y"] for w in want], atol=1e-5)


def test_embed_refuses_bad_input_with_one_line_and_status_2(embed_bin, tiny_export, tmp_path):
    onnx = pytest.importorskip("onnx")
    _, _, path = tiny_export()
    cases = [("1,2,3\n1,2\n", "<stdin>:2: 2 values; expected 3 (one per model feature)"),
             ("1,2,x\n", "<stdin>:1: 'x' is not a number; expected 3 numbers per row"),
             ("1,2,3\nnan,0,0\n", "frame 1 holds NaN or Inf")]
    for frames, message in cases:
        r = _embed(embed_bin, path, frames)
        assert r.returncode == 2 and message in r.stderr, (frames, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert _embed(embed_bin, path, "1,2,3\n1,2\n").stdout.count("\n") == 1  # the good frame was streamed first
    r = _embed(embed_bin, tmp_path / "missing.onnx", "")
    assert r.returncode == 2 and "no such model file" in r.stderr
    plain = onnx.load(str(path))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    r = _embed(embed_bin, tmp_path / "plain.onnx", "1,2,3\n")
    assert r.returncode == 2 and "no 'edgernn' metadata" in r.stderr
    _, _, bi = tiny_export(bidirectional=True, name="bi")
    r = _embed(embed_bin, bi, "1,2,3\n")
    assert r.returncode == 2 and "bidirectional" in r.stderr
    r = _embed(embed_bin, path, "", "--format", "xml")
    assert r.returncode == 2 and "expected jsonl or csv" in r.stderr
