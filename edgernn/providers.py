"""Execution providers: what the user asked for, what this machine has, and visible fallback."""

from __future__ import annotations

import warnings

import onnxruntime as ort

from edgernn.errors import InputError, ProviderError

NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def available() -> list[str]:
    """Short names of the providers this onnxruntime build offers."""
    have = set(ort.get_available_providers())
    return [short for short, full in NAMES.items() if full in have]


def resolve(provider: str, *, strict: bool = False, options: dict | None = None) -> list:
    """The provider list to hand onnxruntime, falling back to CPU with a warning (or refusing)."""
    if provider not in NAMES:
        raise InputError(f"provider {provider!r}; expected one of {', '.join(NAMES)}")
    have = available()
    chain = {"cpu": ["cpu"], "cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"]}[provider]
    if provider not in have:
        msg = (f"provider {provider!r} is not available in this onnxruntime build (available: {', '.join(have)}); "
               + ("install onnxruntime-gpu (pip install 'edgernn[gpu]') or use --provider cpu" if strict
                  else f"running on {[p for p in chain if p in have][0]} instead"))
        if strict:
            raise ProviderError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    out = []
    for short in chain:
        if short in have:
            opts = (options or {}).get(short)
            out.append((NAMES[short], opts) if opts else NAMES[short])
    return out
