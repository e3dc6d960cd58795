"""Long runs, in small: memory stays flat, latency does not drift, outputs stay finite, and a stream
restarted from a saved state continues exactly. The full size (a million calls) is
`python tools/soak.py`; these run the same code for a few seconds."""

import importlib.util
import json
import subprocess
import sys
import tracemalloc

import pytest

from conftest import NO_TORCH, ROOT
from edgernn.runtime import Runtime

_spec = importlib.util.spec_from_file_location("soak", ROOT / "tools" / "soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

# Per-call medians on a busy 2-core machine wander; a leak or a growing structure drifts far more.
DRIFT = 3.0
PY_LEAK_BYTES = 64 * 1024  # Python-level growth allowed over a traced run (a leak of ~20 B/call fails)


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    pytest.importorskip("torch")
    import torch

    from edgernn.export import graph as export_mod
    from edgernn.core import meta
    from edgernn.train.models import RNNModel
    from edgernn.core.spec import ModelSpec

    torch.manual_seed(0)
    model = RNNModel(ModelSpec(cell="lstm", features=3, hidden=8, layers=2, outputs=2)).eval()
    path = tmp_path_factory.mktemp("soak") / "m.onnx"
    path.write_bytes(export_mod.build(model, meta.build(model.spec, export={})).SerializeToString())
    return Runtime(path)


def test_step_soak(rt, tmp_path):
    r = soak.soak_step(rt, 30_000, streams=8, warmup=2000, churn=97, workdir=tmp_path)
    assert r["rss_growth_mb"] < 5.0, soak.render([r])
    assert r["drift"] < DRIFT, soak.render([r])
    assert r["nonfinite_windows"] == 0
    rs = r["restart"]
    assert rs["compared"] >= 1000 and rs["exact"] and rs["steps_restored"], rs


def test_batch_soak_with_streams_opening_and_closing(rt):
    r = soak.soak_batch(rt, 5000, streams=16, warmup=200, churn=13)
    assert r["rss_growth_mb"] < 5.0, soak.render([r])
    assert r["drift"] < DRIFT, soak.render([r])
    assert r["nonfinite_windows"] == 0 and r["stream_steps"] > 5000 * 8
    rs = r["restart"]
    assert rs["compared"] == 1000 and rs["max_abs_diff"] <= 1e-5, rs


@pytest.mark.parametrize("path", ["step", "batch"])
def test_no_python_memory_creeps(rt, tmp_path, path):
    """Resident memory is too coarse for a short run; traced Python allocations are exact."""
    tracemalloc.start()
    try:
        if path == "step":
            r = soak.soak_step(rt, 4000, streams=4, warmup=500, churn=97, workdir=tmp_path)
        else:
            r = soak.soak_batch(rt, 1500, streams=8, warmup=100, churn=13)
    finally:
        tracemalloc.stop()
    assert r["py_growth_bytes"] < PY_LEAK_BYTES, r["py_growth_bytes"]


def test_a_planted_leak_is_caught(rt, tmp_path):
    """The measure above is sharp enough: keeping every output (a typical leak) fails it."""
    tracemalloc.start()
    try:
        r = soak.soak_step(rt, 4000, streams=4, warmup=500, workdir=tmp_path, leak=[])
    finally:
        tracemalloc.stop()
    assert r["py_growth_bytes"] > PY_LEAK_BYTES, r["py_growth_bytes"]


def test_soak_tool_runs_torch_free_and_reports(rt, tmp_path):
    out = tmp_path / "soak.json"
    tool = str(ROOT / "tools" / "soak.py")
    code = NO_TORCH + (f"import runpy\nsys.argv = [{tool!r}] + sys.argv[1:]\n"
                       f"runpy.run_path({tool!r}, run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code, "--model", str(rt.path), "--steps", "3000", "--streams", "4",
                        "--warmup", "200", "--max-drift", "5", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    d = json.loads(out.read_text())
    assert d["ok"] and [x["path"] for x in d["results"]] == ["step", "batch"]
    assert all(len(x["windows"]) == 10 for x in d["results"])
    assert "median µs" in r.stdout and "restart exact" in r.stdout
