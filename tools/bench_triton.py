#!/usr/bin/env python3
"""Streaming through a real Triton server against local `Batch` streaming, on the same machine.

    python tools/bench_triton.py                         # models/kws.onnx at 1, 8, 64 sequences
    python tools/bench_triton.py --model M.onnx --concurrency 1,8,64 --json out.json

For each number of concurrent sequences N it measures, per step of one sequence:
  perf_analyzer   Triton's own load generator (N concurrent sequences, one gRPC stream each,
                  sequences of --length steps, as fast as they are answered); from the
                  tritonclient 2.50.0 wheel, fetched once into ~/.cache/edgernn/perf_analyzer
                  (skipped with the reason where it cannot be had; --no-perf-analyzer skips it)
  edgernn client  edgernn.serve.client.Remote: N sequences in lockstep over one gRPC stream; a
                  step of all N is sent, then its N answers awaited (a bounded client)
  local Batch     the same N streams in one process: Batch.step of all N per step
Throughput is sequence-steps per second; latency is one step's round trip (p50, p99). The
server is `edgernn serve`'s (nvidia-pytriton's tritonserver, python backend, CPU).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgernn.runtime import Runtime  # noqa: E402
from edgernn.serve import server as server_mod  # noqa: E402
from edgernn.serve import triton  # noqa: E402

PA_CACHE = Path.home() / ".cache" / "edgernn" / "perf_analyzer"
PA_WHEEL = "tritonclient==2.50.0"  # the last wheel that ships perf_analyzer (data/bin)


def perf_analyzer(env) -> tuple[list | None, str]:
    """(command prefix, how it was found) or (None, why not)."""
    found = shutil.which("perf_analyzer")
    if found:
        return [found], f"on PATH: {found}"
    exe = PA_CACHE / "perf_analyzer"
    if not exe.is_file():
        try:
            _fetch_perf_analyzer(env)
        except (OSError, subprocess.CalledProcessError) as e:
            return None, f"perf_analyzer unavailable ({e}); the bounded client only"
    libs = [str(PA_CACHE / "lib"), str(env.libs)]
    return ["env", f"LD_LIBRARY_PATH={os.pathsep.join(libs)}", str(exe)], f"{PA_WHEEL} wheel, in {PA_CACHE}"


def _fetch_perf_analyzer(env) -> None:
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(env.python), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--platform", "manylinux1_x86_64", PA_WHEEL, "-d", tmp], check=True, capture_output=True)
        wheel = next(Path(tmp).glob("tritonclient-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.endswith("data/bin/perf_analyzer"))
            (PA_CACHE / "lib").mkdir(parents=True, exist_ok=True)
            (PA_CACHE / "perf_analyzer").write_bytes(z.read(name))
    (PA_CACHE / "perf_analyzer").chmod(0o755)
    for pattern, soname in (("libb64-*.so*", "libb64.so.0d"), ("libcudart-*.so*", "libcudart.so.12")):
        src = next(env.libs.glob(pattern))  # pytriton's bundled copies, under their hashed names
        link = PA_CACHE / "lib" / soname
        link.unlink(missing_ok=True)
        link.symlink_to(src)


def run_perf_analyzer(cmd, url, name, n, frame, length, seconds) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pa.csv"
        args = [*cmd, "-m", name, "-u", url, "-i", "grpc", "--streaming", "--sequence-length", str(length),
                "--shape", f"x:1,{','.join(map(str, frame))}", "--concurrency-range", f"{n}:{n}",
                "--measurement-interval", str(int(seconds * 1000)), "--max-trials", "5", "-s", "20",
                "--percentile", "99", "-f", str(out)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if r.returncode != 0 or not out.is_file():
            raise RuntimeError(f"perf_analyzer failed ({r.returncode}): {(r.stdout + r.stderr)[-600:]}")
        row = next(csv.DictReader(out.open()))
    return {"steps_per_s": float(row["Inferences/Second"]), "p50_us": float(row["p50 latency"]),
            "p99_us": float(row["p99 latency"])}


def _summary(times: list, n: int) -> dict:
    t = np.asarray(times)
    return {"steps_per_s": n * len(t) / t.sum(), "p50_us": float(np.percentile(t, 50) * 1e6),
            "p99_us": float(np.percentile(t, 99) * 1e6)}


def run_client(url, name, n, frames, seconds) -> dict:
    from edgernn.serve.client import Remote

    times = []
    with Remote(url, name) as r:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            ids = [r.new_id() for _ in range(n)]
            for t in range(len(frames)):
                t0 = time.perf_counter()
                out = r.step({i: frames[t] for i in ids}, end=set(ids) if t == len(frames) - 1 else ())
                times.append(time.perf_counter() - t0)
                bad = [v for v in out.values() if isinstance(v, Exception)]
                if bad:
                    raise RuntimeError(f"the server refused a step: {bad[0]}")
    return _summary(times[len(frames) // 10:], n)  # the first steps warm the connection


def run_local(model, n, frames, seconds) -> dict:
    b = Runtime(model).batch()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        ids = [b.open() for _ in range(n)]
        for f in frames:
            t0 = time.perf_counter()
            b.step({i: f for i in ids})
            times.append(time.perf_counter() - t0)
        for i in ids:
            b.close(i)
    return _summary(times[len(frames) // 10:], n)


def table(rows: list) -> str:
    lines = ["| sequences | contender | steps/s | p50 µs/step | p99 µs/step |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['contender']} | {r['steps_per_s']:,.0f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "kws.onnx"))
    ap.add_argument("--concurrency", default="1,8,64", help="numbers of concurrent sequences")
    ap.add_argument("--length", type=int, default=200, help="steps per sequence")
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per contender and N")
    ap.add_argument("--max-batch", type=int, help="sequences per model call (default: export's, 16)")
    ap.add_argument("--no-perf-analyzer", action="store_true")
    ap.add_argument("--env", help="the serving environment (default: edgernn serve's)")
    ap.add_argument("--json", help="write the rows here too")
    a = ap.parse_args(argv)
    ns = [int(v) for v in a.concurrency.split(",")]
    rt = Runtime(a.model)
    frames = np.random.default_rng(0).standard_normal((a.length, *rt.signature.frame_shape)).astype(np.float32)
    env = server_mod.ensure_env(a.env, log=lambda line: print(f"  {line}", file=sys.stderr))
    pa, how = (None, "skipped (--no-perf-analyzer)") if a.no_perf_analyzer else perf_analyzer(env)
    print(f"perf_analyzer: {how}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        name = triton.write_repository(a.model, repo, backend="python", max_batch_size=a.max_batch).name
        with server_mod.Server(repo, grpc_port=0, http_port=0, metrics_port=0, env=env,
                               log_file=Path(tmp) / "triton.log") as srv:
            for n in ns:
                if pa:
                    rows.append({"n": n, "contender": "Triton, perf_analyzer",
                                 **run_perf_analyzer(pa, srv.grpc_url, name, n, rt.signature.frame_shape, a.length,
                                                     a.seconds)})
                rows.append({"n": n, "contender": "Triton, edgernn client",
                             **run_client(srv.grpc_url, name, n, frames, a.seconds)})
                rows.append({"n": n, "contender": "local Batch", **run_local(a.model, n, frames, a.seconds)})
                print(table(rows[-3 if pa else -2:]).split("\n", 2)[2], file=sys.stderr)
    print(f"{Path(a.model).name}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"sequences of {a.length} steps; Triton 2.51 (nvidia-pytriton), python backend, CPU\n")
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
