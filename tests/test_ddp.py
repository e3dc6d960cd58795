"""Data-parallel training: 2 processes on CPU (gloo) reach the quality of one."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("torch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(tmp_path, name, launcher):
    args = ["train", "--task", "forecast", "--steps", "150", "--eval-every", "50", "--batch-size", "32", "--threads", "1", "--hidden", "32",
            "-o", tmp_path / f"{name}.pt", "--metrics-json", tmp_path / f"{name}.json"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([*launcher, "-m", "edgernn", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_two_processes_match_one(tmp_path):
    one = _train(tmp_path, "one", [sys.executable])
    two = _train(tmp_path, "two", [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                   "--master-addr", "127.0.0.1", "--master-port", str(_free_port())])
    assert one["processes"] == 1 and two["processes"] == 2
    assert two["value"] < two["baseline"] and one["value"] < one["baseline"]
    assert two["value"] < 1.25 * one["value"]
