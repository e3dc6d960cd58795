#!/usr/bin/env python3
"""edgernn against what users would pick instead, measured in ONE process, rounds interleaved.

    python tools/bench.py                      # the reference model: LSTM 2x128, 40 features
    python tools/bench.py --small              # a quick smoke run (CI)
    python tools/bench.py --out bench/         # table.md, bench.json, streams.png

Contenders, per step of one stream: edgernn `Stream.step`; a hand-written onnxruntime loop on
the same file; the onnxruntime call floor (a graph with the same inputs and outputs and no
work); PyTorch eager stepping the same weights; OpenVINO with the model made stateful (skipped
with a reason when openvino is absent); the fp16 and int8 variants through edgernn. Many
streams: `Batch.step` at 16/256/1,024 streams vs one raw batched session call. Then memory and
start-up of a runtime-only process against a bare onnxruntime process, in subprocesses.
Ratios are the claims; absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgernn.runtime import bench# noqa: E402
from edgernn.runtime import Runtime  # noqa: E402


def build_model(d: Path, *, hidden: int, layers: int, features: int, outputs: int) -> tuple:
    import torch

    from edgernn.export import graph as export_mod
    from edgernn.core import meta
    from edgernn.export import precision as prec
    from edgernn.train.models import RNNModel
    from edgernn.core.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(cell="lstm", features=features, hidden=hidden, layers=layers, outputs=outputs, task="classify")
    model = RNNModel(spec).eval()
    proto = export_mod.build(model, meta.build(spec, export={"exporter": export_mod.EXPORTER}))
    paths = {"fp32": d / "m.onnx"}
    paths["fp32"].write_bytes(proto.SerializeToString())
    for p in ("fp16", "int8"):
        paths[p] = d / f"m.{p}.onnx"
        paths[p].write_bytes(prec.convert(proto, p, "lstm")[0].SerializeToString())
    return model, paths


def torch_loop(model, frames):
    """What a PyTorch user steps: the bare nn.LSTM and nn.Linear (no normalisation ops, which
    edgernn's own module adds and which would make eager PyTorch look slower than it is)."""
    import torch

    torch.set_num_threads(1)
    xs = torch.from_numpy(frames)
    rnn, head = model.rnn, model.head

    def run():
        state = None
        with torch.no_grad():
            for f in xs:
                out, state = rnn(f.view(1, 1, -1), state)
                head(out)
    return run


def openvino_loop(path, frames, spec_shape):
    import openvino as ov
    from openvino._offline_transformations import apply_make_stateful_transformation

    core = ov.Core()
    m = core.read_model(str(path))
    layers, hidden = spec_shape
    m.reshape({"x": [1, 1, frames.shape[1]], "h0": [layers, 1, hidden], "c0": [layers, 1, hidden]})
    apply_make_stateful_transformation(m, {"h0": "hn", "c0": "cn"})
    compiled = core.compile_model(m, "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                             "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()

    def run():
        for s in req.query_state():
            s.reset()
        for f in frames:
            req.infer({"x": f.reshape(1, 1, -1)})
    return run


_PROBE = r"""
import time, sys
t0 = time.perf_counter()
import numpy as np
MODE, PATH, F = sys.argv[1], sys.argv[2], int(sys.argv[3])
if MODE == "edgernn":
    sys.modules["torch"] = None
    from edgernn.runtime import Runtime
    s = Runtime(PATH).stream(); s.step(np.zeros(F, np.float32))
else:
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = 1
    sess = ort.InferenceSession(PATH, o, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([1 if not isinstance(d, int) else d for d in i.shape], np.float32) for i in sess.get_inputs()}
    sess.run(None, feed)
t1 = time.perf_counter()
rss = int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1])
print(rss, t1 - t0)
"""


def footprint(path, features: int, repeats: int = 5) -> dict:
    """Resident memory and start-up (import + session + first step) of each kind of process."""
    out = {}
    root = str(Path(__file__).resolve().parents[1])
    for mode in ("onnxruntime", "edgernn", "edgernn EDGERNN_NATIVE=0"):
        env = {"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}
        if mode.endswith("=0"):  # the same runtime on onnxruntime's Python binding
            env["EDGERNN_NATIVE"] = "0"
        rows = []
        for _ in range(repeats):
            r = subprocess.run([sys.executable, "-c", _PROBE, mode.split()[0], str(path), str(features)],
                               capture_output=True, text=True, env=env, check=True)
            kb, sec = r.stdout.split()
            rows.append((int(kb), float(sec)))
        out[mode] = {"rss_mb": float(np.median([r[0] for r in rows])) / 1024, "start_s": float(np.median([r[1] for r in rows]))}
    out["rss_ratio"] = out["edgernn"]["rss_mb"] / out["onnxruntime"]["rss_mb"]
    return out


def plot(path: Path, results: dict, streams: list[int]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    xs = [1] + [n for n in streams if n > 1]
    ours = [results["edgernn step"]["us"]] + [results[f"batch {n} streams"]["us"] for n in xs[1:]]
    raw = [results["onnxruntime loop"]["us"]] + [results[f"raw batched {n}"]["us"] for n in xs[1:]]
    ax.loglog(xs, ours, "o-", label="edgernn (step / Batch.step)")
    ax.loglog(xs, raw, "s--", label="hand-written onnxruntime")
    ax.set_xlabel("streams stepped together")
    ax.set_ylabel("µs per stream-step")
    ax.set_title("LSTM: cost per stream-step vs streams (one thread)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="smoke-test sizes (CI): tiny model, few steps")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--out", type=Path, help="folder for table.md, bench.json, streams.png")
    a = ap.parse_args(argv)
    hidden, layers, features, steps, streams = 128, 2, 40, a.steps, [1, 16, 256, 1024]
    rounds = a.rounds
    if a.small:
        hidden, steps, streams, rounds = 16, 50, [1, 4], 2
    with tempfile.TemporaryDirectory() as tmp:
        model, paths = build_model(Path(tmp), hidden=hidden, layers=layers, features=features, outputs=12)
        rt = Runtime(paths["fp32"])
        frames = np.random.default_rng(0).standard_normal((steps, features)).astype(np.float32)
        sess = bench._session(str(paths["fp32"]))
        floor = bench._session(bench.floor_model(rt))
        c = {"edgernn step": (bench.edgernn_step_loop(rt, frames), steps),
             "onnxruntime loop": (bench.raw_step_loop(sess, rt, frames), steps),
             "onnxruntime floor": (bench.raw_step_loop(floor, rt, frames), steps),
             "edgernn floor": (bench.edgernn_step_loop(bench.floor_runtime(rt, tmp), frames), steps),
             "pytorch eager": (torch_loop(model, frames), steps),
             "edgernn feed chunk=100": (bench.chunk_loop(rt, frames, 100), steps)}
        skipped = {}
        try:
            c["openvino stateful"] = (openvino_loop(paths["fp32"], frames, (layers, hidden)), steps)
        except ImportError as e:
            skipped["openvino stateful"] = f"openvino not installed ({e.name}): pip install openvino"
        for p in ("fp16", "int8"):
            c[f"edgernn step {p}"] = (bench.edgernn_step_loop(Runtime(paths[p]), frames), steps)
        short = frames[: max(10, steps // 20)]
        for n in streams[1:]:
            c[f"batch {n} streams"] = (bench.batch_loop(rt, short, n), len(short) * n)
            c[f"raw batched {n}"] = (bench.raw_batch_loop(sess, rt, short, n), len(short) * n)
        many = streams[-2] if len(streams) > 2 else streams[-1]
        c[f"batch {many} streams int8"] = (bench.batch_loop(Runtime(paths["int8"]), short, many), len(short) * many)
        res = bench.measure(c, rounds=rounds, progress=lambda r, n: print(f"round {r}/{n}", file=sys.stderr))
        foot = footprint(paths["fp32"], features, repeats=2 if a.small else 5)
        sizes = {p: paths[p].stat().st_size for p in paths}
    report = _report(res, foot, sizes, skipped, streams, hidden, layers, features, many)
    print(report["table"])
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "table.md").write_text(report["table"] + "\n")
        (a.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        plot(a.out / "streams.png", res, streams)


def machine() -> str:
    """CPU model, clock and core count from /proc/cpuinfo where there is one."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return f"{platform.machine()}, {os.cpu_count()} cores"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    mhz = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("cpu MHz")), "")
    avx512 = " AVX-512," if " avx512f" in info else ""
    return f"{name or platform.machine()} {float(mhz or 0) / 1000:.1f} GHz,{avx512} {os.cpu_count()} cores"


def _report(res, foot, sizes, skipped, streams, hidden, layers, features, many) -> dict:
    us = {k: v["us"] for k, v in res.items()}

    def r(a, b):
        return bench.ratio(res, a, b)

    ratios = {"step / onnxruntime loop": r("edgernn step", "onnxruntime loop"),
              "step / onnxruntime floor": r("edgernn step", "onnxruntime floor"),
              "step / edgernn floor": r("edgernn step", "edgernn floor"),
              "pytorch eager / step": r("pytorch eager", "edgernn step")}
    if "openvino stateful" in us:
        ratios["openvino stateful / step"] = r("openvino stateful", "edgernn step")
    for n in streams[1:]:
        ratios[f"batch {n} / raw batched {n}"] = r(f"batch {n} streams", f"raw batched {n}")
    # one core stepping `many` streams at 100 frames a second: how many keep up in real time
    capacity = {f"fp32, {many} at a time": 1e6 / (us[f"batch {many} streams"] * 100),
                f"int8, {many} at a time": 1e6 / (us[f"batch {many} streams int8"] * 100)}
    # multiply-adds per stream-step: each LSTM layer's four gates over [input, h], then the head
    flops = 2 * (sum(4 * hidden * ((features if i == 0 else hidden) + hidden) for i in range(layers)) + hidden * 12)
    gflops = flops / (us[f"raw batched {many}"] * 1e3)
    lines = [f"LSTM {layers}x{hidden}, {features} features, one thread; {machine()}; Python "
             f"{platform.python_version()}; medians of interleaved rounds", "",
             "| contender | µs per stream-step |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in us.items()]
    lines += [f"| {k} | skipped: {why} |" for k, why in skipped.items()]
    lines += ["", "| ratio (median of per-round ratios) | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
    lines += ["", "| real-time 100 Hz streams per core | streams |", "| --- | ---: |"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in capacity.items()]
    lines += ["", f"The raw batched call at {many} streams does {flops / 1e3:.0f} kFLOP per stream-step (the "
              f"multiply-adds alone) at {gflops:.0f} GFLOP/s on this core."]
    lines += ["", f"model file: fp32 {sizes['fp32'] / 1024:.0f} KiB, fp16 {sizes['fp16'] / 1024:.0f} KiB, "
              f"int8 {sizes['int8'] / 1024:.0f} KiB",
              f"runtime-only process: {foot['edgernn']['rss_mb']:.1f} MB resident, started in "
              f"{foot['edgernn']['start_s']:.3f} s; bare onnxruntime: {foot['onnxruntime']['rss_mb']:.1f} MB, "
              f"{foot['onnxruntime']['start_s']:.3f} s (ratio {foot['rss_ratio']:.2f}); with EDGERNN_NATIVE=0 "
              f"(Python binding): {foot['edgernn EDGERNN_NATIVE=0']['rss_mb']:.1f} MB, "
              f"{foot['edgernn EDGERNN_NATIVE=0']['start_s']:.3f} s"]
    return {"us": us, "ratios": ratios, "streams_per_core": capacity, "raw_batched_gflops": gflops, "footprint": foot, "sizes": sizes, "skipped": skipped, "table": "\n".join(lines)}


if __name__ == "__main__":
    main()
