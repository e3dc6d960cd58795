#!/usr/bin/env python3
"""Soak: a million steps through `Stream.step` and a million `Batch.step` calls, streams coming
and going, in one process. edgernn runs unattended for weeks; this is the check that it can.

    python tools/soak.py                                  # 1,000,000 calls each way, 64 streams
    python tools/soak.py --model m.onnx --steps 200000 --json soak.json
    python tools/soak.py --steps 20000 --streams 16        # a quick smoke run

Without --model it builds a tiny LSTM itself (needs torch; the soak itself is torch-free).

Per path it reports: resident memory after warm-up and its growth to the end (limit 5 MB);
per-call latency (median, p99) in each 10% window and the drift, last window's median over the
first's; outputs that were not finite (must be 0); and restart equality: one stream's state is
taken mid-run (`save_state` to a file for `step`, `get_state` for `batch`), the run goes on, and
a new stream started from that state must produce the same outputs for the same frames.
Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgernn.runtime import Runtime  # noqa: E402

WINDOWS = 10  # latency and memory are reported per 10% of the run
FRAMES = 4096  # distinct frames cycled through (a power of two: the index is a mask)
RESTART = 1000  # outputs compared after a restart from a saved state


def rss_bytes() -> int:
    """Resident set size now (Linux /proc); elsewhere the peak, which can only over-report growth."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _traced() -> int | None:
    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None


def tiny_model(directory) -> Path:
    """A 1-layer LSTM (4 features, hidden 16, 2 outputs), exported by edgernn itself."""
    try:
        import torch

        from edgernn.export import graph as export_mod
        from edgernn.core import meta
        from edgernn.train.models import RNNModel
        from edgernn.core.spec import ModelSpec
    except ImportError as e:
        raise SystemExit(f"error: building the default model needs torch and onnx ({e}); pass --model M.onnx") from e
    torch.manual_seed(0)
    model = RNNModel(ModelSpec(cell="lstm", features=4, hidden=16, outputs=2)).eval()
    proto = export_mod.build(model, meta.build(model.spec, export={"exporter": export_mod.EXPORTER}))
    path = Path(directory) / "soak.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def _frames(rt: Runtime, seed: int) -> np.ndarray:
    sig, rng = rt.signature, np.random.default_rng(seed)
    if not sig.frame_shape:  # a token model: valid token ids
        vocab = int((rt.meta or {}).get("input", {}).get("vocab") or 2)
        return rng.integers(0, vocab, FRAMES).astype(sig.dtype)
    return rng.standard_normal((FRAMES,) + sig.frame_shape).astype(sig.dtype)


class _Meter:
    """Per-call latency, memory at each window's end, and a running sum that NaN/Inf poisons."""

    def __init__(self, steps: int, width: int):
        self.lat = np.zeros(steps, np.int64)
        self.lat.fill(1)  # touch every page now, so that the array is part of the warm-up baseline
        self.acc = np.zeros(width, np.float64)
        self.bounds = [round(steps * k / WINDOWS) for k in range(WINDOWS + 1)]
        self.rss, self.nonfinite = [], 0
        self.base_rss = self.base_traced = None

    def baseline(self) -> None:
        self.base_rss, self.base_traced = rss_bytes(), _traced()

    def window_end(self) -> None:
        if not np.isfinite(self.acc).all():
            self.nonfinite += 1
        self.acc[:] = 0
        self.rss.append(rss_bytes())
        self.end_traced = _traced()

    def report(self, **extra) -> dict:
        windows = []
        for k in range(WINDOWS):
            ns = self.lat[self.bounds[k]:self.bounds[k + 1]]
            windows.append({"window": f"{10 * k}-{10 * (k + 1)}%", "calls": int(len(ns)),
                            "median_us": float(np.median(ns)) / 1e3, "p99_us": float(np.percentile(ns, 99)) / 1e3,
                            "rss_mb": self.rss[k] / 2**20})
        traced = self.end_traced
        return {"windows": windows, "rss_warm_mb": self.base_rss / 2**20,
                "rss_growth_mb": (max(self.rss) - self.base_rss) / 2**20,
                "rss_growth_end_mb": (self.rss[-1] - self.base_rss) / 2**20,
                "py_growth_bytes": None if traced is None else traced - self.base_traced,
                "drift": windows[-1]["median_us"] / windows[0]["median_us"],
                "nonfinite_windows": self.nonfinite, **extra}


