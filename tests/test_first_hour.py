"""A newcomer's first hour: every slip gets one clear line (exit 2), nothing half-written.

The torch-free checks run in a REAL virtual environment made here with `pip install -e .` only
(numpy, onnxruntime, click): the edge install the README advertises, where importing torch fails
the way it fails on a user's machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest

from conftest import ROOT, run_cli

torch = pytest.importorskip("torch")


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


# -- 1. the torch-free install -------------------------------------------------------------------

@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory):
    """`python -m venv` + `pip install -e .` (no extras): the edge install."""
    venv = tmp_path_factory.mktemp("edge") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-e", str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"the edge install failed: {r.stderr[-2000:]}"
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0, "torch is importable in the edge venv; the test would prove nothing"
    return venv


def _edge(venv, *args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "edgernn"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_edge_install_commands_that_need_torch_say_so_in_one_line(edge_venv, tmp_path):
    out = tmp_path / "run.pt"
    for args in (["train", "--task", "forecast", "-o", out], ["export", ROOT / "models/kws.pt", "-o", tmp_path / "k.onnx"],
                 ["verify", ROOT / "models/kws.pt", ROOT / "models/kws.onnx"], ["info", ROOT / "models/kws.pt"]):
        r = _edge(edge_venv, *args)
        _one_line_error(r, "torch", "pip install 'edgernn[train]'")
    assert not out.exists() and not (tmp_path / "k.onnx").exists()


def test_edge_install_runs_models(edge_venv):
    r = _edge(edge_venv, "info", ROOT / "models/kws.onnx")
    assert r.returncode == 0 and "labels" in r.stdout, r.stderr
    r = _edge(edge_venv, "stream", "--model", ROOT / "models/kws.onnx", "--input", ROOT / "models/samples/go.wav",
              "--events")
    assert r.returncode == 0 and '"go"' in r.stdout, (r.stdout, r.stderr)


# -- 2. a plain RNN's nonlinearity is never assumed silently ------------------------------------

def test_a_relu_rnn_state_dict_is_not_exported_as_tanh_silently(tmp_path):
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 8, nonlinearity="relu", batch_first=True)
    pt = tmp_path / "relu.pt"
    torch.save({f"rnn.{k}": v for k, v in rnn.state_dict().items()}, pt)
    r = run_cli("export", pt, "-o", tmp_path / "assumed.onnx")
    assert r.returncode == 0 and "warning:" in r.stderr and "assumed tanh" in r.stderr, r.stderr
    r = run_cli("export", pt, "-o", tmp_path / "relu.onnx", "--nonlinearity", "relu")
    assert r.returncode == 0 and "assumed" not in r.stderr, r.stderr
    x = torch.randn(1, 20, 3)
    from edgernn.runtime import Runtime

    y = Runtime(tmp_path / "relu.onnx").offline(x[0].numpy())
    np.testing.assert_allclose(y, rnn(x)[0][0].detach().numpy(), atol=1e-5)
    r = run_cli("verify", pt, tmp_path / "relu.onnx")  # the file says relu: verify takes it from there
    assert r.returncode == 0 and "assumed" not in r.stderr, r.stderr


# -- 3. the shipped seq2seq checkpoint ----------------------------------------------------------

def test_info_describes_the_shipped_seq2seq_checkpoint():
    r = run_cli("info", ROOT / "models/dates.pt")
    assert r.returncode == 0, r.stderr
    assert "seq2seq checkpoint" in r.stdout and "encoder" in r.stdout and "decoder" in r.stdout
    d = json.loads(run_cli("info", ROOT / "models/dates.pt", "--json").stdout)
    assert set(d["halves"]) == {"encoder", "decoder"} and d["tokens"] > 10


@pytest.mark.parametrize("half", ["encoder", "decoder"])
def test_verify_takes_the_shipped_seq2seq_checkpoint(half):
    r = run_cli("verify", ROOT / "models/dates.pt", ROOT / f"models/dates.{half}.onnx")
    assert r.returncode == 0, r.stderr
    assert f"{half} parity ok" in r.stdout


# -- 4. hints for the common slips --------------------------------------------------------------

def test_a_checkpoint_given_as_model_says_run_export():
    for args in (["stream", "--model", ROOT / "models/kws.pt", "--input", ROOT / "models/samples/go.wav"],
                 ["bench", "--model", ROOT / "models/kws.pt", "--steps", "5", "--rounds", "1"]):
        _one_line_error(run_cli(*args), "PyTorch checkpoint", "edgernn export")


@pytest.fixture
def one_feature(tiny_export):
    return tiny_export(features=1, outputs=1)[2]


def test_a_csv_with_a_header_and_no_column_names_the_columns(tmp_path, one_feature):
    csv = tmp_path / "h.csv"
    csv.write_text("year,value,other\n1,2,3\n2,3,4\n")
    err = _one_line_error(run_cli("stream", "--model", one_feature, "--input", csv), "--column")
    assert "year, value, other" in err and "1 value a frame" in err


def test_a_checkpoint_dict_wrapping_the_state_dict_is_taken(tmp_path):
    lstm = torch.nn.LSTM(3, 8, batch_first=True)
    for key in ("state_dict", "model_state_dict", "model"):
        pt = tmp_path / f"{key}.pt"
        torch.save({key: {f"rnn.{k}": v for k, v in lstm.state_dict().items()}, "epoch": 3,
                    "optimizer": {"lr": torch.tensor(0.1)}}, pt)
        r = run_cli("export", pt, "-o", tmp_path / f"{key}.onnx")
        assert r.returncode == 0, (key, r.stderr)
    pt = tmp_path / "two.pt"
    torch.save({"a": lstm.state_dict(), "b": lstm.state_dict()}, pt)
    _one_line_error(run_cli("export", pt), "several state_dicts", "'a'", "'b'")


def test_a_folder_as_input(one_feature):
    _one_line_error(run_cli("stream", "--model", one_feature, "--input", ROOT / "models"), "a folder", "one file")


def test_column_for_an_input_without_columns(tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((4, 40), np.float32))
    for src in (ROOT / "models/samples/go.wav", npy):
        _one_line_error(run_cli("stream", "--model", ROOT / "models/kws.onnx", "--input", src, "--column", "a"),
                        "--column", "no columns")


def test_a_wav_for_a_model_without_a_front_end(one_feature, tiny_export):
    _, _, three = tiny_export(name="three", features=3)
    _one_line_error(run_cli("stream", "--model", three, "--input", ROOT / "models/samples/go.wav"),
                    "no audio front end", "3 values a step", "--window")
    r = run_cli("stream", "--model", one_feature, "--input", ROOT / "models/samples/go.wav")  # raw samples: said
    assert r.returncode == 0 and "warning:" in r.stderr and "no audio front end" in r.stderr, r.stderr


def test_verify_with_another_models_file_is_bad_input_not_parity(tiny_export, tmp_path):
    _, pt, _ = tiny_export(name="a", hidden=8)
    _, _, other = tiny_export(name="b", hidden=6)
    err = _one_line_error(run_cli("verify", pt, other), "another model", "hidden")
    assert "parity" not in err.lower()


def test_counts_agree_with_their_nouns(tmp_path):
    from edgernn.core.errors import InputError
    from edgernn.runtime import sources

    csv = tmp_path / "b.csv"
    csv.write_text("1,2\n3\n")
    with pytest.raises(InputError, match=r"b.csv:2: 1 value; expected 2"):
        sources.read_csv(csv, width=2)
    csv.write_text("1,2\n3,x\n")
    with pytest.raises(InputError, match=r"expected 2 numbers per row"):
        sources.read_csv(csv, width=2)


def test_messages_hold_no_placeholder_letters(tmp_path):
    """A message says the number or the name, never a bare "N" the user must decode."""
    import re

    from edgernn.core.errors import InputError
    from edgernn.runtime import sources

    csv = tmp_path / "c.csv"
    csv.write_text("1\nx\n")
    with pytest.raises(InputError) as e:
        sources.read_csv(csv)
    assert not re.search(r"\bN\b", str(e.value)), e.value
    texts = []
    for path in (ROOT / "edgernn").rglob("*.py"):
        for m in re.finditer(r"(?:Error|warn)\(\s*f?\"([^\"]*)\"", path.read_text()):
            texts.append((path.name, m.group(1)))
    bare = [(p, t) for p, t in texts if re.search(r"(?<![-\w])N(?![\w=])", t)]
    assert not bare, bare


def test_the_nan_refusal_names_the_policy():
    r = run_cli("stream", "--model", ROOT / "models/kws.onnx", "--input", "-",
                stdin=" ".join(["nan"] + ["0"] * 39) + "\n")
    _one_line_error(r, "NaN", "--nan-policy")


def _all_options():
    from edgernn.cli import main

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")
    return list(walk(main, "edgernn"))


def test_help_texts_end_in_full_stops():
    bad = []
    for path, cmd in _all_options():
        if cmd.help and not cmd.help.strip().splitlines()[0].endswith("."):
            bad.append((path, cmd.help.splitlines()[0]))
        for p in cmd.params:
            if isinstance(p, click.Option) and p.help and not p.help.rstrip().endswith("."):
                bad.append((path, p.opts[0], p.help))
    assert not bad, bad


def test_train_help_states_each_tasks_default_cell():
    from edgernn.train import seq2seq, tasks

    assert tasks.SEQ2SEQ["cell"] == seq2seq.TASK_DEFAULTS["cell"]
    assert tasks.SEQ2SEQ["hidden"] == seq2seq.TASK_DEFAULTS["hidden"]
    text = " ".join(run_cli("train", "--help").stdout.split())
    for task in tasks.NAMES:
        cell = tasks.default_cells()[task]
        assert f"{task} {cell}" in text, (task, cell)
    assert "classify gru" in text  # the one that is not lstm


# -- 6. the forecast recipe -----------------------------------------------------------------------

def test_forecast_keeps_late_weights_and_reports_a_test_split(tmp_path):
    """The default forecast run must not keep the weights of its first validation (overfitting);
    its test score comes from years never used to pick the checkpoint, and beats persistence."""
    m = tmp_path / "m.json"
    r = run_cli("train", "--task", "forecast", "-o", tmp_path / "f.pt", "--metrics-json", m)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(m.read_text())
    assert metrics["best_step"] > 300, metrics
    assert metrics["test"] < 0.7 * metrics["test_baseline"], metrics
    assert "test rmse" in r.stdout
    from edgernn.train import checkpoint

    info = checkpoint.read(tmp_path / "f.pt")["task"]
    assert info["split"] < info["test_from"] < 309
