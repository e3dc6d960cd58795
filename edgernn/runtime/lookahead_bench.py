"""The cost and latency of lookahead streaming against R, measured live. Torch-free.

    rows = sweep(rt, (0, 5, None), chunk=1)   # one row per R: µs and window frames per input frame

`edgernn bench --lookahead R` prints these rows; tools/lookahead_table.py adds the accuracy.
"""

from __future__ import annotations

import math
import time

import numpy as np

from edgernn.runtime.lookahead import Companion, LookaheadStream


def bench(rt, frames, *, lookahead=None, chunk: int = 1, piece: int = 1, frame_ms: float = 10.0,
          companion=None) -> dict:
    """Stream `frames` live (`piece` frames per feed) and measure: microseconds per input frame, window
    frames per input frame (the cost against R), session calls, and the latency in frames and ms."""
    s = LookaheadStream(rt, companion, lookahead=lookahead, chunk=chunk)
    x = np.asarray(frames)
    t = time.perf_counter()
    n = sum(len(s.feed(x[i:i + piece])) for i in range(0, len(x), piece))
    n += len(s.flush())
    seconds = time.perf_counter() - t
    assert n == len(x) == s.emitted, (n, len(x), s.emitted)
    lag = s.latency_frames
    return {"lookahead": None if math.isinf(s.lookahead) else s.lookahead, "chunk": s.chunk, "frames": len(x),
            "us_per_frame": 1e6 * seconds / max(1, len(x)), "window_frames_per_frame": s.window_frames / max(1, len(x)),
            "calls": s.calls, "latency_frames": None if math.isinf(lag) else lag,
            "latency_ms": None if math.isinf(lag) else lag * frame_ms, "frame_ms": frame_ms}


def sweep(rt, lookaheads=(0, 2, 5, 10, 20, None), *, chunk: int = 1, steps: int = 1000, rounds: int = 5,
          frame_ms: float = 10.0, seed: int = 0) -> list[dict]:
    """`bench` at each R over the same random frames, rounds interleaved (a machine that slows down
    mid-run slows every R alike); one row per R with the median microseconds per input frame."""
    sig = rt.signature
    rng = np.random.default_rng(seed)
    vocab = ((rt.meta or {}).get("input") or {}).get("vocab") or 2
    frames = (rng.integers(0, vocab, (steps,) + sig.frame_shape) if np.issubdtype(sig.dtype, np.integer)
              else rng.standard_normal((steps,) + sig.frame_shape)).astype(sig.dtype)
    companion = getattr(rt, "lookahead_companion", None)
    if companion is None and rt.bidirectional and any(r is not None and not math.isinf(r) for r in lookaheads):
        companion = Companion.for_runtime(rt)  # loaded once for every R
    runs = {r: [] for r in lookaheads}
    for _ in range(rounds):
        for r in lookaheads:
            runs[r].append(bench(rt, frames, lookahead=r, chunk=chunk, frame_ms=frame_ms, companion=companion))
    rows = []
    for r, results in runs.items():
        row = dict(results[0], us_per_frame=float(np.median([b["us_per_frame"] for b in results])), rounds=rounds)
        rows.append(row)
    return rows
