"""What training did to the gradient: ‖∂L/∂h_k‖ over time steps, and the curves of a run.

`hidden_grad_norms` shows the vanishing (or exploding) gradient of a recurrent model exactly:
how much the loss still depends on the hidden state k frames back. The plotting functions
write PNG files atomically (matplotlib, imported only when a plot is drawn). Nothing here prints.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch

from edgernn.core import fileio
from edgernn.core.errors import InputError
from edgernn.train.models import RNNModel, State

HISTORY_KEYS = ("step", "train_loss", "val", "baseline")
GRAD_LABEL = r"$\Vert\partial L/\partial h_k\Vert$"


def hidden_grad_norms(model: RNNModel, x, y, loss_fn: Callable) -> np.ndarray:
    """‖∂L/∂h_k‖ for k = 0 … L-1, computed exactly by unrolling the model one frame at a time.

    h_k is the hidden state AFTER the model has consumed frame x[:, k] (0-based): the state[0]
    that model.normalized(x[:, :k+1]) returns, all layers (layers, N, H); for an LSTM h, not c.
    The derivative is total: through the output y_k the head reads from h_k, and through every
    later step. Per sequence n the norm runs over layers and units jointly; the values are summed
    over the batch, which for a loss_fn that averages over the batch (mse, cross-entropy) is the
    batch mean of each sequence's own ‖∂ℓ_n/∂h_k‖, so the curve does not depend on N.

    x: (N, L, F) float or (N, L) int64, numpy or torch; y is passed to loss_fn as given.
    loss_fn(pred (N, L, O) in normalised units, y) -> scalar: edgernn.train.criterion(task, model).
    The model runs in eval mode (no dropout) and its parameters' .grad are left untouched.
    """
    spec = model.spec
    if spec.bidirectional:
        raise InputError("the gradient report needs a unidirectional model: a bidirectional one has no single "
                         "state h_k per step; expected --bidirectional off")
    device = model.in_mean.device
    x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    x = x.to(device)
    want = 2 if spec.vocab else 3
    if x.dim() != want or x.shape[1] < 1:
        raise InputError(f"x of shape {tuple(x.shape)}; expected {'(batch, length)' if spec.vocab else '(batch, length, features)'} "
                         "with length >= 1")
    loss, states, outs = _unrolled_loss(model, x, y, loss_fn)
    grads = torch.autograd.grad(loss, states + outs, allow_unused=True)
    n_steps = len(states)
    norms = []
    for k in range(n_steps):
        g = grads[k] if grads[k] is not None else torch.zeros_like(states[k])  # (layers, N, H)
        direct = grads[n_steps + k]  # (N, 1, H): the path from h_k straight into the head at step k
        if direct is not None:
            g = torch.cat([g[:-1], g[-1:] + direct.transpose(0, 1)])
        norms.append(torch.linalg.vector_norm(g, dim=(0, 2)).sum())
    return torch.stack(norms).detach().double().cpu().numpy()


def _unrolled_loss(model: RNNModel, x: torch.Tensor, y, loss_fn) -> tuple[torch.Tensor, list, list]:
    """Run frame by frame; returns the loss, each step's state[0] and each step's last-layer RNN output.

    nn.RNN returns its per-step output and its final state as separate autograd nodes (equal
    values): the head reads the output, the next step reads the state. Both are collected so the
    caller can add the two paths; a forward hook takes the output without re-implementing
    model.normalized.
    """
    states, outs, preds = [], [], []
    hook = model.rnn.register_forward_hook(lambda module, inputs, output: outs.append(output[0]))
    was = model.training
    model.eval()
    try:
        # cuDNN cannot backpropagate through an RNN in eval mode; the native kernels can.
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            state = _leaf_state(model, x.shape[0])
            for t in range(x.shape[1]):
                y_t, state = model.normalized(x[:, t:t + 1], state)  # (N, 1, O)
                preds.append(y_t)
                states.append(state[0])
            loss = loss_fn(torch.cat(preds, dim=1), y)
    finally:
        hook.remove()
        model.train(was)
    if not torch.is_tensor(loss) or loss.dim() != 0:
        shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise InputError(f"loss_fn returned {shape}; expected a scalar tensor (reduce with mean)")
    assert len(outs) == len(states), (len(outs), len(states))
    return loss, states, outs


def _leaf_state(model: RNNModel, batch: int) -> State:
    """Zero state in the model's dtype, requiring grad so the graph exists even for frozen weights."""
    return tuple(s.to(model.in_mean.dtype).requires_grad_() for s in model.zero_state(batch))


# ---- plots -------------------------------------------------------------------------------------

def plot_grad_report(path, start: np.ndarray | None, end: np.ndarray | None, *, title: str,
                     clip_rate: float | None = None, clip: float | None = None) -> None:
    """PNG: ‖∂L/∂h_k‖ over k at the start and end of training, log scale, with the clipping rate.

    start, end: hidden_grad_norms on the same batch before the first update and after the last
    (either may be None). title should name the cell and T, e.g. "rnn_tanh, adding T=100".
    """
    fig = _figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    curves = []
    for label, values, color in (("start of training", start, "tab:blue"), ("end of training", end, "tab:red")):
        if values is not None:
            v = _curve(values, label)
            curves.append(v)
            ax.plot(np.arange(len(v)), _positive(v), color=color, lw=1.6, label=_legend(label, v))
    if not curves:
        raise InputError("no gradient curve to plot; expected start or end norms from hidden_grad_norms")
    _grad_axes(ax, curves, title)
    ax.text(0.99, 0.02, _clip_note(clip_rate, clip), transform=ax.transAxes, ha="right", va="bottom",
            fontsize=9, bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})
    _save(fig, path)


