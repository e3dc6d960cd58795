"""The CLI end to end, and its promise on bad input: one line on stderr, exit 2, nothing left behind."""

import json
import pickle

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def forecast_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("forecast")
    r = run_cli("train", "--task", "forecast", "--steps", "60", "--eval-every", "20", "-o", d / "f.pt",
                "--metrics-json", d / "m.json")
    assert r.returncode == 0, r.stderr
    r = run_cli("export", d / "f.pt", "-o", d / "f.onnx")
    assert r.returncode == 0, r.stderr
    assert "parity max error" in r.stdout
    return d


def test_train_writes_checkpoint_and_metrics(forecast_files):
    m = json.loads((forecast_files / "m.json").read_text())
    assert m["task"] == "forecast" and m["metric"] == "rmse" and m["value"] > 0 and m["baseline"] > 0


def test_stream_csv_prints_offline_numbers(forecast_files, tmp_path):
    from edgernn.runtime import Runtime
    from edgernn.runtime.sources import read_csv
    from edgernn.train.tasks import bundled

    csv = bundled("sunspots.csv")
    offline = Runtime(forecast_files / "f.onnx").offline(read_csv(csv, columns=["SUNACTIVITY"]))
    for chunk in ("1", "16"):
        r = run_cli("stream", "--model", forecast_files / "f.onnx", "--input", csv, "--column", "SUNACTIVITY",
                    "--chunk", chunk, torch_free=True)
        assert r.returncode == 0, r.stderr
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        assert [d["t"] for d in lines] == list(range(len(offline)))
        got = np.array([d["y"] for d in lines], dtype=np.float32)
        assert np.max(np.abs(got - offline)) <= 1e-5 * max(1, np.abs(offline).max())


def test_stream_stdin_csv_and_text_formats(forecast_files):
    r = run_cli("stream", "--model", forecast_files / "f.onnx", "--input", "-", "--format", "csv",
                stdin="5\n11\n\n16\n", torch_free=True)
    assert r.returncode == 0, r.stderr
    rows = r.stdout.strip().splitlines()
    assert rows[0] == "t,y0" and len(rows) == 4


def test_info_and_verify(forecast_files):
    r = run_cli("info", forecast_files / "f.onnx", "--json", torch_free=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [s["input"] for s in d["states"]] == ["h0", "c0"] and d["pairing"] == "metadata"
    assert d["metadata"]["export"]["parity"]["max_abs_err"] <= 1e-5
    r = run_cli("verify", forecast_files / "f.pt", forecast_files / "f.onnx")
    assert r.returncode == 0 and "parity ok" in r.stdout


def test_verify_against_other_weights_exits_1(forecast_files, tiny_export):
    """The same shape with other weights: a parity failure (another shape is bad input: test_first_hour)."""
    from edgernn.train import checkpoint

    spec = checkpoint.load(forecast_files / "f.pt").model.spec
    _, _, other = tiny_export(cell=spec.cell, features=1, outputs=1, hidden=spec.hidden, seed=5)
    r = run_cli("verify", forecast_files / "f.pt", other)
    assert r.returncode == 1 and "parity FAILED" in r.stderr


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _one_line_exit_2(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize("content,match", [
    (None, "no such file"),
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(200)), "not a PyTorch file"),
    (b"PK\x03\x04" + bytes(100), "not a readable PyTorch file"),
    (pickle.dumps(Evil()), "refused to unpickle"),
    (pickle.dumps({"a": 1}), "refused to unpickle|neither"),
])
def test_export_bad_pt_files(tmp_path, content, match):
    pt = tmp_path / "bad.pt"
    if content is not None:
        pt.write_bytes(content)
    r = run_cli("export", pt, "-o", tmp_path / "out.onnx")
    line = _one_line_exit_2(r)
    import re
    assert re.search(match, line), line
    assert "pwned" not in r.stdout
    assert not (tmp_path / "out.onnx").exists() and list(tmp_path.iterdir()) == ([pt] if content is not None else [])


def test_export_tensor_dict_that_is_not_a_model(tmp_path):
    import torch

    torch.save({"foo": torch.zeros(3)}, tmp_path / "x.pt")
    line = _one_line_exit_2(run_cli("export", tmp_path / "x.pt"))
    assert "expected exactly one nn.RNN/nn.LSTM/nn.GRU" in line
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("rows,match", [
    ("1,2\n", r"2 values; expected 1"),
    ("1\nabc\n", r"'abc' is not a number"),
])
def test_stream_bad_csv(forecast_files, tmp_path, rows, match):
    csv = tmp_path / "in.csv"
    csv.write_text(rows)
    r = run_cli("stream", "--model", forecast_files / "f.onnx", "--input", csv, torch_free=True)
    import re
    assert re.search(match, _one_line_exit_2(r))
    assert r.stdout == ""  # a file is checked whole before any output


def test_stream_missing_inputs(forecast_files, tmp_path):
    assert "no such file" in _one_line_exit_2(run_cli("stream", "--model", forecast_files / "f.onnx", "--input",
                                                       tmp_path / "nope.csv", torch_free=True))
    assert "no such model file" in _one_line_exit_2(run_cli("stream", "--model", tmp_path / "m.onnx", "--input", "-",
                                                             stdin="", torch_free=True))


def test_train_bad_csv_column(tmp_path):
    line = _one_line_exit_2(run_cli("train", "--task", "forecast", "--csv", tmp_path / "none.csv", "-o", tmp_path / "x.pt"))
    assert "no such file" in line and not (tmp_path / "x.pt").exists()


def test_new_task_bad_inputs_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    line = _one_line_exit_2(run_cli("train", "--task", "classify", "--data", tmp_path / "empty", "-o", tmp_path / "k.pt"))
    assert "empty" in line.lower() or "no class" in line.lower()
    (tmp_path / "short.txt").write_text("hello world")
    line = _one_line_exit_2(run_cli("train", "--task", "charlm", "--text", tmp_path / "short.txt", "-o", tmp_path / "c.pt"))
    assert "shorter than two segments" in line
    data = tmp_path / "kws"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
    import struct
    fmt = struct.pack("<HHIIHH", 0x11, 1, 16000, 8000, 256, 4)  # IMA ADPCM: not PCM
    blob = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 4) + b"\0\0\0\0"
    for label in ("a", "b"):
        for spk in ("spk1", "spk2"):
            (data / label / f"{spk}_nohash_0.wav").write_bytes(b"RIFF" + struct.pack("<I", len(blob)) + blob)
    (data / "validation_list.txt").write_text("a/spk2_nohash_0.wav\nb/spk2_nohash_0.wav\n")
    line = _one_line_exit_2(run_cli("train", "--task", "classify", "--data", data, "-o", tmp_path / "k.pt"))
    assert "not supported" in line and ".wav" in line
    line = _one_line_exit_2(run_cli("train", "--task", "classify", "--data", data, "--phases", "0", "-o", tmp_path / "k.pt"))
    assert "--phases" in line and "0" in line
    assert not (tmp_path / "k.pt").exists() and not (tmp_path / "c.pt").exists()
