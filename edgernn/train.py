"""Training: backpropagation through time with Adam and global-norm gradient clipping.

The task supplies batches and the metric (edgernn.tasks); this module owns the loop, the
validation, the best-so-far weights and the checkpoint. It never prints: progress goes to a
callback the CLI renders.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgernn import checkpoint
from edgernn.models import RNNModel
from edgernn.spec import ModelSpec


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimiser updates in all
    eval_every: int = 100  # updates between validations (one "epoch" in the progress report)
    batch_size: int = 64
    lr: float = 3e-3  # Adam learning rate, cosine-decayed to lr/10
    clip: float = 1.0  # global gradient-norm clip; 0 disables
    seed: int = 0
    weight_decay: float = 0.0


def _seed_all(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _loss(task, model: RNNModel, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
    xt = torch.from_numpy(x)
    pred, _ = model.normalized(xt)  # (N, L, outputs)
    if model.spec.readout == "last":
        pred = pred[:, -1]
    target = torch.from_numpy(y)
    if task.loss == "ce":
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1).long())
    target = (target - model.out_mean) / model.out_std
    return F.mse_loss(pred, target)


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


def train(task, spec: ModelSpec, cfg: TrainConfig, *, progress: Callable[[dict], None] | None = None) -> tuple[RNNModel, dict]:
    """Train a model of `spec` on `task`; returns the best model (by validation metric) and metrics."""
    rng = _seed_all(cfg.seed)
    model = RNNModel(spec)
    if hasattr(task, "normalization"):
        model.set_normalization(**task.normalization)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr / 10)
    best, best_state, history = math.inf, None, []
    clipped, running, t0 = 0, [], time.time()
    model.train()
    for step in range(1, cfg.steps + 1):
        x, y = task.batch(rng, cfg.batch_size)
        loss = _loss(task, model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            clipped += int(norm > cfg.clip)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % cfg.eval_every == 0 or step == cfg.steps:
            value, baseline = task.evaluate(predictor(model))
            row = {"step": step, "train_loss": float(np.mean(running)), "val": value, "baseline": baseline,
                   "clip_rate": clipped / step, "seconds": time.time() - t0}
            history.append(row)
            running = []
            if value < best:
                best, best_state = value, {k: v.detach().clone() for k, v in model.state_dict().items()}
            if progress:
                progress({**row, "total": cfg.steps, "best": best, "metric": task.metric})
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    value, baseline = task.evaluate(predictor(model))
    metrics = {"task": task.name, "metric": task.metric, "value": value, "baseline": baseline,
               "steps": cfg.steps, "seconds": round(time.time() - t0, 1), "clip_rate": clipped / cfg.steps}
    return model, {"metrics": metrics, "history": history, "config": asdict(cfg)}


def save(path, model: RNNModel, task, result: dict) -> None:
    info = task.checkpoint_info()
    checkpoint.save(path, model, metrics=result["metrics"], history=result["history"], config=result["config"],
                    labels=getattr(task, "labels", None), frontend=getattr(task, "frontend_meta", None), **info)
