"""`edgernn ensemble`: classifier checkpoints that vote as one file, checked against the members' own files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli

torch = pytest.importorskip("torch")

LABELS = ["_silence_", "yes", "no", "up"]
FRONTEND = {"kind": "logmel", "sample_rate": 16000, "window": 400, "hop": 160, "mels": 6}


def member(tmp_path, name, *, seed=0, labels=LABELS, frontend=FRONTEND, **spec):
    """A small classifier checkpoint (random weights, its own normalisation) and its own ONNX file."""
    from edgernn.core.spec import ModelSpec
    from edgernn.train import checkpoint
    from edgernn.train.models import RNNModel

    torch.manual_seed(seed)
    kw = {"cell": "gru", "features": 6, "hidden": 16, "layers": 2, "outputs": len(labels), "readout": "last",
          "task": "classify", **spec}
    model = RNNModel(ModelSpec(**kw)).eval()
    model.set_normalization(in_mean=torch.randn(6) * 0.3 + seed, in_std=torch.rand(6) + 0.5)
    pt = tmp_path / f"{name}.pt"
    checkpoint.save(pt, model, labels=labels, frontend=frontend, task="classify")
    return pt


def softmax_log(y):
    y = y - y.max(-1, keepdims=True)
    return y - np.log(np.exp(y).sum(-1, keepdims=True))


def stream_all(onnx_path, x):
    """The file's y over x (T, F), fed whole and then one frame at a time, through the torch-free runtime."""
    from edgernn.runtime import Runtime

    rt = Runtime(str(onnx_path))
    whole = rt.stream().feed(x)
    s = rt.stream()
    steps = np.stack([s.step(f) for f in x])
    return rt, whole, steps, s


@pytest.mark.parametrize("cell,layers", [("gru", (2, 1)), ("lstm", (1, 2, 1))])
def test_ensemble_file_is_the_mean_log_posterior_of_its_members_files(tmp_path, cell, layers):
    pts = [member(tmp_path, f"m{k}", seed=k, cell=cell, layers=n) for k, n in enumerate(layers)]
    for pt in pts:
        r = run_cli("export", pt)
        assert r.returncode == 0, r.stderr
    r = run_cli("ensemble", *pts, "-o", tmp_path / "ens.pt")
    assert r.returncode == 0, r.stderr
    assert f"ensemble of {len(pts)}" in r.stdout
    r = run_cli("export", tmp_path / "ens.pt")
    assert r.returncode == 0, r.stderr
    assert "parity max error" in r.stdout

    x = np.random.default_rng(3).standard_normal((40, 6)).astype(np.float32) * 2
    rt, whole, steps, s = stream_all(tmp_path / "ens.onnx", x)
    members = [stream_all(pt.with_suffix(".onnx"), x)[1] for pt in pts]
    expected = np.mean([softmax_log(y) for y in members], axis=0)
    np.testing.assert_allclose(whole, expected, atol=2e-5)
    np.testing.assert_allclose(steps, whole, atol=2e-5)
    # One contract state pair per kind, the members' layers stacked; the metadata names the members.
    shapes = {k: v.shape for k, v in s.get_state().items()}
    want = {"h0": (sum(layers), 1, 16)} | ({"c0": (sum(layers), 1, 16)} if cell == "lstm" else {})
    assert shapes == want
    assert rt.meta["output"]["labels"] == LABELS and rt.meta["frontend"] == FRONTEND
    assert [m["spec"]["layers"] for m in rt.meta["ensemble"]["members"]] == list(layers)
    assert rt.meta["ensemble"]["combine"] == "geometric"

    r = run_cli("verify", tmp_path / "ens.pt", tmp_path / "ens.onnx")
    assert r.returncode == 0, r.stderr
    r = run_cli("verify", pts[0], tmp_path / "ens.onnx")  # a member is not the ensemble
    assert r.returncode != 0
    r = run_cli("info", tmp_path / "ens.onnx")
    assert r.returncode == 0 and f"an ensemble of {len(pts)}" in r.stdout, r.stdout + r.stderr
    info = json.loads(run_cli("info", tmp_path / "ens.pt", "--json").stdout)
    assert [m["spec"]["layers"] for m in info["ensemble"]["members"]] == list(layers)


def test_ensemble_of_one_model_is_the_model(tmp_path):
    """Two copies of one member vote exactly as the member: nothing is lost in the combining."""
    pt = member(tmp_path, "a", seed=1)
    assert run_cli("export", pt).returncode == 0
    assert run_cli("ensemble", pt, pt, "-o", tmp_path / "aa.pt").returncode == 0
    assert run_cli("export", tmp_path / "aa.pt").returncode == 0
    x = np.random.default_rng(0).standard_normal((25, 6)).astype(np.float32)
    _, y2, _, _ = stream_all(tmp_path / "aa.onnx", x)
    _, y1, _, _ = stream_all(tmp_path / "a.onnx", x)
    np.testing.assert_allclose(y2, softmax_log(y1), atol=2e-5)
    assert (y2.argmax(-1) == y1.argmax(-1)).all()


@pytest.mark.parametrize("other,words", [
    ({"labels": ["_silence_", "yes", "up", "no"]}, "labels"),
    ({"hidden": 24}, "hidden"),
    ({"cell": "lstm"}, "cell"),
    ({"frontend": {**FRONTEND, "mels": 8}}, "front end"),
    ({"task": "regress", "readout": "every"}, "classifiers"),
])
def test_members_that_cannot_vote_together_are_refused_in_one_line(tmp_path, other, words):
    a = member(tmp_path, "a")
    b = member(tmp_path, "b", seed=1, **other)
    out = tmp_path / "ens.pt"
    r = run_cli("ensemble", a, b, "-o", out)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "expected" in lines[0], r.stderr
    assert not out.exists()


def test_one_member_and_nested_ensembles_are_refused(tmp_path):
    a, b = member(tmp_path, "a"), member(tmp_path, "b", seed=1)
    r = run_cli("ensemble", a, "-o", tmp_path / "one.pt")
    assert r.returncode == 2 and "two or more" in r.stderr and not (tmp_path / "one.pt").exists()
    assert run_cli("ensemble", a, b, "-o", tmp_path / "ab.pt").returncode == 0
    r = run_cli("ensemble", tmp_path / "ab.pt", a, "-o", tmp_path / "nested.pt")
    assert r.returncode == 2 and "not a checkpoint of one model" in r.stderr, r.stderr
    assert not (tmp_path / "nested.pt").exists()
    # An existing output is replaced only by a complete file: a refused run leaves it as it was.
    before = (tmp_path / "ab.pt").read_bytes()
    r = run_cli("ensemble", a, member(tmp_path, "c", hidden=8), "-o", tmp_path / "ab.pt")
    assert r.returncode == 2 and (tmp_path / "ab.pt").read_bytes() == before


def test_an_ensemble_cannot_seed_training(tmp_path):
    a, b = member(tmp_path, "a"), member(tmp_path, "b", seed=1)
    assert run_cli("ensemble", a, b, "-o", tmp_path / "ab.pt").returncode == 0
    r = run_cli("train", "--task", "forecast", "--steps", "1", "--init", tmp_path / "ab.pt", "-o", tmp_path / "t.pt")
    assert r.returncode == 2 and "--init" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "t.pt").exists()
