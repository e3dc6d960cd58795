"""Faults: a process killed while it writes, interrupted while it streams, or diverging while it trains.

The promises: a state file or checkpoint on disk is always the old one or the new one, never torn;
SIGINT/SIGTERM during `edgernn stream` flush what was computed, save the state and exit like a
shell would (130, 143); a training run killed with SIGKILL and `--resume`d lands on the same
weights as one never interrupted; a diverging loss stops training with one line and the last
good checkpoint kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import NO_TORCH, ROOT

ENV = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")

# Forks once per line that runs inside fileio.write_bytes (and everything it calls), and SIGKILLs
# the child exactly there; after each kill the file must load as the old state or the new one.
KILL_AT_EVERY_LINE = r"""
import json, os, signal, sys
from pathlib import Path
import numpy as np
from edgernn.core import fileio
from edgernn.runtime import statefile
from edgernn.core.errors import EdgeRNNError

mode, path = sys.argv[1], Path(sys.argv[2])
SHA, KILL_AT = "0" * 64, [0]
writer = fileio.write_bytes
if mode == "naive":  # the promise broken on purpose: write straight over the old file
    writer = lambda p, data: Path(p).write_bytes(data)

def killing_write(p, data):
    count = [0]
    def tracer(frame, event, arg):
        if event == "line":
            count[0] += 1
            if count[0] == KILL_AT[0]:
                os.kill(os.getpid(), signal.SIGKILL)
        return tracer
    sys.settrace(tracer)
    try:
        writer(p, data)
    finally:
        sys.settrace(None)
fileio.write_bytes = killing_write

def state(k):
    return {"h0": np.full((1, 1, 8), k, np.float32), "c0": np.full((1, 1, 8), -k, np.float32)}

statefile.save(path, state(1), model_sha256=SHA, steps=1)  # KILL_AT 0: never killed
old = path.read_bytes()
seen = {"old": 0, "new": 0, "torn": 0, "kills": 0, "leftover_tmp": 0}
while True:
    KILL_AT[0] += 1
    pid = os.fork()
    if pid == 0:
        statefile.save(path, state(2), model_sha256=SHA, steps=2)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status)
    seen["kills"] += killed
    try:
        st, header = statefile.load(path, model_sha256=SHA, want=state(0))
        k = header["steps"]
        assert st["h0"].min() == st["h0"].max() == k and st["c0"].min() == st["c0"].max() == -k
        seen[{1: "old", 2: "new"}[k]] += 1
    except (EdgeRNNError, AssertionError, KeyError):
        seen["torn"] += 1
    tmps = [q for q in path.parent.iterdir() if q.name.endswith(".tmp")]
    seen["leftover_tmp"] += len(tmps)
    for q in tmps:
        q.unlink()
    if not killed:
        break
    path.write_bytes(old)
print(json.dumps(seen))
"""


def _kill_at_every_line(tmp_path, mode):
    r = subprocess.run([sys.executable, "-c", NO_TORCH + KILL_AT_EVERY_LINE, mode, str(tmp_path / "s.npz")],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_state_file_is_old_or_new_whatever_line_the_kill_lands_on(tmp_path):
    seen = _kill_at_every_line(tmp_path, "real")
    assert seen["kills"] > 20 and seen["torn"] == 0, seen
    assert seen["old"] > 0 and seen["new"] > 0, seen  # kills landed before and after the switch


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_kill_harness_catches_a_direct_write(tmp_path):
    """With fileio.write_bytes replaced by a plain overwrite, the same harness finds torn files."""
    seen = _kill_at_every_line(tmp_path, "naive")
    assert seen["torn"] > 0, seen


def test_state_files_and_checkpoints_go_through_the_atomic_writer(tiny_export, tmp_path, monkeypatch):
    """No other code path writes them: with the writer failing, the old files stay byte for byte."""
    from edgernn.train import checkpoint
    from edgernn.core import fileio
    from edgernn.runtime import Runtime

    model, pt, onnx_path = tiny_export()
    s = Runtime(onnx_path).stream()
    s.step(np.ones(3, np.float32))
    s.save_state(tmp_path / "s.npz")
    before = {p: p.read_bytes() for p in (pt, tmp_path / "s.npz")}

    class Crash(Exception):
        pass

    def crash(path, data):
        raise Crash(path)

    monkeypatch.setattr(fileio, "write_bytes", crash)
    s.step(np.ones(3, np.float32))
    with pytest.raises(Crash):
        s.save_state(tmp_path / "s.npz")
    with pytest.raises(Crash):
        checkpoint.save(pt, model)
    assert {p: p.read_bytes() for p in before} == before


CHILD_LOOP = r"""
import sys
import numpy as np
from edgernn.runtime import Runtime
model, xs, path = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
s = Runtime(model).stream()
i = 0
while True:
    s.step(xs[i % len(xs)])
    i += 1
    s.save_state(path)
    if i == 1:
        print("ready", flush=True)
