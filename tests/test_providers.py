"""Providers: a missing accelerator falls back visibly, strict refuses, options fit the model."""


import numpy as np
import pytest

from edgernn.runtime import providers
from edgernn.core.errors import InputError, ProviderError
from edgernn.runtime import Runtime

from conftest import run_cli

needs_cpu_only = pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                                    reason="this machine has CUDA: the fallback path cannot be observed")


@needs_cpu_only
@pytest.mark.parametrize("name", ["cuda", "tensorrt"])
def test_missing_provider_warns_and_runs_on_cpu(tiny_export, name):
    _, _, path = tiny_export()
    with pytest.warns(RuntimeWarning, match=f"provider '{name}' is not available.*running on cpu"):
        rt = Runtime(path, provider=name)
    assert rt.providers == ["CPUExecutionProvider"]
    assert rt.stream().step(np.ones(3)).shape == (2,)


@needs_cpu_only
def test_strict_refuses(tiny_export):
    _, _, path = tiny_export()
    with pytest.raises(ProviderError, match="not available"):
        Runtime(path, provider="cuda", strict=True)
    r = run_cli("stream", "--model", path, "--input", "-", "--provider", "cuda", "--strict-provider", stdin="1 2 3\n",
                torch_free=True)
    assert r.returncode == 2 and "not available" in r.stderr and r.stdout == ""
    r = run_cli("stream", "--model", path, "--input", "-", "--provider", "cuda", stdin="1 2 3\n", torch_free=True)
    assert r.returncode == 0 and "warning: provider 'cuda' is not available" in r.stderr


def test_unknown_provider():
    with pytest.raises(InputError, match="expected one of cpu, cuda, tensorrt"):
        providers.resolve("npu")


def test_tensorrt_options_cover_one_step_and_cache(tiny_export, tmp_path):
    _, _, path = tiny_export(cell="lstm", layers=2)
    sig = Runtime(path).signature
    opts = providers.default_options("tensorrt", sig, fp16=True, cache_dir=tmp_path, max_batch=64, max_time=512)
    trt = opts["tensorrt"]
    assert trt["trt_profile_min_shapes"] == "x:1x1x3,h0:2x1x8,c0:2x1x8"
    assert trt["trt_profile_opt_shapes"] == "x:1x1x3,h0:2x1x8,c0:2x1x8"
    assert trt["trt_profile_max_shapes"] == "x:64x512x3,h0:2x64x8,c0:2x64x8"
    assert trt["trt_fp16_enable"] and trt["trt_engine_cache_enable"] and trt["trt_engine_cache_path"] == str(tmp_path)
    assert "cuda" in opts  # TensorRT falls back op-by-op to CUDA
    assert providers.resolve("cpu") == ["CPUExecutionProvider"]


def test_info_lists_providers(tiny_export):
    _, _, path = tiny_export()
    r = run_cli("info", path, torch_free=True)
    assert "providers available here: cpu" in r.stdout
