"""Training: backpropagation through time (full, or truncated with the state carried), Adam,
global-norm gradient clipping, early stopping, resumable checkpoints, and data parallelism.

The task supplies batches and the metric (edgernn.tasks, edgernn.classify); this module owns the
loop, the validation, the best-so-far weights and the checkpoint. It never prints: progress goes
to a callback the CLI renders.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgernn.train import checkpoint
from edgernn.core.errors import EdgeRNNError, InputError
from edgernn.train.models import RNNModel
from edgernn.core.spec import ModelSpec


class DivergedError(EdgeRNNError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimiser updates in all
    eval_every: int = 100  # updates between validations (one "epoch" in the progress report)
    batch_size: int = 64  # sequences per update, across all processes when data-parallel
    lr: float = 3e-3  # Adam learning rate, cosine-decayed to lr/10
    clip: float = 1.0  # global gradient-norm clip; 0 disables
    seed: int = 0
    weight_decay: float = 0.0
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    lookahead: int | None = None  # bidirectional: train by the chunked streaming rule with R frames of lookahead
    chunk: int = 1  # ... and chunks of C frames (edgernn.train.chunked)


def criterion(task, model: RNNModel) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
    """The task's loss on normalised predictions (N, L, outputs) against numpy targets."""
    def loss(pred: torch.Tensor, y: np.ndarray) -> torch.Tensor:
        target = torch.from_numpy(y)
        if model.spec.readout == "last":
            # a task may say that its batch's last k frames all carry the label (a keyword's label
            # holds through the silence after it: ClassifyTask.label_frames); else the last one
            k = min(max(int(getattr(task, "label_frames", 1)), 1), pred.shape[1])
            pred = pred[:, -k:]
            target = target[:, None].expand(-1, k) if k > 1 else target
            pred = pred if k > 1 else pred[:, -1]
        if task.loss == "ce":
            return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1).long())
        return F.mse_loss(pred, (target - model.out_mean) / model.out_std)
    return loss


def _loss(task, net, model: RNNModel, x: np.ndarray, y: np.ndarray, state=None, cfg: TrainConfig | None = None):
    if cfg is not None and cfg.lookahead is not None:  # exactly what the runtime will compute when streaming
        from edgernn.train.chunked import chunked_forward

        pred = chunked_forward(model, torch.from_numpy(x), chunk=cfg.chunk, lookahead=cfg.lookahead,
                               normalized=True, batched=True)
        return criterion(task, model)(pred, y), None
    pred, state = net(torch.from_numpy(x), state, normalized=True)  # (N, L, outputs); net may be DDP
    return criterion(task, model)(pred, y), state


def _predictor(model: RNNModel, cfg: TrainConfig):
    if cfg.lookahead is not None:
        from edgernn.train.chunked import chunked_predictor

        return chunked_predictor(model, chunk=cfg.chunk, lookahead=cfg.lookahead)
    return predictor(model)


def predictor(model: RNNModel) -> Callable[[np.ndarray], np.ndarray]:
    """numpy in, numpy out, in the data's units, no gradients: what tasks evaluate."""
    def predict(x: np.ndarray) -> np.ndarray:
        was = model.training
        model.eval()
        with torch.no_grad():
            y, _ = model(torch.from_numpy(x))
        model.train(was)
        return y.numpy()
    return predict


def _better(task, a: float, b: float) -> bool:
    return a > b if getattr(task, "greater_is_better", False) else a < b


class _Batches:
    """Full BPTT: independent batches. Truncated BPTT: consecutive segments, state carried."""

    def __init__(self, task, rng: np.random.Generator, n: int):
        self.task, self.rng, self.n = task, rng, n
        self.segments = task.segments(rng, n) if hasattr(task, "segments") else None

    def next(self, state):
        if self.segments is None:
            x, y = self.task.batch(self.rng, self.n)
            return x, y, None
        x, y, fresh = next(self.segments)
        return x, y, None if fresh or state is None else tuple(s.detach() for s in state)


