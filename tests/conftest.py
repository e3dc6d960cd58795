"""Shared helpers: tiny models built in the test, exported to a tmp dir, and a torch-free runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"


def run_cli(*args, stdin: str | None = None, torch_free: bool = False, cwd=None, timeout=300):
    """Run `edgernn ARGS` in a subprocess; with torch_free, torch and onnx cannot be imported."""
    code = (NO_TORCH if torch_free else "") + "from edgernn.cli import main\nmain()\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], input=stdin, capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def run_torch_free(code: str, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


@pytest.fixture
def tiny_export(tmp_path):
    """Build, save and export a tiny model: returns (model, pt_path, onnx_path)."""
    torch = pytest.importorskip("torch")
    from edgernn import checkpoint
    from edgernn import export as export_mod
    from edgernn.models import RNNModel
    from edgernn.spec import ModelSpec

    def make(name="m", seed=0, **spec_kwargs):
        torch.manual_seed(seed)
        kw = {"cell": "lstm", "features": 3, "hidden": 8, "outputs": 2, **spec_kwargs}
        model = RNNModel(ModelSpec(**kw)).eval()
        pt = tmp_path / f"{name}.pt"
        checkpoint.save(pt, model, labels=None)
        loaded = checkpoint.load(pt)
        meta = export_mod.metadata_for(loaded, opset=17)
        proto = export_mod.build(loaded.model, meta)
        onnx_path = tmp_path / f"{name}.onnx"
        onnx_path.write_bytes(proto.SerializeToString())
        return model, pt, onnx_path
    return make


def pytest_configure(config):
    # Tiny models on a 2-core machine: more than one torch thread only adds contention.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
