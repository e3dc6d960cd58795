"""Stream a bidirectional model with bounded lookahead: error against offline, latency and cost vs R.

    python tools/lookahead_table.py [--out DIR] [--steps 500] [--chunk 1] [--train-lookahead 5] [--from-scratch]

The task (built here, synthetic, many-to-many, where the future matters): each frame carries two
N(0, 1) features and is labelled y_t = tanh(sum_{j=-4..4} w_j . x_{t+j}) for fixed random w, so
the label reads 4 frames of past and 4 of future. Metric: MSE on 64 held-out sequences of 200
frames; baseline: always predicting the mean (the label's variance).

1. Model A, a 2-layer bidirectional LSTM (hidden 32), is trained offline, exported (main file
   + NAME.lookahead.onnx), and streamed through the torch-free runtime, one frame per feed, at
   R in {0, 2, 5, 10, 20, inf}: error against the offline model, the task metric, the latency
   (C+R-1 frames; 10 ms frames assumed) and the measured cost per input frame.
2. Model B, the same architecture, is trained with the chunked rule at R = --train-lookahead
   (edgernn.train.chunked.chunked_forward as the training forward) and streamed at that R: its
   streamed metric equals its own chunked evaluation (no loss of accuracy). It starts from model
   A's weights (fine-tuning an offline model for its latency, --steps more updates), or with
   --from-scratch from a fresh initialisation; the control is model A given as many more
   updates offline (or model A itself, from scratch), evaluated at the same R.

Writes DIR/table.md and DIR/table.json, prints the table; progress goes to stderr. About 2
minutes on 2 shared cores (torch uses one thread); exit status 1 if the streamed chunked model
differs from its PyTorch evaluation by more than 1e-5.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOOKAHEADS = (0, 2, 5, 10, 20, None)
K = 4  # frames of past and of future the label reads
FRAME_MS = 10.0


class FutureWindowTask:
    """y_t = tanh(sum_{j=-K..K} w_j . x_{t+j}), zero-padded at the ends; x_t ~ N(0, I_2)."""

    def __init__(self, *, seed: int = 0, val_size: int = 64, val_len: int = 200):
        w = np.random.default_rng(1234).standard_normal((2 * K + 1, 2))
        self.w = (1.5 * w / np.sqrt((w ** 2).sum())).astype(np.float32)  # pre-activation std 1.5
        self.val = self.batch(np.random.default_rng(10_000 + seed), val_size, val_len)

    def batch(self, rng: np.random.Generator, n: int, length: int = 64):
        x = rng.standard_normal((n, length, 2)).astype(np.float32)
        pad = np.pad(x, ((0, 0), (K, K), (0, 0)))
        pre = sum(pad[:, j:j + length] @ self.w[j] for j in range(2 * K + 1))  # (N, L)
        return x, np.tanh(pre)[..., None].astype(np.float32)

    def mse(self, pred: np.ndarray) -> float:
        return float(np.mean((pred - self.val[1]) ** 2))


def _fit(task, *, steps: int, seed: int, chunk: int, lookahead, say, init=None):
    """Adam with cosine decay and gradient clipping; the chunked rule as the forward when lookahead is set.
    init: a state_dict to start from (fine-tuning an offline model for its streaming latency)."""
    import torch

    from edgernn.train import chunked
    from edgernn.train.models import RNNModel
    from edgernn.core.spec import ModelSpec

    torch.manual_seed(seed)
    model = RNNModel(ModelSpec(cell="lstm", features=2, hidden=32, layers=2, bidirectional=True, outputs=1))
    if init is not None:
        model.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=3e-4)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for step in range(1, steps + 1):
        x, y = (torch.from_numpy(a) for a in task.batch(rng, 32))
        if lookahead is None:
            pred = model(x, normalized=True)[0]
        else:
            pred = chunked.chunked_forward(model, x, chunk=chunk, lookahead=lookahead, normalized=True, batched=True)
        loss = torch.nn.functional.mse_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            say(f"  step {step}/{steps}  loss {loss.item():.4g}  {time.time() - t0:.0f}s")
    return model.eval(), time.time() - t0


def _export(model, path: Path) -> None:
    """As `edgernn export` does for a bidirectional model: the main file plus its verified companion."""
    from edgernn.train import checkpoint
    from edgernn.export import companion
    from edgernn.export import graph as export_mod

    pt = path.with_suffix(".pt")
    checkpoint.save(pt, model)
    loaded = checkpoint.load(pt)
    meta = export_mod.metadata_for(loaded, opset=export_mod.DEFAULT_OPSET)
    meta.update(companion.write_companion(loaded.model, meta, path, verify=True))
    path.write_bytes(export_mod.build(loaded.model, meta).SerializeToString())


def _stream_all(rt, x: np.ndarray, *, lookahead, chunk: int) -> np.ndarray:
    """Every validation sequence streamed live, one frame per feed: (N, L, outputs)."""
    from edgernn.runtime.lookahead import LookaheadStream

    out = []
    for seq in x:
        s = LookaheadStream(rt, lookahead=lookahead, chunk=chunk)
        ys = [s.feed(f[None]) for f in seq] + [s.flush()]
        out.append(np.concatenate(ys))
    return np.stack(out)


def _rows(rt, task, *, chunk: int, say) -> list[dict]:
    from edgernn.runtime import lookahead_bench as la

    x = task.val[0]
    offline = np.stack([rt.offline(seq) for seq in x])
    say("  measuring the cost per frame (2000 frames fed one by one, 5 interleaved rounds)")
    costs = {c["lookahead"]: c for c in la.sweep(rt, LOOKAHEADS, chunk=chunk, steps=2000, rounds=5, frame_ms=FRAME_MS)}
    rows = []
    for r in LOOKAHEADS:
        y = _stream_all(rt, x, lookahead=r, chunk=chunk)
        err = np.abs(y - offline)
        cost = costs[r]
        rows.append({"lookahead": r, "chunk": chunk, "max_err": float(err.max()), "mean_err": float(err.mean()),
                     "mse": task.mse(y), **{k: cost[k] for k in ("latency_frames", "latency_ms", "us_per_frame",
                                                                 "window_frames_per_frame", "calls")}})
        say(f"  R={r}: max err {err.max():.3g}, mse {rows[-1]['mse']:.4g}, {cost['us_per_frame']:.0f} us/frame")
    return rows


def _chunked_check(model, rt, task, *, chunk: int, lookahead: int) -> dict:
    """Model B: streamed through the runtime vs its own chunked evaluation in PyTorch."""
    import torch

    from edgernn.train import chunked

    x = task.val[0]
    with torch.no_grad():
        ref = chunked.chunked_forward(model, torch.from_numpy(x), chunk=chunk, lookahead=lookahead).numpy()
        offline = model(torch.from_numpy(x))[0].numpy()
    y = _stream_all(rt, x, lookahead=lookahead, chunk=chunk)
    return {"lookahead": lookahead, "chunk": chunk, "mse_chunked_eval": task.mse(ref), "mse_streamed": task.mse(y),
            "max_diff": float(np.abs(y - ref).max()), "mse_offline_rule": task.mse(offline)}


def _control(model, task, *, chunk: int, lookahead: int) -> dict:
    """An offline-trained model with as many updates: its MSE under the rule at R (PyTorch) and offline."""
    import torch

    from edgernn.train import chunked

    x = torch.from_numpy(task.val[0])
    with torch.no_grad():
        at_r = chunked.chunked_forward(model, x, chunk=chunk, lookahead=lookahead).numpy()
        offline = model(x)[0].numpy()
    return {"mse_at_lookahead": task.mse(at_r), "mse_offline": task.mse(offline)}


def _lat(row) -> str:
    if row["latency_frames"] is None:
        return "whole input | whole input"
    return f"{row['latency_frames']} | {row['latency_ms']:.0f}"


def _markdown(table: dict) -> str:
    a, b, base = table["offline_model"], table["chunked_model"], table["baseline_mse"]
    lines = [f"Bidirectional LSTM (2 layers, hidden 32) on a per-frame task reading 4 frames of future; "
             f"chunk C = {a[0]['chunk']}, 10 ms frames; validation MSE baseline {base:.4g}, "
             f"offline model {table['offline_mse']:.4g}.", "",
             "| lookahead R | max abs err vs offline | mean abs err | MSE | latency (frames) | latency (ms) "
             "| window frames / frame | µs / frame |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in a:
        name = "∞" if r["lookahead"] is None else str(r["lookahead"])
        lines.append(f"| {name} | {r['max_err']:.2e} | {r['mean_err']:.2e} | {r['mse']:.4g} | {_lat(r)} "
                     f"| {r['window_frames_per_frame']:.2f} | {r['us_per_frame']:.0f} |")
    same = next(r for r in a if r["lookahead"] == b["lookahead"])
    start = (f"the offline model fine-tuned {b['steps']} more steps" if b["finetuned"]
             else f"from scratch, {b['steps']} steps")
    lines += ["", f"Trained with the chunked rule at R = {b['lookahead']}, C = {b['chunk']} ({start}; "
              "`chunked_forward` as the training forward):", "",
              "| model | evaluation | MSE |", "| --- | --- | --- |",
              f"| chunked-trained | its own chunked evaluation (PyTorch) | {b['mse_chunked_eval']:.4g} |",
              f"| chunked-trained | streamed, R = {b['lookahead']} (runtime) | {b['mse_streamed']:.4g} "
              f"(max diff {b['max_diff']:.1e}) |",
              f"| chunked-trained | full offline bidirectional | {b['mse_offline_rule']:.4g} |",
              f"| offline-trained, as many updates | chunked rule at R = {b['lookahead']} (PyTorch; the runtime "
              f"equals it within 1e-5) | {b['control']['mse_at_lookahead']:.4g} |",
              f"| offline-trained, as many updates | full offline bidirectional | {b['control']['mse_offline']:.4g} |",
              f"| offline-trained (the table above) | streamed, R = {b['lookahead']} (runtime) | {same['mse']:.4g} |", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/lookahead", help="folder for the models and the table")
    p.add_argument("--steps", type=int, default=500, help="training updates of each model")
    p.add_argument("--chunk", type=int, default=1, help="chunk C for the table and the chunked training")
    p.add_argument("--train-lookahead", type=int, default=5, help="R the chunked model is trained (and streamed) at")
    p.add_argument("--from-scratch", action="store_true", help="train the chunked model from a fresh initialisation "
                   "instead of fine-tuning the offline one")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lookahead-models-") as scratch:  # only the tables go to --out
        return _measure(args, out, Path(scratch))


def _measure(args, out: Path, models: Path) -> int:
    from edgernn.runtime import Runtime

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    task = FutureWindowTask(seed=args.seed)
    say("model A: offline training")
    a, secs_a = _fit(task, steps=args.steps, seed=args.seed, chunk=args.chunk, lookahead=None, say=say)
    _export(a, models / "offline.onnx")
    rt_a = Runtime(models / "offline.onnx")
    offline_mse = task.mse(np.stack([rt_a.offline(s) for s in task.val[0]]))
    rows = _rows(rt_a, task, chunk=args.chunk, say=say)
    say(f"model B: chunked training at R={args.train_lookahead}, C={args.chunk}"
        + ("" if args.from_scratch else ", from model A's weights"))
    b, secs_b = _fit(task, steps=args.steps, seed=args.seed, chunk=args.chunk, lookahead=args.train_lookahead, say=say,
                     init=None if args.from_scratch else a.state_dict())
    _export(b, models / "chunked.onnx")
    check = _chunked_check(b, Runtime(models / "chunked.onnx"), task, chunk=args.chunk, lookahead=args.train_lookahead)
    if args.from_scratch:
        control = a
    else:  # the fair comparison: as many updates, without the chunked rule
        say("control: model A trained as many more steps offline")
        control, _ = _fit(task, steps=args.steps, seed=args.seed, chunk=args.chunk, lookahead=None, say=say,
                          init=a.state_dict())
    check["control"] = _control(control, task, chunk=args.chunk, lookahead=args.train_lookahead)
    table = {"task": "future-window (y_t reads x_{t-4..t+4})", "frame_ms": FRAME_MS,
             "baseline_mse": float(np.var(task.val[1])), "offline_mse": offline_mse, "offline_model": rows,
             "chunked_model": dict(check, finetuned=not args.from_scratch, steps=args.steps),
             "train_seconds": {"offline": round(secs_a, 1), "chunked": round(secs_b, 1)}}
    (out / "table.json").write_text(json.dumps(table, indent=2, default=lambda v: None if v == math.inf else v) + "\n")
    md = _markdown(table)
    (out / "table.md").write_text(md)
    print(md, end="")
    return 0 if check["max_diff"] <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
