"""Shared helpers: tiny models built in the test, exported to a tmp dir, and a torch-free runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"


def run_cli(*args, stdin: str | None = None, torch_free: bool = False, cwd=None, timeout=300, env=None):
    """Run `edgernn ARGS` in a subprocess; with torch_free, torch and onnx cannot be imported."""
    code = (NO_TORCH if torch_free else "") + "from edgernn.cli import main\nmain()\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], input=stdin, capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def run_torch_free(code: str, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def export_tiny(directory, name="m", seed=0, **spec_kwargs):
    """Build, save and export a tiny model into `directory`: returns (model, pt_path, onnx_path)."""
    import torch

    from edgernn.train import checkpoint
    from edgernn.export import graph as export_mod
    from edgernn.train.models import RNNModel
    from edgernn.core.spec import ModelSpec

    torch.manual_seed(seed)
    kw = {"cell": "lstm", "features": 3, "hidden": 8, "outputs": 2, **spec_kwargs}
    model = RNNModel(ModelSpec(**kw)).eval()
    pt = Path(directory) / f"{name}.pt"
    checkpoint.save(pt, model, labels=None)
    loaded = checkpoint.load(pt)
    onnx_path = Path(directory) / f"{name}.onnx"
    onnx_path.write_bytes(export_mod.build(loaded.model, export_mod.metadata_for(loaded, opset=17)).SerializeToString())
    return model, pt, onnx_path


@pytest.fixture
def tiny_export(tmp_path):
    """export_tiny into the test's tmp dir: tiny_export(cell="gru", layers=2) -> (model, pt, onnx)."""
    pytest.importorskip("torch")
    return lambda name="m", seed=0, **kw: export_tiny(tmp_path, name, seed, **kw)


def pytest_configure(config):
    # Tiny models on a 2-core machine: more than one torch thread only adds contention.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