def _distributed() -> tuple[int, int]:
    """(rank, world): set up torch.distributed when launched by torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def train(task, spec: ModelSpec, cfg: TrainConfig, *, progress: Callable[[dict], None] | None = None,
          resume: dict | None = None, init: dict | None = None,
          on_eval: Callable[[RNNModel, dict, dict], None] | None = None,
          hooks: dict | None = None) -> tuple[RNNModel, dict]:
    """Train a model of `spec` on `task`; returns the best model (by validation metric) and results.

    `resume` is a checkpoint dict from a previous run of the same config: training continues
    from its step with its optimiser and random states, so the result equals an uninterrupted run.
    `init` is a state_dict to start from (fine-tuning): its weights and its input normalisation, which
    the weights were learned on, replace the fresh ones; the optimiser and schedule start anew.
    `on_eval(model, state, best_state)` is called after each validation (to checkpoint).
    `hooks`: optional {"start": fn(model), "end": fn(model)} (gradient reports).
    """
    rank, world = _distributed()
    if cfg.lookahead is not None and (not spec.bidirectional or world > 1):
        raise InputError("--lookahead trains a bidirectional model by the streaming rule on one process; expected "
                         "--bidirectional and no torchrun")
    if cfg.batch_size % world:
        raise InputError(f"--batch-size {cfg.batch_size} does not split over {world} processes; expected a multiple")
    torch.manual_seed(cfg.seed)
    model = RNNModel(spec)
    if hasattr(task, "normalization"):
        model.set_normalization(**task.normalization)
    if init is not None:
        try:
            model.load_state_dict(init)
        except (RuntimeError, TypeError, AttributeError) as e:  # shapes, names, or values that are not tensors
            raise InputError(f"--init: the weights do not fit this model ({str(e).splitlines()[0][:160]}); "
                             "expected a checkpoint with the same model options") from e
    rng = np.random.default_rng([cfg.seed, rank])  # each process draws its own data
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr / 10)
    run = {"step": 0, "best": None, "best_step": 0, "history": [], "clipped": 0, "seconds": 0.0}
    best_state = None
    if resume:
        best_state = _restore(resume, model, opt, sched, rng, run)
    if hooks and "start" in hooks and run["step"] == 0:
        hooks["start"](model)
    batches = _Batches(task, rng, cfg.batch_size // world)
    state, running, t0 = None, [], time.time() - run["seconds"]
    model.train()
    while run["step"] < cfg.steps:
        run["step"] += 1
        step = run["step"]
        x, y, state = batches.next(state)
        loss, state = _loss(task, net, model, x, y, state, cfg)
        if not torch.isfinite(loss):
            raise DivergedError(f"the loss became {loss.item()} at step {step}; training stopped and the last good "
                                "checkpoint was kept: expected a finite loss, try a lower --lr or a --clip")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            run["clipped"] += int(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip) > cfg.clip)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % cfg.eval_every and step != cfg.steps:
            continue
        value, baseline = task.evaluate(_predictor(model, cfg))
        if not math.isfinite(value) or not all(torch.isfinite(p).all() for p in model.parameters()):
            raise DivergedError(f"the model diverged by step {step} (validation {task.metric} {value}); training "
                                "stopped and the last good checkpoint was kept: expected finite weights, try a lower "
                                "--lr or a --clip")
        row = {"step": step, "train_loss": float(np.mean(running)), "val": value, "baseline": baseline,
               "clip_rate": run["clipped"] / step, "seconds": time.time() - t0}
        run["history"].append(row)
        run["seconds"] = row["seconds"]
        running = []
        if run["best"] is None or _better(task, value, run["best"]):
            run["best"], run["best_step"] = value, step
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if progress and rank == 0:
            progress({**row, "total": cfg.steps, "best": run["best"], "metric": task.metric})
        if on_eval and rank == 0:
            on_eval(model, _snapshot(opt, sched, rng, run), best_state)
        if cfg.patience and step - run["best_step"] >= cfg.patience * cfg.eval_every:
            run["stopped_early"] = step
            break
    if hooks and "end" in hooks:
        hooks["end"](model)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    value, baseline = task.evaluate(_predictor(model, cfg))
    metrics = {"task": task.name, "metric": task.metric, "value": value, "baseline": baseline,
               "steps": run["step"], "best_step": run["best_step"], "seconds": round(time.time() - t0, 1),
               "clip_rate": run["clipped"] / max(1, run["step"]), "processes": world}
    if "stopped_early" in run:
        metrics["stopped_early"] = run["stopped_early"]
    if hasattr(task, "test"):  # a part never used to choose anything, scored once on the chosen weights
        metrics["test"], metrics["test_baseline"] = task.test(_predictor(model, cfg))
    return model, {"metrics": metrics, "history": run["history"], "config": asdict(cfg)}


def _snapshot(opt, sched, rng: np.random.Generator, run: dict) -> dict:
    """Everything beyond the weights that an exact resume needs."""
    return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "run": {k: v for k, v in run.items()}}


def _restore(resume: dict, model, opt, sched, rng, run) -> dict | None:
    try:
        model.load_state_dict(resume["state_dict"])
        r = resume["resume"]
        opt.load_state_dict(r["optimizer"])
        sched.load_state_dict(r["scheduler"])
        rng.bit_generator.state = r["numpy_rng"]
        torch.set_rng_state(r["torch_rng"])
        run.update(r["run"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"--resume: the checkpoint cannot continue this run ({str(e).splitlines()[0][:160]}); "
                         "expected a checkpoint written by `edgernn train` with the same model options") from e
    return resume.get("best_state_dict")


def save(path, model: RNNModel, task, result: dict, *, resume_state: dict | None = None, best_state=None) -> None:
    """The checkpoint: spec, weights, what export needs (labels, front end, tokens), metrics."""
    info = task.checkpoint_info()
    extra = {}
    if resume_state is not None:
        extra = {"resume": resume_state, "best_state_dict": best_state}
    checkpoint.save(path, model, metrics=result.get("metrics"), history=result.get("history"),
                    config=result.get("config"), labels=getattr(task, "labels", None),
                    frontend=getattr(task, "frontend_meta", None), **info, **extra)
