"""Causal framing of a raw sample stream into overlapping windows. Torch-free.

Each hop of `hop` new samples yields one window: the previous `window - hop` samples and the
new `hop`; the first window is preceded by `window - hop` zeros. This is the rule the log-mel
front end uses too, so a raw-sample model and a feature model see time the same way.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgernn.core.errors import InputError


class Framer:
    """push(samples) -> (k, window) windows that became complete; memory stays bounded."""

    def __init__(self, window: int, hop: int):
        if not (isinstance(window, int) and isinstance(hop, int) and 0 < hop <= window):
            raise InputError(f"--window {window} --hop {hop}; expected integers with 0 < hop <= window")
        self.window, self.hop = window, hop
        self.reset()

    def reset(self) -> None:
        self._tail = np.zeros(self.window - self.hop, np.float32)  # context carried between pushes
        self._pending = np.zeros(0, np.float32)  # samples that do not fill a hop yet

    def push(self, samples) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        buf = np.concatenate([self._pending, x])
        k = len(buf) // self.hop
        self._pending = buf[k * self.hop:]
        if k == 0:
            return np.zeros((0, self.window), np.float32)
        full = np.concatenate([self._tail, buf[:k * self.hop]])
        windows = sliding_window_view(full, self.window)[:: self.hop][:k].copy()
        self._tail = full[len(full) - (self.window - self.hop):] if self.window > self.hop else np.zeros(0, np.float32)
        return windows

    def frame_all(self, samples) -> np.ndarray:
        """Offline: all complete windows of `samples` from a fresh start."""
        self.reset()
        out = self.push(samples)
        self.reset()
        return out
