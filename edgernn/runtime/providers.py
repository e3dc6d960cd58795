"""Execution providers: what the user asked for, what this machine has, and visible fallback."""

from __future__ import annotations

import warnings

from edgernn.core.errors import InputError, ProviderError

NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def available() -> list[str]:
    """Short names of the providers this onnxruntime build offers."""
    import onnxruntime as ort  # the Python binding: not loaded by CPU-only runtimes

    have = set(ort.get_available_providers())
    return [short for short, full in NAMES.items() if full in have]


def resolve(provider: str, *, strict: bool = False, options: dict | None = None, quiet: bool = False) -> list:
    """The provider list to hand onnxruntime, falling back to CPU with a warning (or refusing)."""
    if provider not in NAMES:
        raise InputError(f"provider {provider!r}; expected one of {', '.join(NAMES)}")
    if provider == "cpu" and not options:
        return [NAMES["cpu"]]
    have = available()
    chain = {"cpu": ["cpu"], "cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"]}[provider]
    if provider not in have:
        msg = (f"provider {provider!r} is not available in this onnxruntime build (available: {', '.join(have)}); "
               + ("install onnxruntime-gpu (pip install 'edgernn[gpu]') or use --provider cpu" if strict
                  else f"running on {[p for p in chain if p in have][0]} instead"))
        if strict:
            raise ProviderError(msg)
        if not quiet:
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
    out = []
    for short in chain:
        if short in have:
            opts = (options or {}).get(short)
            out.append((NAMES[short], opts) if opts else NAMES[short])
    return out


def _shape_list(sig, batch: int, time: int) -> str:
    """TensorRT profile syntax: 'x:1x1x40,h0:2x1x128'."""
    parts = [f"{sig.x}:" + "x".join(map(str, (batch, time) + sig.frame_shape if sig.has_time else (batch,) + sig.frame_shape))]
    for s in sig.states:
        dims = [batch if i == s.batch_axis else d for i, d in enumerate(s.shape)]
        parts.append(f"{s.input}:" + "x".join(map(str, dims)))
    return ",".join(parts)


def default_options(provider: str, sig, *, fp16: bool = False, cache_dir: str | None = None, device_id: int = 0,
                    max_batch: int = 256, max_time: int = 1024) -> dict:
    """Provider options users need, derived from the model's signature.

    TensorRT: explicit min/opt/max profiles that include T=1 (one streaming step) up to a chunk
    of `max_time` frames and `max_batch` streams, an engine cache (the first build can take
    minutes on a Jetson), fp16 when asked (recurrent layers run in FP32/FP16 only, not INT8).
    CUDA: the device; states stay on it between steps through IO binding (see Stream).
    """
    cuda = {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested"}
    if provider == "cuda":
        return {"cuda": cuda}
    if provider != "tensorrt":
        return {}
    trt = {"device_id": device_id, "trt_fp16_enable": bool(fp16),
           "trt_profile_min_shapes": _shape_list(sig, 1, 1),
           "trt_profile_opt_shapes": _shape_list(sig, 1, 1),
           "trt_profile_max_shapes": _shape_list(sig, max_batch, max_time)}
    if cache_dir:
        trt.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir)})
    return {"tensorrt": trt, "cuda": cuda}
