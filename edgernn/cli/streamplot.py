"""`edgernn stream --plot out.png`: the waveform, the features and the per-label outputs, events marked.

    hist = History(seconds=10.0, sample_rate=16000, step_seconds=0.01)   # None: keep everything
    hist.add_samples(x); hist.add_frames(frames, y); hist.add_event(e)    # as the stream runs
    save("out.png", hist, labels=[...], title="mic")                      # the last 10 s

matplotlib is imported only by `save` and `require` (an edge install may not have it).
Torch-free; nothing is printed.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edgernn.core.errors import InputError

_NO_MPL = "--plot needs matplotlib, which is not installed; `pip install matplotlib` (or edgernn[train]) or drop --plot"


def require() -> None:
    """Fail now, in one line, if matplotlib is missing: before a long live run, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise InputError(_NO_MPL) from e


class _Ring:
    """Rows appended in chunks, keeping the last `limit` rows (None: all); rows counted from 0."""

    def __init__(self, limit: int | None):
        self.limit, self.chunks, self.size, self.total = limit, deque(), 0, 0

    def add(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self.chunks.append(np.array(rows, copy=True))
        self.size += len(rows)
        self.total += len(rows)
        while self.limit is not None and self.size - len(self.chunks[0]) >= self.limit:
            self.size -= len(self.chunks.popleft())

    def rows(self) -> tuple[int, np.ndarray | None]:
        """(index of the first row kept, the rows kept, cut to `limit`)."""
        if not self.chunks:
            return self.total, None
        a = np.concatenate(list(self.chunks))
        if self.limit is not None and len(a) > self.limit:
            a = a[len(a) - self.limit:]
        return self.total - len(a), a


class History:
    """What `save` draws: the last `seconds` of samples, frames, outputs and events (None: all)."""

    def __init__(self, *, seconds: float | None, sample_rate: int | None, step_seconds: float | None):
        self.seconds, self.sample_rate, self.step_seconds = seconds, sample_rate, step_seconds
        keep_samples = None if seconds is None or not sample_rate else int(seconds * sample_rate) + 1
        keep_frames = None if seconds is None or not step_seconds else int(seconds / step_seconds) + 1
        self.samples, self.frames, self.outputs = _Ring(keep_samples), _Ring(keep_frames), _Ring(keep_frames)
        self.events: list = []

    def add_samples(self, x: np.ndarray) -> None:
        self.samples.add(np.asarray(x, np.float32).reshape(-1))

    def skip_samples(self, n: int) -> None:
        """Audio that was lost: drawn as a gap of zeros, so the time axis stays true."""
        self.samples.add(np.zeros(int(n), np.float32))

    def add_frames(self, frames: np.ndarray, outputs: np.ndarray) -> None:
        self.frames.add(np.asarray(frames, np.float32).reshape(len(frames), -1))
        self.outputs.add(np.asarray(outputs, np.float32).reshape(len(outputs), -1))

    def skip_frames(self, n: int, width_in: int, width_out: int) -> None:
        self.add_frames(np.full((n, width_in), np.nan, np.float32), np.full((n, width_out), np.nan, np.float32))

    def add_event(self, event) -> None:
        self.events.append(event)


def save(path, hist: History, *, labels=None, classify: bool = False, title: str = "") -> None:
    """Write the picture: waveform (if audio), features, outputs (probabilities for classifiers)."""
    require()
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on an edge box or in CI
    import matplotlib.pyplot as plt

    s0, samples = hist.samples.rows()
    f0, frames = hist.frames.rows()
    _, outputs = hist.outputs.rows()
    if frames is None:
        raise InputError("--plot: the stream produced no frames, so there is nothing to draw; "
                         "expected at least one hop of input")
    step = hist.step_seconds or 1.0
    unit = "s" if hist.step_seconds else "step"
    panels = ["wave"] * (samples is not None and bool(hist.sample_rate)) + ["features", "outputs"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 2.6 * len(panels)), sharex=True, squeeze=False)
    axes = dict(zip(panels, axes[:, 0]))
    t_frames = (f0 + np.arange(len(frames)) + 1) * step  # frame end, as events are timed
    if "wave" in axes:
        ax = axes["wave"]
        ax.plot((s0 + np.arange(len(samples))) / hist.sample_rate, samples, lw=0.5, color="0.2")
        ax.set_ylabel("waveform")
        ax.set_ylim(-1.05, 1.05)
    _features(axes["features"], frames, t_frames, step)
    _outputs(axes["outputs"], outputs, t_frames, labels, classify)
    for e in hist.events:
        if t_frames[0] - step <= e.t <= t_frames[-1]:
            for ax in axes.values():
                ax.axvline(e.t, color="crimson", lw=1.0, alpha=0.8)
            axes["outputs"].annotate(f"{e.label} {e.p:.2f}", (e.t, 1.02), xycoords=("data", "axes fraction"),
                                     ha="center", va="bottom", fontsize=8, color="crimson")
    axes[panels[-1]].set_xlabel(f"time ({unit})")
    axes[panels[-1]].set_xlim(t_frames[0] - step, t_frames[-1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise InputError(f"--plot {path}: cannot write it ({e.strerror}); expected a writable path") from e
    finally:
        plt.close(fig)


def _features(ax, frames: np.ndarray, t: np.ndarray, step: float) -> None:
    if frames.shape[1] == 1:
        ax.plot(t, frames[:, 0], lw=0.8)
    else:
        ax.imshow(frames.T, aspect="auto", origin="lower", interpolation="nearest", cmap="magma",
                  extent=(t[0] - step, t[-1], -0.5, frames.shape[1] - 0.5))
    ax.set_ylabel("features")


def _outputs(ax, y: np.ndarray, t: np.ndarray, labels, classify: bool) -> None:
    from edgernn.runtime.events import IGNORED
    from edgernn.cli.output import softmax

    if classify:
        y = softmax(y)
        ax.set_ylim(-0.02, 1.02)
    names = list(labels) if labels and len(labels) == y.shape[1] else [str(i) for i in range(y.shape[1])]
    for k, name in enumerate(names):
        quiet = name in IGNORED
        ax.plot(t, y[:, k], lw=0.8 if quiet else 1.2, ls="--" if quiet else "-", color="0.6" if quiet else None,
                label=name.strip("_") + " (never fires)" if quiet else name)
    ax.set_ylabel("p" if classify else "y")
    if len(names) <= 16:
        ax.legend(loc="upper left", fontsize=7, ncol=min(len(names), 6), framealpha=0.6)
