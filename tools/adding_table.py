"""Train rnn_tanh, LSTM and GRU on the adding problem at several lengths; tabulate validation MSE.

    python tools/adding_table.py [--lengths 50 100 200] [--cells rnn_tanh lstm gru]
                                 [--steps 2000] [--hidden 64] [--seed 0] [--out DIR] [--reuse]

Each (cell, T) is one `edgernn train --task adding` run, in turn, in a subprocess; it writes
DIR/CELL-T.pt, DIR/CELL-T.json (its metrics) and, where the installed edgernn has
`--grad-report`, DIR/CELL-T-grad.png. Then:

    DIR/table.md, DIR/table.json   final validation MSE, rows = cells, columns = T, with the
                                   baseline (always predicting 1.0 scores MSE ≈ 1/6)
    DIR/grad-compare.png           the cells' end-of-training ‖∂L/∂h_k‖ at the largest T

The table goes to stdout; progress and the runs' own output go to stderr. A run that fails is
marked in the table and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
EDGERNN = [sys.executable, "-m", "edgernn"]  # the edgernn installed beside this interpreter


def main(argv=None) -> int:
    args = _parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grad_flag = _has_grad_report()
    if not grad_flag:
        _say("note: this edgernn's `train` has no --grad-report; writing no per-run gradient plots")
    runs = [(c, t) for t in args.lengths for c in args.cells]
    results, failed = {}, []
    for i, (cell, t) in enumerate(runs, 1):
        _say(f"[{i}/{len(runs)}] {cell} T={t}")
        metrics = _run(out, cell, t, args, grad_flag)
        if metrics is None:
            failed.append(f"{cell}-{t}")
        results[(cell, t)] = metrics
    table = _table(results, args)
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    md = _markdown(table)
    (out / "table.md").write_text(md)
    print(md, end="")
    _grad_compare(out, args)
    if failed:
        _say(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def _parse(argv) -> argparse.Namespace:
    class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    p.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200], help="sequence lengths T")
    p.add_argument("--cells", nargs="+", choices=CELLS, default=["rnn_tanh", "lstm", "gru"], help="recurrent cells")
    p.add_argument("--steps", type=int, default=2000, help="optimiser updates per run")
    p.add_argument("--hidden", type=int, default=64, help="hidden units")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (and of the validation set)")
    p.add_argument("--out", default="adding-table", help="folder for checkpoints, metrics, table and plots")
    p.add_argument("--grad-batch", type=int, default=256, help="validation sequences for grad-compare.png")
    p.add_argument("--reuse", action="store_true", help="skip runs whose checkpoint and metrics JSON (of as many steps) exist")
    args = p.parse_args(argv)
    for name in ("steps", "hidden", "grad_batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}; expected a positive integer")
    if min(args.lengths) < 2:
        p.error(f"--lengths {args.lengths}; expected every T >= 2")
    return args


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _has_grad_report() -> bool:
    r = subprocess.run([*EDGERNN, "train", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"`{' '.join(EDGERNN)} train --help` failed:\n{r.stderr.strip()}\n"
                 "expected edgernn with the train extra: pip install -e '.[train]'")
    return "--grad-report" in r.stdout


def _run(out: Path, cell: str, t: int, args, grad_flag: bool) -> dict | None:
    """One training run; returns its metrics, or None if it failed."""
    stem = out / f"{cell}-{t}"
    pt, metrics = stem.with_suffix(".pt"), stem.with_suffix(".json")
    if args.reuse and pt.is_file() and metrics.is_file():
        m = json.loads(metrics.read_text())
        if m.get("steps") == args.steps:
            _say(f"  reusing {metrics}")
            return m
        _say(f"  {metrics} is from a {m.get('steps')}-step run: training again")
    cmd = [*EDGERNN, "train", "--task", "adding", "--cell", cell, "--seq-len", str(t), "--seed", str(args.seed),
           "--steps", str(args.steps), "--hidden", str(args.hidden), "--metrics-json", str(metrics), "-o", str(pt)]
    if grad_flag:
        cmd += ["--grad-report", f"{stem}-grad.png"]
    t0 = time.time()
    r = subprocess.run(cmd, stdout=sys.stderr)  # keep stdout for the table
    if r.returncode != 0 or not metrics.is_file():
        _say(f"  {cell} T={t} FAILED (exit status {r.returncode}): {' '.join(cmd)}")
        return None
    _say(f"  done in {time.time() - t0:.0f}s")
    return json.loads(metrics.read_text())


def _table(results: dict, args) -> dict:
    cells = {c: {} for c in args.cells}
    baseline = {}
    for (cell, t), m in results.items():
        cells[cell][str(t)] = None if m is None else {k: m.get(k) for k in ("value", "baseline", "seconds", "clip_rate")}
        if m is not None:
            baseline[str(t)] = m["baseline"]
    return {"task": "adding", "metric": "mse", "lengths": args.lengths, "steps": args.steps, "hidden": args.hidden,
            "seed": args.seed, "cells": cells, "baseline": baseline}


def _markdown(table: dict) -> str:
    ts = [str(t) for t in table["lengths"]]

    def fmt(v):
        return "—" if v is None else f"{v:.4f}"

    lines = [f"Adding problem: final validation MSE after {table['steps']} steps (hidden {table['hidden']}, "
             f"seed {table['seed']}); lower is better.", "",
             "| cell | " + " | ".join(f"T={t}" for t in ts) + " |",
             "|---|" + "---:|" * len(ts)]
    for cell, row in table["cells"].items():
        vals = ["failed" if t in row and row[t] is None else fmt((row.get(t) or {}).get("value")) for t in ts]
        lines.append(f"| {cell} | " + " | ".join(vals) + " |")
    lines.append("| baseline (predict 1.0) | " + " | ".join(fmt(table["baseline"].get(t)) for t in ts) + " |")
    return "\n".join(lines) + "\n"


def _grad_compare(out: Path, args) -> None:
    """End-of-training ‖∂L/∂h_k‖ of every cell at the largest T, on one validation batch."""
    from edgernn.train import checkpoint
    from edgernn.train import diagnostics
    from edgernn.train import tasks
    from edgernn.train import loop as train_mod
    from edgernn.core.errors import EdgeRNNError

    t = max(args.lengths)
    task = tasks.AddingTask(t, seed=args.seed)
    x, y = task.val  # the CLI's validation set for this T and seed
    x, y = x[: args.grad_batch], y[: args.grad_batch]
    curves = {}
    for cell in args.cells:
        pt = out / f"{cell}-{t}.pt"
        if not pt.is_file():
            continue
        _say(f"gradient norms: {cell} T={t}")
        try:
            model = checkpoint.load(pt).model
            curves[cell] = diagnostics.hidden_grad_norms(model, x, y, train_mod.criterion(task, model))
        except EdgeRNNError as e:
            _say(f"  skipped: {e}")
    if not curves:
        _say(f"no checkpoints at T={t}: no grad-compare.png")
        return
    try:
        diagnostics.plot_grad_comparison(out / "grad-compare.png", curves,
                                         title=f"adding T={t}: end of training ({args.steps} steps)")
    except EdgeRNNError as e:  # matplotlib missing: the table still stands
        _say(f"no grad-compare.png: {e}")
        return
    _say(f"wrote {out / 'grad-compare.png'}")


if __name__ == "__main__":
    sys.exit(main())