"""


def test_sigkill_while_saving_state_leaves_a_state_that_continues_exactly(tiny_export, tmp_path):
    """A real streaming process, saving after every step, killed at random moments (6 times)."""
    from edgernn.runtime import statefile
    from edgernn.runtime import Runtime

    _, _, path = tiny_export(cell="lstm", layers=2)
    xs = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    np.save(tmp_path / "xs.npy", xs)
    rt = Runtime(path)
    rng = np.random.default_rng(1)
    found = []
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", NO_TORCH + CHILD_LOOP, str(path), str(tmp_path / "xs.npy"),
                              str(tmp_path / "s.npz")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        assert p.stdout.readline().strip() == b"ready", p.stderr.read()
        time.sleep(rng.uniform(0.02, 0.25))
        p.kill()
        p.wait()
        state, header = statefile.load(tmp_path / "s.npz", model_sha256=rt.model_sha256, want=rt.zero_state(1))
        ref = rt.stream()
        for i in range(header["steps"]):
            ref.step(xs[i % len(xs)])
        for k, v in ref.get_state().items():
            assert np.array_equal(state[k], v), (header["steps"], k)
        found.append(header["steps"])
        for q in tmp_path.glob(".s.npz*.tmp"):  # a kill mid-write leaves its temporary behind
            q.unlink()
    assert len(set(found)) > 1, found  # the kills landed at different points of the run


# -- SIGINT / SIGTERM during `edgernn stream` ---------------------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_flushes_saves_state_and_exits_like_a_shell(tiny_export, tmp_path, sig, code):
    """Expected: stop reading, run the frames already read (a partial --chunk too), print them,
    save --state-file, exit 128 + signal number, no traceback. The saved state continues exactly."""
    from edgernn.runtime import statefile
    from edgernn.runtime import Runtime

    _, _, path = tiny_export(cell="gru")
    xs = np.random.default_rng(2).standard_normal((6, 3)).astype(np.float32)
    state_file = tmp_path / "s.npz"
    p = subprocess.Popen([sys.executable, "-c", NO_TORCH + "from edgernn.cli import main\nmain()\n", "stream",
                          "--model", str(path), "--input", "-", "--state-file", str(state_file), "--chunk", "4"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    p.stdin.write("".join(" ".join(map(repr, map(float, x))) + "\n" for x in xs))
    p.stdin.flush()  # stdin stays open: the stream is live when the signal comes
    first = [p.stdout.readline() for _ in range(4)]  # the first full chunk has been computed
    time.sleep(0.3)  # the other two frames have been read too
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    lines = [json.loads(x) for x in first + out.splitlines() if x.strip()]
    assert p.returncode == code, (p.returncode, err)
    assert "Traceback" not in err and "Error" not in err, err
    rt = Runtime(path)
    assert [d["t"] for d in lines] == list(range(6))
    assert np.max(np.abs(np.array([d["y"] for d in lines], np.float32) - rt.offline(xs))) <= 1e-5
    state, header = statefile.load(state_file, model_sha256=rt.model_sha256, want=rt.zero_state(1))
    assert header["steps"] == 6
    ref = rt.stream()
    ref.feed(xs)
    assert all(np.max(np.abs(state[k] - v)) <= 1e-6 for k, v in ref.get_state().items())


# -- training ---------------------------------------------------------------------------------------

TRAIN = ["train", "--task", "adding", "--seq-len", "8", "--hidden", "8", "--cell", "gru", "--batch-size", "8"]


def _cli(*args, input=None):
    from click.testing import CliRunner

    from edgernn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def _error_line(r) -> str:
    """Training prints progress lines first; the failure is one last line, no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.stderr, r.stderr
    errors = [x for x in r.stderr.splitlines() if x.startswith("Error")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], r.stderr
    return errors[0]


