"""fp16 and int8 variants: smaller, checked against fp32, and they stream like the original."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")

from edgernn.runtime import Runtime  # noqa: E402

from conftest import run_cli  # noqa: E402


@pytest.mark.parametrize("cell,precision,used", [("lstm", "int8", "int8"), ("lstm", "fp16", "fp16"),
                                                  ("gru", "int8", "fp16"), ("rnn_tanh", "fp16", "fp16")])
def test_variants(tiny_export, tmp_path, cell, precision, used):
    _, pt, fp32 = tiny_export(cell=cell, layers=2, hidden=32, features=16)
    out = tmp_path / f"{precision}.onnx"
    r = run_cli("export", pt, "-o", out, "--precision", precision)
    assert r.returncode == 0, r.stderr
    assert (used == precision) or "warning: int8" in r.stderr
    rt, ref = Runtime(out), Runtime(fp32)
    p = rt.meta["export"]["precision"]
    assert p["weights"] == used and p["max_err_vs_fp32"] <= p["tolerance"]
    assert out.stat().st_size < 0.7 * fp32.stat().st_size
    x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    s = rt.stream()
    stepped = np.stack([s.step(f) for f in x])
    # fp16 storage computes in fp32: stepping is exact. int8 dynamic quantization scales the
    # activations per call, so a step and a whole sequence differ within the int8 tolerance.
    assert np.max(np.abs(stepped - rt.offline(x))) <= (1e-5 if used == "fp16" else p["tolerance"])
    assert np.max(np.abs(rt.offline(x) - ref.offline(x))) <= p["tolerance"] * max(1, np.abs(ref.offline(x)).max())
