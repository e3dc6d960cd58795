"""`edgernn train`: the training command; the tasks and their defaults are edgernn.train.tasks. Torch is imported inside."""

from __future__ import annotations

import json
import sys

import click

from edgernn.train import tasks  # torch-free: the task names and defaults


def _progress_printer(label: str):
    tty = sys.stderr.isatty()

    def show(d: dict):
        width = 24
        done = int(width * d["step"] / d["total"])
        bar = "#" * done + "." * (width - done)
        msg = (f"{label} [{bar}] step {d['step']}/{d['total']}  loss {d['train_loss']:.4g}  "
               f"val {d['metric']} {d['val']:.4g} (baseline {d['baseline']:.4g})  {d['seconds']:.0f}s")
        click.echo(("\r" + msg) if tty else msg, err=True, nl=not tty)
    return show


def _make_task(task, o):
    """The task object for `edgernn train --task TASK`, from the command's options."""
    return tasks.make(task, seed=o["seed"], bidirectional=o["bidirectional"], seq_len=o["seq_len"], csv=o["csv_path"],
                      column=o["column"], horizon=o["horizon"], text=o["text"], tbptt=o["tbptt"], data=o["data"],
                      phases=o["phases"])


@click.command()
@click.option("--task", type=click.Choice(tasks.NAMES), required=True, help="What to learn.")
@click.option("--seq-len", type=int, default=50, show_default=True, help="adding: sequence length T.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="forecast: the series file (default: bundled yearly sunspots).")
@click.option("--column", help="forecast: the CSV column to forecast (default: the only one, or SUNACTIVITY for the bundled file).")
@click.option("--horizon", type=int, default=1, show_default=True, help="forecast: steps ahead to predict.")
@click.option("--text", type=click.Path(dir_okay=False), help="charlm: a UTF-8 text file (default: bundled Genesis, KJV).")
@click.option("--tbptt", type=int, default=100, show_default=True, help="charlm: truncated-BPTT segment length; the state is carried across segments.")
@click.option("--data", type=click.Path(file_okay=False), help="classify: a folder with one subfolder of WAV files per class.")
@click.option("--phases", type=int, default=1, show_default=True, help="classify: also train on each clip framed K-1 other ways, delayed by k/K of a hop, as a live microphone frames it (K times the training features' memory).")
@click.option("--cell", type=click.Choice(["rnn_tanh", "rnn_relu", "lstm", "gru"]), help="Recurrent cell (default: " + ", ".join(f"{k} {c}" for k, c in tasks.default_cells().items()) + ").")
@click.option("--bidirectional", is_flag=True, help="Read the sequence both ways (offline models).")
@click.option("--layers", type=int, default=1, show_default=True, help="Stacked recurrent layers.")
@click.option("--hidden", type=int, help="Hidden units per direction (default: " + ", ".join(f"{k} {h}" for k, h in tasks.default_hidden().items()) + ").")
@click.option("--dropout", type=float, default=0.0, show_default=True, help="Dropout between layers.")
@click.option("--steps", type=int, help="Optimiser updates in all (task default).")
@click.option("--epochs", type=int, help="Alternative to --steps: epochs of --eval-every updates.")
@click.option("--eval-every", type=int, default=100, show_default=True, help="Updates between validations.")
@click.option("--batch-size", type=int, help="Sequences per update (over all processes when data-parallel).")
@click.option("--lr", type=float, help="Adam learning rate.")
@click.option("--clip", type=float, help="Clip gradients to this global norm (0: off; default 1, classify 5).")
@click.option("--lookahead", "train_lookahead", type=int, help="Bidirectional: train by the streaming rule with R frames of lookahead (exact for `stream --lookahead R`).")
@click.option("--chunk", "train_chunk", type=int, default=1, show_default=True, help="With --lookahead: the rule's chunk C.")
@click.option("--patience", type=click.IntRange(min=0), help="Early stopping: validations without improvement before stopping (0: off; default: " + ", ".join(f"{k} {v['patience']}" for k, v in tasks.DEFAULTS.items() if v.get("patience")) + ", else off).")
@click.option("--seed", type=int, default=0, show_default=True, help="Makes the run repeatable.")
@click.option("--threads", type=int, default=1, show_default=True, help="torch intra-op threads; small RNNs gain little from more, and contended cores lose a lot.")
@click.option("--resume", "resume_path", type=click.Path(dir_okay=False), help="Continue an interrupted run from its checkpoint.")
@click.option("--init", "init_path", type=click.Path(dir_okay=False), help="Fine-tune: start from this checkpoint's weights and normalisation (same model options and labels; a fresh optimiser and schedule).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Checkpoint to write (default: TASK.pt).")
@click.option("--metrics-json", type=click.Path(dir_okay=False), help="Also write the final metrics as JSON here.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write training curves (loss, metric vs baseline) as PNG.")
@click.option("--grad-report", type=click.Path(dir_okay=False), help="Write ||dL/dh_k|| over time steps k, start vs end of training, as PNG.")
def train(task, output, metrics_json, resume_path, init_path, plot, grad_report, **o):
    """Train a model and write a checkpoint (spec, weights, normalisation, metrics).

    Data-parallel: `torchrun --nproc-per-node N -m edgernn train ...` (gloo on CPU, nccl on GPU).
    """
    from edgernn.core import fileio
    from edgernn.train import loop as train_mod
    from edgernn.core.errors import InputError

    if o["train_lookahead"] is not None and o["train_lookahead"] < 0:
        raise InputError(f"--lookahead {o['train_lookahead']}; expected frames >= 0")
    for name in ("steps", "epochs", "eval_every", "batch_size", "tbptt", "layers", "hidden", "threads", "train_chunk", "phases"):
        if o.get(name) is not None and o[name] < 1:
            raise InputError(f"--{name.replace('_', '-')} {o[name]}; expected a positive integer")
    output = output or f"{task}.pt"
    if task == "seq2seq":
        return _train_seq2seq(o, output, metrics_json)
    d = tasks.DEFAULTS[task]
    t = _make_task(task, o)
    total = o["epochs"] * o["eval_every"] if o["epochs"] else (o["steps"] or d["steps"])
    spec = tasks.model_spec(task, t, cell=o["cell"], hidden=o["hidden"], layers=o["layers"],
                            bidirectional=o["bidirectional"], dropout=o["dropout"])
    cfg = train_mod.TrainConfig(steps=total, eval_every=min(o["eval_every"], total),
                                batch_size=o["batch_size"] or d["batch_size"], lr=o["lr"] or d["lr"],
                                clip=d.get("clip", 1.0) if o["clip"] is None else o["clip"], seed=o["seed"],
                                patience=d.get("patience", 0) if o["patience"] is None else o["patience"], lookahead=o["train_lookahead"], chunk=o["train_chunk"])
    if grad_report and spec.bidirectional:
        raise InputError("--grad-report needs a unidirectional model; expected no --bidirectional")
    if o["threads"]:
        import torch

        torch.set_num_threads(o["threads"])
    if resume_path and init_path:
        raise InputError("--resume and --init both given; expected one: --resume continues an interrupted run, "
                         "--init starts a new run from finished weights")
    labels = getattr(t, "labels", None)
    resume = _load_resume(resume_path, spec, labels) if resume_path else None
    init = _load_init(init_path, spec, labels) if init_path else None
    hooks, grads = (_grad_hooks(t, cfg) if grad_report else ({}, None))

    def on_eval(model, state, best):  # a checkpoint per validation: an interrupted run resumes from it
        train_mod.save(output, model, t, {"config": cfg.__dict__}, resume_state=state, best_state=best)

    model, result = train_mod.train(t, spec, cfg, progress=_progress_printer(task), resume=resume, init=init,
                                    on_eval=on_eval, hooks=hooks)
    if sys.stderr.isatty():
        click.echo("", err=True)
    if int(__import__("os").environ.get("RANK", "0")) != 0:
        return
    train_mod.save(output, model, t, result)
    m = result["metrics"]
    if metrics_json:
        fileio.write_text(metrics_json, json.dumps(m, indent=2) + "\n")
    if plot:
        from edgernn.train import diagnostics

        diagnostics.plot_curves(plot, result["history"], metric=m["metric"], title=f"{spec.cell}, {task}",
                                greater_is_better=getattr(t, "greater_is_better", False))
    if grad_report:
        from edgernn.train import diagnostics

        length = f" T={t.seq_len}" if hasattr(t, "seq_len") else ""
        diagnostics.plot_grad_report(grad_report, grads.get("start"), grads.get("end"), clip=cfg.clip,
                                     clip_rate=m["clip_rate"], title=f"{spec.cell}, {task}{length}")
    note = f", stopped early at step {m['stopped_early']}" if "stopped_early" in m else ""
    test = (f"; test {m['metric']} {m['test']:.4g} vs baseline {m['test_baseline']:.4g} (years never used to "
            "choose the checkpoint)") if "test" in m else ""
    click.echo(f"{task}: validation {m['metric']} {m['value']:.4g} vs baseline {m['baseline']:.4g}{test} "
               f"({m['seconds']:.0f}s, {m['steps']} steps{note}) -> {output}")


def _same_model_checkpoint(flag, path, spec, labels, key, what) -> dict:
    """The checkpoint at `path`, refused in one line unless it holds `key` and was trained with
    this command's model options and, where both know them, the data's labels in the same order."""
    from edgernn.train import checkpoint
    from edgernn.core.errors import InputError

    ckpt = checkpoint.read(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(key), dict) or "state_dict" not in ckpt:
        raise InputError(f"{flag} {path}: not {what}")
    if ckpt.get("spec") != spec.to_dict():
        raise InputError(f"{flag} {path}: its model {ckpt.get('spec')} differs from this command's {spec.to_dict()}; "
                         "expected the same model options")
    if labels is not None and ckpt.get("labels") is not None and list(ckpt["labels"]) != list(labels):
        raise InputError(f"{flag} {path}: its labels {list(ckpt['labels'])} differ from the data's {list(labels)}; "
                         "expected the same classes in the same order")
    return ckpt


def _load_resume(path, spec, labels) -> dict:
    return _same_model_checkpoint("--resume", path, spec, labels, "resume", "an unfinished edgernn training "
                                  "checkpoint; expected the -o file of an interrupted `edgernn train` run")


def _load_init(path, spec, labels) -> dict:
    return _same_model_checkpoint("--init", path, spec, labels, "spec", "an edgernn training checkpoint; expected "
                                  "the -o file of `edgernn train`")["state_dict"]


def _grad_hooks(t, cfg):
    """Snapshot ||dL/dh_k|| on one fixed batch at the start and the end of training."""
    import numpy as np

    from edgernn.train import diagnostics
    from edgernn.train import loop as train_mod

    grads = {}
    x, y = t.batch(np.random.default_rng(cfg.seed + 7), min(cfg.batch_size, 64)) if hasattr(t, "batch") else \
        next(t.segments(np.random.default_rng(cfg.seed + 7), min(cfg.batch_size, 16)))[:2]

    def snap(key):
        def hook(model):
            grads[key] = diagnostics.hidden_grad_norms(model, x, y, train_mod.criterion(t, model))
        return hook
    return {"start": snap("start"), "end": snap("end")}, grads


def _train_seq2seq(o, output, metrics_json):
    from edgernn.core import fileio
    from edgernn.train import seq2seq, seq2seq_io

    d = seq2seq.TASK_DEFAULTS
    kw = {k: v for k, v in (("cell", o["cell"]), ("hidden", o["hidden"]), ("steps", o["steps"]),
                            ("batch_size", o["batch_size"]), ("lr", o["lr"])) if v is not None}
    enc, dec, result = seq2seq.train_seq2seq(**{**d, **kw, "layers": o["layers"], "seed": o["seed"],
                                                "clip": d.get("clip", 1.0) if o["clip"] is None else o["clip"]},
                                             progress=_progress_printer("seq2seq"))
    if sys.stderr.isatty():
        click.echo("", err=True)
    seq2seq_io.save(output, enc, dec, result)
    m = result["metrics"]
    if metrics_json:
        fileio.write_text(metrics_json, json.dumps(m, indent=2) + "\n")
    click.echo(f"seq2seq: validation {m['metric']} {m['value']:.4g} vs baseline {m['baseline']:.4g} "
               f"({m['seconds']:.0f}s) -> {output}")


@click.command()
@click.argument("members", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Ensemble checkpoint to write (.pt).")
def ensemble(members, output):
    """Combine classifier checkpoints into one that votes: y is the mean of their log-posteriors.

    MEMBERS: two or more `edgernn train` checkpoints of classifiers with the same cell, hidden
    size, features, labels and front end (layers may differ). `edgernn export` writes the result
    as ONE file whose state h0 stacks the members' ([sum of layers, batch, hidden]).
    """
    from edgernn.train import checkpoint

    ckpt = checkpoint.save_ensemble(members, output)
    layers = " + ".join(str(m["spec"]["layers"]) for m in ckpt["members"])
    click.echo(f"wrote {output} (ensemble of {len(members)}: {ckpt['members'][0]['spec']['cell']} layers {layers}, "
               f"hidden {ckpt['members'][0]['spec']['hidden']}; export it with `edgernn export {output}`)")
