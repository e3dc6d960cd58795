"""Speed measured against what users would pick instead, in ONE process, rounds interleaved.

Every contender runs the same frames through the same file; each round times every contender
once, in turn, and the report gives medians over rounds, so a machine that slows down mid-run
slows everyone alike. Ratios, not absolute times, are the claims. Torch-free (tools/bench.py adds
PyTorch eager and OpenVINO).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from edgernn.runtime.native import open_session
from edgernn.runtime.engine import Runtime


def _session(model, threads: int = 1) -> ort.InferenceSession:
    """What a user hand-writes: the onnxruntime Python binding (never edgernn's C API path)."""
    return open_session(model, threads=threads, use_native=False)


def floor_runtime(rt: Runtime, folder, threads: int = 1) -> Runtime:
    """The floor graph opened the way edgernn opens models: edgernn's own step on it is the least
    any step through edgernn's call path can cost (the C API path on the CPU)."""
    path = Path(folder) / "floor.onnx"
    path.write_bytes(floor_model(rt))
    return Runtime(path, threads=threads)


def floor_model(rt: Runtime) -> bytes:
    """An identity-like graph with the model's exact inputs and outputs and no work: the cost of
    one onnxruntime call from Python, the floor any per-step API sits on."""
    from edgernn.core.onnxgraph import identity_graph  # needs the onnx package

    return identity_graph(rt)


def raw_step_loop(sess, rt: Runtime, frames: np.ndarray) -> Callable[[], None]:
    """The loop a user would hand-write with onnxruntime: run, keep the states, repeat."""
    sig = rt.signature
    names = sig.outputs
    shape = rt._x_shape

    def run():
        state = rt.zero_state(1)
        feed = dict(sig.constants)
        for f in frames:
            feed.update(state)
            feed[sig.x] = f.reshape(shape)
            out = sess.run(names, feed)
            state = dict(zip([s.input for s in sig.states], out[1:]))
    return run


def edgernn_step_loop(rt: Runtime, frames: np.ndarray) -> Callable[[], None]:
    def run():
        s = rt.stream()
        step = s.step
        for f in frames:
            step(f)
    return run


def chunk_loop(rt: Runtime, frames: np.ndarray, chunk: int) -> Callable[[], None]:
    def run():
        s = rt.stream()
        for i in range(0, len(frames), chunk):
            s.feed(frames[i:i + chunk])
    return run


def batch_loop(rt: Runtime, frames: np.ndarray, streams: int) -> Callable[[], None]:
    """`streams` streams stepped together through Batch: one call per step for all."""
    def run():
        b = rt.batch()
        ids = [b.open() for _ in range(streams)]
        for f in frames:
            b.step({i: f for i in ids})
    return run


def raw_batch_loop(sess, rt: Runtime, frames: np.ndarray, streams: int) -> Callable[[], None]:
    """The same batched work as one hand-written session call per step on stacked arrays."""
    sig = rt.signature
    names = sig.outputs
    shape = (streams, 1) + sig.frame_shape if sig.has_time else (streams,) + sig.frame_shape

    def run():
        state = rt.zero_state(streams)
        feed = dict(sig.constants)
        for f in frames:
            feed.update(state)
            feed[sig.x] = sig.call_x(np.broadcast_to(f, shape).astype(sig.dtype))  # in the file's own layout
            out = sess.run(names, feed)
            state = dict(zip([s.input for s in sig.states], out[1:]))
    return run


def measure(contenders: dict[str, tuple[Callable[[], None], int]], *, rounds: int = 7,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """{name: (fn, stream_steps per call)} -> {name: median µs per stream-step}, interleaved rounds."""
    times = {k: [] for k in contenders}
    for name, (fn, _) in contenders.items():  # warm-up: allocations, first-run graph work
        fn()
    for r in range(rounds):
        for name, (fn, n) in contenders.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) / n * 1e6)
        if progress:
            progress(r + 1, rounds)
    return {k: {"us": statistics.median(v), "min_us": min(v), "rounds": len(v), "per_round": v} for k, v in times.items()}


def ratio(results: dict, a: str, b: str) -> float:
    """Median over rounds of a's time / b's time in the same round: the two ran seconds apart, so
    a machine that slows down for a while (shared cores) moves both, not the ratio."""
    return statistics.median(x / y for x, y in zip(results[a]["per_round"], results[b]["per_round"]))


def runtime_suite(path, *, steps: int = 1000, streams=(1, 16, 256, 1024), chunk: int = 100, rounds: int = 7,
                  threads: int = 1, progress=None, model: dict | None = None) -> dict:
    """The torch-free comparisons: edgernn step vs raw loop vs floor, chunked, and batched streams.
    model: what a third-party file needs to open (states, constants, layout, frame; see Runtime)."""
    rt = Runtime(path, threads=threads, **(model or {}))
    if rt.bidirectional:
        raise ValueError("bench: a bidirectional model cannot be stepped")
    if rt.signature.frame_open:
        raise ValueError(f"bench: the frame size of {rt.signature.x!r} is symbolic ({rt.signature.frame_symbol!r}); "
                         "expected --frame with the number of values per frame")
    batchable = "b" in rt.signature.layout and all(s.batch_axis >= 0 for s in rt.signature.states)
    rng = np.random.default_rng(0)
    frames = (rng.integers(0, rt.out_size or 2, (steps,) + rt.signature.frame_shape) if rt.signature.dtype == np.int64
              else rng.standard_normal((steps,) + rt.signature.frame_shape)).astype(rt.signature.dtype)
    sess = _session(str(path), threads)
    contenders = {"edgernn step": (edgernn_step_loop(rt, frames), steps),
                  "onnxruntime loop": (raw_step_loop(sess, rt, frames), steps)}
    tmp = tempfile.TemporaryDirectory()
    try:
        floor = _session(floor_model(rt), threads)
        contenders["onnxruntime floor"] = (raw_step_loop(floor, rt, frames), steps)
        contenders["edgernn floor"] = (edgernn_step_loop(floor_runtime(rt, tmp.name, threads), frames), steps)
    except Exception:  # the floor graph needs the onnx package and a graph it can mimic; else it is left out
        pass
    if rt.signature.has_time and chunk > 1:
        contenders[f"edgernn feed chunk={chunk}"] = (chunk_loop(rt, frames, chunk), steps)
    short = frames[: max(10, steps // 10)]
    for n in streams if batchable else ():
        if n > 1:
            contenders[f"batch {n} streams"] = (batch_loop(rt, short, n), len(short) * n)
            contenders[f"raw batched {n}"] = (raw_batch_loop(sess, rt, short, n), len(short) * n)
    with tmp:
        results = measure(contenders, rounds=rounds, progress=progress)
    return {"model": str(path), "steps": steps, "threads": threads, "results": results}
