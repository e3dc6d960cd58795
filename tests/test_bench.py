"""The benchmarks run (smoke size, no timing asserts): tools/bench.py and `edgernn bench`."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli


def test_edgernn_bench_cli_torch_free(tiny_export):
    _, _, path = tiny_export(cell="lstm")
    r = run_cli("bench", "--model", path, "--streams", "8", "--steps", "30", "--rounds", "2", "--json", torch_free=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    for k in ("edgernn step", "onnxruntime loop", "batch 8 streams", "raw batched 8"):
        assert res[k]["us"] > 0, k


def test_tools_bench_small(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--small", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {"step / onnxruntime loop", "pytorch eager / step"} <= set(report["ratios"])
    assert (tmp_path / "streams.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["footprint"]["rss_ratio"] > 0