def plot_grad_comparison(path, curves: dict[str, np.ndarray], *, title: str) -> None:
    """PNG: several models' ‖∂L/∂h_k‖ curves on one log plot, e.g. {"rnn_tanh": …, "lstm": …}."""
    if not curves:
        raise InputError("no gradient curves to compare; expected {label: hidden_grad_norms(...)}")
    fig = _figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    arrays = []
    for label, values in curves.items():
        v = _curve(values, label)
        arrays.append(v)
        ax.plot(np.arange(len(v)), _positive(v), lw=1.6, label=_legend(str(label), v))
    _grad_axes(ax, arrays, title)
    _save(fig, path)


def plot_curves(path, history: list[dict], *, metric: str, title: str | None = None,
                greater_is_better: bool = False) -> None:
    """PNG, two panels: loss per evaluation (train, and "val_loss" where rows have it), and the
    validation metric per evaluation beside its baseline (dashed), its best value starred.
    Rows as edgernn.train writes them; greater_is_better as the task says (accuracy).
    """
    rows = _check_history(history)
    steps = np.array([r["step"] for r in rows], float)
    fig = _figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    left.plot(steps, [r["train_loss"] for r in rows], "o-", ms=3, label="train (mean since last evaluation)")
    val_rows = [r for r in rows if r.get("val_loss") is not None]
    if val_rows:
        left.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "s-", ms=3, label="validation")
    _log_if_positive(left, [r["train_loss"] for r in rows] + [r["val_loss"] for r in val_rows])
    left.set(xlabel="optimiser step", ylabel="loss", title="loss")
    left.legend(fontsize=9)
    _metric_panel(right, steps, rows, metric, greater_is_better)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _metric_panel(ax, steps: np.ndarray, rows: list[dict], metric: str, greater_is_better: bool) -> None:
    val = np.array([r["val"] for r in rows], float)
    baseline = np.array([r["baseline"] for r in rows], float)
    ax.plot(steps, val, "o-", ms=3, color="tab:green", label=f"validation {metric}")
    if np.allclose(baseline, baseline[0]):
        ax.axhline(baseline[0], ls="--", color="0.4", label=f"baseline {baseline[0]:.4g}")
    else:
        ax.plot(steps, baseline, "--", color="0.4", label="baseline")
    best = None
    if np.isfinite(val).any():
        best = int(np.nanargmax(val) if greater_is_better else np.nanargmin(val))
    if best is not None:
        ax.plot(steps[best], val[best], "*", ms=11, color="tab:green",
                label=f"best {val[best]:.4g} (step {int(steps[best])})")
    _log_if_positive(ax, list(val) + list(baseline))
    ax.set(xlabel="optimiser step", ylabel=metric, title=f"validation {metric}")
    ax.legend(fontsize=9)


def _check_history(history: list[dict]) -> list[dict]:
    if not history:
        raise InputError("no evaluations to plot; expected at least one history row from training")
    for i, row in enumerate(history):
        missing = [k for k in HISTORY_KEYS if k not in row]
        if missing:
            raise InputError(f"history row {i} lacks {missing}; expected rows with {list(HISTORY_KEYS)} "
                             "as edgernn.train writes them")
    return history


def _curve(values, label: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise InputError(f"{label}: gradient norms of shape {v.shape}; expected (L,) from hidden_grad_norms")
    return v


def _positive(v: np.ndarray) -> np.ndarray:
    """A log axis cannot show 0, inf or nan: leave a gap there instead."""
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _legend(label: str, v: np.ndarray) -> str:
    bad = int((~np.isfinite(v)).sum())
    note = f", {bad} non-finite" if bad else ""
    if len(v) > 1 and np.isfinite(v[[0, -1]]).all() and v[-1] > 0:
        return f"{label} (ratio k=0 / k={len(v) - 1}: {v[0] / v[-1]:.1e}{note})"
    return label + (f" ({bad} non-finite)" if bad else "")


def _grad_axes(ax, curves: list[np.ndarray], title: str) -> None:
    _log_if_positive(ax, np.concatenate(curves))
    ax.set_xlabel("time step k (state after reading frame k)")
    ax.set_ylabel(GRAD_LABEL)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")


def _log_if_positive(ax, values) -> None:
    v = np.asarray(values, dtype=float)
    if (np.isfinite(v) & (v > 0)).any():
        ax.set_yscale("log")


def _clip_note(clip_rate: float | None, clip: float | None) -> str:
    if clip is not None and clip <= 0:
        return "gradient clipping off"
    at = f" to global norm {clip:g}" if clip is not None else ""
    if clip_rate is None:
        return f"gradients clipped{at}" if at else "clipping rate not recorded"
    return f"gradients clipped{at} on {clip_rate:.0%} of updates"


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError as e:
        raise InputError("plotting needs matplotlib: pip install 'edgernn[train]'") from e
    return Figure(layout="constrained", dpi=110, **kwargs)


def _save(fig, path) -> None:
    """Render in memory, then write atomically (temp file beside `path`, then os.replace)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    fileio.write_bytes(path, buf.getvalue())