def soak_step(rt: Runtime, steps: int, *, streams: int = 64, warmup: int = 2000, churn: int = 997, seed: int = 0,
              workdir=None, leak: list | None = None) -> dict:
    """`steps` Stream.step calls round-robin over a pool of streams; every `churn` calls one stream
    is replaced (by a fresh one, or by one continuing from its state). Stream 0 is the probe: its
    state goes to a file mid-run, and a stream loaded from that file must continue exactly.
    `leak`: a list to append every output to (the test's planted leak)."""
    frames, rng = _frames(rt, seed), np.random.default_rng(seed + 1)
    pool = [rt.stream() for _ in range(max(1, streams))]
    n, mask = len(pool), FRAMES - 1
    out = rt.out_size or 1
    meter = _Meter(steps, out)
    ref = np.zeros((RESTART, out), np.float32)  # the probe's outputs after the snapshot
    mid = (steps // 2) - (steps // 2) % n  # a call of the probe's
    workdir = Path(workdir or tempfile.mkdtemp(prefix="edgernn-soak-"))
    state_file = workdir / "probe.npz"
    for i in range(warmup):
        pool[i % n].step(frames[i & mask])
    pool[0].save_state(state_file)  # first use imports and hashes: part of the warm-up, not growth
    pool = [rt.stream() for _ in range(n)]  # the measured run starts from zero states
    meter.baseline()
    clock, lat, acc = time.perf_counter_ns, meter.lat, meter.acc
    k, probe_steps, recorded = 0, 0, 0
    for w in range(WINDOWS):
        for i in range(meter.bounds[w], meter.bounds[w + 1]):
            s = pool[i % n]
            t0 = clock()
            y = s.step(frames[i & mask])
            lat[i] = clock() - t0
            np.add(acc, y, out=acc)
            if leak is not None:
                leak.append(y.copy())
            if i % n == 0:
                if i == mid:
                    s.save_state(state_file)
                    probe_steps = s.steps
                elif i > mid and recorded < RESTART:
                    ref[recorded] = y
                    recorded += 1
            if i % churn == churn - 1 and n > 1:
                k = 1 + int(rng.integers(n - 1))  # never the probe
                new = rt.stream()
                if rng.random() < 0.5:
                    new.set_state(pool[k].get_state())
                pool[k] = new
        meter.window_end()
    return meter.report(path="step", calls=steps, stream_steps=steps, streams=n,
                        restart=_replay_step(rt, state_file, frames, mid, n, ref[:recorded], probe_steps))


def _replay_step(rt, state_file: Path, frames, mid: int, n: int, ref: np.ndarray, probe_steps: int) -> dict:
    s = rt.stream()
    s.load_state(state_file)
    got = np.stack([s.step(frames[(mid + n * (j + 1)) & (FRAMES - 1)]) for j in range(len(ref))]) if len(ref) else ref
    diff = float(np.max(np.abs(got - ref))) if len(ref) else 0.0
    return {"compared": int(len(ref)), "exact": bool(np.array_equal(got, ref)), "max_abs_diff": diff,
            "steps_restored": bool(probe_steps == s.steps - len(ref))}


def soak_batch(rt: Runtime, steps: int, *, streams: int = 64, warmup: int = 200, churn: int = 97,
               seed: int = 0) -> dict:
    """`steps` Batch.step calls over up to `streams` streams that open and close: every call
    steps all open streams, or (one call in ten) a random subset; every `churn` calls one stream
    closes and another opens, half of them continuing from a state taken earlier. The probe
    (the first stream) has its state taken mid-run; a new stream opened with it must continue
    with the same outputs."""
    frames, rng = _frames(rt, seed), np.random.default_rng(seed + 1)
    n, mask = max(1, streams), FRAMES - 1
    out = rt.out_size or 1
    b = rt.batch()
    for i in range(warmup):
        ids = b.ids or [b.open() for _ in range(n)]
        b.step({sid: frames[(i + sid) & mask] for sid in ids})
    b = rt.batch()
    probe = b.open()
    for _ in range(n - 1):
        b.open()
    meter = _Meter(steps, out)
    ref = np.zeros((RESTART, out), np.float32)
    mid, snap, recorded, stream_steps = steps // 2, None, 0, 0
    meter.baseline()
    clock, lat, acc = time.perf_counter_ns, meter.lat, meter.acc
    for w in range(WINDOWS):
        for i in range(meter.bounds[w], meter.bounds[w + 1]):
            ids = b.ids
            if i % 10 == 9:  # a subset: the gather/scatter path
                ids = [sid for sid in ids if sid == probe or rng.random() < 0.5]
            batch = {sid: frames[(i + sid) & mask] for sid in ids}
            t0 = clock()
            ys = b.step(batch)
            lat[i] = clock() - t0
            stream_steps += len(ys)
            for y in ys.values():
                np.add(acc, y, out=acc)
            if i == mid:
                snap = b.get_state(probe)
            elif i > mid and recorded < RESTART:
                ref[recorded] = ys[probe]
                recorded += 1
            if i % churn == churn - 1:
                others = [sid for sid in b.ids if sid != probe]
                if others:
                    gone = others[int(rng.integers(len(others)))]
                    keep = b.get_state(gone) if rng.random() < 0.5 else None
                    b.close(gone)
                    b.open(keep)
        meter.window_end()
    return meter.report(path="batch", calls=steps, stream_steps=stream_steps, streams=n,
                        restart=_replay_batch(rt, snap, frames, mid, probe, ref[:recorded]))


def _replay_batch(rt, snap, frames, mid: int, probe: int, ref: np.ndarray) -> dict:
    b = rt.batch()
    sid = b.open(snap)
    got = np.stack([b.step({sid: frames[(mid + 1 + j + probe) & (FRAMES - 1)]})[sid] for j in range(len(ref))]) \
        if len(ref) else ref
    diff = float(np.max(np.abs(got - ref))) if len(ref) else 0.0
    # Alone or among 64, a stream's numbers may differ in the last bit (the kernels block by batch).
    return {"compared": int(len(ref)), "exact": bool(np.array_equal(got, ref)), "max_abs_diff": diff,
            "steps_restored": True}


def verdict(r: dict, *, max_growth_mb: float, max_drift: float, tolerance: float = 1e-5) -> list[str]:
    """The checks that failed, as sentences (empty: all held)."""
    bad = []
    if r["rss_growth_mb"] >= max_growth_mb:
        bad.append(f"{r['path']}: resident memory grew {r['rss_growth_mb']:.2f} MB after warm-up "
                   f"(limit {max_growth_mb})")
    if r["drift"] > max_drift:
        bad.append(f"{r['path']}: latency drifted x{r['drift']:.2f} (last/first window median; limit {max_drift})")
    if r["nonfinite_windows"]:
        bad.append(f"{r['path']}: {r['nonfinite_windows']} windows produced NaN/Inf outputs")
    rs = r["restart"]
    if not rs["compared"] or rs["max_abs_diff"] > tolerance or (r["path"] == "step" and not rs["exact"]) \
            or not rs["steps_restored"]:
        bad.append(f"{r['path']}: restart from the saved state differs (max {rs['max_abs_diff']:.3g} over "
                   f"{rs['compared']} outputs)")
    return bad


def render(results: list[dict]) -> str:
    lines = [f"{'path':6s} {'window':>8s} {'calls':>9s} {'median µs':>10s} {'p99 µs':>9s} {'RSS MB':>8s}"]
    for r in results:
        for w in r["windows"]:
            lines.append(f"{r['path']:6s} {w['window']:>8s} {w['calls']:9d} {w['median_us']:10.2f} "
                         f"{w['p99_us']:9.2f} {w['rss_mb']:8.2f}")
    lines.append("")
    for r in results:
        rs = r["restart"]
        restart = "exact" if rs["exact"] else f"max diff {rs['max_abs_diff']:.2g}"
        lines.append(f"{r['path']}: {r['calls']:,} calls ({r['stream_steps']:,} stream-steps, up to {r['streams']} "
                     f"streams); RSS {r['rss_warm_mb']:.1f} MB after warm-up, growth {r['rss_growth_mb']:+.2f} MB "
                     f"(end {r['rss_growth_end_mb']:+.2f}); drift x{r['drift']:.3f}; non-finite windows "
                     f"{r['nonfinite_windows']}; restart {restart} over {rs['compared']} outputs")
    return "\n".join(lines)


def _parse(argv) -> argparse.Namespace:
    class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    p.add_argument("--steps", type=int, default=1_000_000, help="Measured calls per path (after warm-up).")
    p.add_argument("--streams", type=int, default=64, help="Streams in the step pool and the batch.")
    p.add_argument("--model", type=Path, help="The .onnx model (default: a tiny LSTM built here).")
    p.add_argument("--path", choices=["step", "batch", "both"], default="both", help="Which path to soak.")
    p.add_argument("--warmup", type=int, default=5000, help="Calls before the memory baseline is taken.")
    p.add_argument("--max-growth-mb", type=float, default=5.0, help="Resident memory growth allowed after warm-up.")
    p.add_argument("--max-drift", type=float, default=1.5, help="Latency drift allowed (last/first window median).")
    p.add_argument("--seed", type=int, default=0, help="Frames and churn.")
    p.add_argument("--json", type=Path, help="Also write the results as JSON here.")
    a = p.parse_args(argv)
    if a.steps < WINDOWS * 10 or a.streams < 1 or a.warmup < 0:
        p.error(f"--steps {a.steps} --streams {a.streams} --warmup {a.warmup}; expected --steps >= {WINDOWS * 10}, "
                "--streams >= 1, --warmup >= 0")
    return a


def main(argv=None) -> int:
    a = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="edgernn-soak-") as tmp:
        path = a.model or tiny_model(tmp)
        rt = Runtime(path)
        results = []
        t0 = time.perf_counter()
        if a.path in ("step", "both"):
            results.append(soak_step(rt, a.steps, streams=a.streams, warmup=a.warmup, seed=a.seed, workdir=tmp))
        if a.path in ("batch", "both"):
            results.append(soak_batch(rt, a.steps, streams=a.streams, warmup=max(1, a.warmup // 10), seed=a.seed))
        seconds = time.perf_counter() - t0
    failed = [m for r in results for m in verdict(r, max_growth_mb=a.max_growth_mb, max_drift=a.max_drift)]
    print(render(results))
    report = {"model": str(a.model) if a.model else "built-in tiny LSTM (4 features, hidden 16, 2 outputs)",
              "steps": a.steps, "streams": a.streams, "seconds": round(seconds, 1),
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count()},
              "results": results, "failed": failed, "ok": not failed}
    text = json.dumps(report, indent=2)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)
    for m in failed:
        print(f"FAILED: {m}", file=sys.stderr)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