def _ckpt(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _same_run(a: dict, b: dict) -> None:
    import torch

    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for k in ("value", "best_step", "steps", "baseline"):
        assert a["metrics"][k] == b["metrics"][k], k
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


def test_sigkilled_training_resumes_to_the_same_result(tmp_path):
    pytest.importorskip("torch")
    args = TRAIN + ["--steps", "240", "--eval-every", "20", "--seed", "3"]
    killed = tmp_path / "killed.pt"
    p = subprocess.Popen([sys.executable, "-c", "from edgernn.cli import main\nmain()\n", *args, "-o", str(killed)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 120
    while not killed.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    p.kill()
    p.wait()
    assert killed.exists(), p.stderr.read().decode()[-2000:]
    step = _ckpt(killed)["resume"]["run"]["step"]  # a checkpoint written while training: resumable
    assert 20 <= step < 240, step
    full = tmp_path / "full.pt"
    assert _cli(*args, "-o", full).exit_code == 0
    r = _cli(*args, "--resume", killed, "-o", killed)
    assert r.exit_code == 0, r.output
    _same_run(_ckpt(full), _ckpt(killed))


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from edgernn.train import loop as train_mod

    args = TRAIN + ["--steps", "60", "--eval-every", "10"]
    real, calls = train_mod._loss, [0]

    def nan_at_25(*a, **k):
        calls[0] += 1
        loss, state = real(*a, **k)
        return (loss * float("nan") if calls[0] == 25 else loss), state

    monkeypatch.setattr(train_mod, "_loss", nan_at_25)
    out = tmp_path / "m.pt"
    line = _error_line(_cli(*args, "-o", out))
    assert "loss became nan at step 25" in line and "--lr" in line, line
    kept = _ckpt(out)
    assert kept["resume"]["run"]["step"] == 20
    monkeypatch.setattr(train_mod, "_loss", real)  # the cause gone, the kept checkpoint resumes
    assert _cli(*args, "--resume", out, "-o", out).exit_code == 0
    assert _cli(*args, "-o", tmp_path / "full.pt").exit_code == 0
    _same_run(_ckpt(tmp_path / "full.pt"), _ckpt(out))


@pytest.mark.parametrize("how", ["nan_weights", "huge_lr"])
def test_a_diverged_model_never_replaces_the_last_good_checkpoint(tmp_path, monkeypatch, how):
    """A finite loss can still end in a diverged model: an infinite gradient turns the weights to
    NaN in the update, or a huge --lr makes them enormous. The checkpoint written at a validation
    must be a good one: finite weights and a finite validation metric."""
    torch = pytest.importorskip("torch")
    out = tmp_path / "m.pt"
    if how == "nan_weights":
        real, calls = torch.optim.Adam.step, [0]

        def step(self, *a, **k):
            calls[0] += 1
            res = real(self, *a, **k)
            if calls[0] == 20:  # the update at a validation step overflows
                with torch.no_grad():
                    for group in self.param_groups:
                        for p in group["params"]:
                            p.fill_(float("nan"))
            return res

        monkeypatch.setattr(torch.optim.Adam, "step", step)
        r = _cli(*TRAIN, "--steps", "60", "--eval-every", "10", "-o", out)
    else:
        r = _cli(*TRAIN, "--steps", "20", "--eval-every", "1", "--lr", "1e30", "--clip", "0", "-o", out)
    assert "Error" in _error_line(r)
    if out.exists():
        kept = _ckpt(out)
        assert all(torch.isfinite(v).all() for v in kept["state_dict"].values())
        assert all(np.isfinite(row["val"]) for row in kept["resume"]["run"]["history"])
