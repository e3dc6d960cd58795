"""What the runtime refuses, and the one message for each cause.

Every refusal leaves the state as it was; the messages say so. Stream, Batch and the lookahead
stream all check here, so a cause reads the same whichever of them met it.
"""

from __future__ import annotations

import math
import re

import numpy as np

from edgernn.core.errors import InputError, ModelFileError

NAN_POLICIES = ("raise", "skip", "reset")
"""What a stream does with a frame holding NaN/Inf: refuse it (raise), drop it and keep the state
(skip), or drop it and start again from the zero state (reset). A dropped frame still counts."""


def check_nan_policy(policy: str) -> str:
    if policy not in NAN_POLICIES:
        raise InputError(f"nan_policy={policy!r}; expected one of {', '.join(NAN_POLICIES)}")
    return policy


def nonfinite_frame(where: str) -> InputError:
    """`where`: "frame 12", "streams [3, 5]: frame", "stream 4: frames"."""
    verb = "hold" if where.endswith("frames") else "holds"
    return InputError(f"{where} {verb} NaN or Inf; expected finite numbers, or nan_policy (--nan-policy) skip or "
                      "reset to drop such frames (state unchanged)")


def cannot_step_bidirectional() -> InputError:
    return InputError("this model is bidirectional: it reads the future, so it cannot be stepped; "
                      "run it offline (Runtime.offline / `edgernn stream` without --chunk), or with a "
                      "lookahead (Runtime.stream(lookahead=R))")


SMALL = 24  # up to this many values, a Python sum of the list is cheaper than a numpy reduction


def may_be_nonfinite(v: np.ndarray) -> bool:
    """Cheap screen for NaN/Inf: a reduction that turns any of them into a non-finite number
    (vdot, or a plain sum for tiny arrays). It may also fire on finite values whose sum
    overflows, so a True is confirmed with np.isfinite before anything is refused."""
    if v.size <= SMALL:
        return not math.isfinite(sum(v.ravel().tolist()))
    return not math.isfinite(np.vdot(v, v))


def check_states(state: dict, where: str) -> None:
    """Refuse a new state holding NaN/Inf (the caller keeps the old one): a NaN once in a
    recurrent state poisons every later output. The exact test runs only when the screen fires."""
    for name, v in state.items():
        if may_be_nonfinite(v) and not np.isfinite(v).all():
            raise ModelFileError(f"state {name!r} became non-finite {where}; the model diverged on this input "
                                 "(state unchanged)")


# onnxruntime's messages end in advice ("Please fix either the inputs/outputs or the model.");
# the lines before it name the cause ("Got invalid dimensions for input: h ... Expected: 128").
_ADVICE = re.compile(r"^\s*Please fix", re.I)
_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ")


def cause_line(e: Exception, limit: int = 300) -> str:
    """onnxruntime's message on one line, without its closing advice: the part that says what was wrong."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    lines = [_PREFIX.sub("", ln.strip()) for ln in text.splitlines() if ln.strip() and not _ADVICE.match(ln)]
    line = " ".join(lines) or text.splitlines()[-1].strip()
    return line if len(line) <= limit else line[:limit - 1] + "…"


def run_error(e: Exception) -> ModelFileError:
    """onnxruntime refused a call: one line with its cause; nothing was committed."""
    return ModelFileError(f"onnxruntime refused this input ({cause_line(e)}); expected frames the model accepts "
                          "(state unchanged)")


def check_tokens(rt, x: np.ndarray) -> None:
    vocab = (rt.meta or {}).get("input", {}).get("vocab")
    if vocab and x.size and (x.min() < 0 or x.max() >= vocab):
        bad = int(x[(x < 0) | (x >= vocab)].flat[0])
        raise InputError(f"token id {bad} is outside this model's vocabulary; expected ids 0..{vocab - 1} "
                         "(state unchanged)")


def check_frames(rt, frames) -> np.ndarray:
    """Validate (T, *frame) frames against the model: shape, dtype, token range."""
    sig = rt.signature
    try:
        x = np.asarray(frames, dtype=sig.dtype)
    except (TypeError, ValueError) as e:
        raise InputError(f"frames could not be read as {np.dtype(sig.dtype).name} ({e}); expected numbers") from e
    if sig.frame_open and x.ndim == 2 and x.shape[1]:  # the first frames fix a symbolic size
        rt.set_frame(x.shape[1])
        sig = rt.signature
    if x.ndim == len(sig.frame_shape) and x.ndim >= 1 and x.shape[-1:] == (1,) == sig.frame_shape:
        x = x[:, None]  # a column of scalars for a one-feature model
    if sig.frame_shape == () and x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]  # token ids read one per row
    if x.ndim != 1 + len(sig.frame_shape) or x.shape[1:] != sig.frame_shape:
        raise InputError(f"frames of shape {x.shape}; expected (T, {', '.join(map(str, sig.frame_shape)) or ''})"
                         .replace(", )", ")"))
    if not sig.frame_shape:
        check_tokens(rt, x)
    return x
