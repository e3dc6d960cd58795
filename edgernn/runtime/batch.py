"""Many streams, one session call per step. Torch-free.

States live stacked on each state's batch axis, one slot per open stream, the arrays exactly as
long as the open count. When every open stream steps (the common case) the stacked arrays go
to the session as they are and its outputs become the new arrays: no gather, no scatter. A
subset is gathered and scattered with one fancy index per state. Streams join and leave at any
step; a closed stream's slot is refilled by the last one, so memory follows the open count.

Every call goes through the Runtime's backend stepper (edgernn.runtime.backend): on the C API,
once the same streams step twice, through buffers bound once (the stacked arrays are then the
stepper's own buffers, so they are replaced, never resized in place).
"""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np

from edgernn.core.errors import InputError
from edgernn.runtime import checks


class Batch:
    """Streams over one shared Runtime; `step`/`feed` take and return dicts keyed by stream id."""

    def __init__(self, runtime, *, nan_policy: str = "raise"):
        sig = runtime.signature
        if runtime.bidirectional:
            raise checks.cannot_step_bidirectional()
        if any(s.batch_axis < 0 for s in sig.states) or "b" not in sig.layout:
            raise InputError("this model's states have no batch axis; expected a symbolic batch dim to batch streams "
                             "(use one Runtime.stream() per stream instead)")
        self.runtime, self.nan_policy = runtime, checks.check_nan_policy(nan_policy)
        self._pairs = sig.states
        self._arrays = {s.input: s.zeros(0) for s in sig.states}
        self._slot: dict[int, int] = {}
        self._ids: list[int] = []
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._float = np.issubdtype(sig.dtype, np.floating)
        self._x_shape = sig.frame_shape
        self._time = sig.has_time
        self._stepper = runtime.backend.stepper(sig, host_state=True)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    @property
    def bound(self) -> bool:
        """Whether steps of the open streams now go through buffers bound once."""
        return bool(getattr(self._stepper, "bound", False))

    @property
    def state_nbytes(self) -> int:
        """Memory the stacked states hold now (it follows the open count)."""
        return sum(a.nbytes for a in self._arrays.values())

    def open(self, state: dict | None = None) -> int:
        """A new stream (zero state, or `state` as from Stream.get_state); returns its id."""
        with self._lock:
            new = {}
            for p in self._pairs:
                v = p.zeros(1) if state is None else np.asarray(state[p.input], dtype=p.dtype)
                if v.shape != p.zeros(1).shape:
                    raise InputError(f"state {p.input!r} of shape {v.shape}; expected {p.zeros(1).shape}")
                new[p.input] = v
            self._arrays = {p.input: np.concatenate([self._arrays[p.input], new[p.input]], axis=p.batch_axis)
                            for p in self._pairs}
            sid = next(self._next)
            self._slot[sid] = len(self._ids)
            self._ids.append(sid)
            return sid

    def close(self, sid: int) -> None:
        with self._lock:
            slot = self._slot.pop(self._check(sid))
            last = len(self._ids) - 1
            arrays = {}
            for p in self._pairs:
                a = self._arrays[p.input]
                if slot != last:  # move the last stream into the hole
                    a[self._index(p, slot)] = a[self._index(p, last)]
                arrays[p.input] = a[self._index(p, slice(0, last))].copy()  # frees the old buffer
            self._arrays = arrays
            if slot != last:
                moved = self._ids[last]
                self._ids[slot], self._slot[moved] = moved, slot
            self._ids.pop()

    def get_state(self, sid: int) -> dict:
        with self._lock:
            slot = self._slot[self._check(sid)]
            return {p.input: self._arrays[p.input][self._index(p, slice(slot, slot + 1))].copy() for p in self._pairs}

    def step(self, frames: dict) -> dict:
        """{id: frame (F,)} -> {id: y (outputs,)}, one session call for all of them."""
        if not frames:
            return {}
        with self._lock:
            ids = list(frames)
            slots, x = self._gather_frames(ids, frames)
            everyone = len(ids) == len(self._ids)
            keep = self._finite(ids, slots, x)
            if keep is not None:  # some frames were skipped or reset: step only the rest
                ids, slots, x, everyone = [ids[k] for k in keep], [slots[k] for k in keep], x[keep], False
                if not ids:
                    return {}
            in_order = everyone and ids == self._ids  # frames given in slot order: nothing to arrange
            if everyone and not in_order:  # arrange the frames in slot order; the states go in as they are
                ordered = np.empty_like(x)
                ordered[slots] = x
                x = ordered
            if self._time:
                x = x.reshape((len(x), 1) + self._x_shape)
            y = self._advance(None if everyone else slots, x)
            if self._time:
                y = y[:, -1]
            y = y.reshape(len(y), -1)
            if everyone and not in_order:
                y = y[slots]
            return dict(zip(ids, y))

    def feed(self, frames: dict) -> dict:
        """{id: frames (T_i, F)} -> {id: Y (T_i, outputs)}: one call per distinct length."""
        out = {}
        with self._lock:
            groups: dict[int, list] = {}
            arrays = {}
            for sid, f in frames.items():
                self._check(sid)
                arrays[sid] = checks.check_frames(self.runtime, f)
                if self._float and not np.isfinite(arrays[sid]).all():
                    raise checks.nonfinite_frame(f"stream {sid}: frames")
                groups.setdefault(len(arrays[sid]), []).append(sid)
            for length, ids in groups.items():
                if length == 0:
                    out.update({i: np.zeros((0, self.runtime.out_size or 0), np.float32) for i in ids})
                    continue
                if not self._time:
                    raise InputError("feed needs a model with a time axis; expected step() for rank-2 inputs")
                y = self._advance([self._slot[i] for i in ids], np.stack([arrays[i] for i in ids]))
                out.update(zip(ids, y))
        return out

    # -- internals -------------------------------------------------------------------------------
    def _check(self, sid):
        if sid not in self._slot:
            raise InputError(f"stream id {sid!r} is not open; expected one of the ids open() returned")
        return sid

    def _gather_frames(self, ids: list, frames: dict):
        """The slots of `ids` and their frames stacked (N, F): one numpy call when all are well formed."""
        try:
            slots = [self._slot[i] for i in ids]
        except KeyError:
            bad = next(i for i in ids if i not in self._slot)
            raise InputError(f"stream id {bad!r} is not open; expected one of the ids open() returned") from None
        if self.runtime.signature.frame_open:  # the first frame fixes a symbolic size
            first = np.shape(next(iter(frames.values())))
            if len(first) == 1 and first[0]:
                self.runtime.set_frame(first[0])
            self._x_shape = self.runtime.signature.frame_shape
        want = (len(ids),) + self._x_shape
        try:
            x = np.asarray(list(frames.values()), dtype=self.runtime.signature.dtype)
        except (TypeError, ValueError):
            x = None
        if x is None or x.shape != want:
            for sid, f in frames.items():
                if np.shape(f) != self._x_shape:
                    raise InputError(f"stream {sid}: frame of shape {np.shape(f)}; expected {self._x_shape} "
                                     "(no state changed)")
            raise InputError(f"frames could not be read as numbers; expected {self._x_shape} per stream")
        if not self._x_shape:
            checks.check_tokens(self.runtime, x)
        return slots, x

    def _finite(self, ids, slots, x):
        """None when every frame is finite, else the positions to step (after nan_policy)."""
        if not self._float or math.isfinite(np.vdot(x, x)):  # vdot: any NaN/Inf makes it non-finite
            return None
        ok = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if ok.all():
            return None
        bad = [i for i, good in zip(ids, ok) if not good]
        if self.nan_policy == "raise":
            raise checks.nonfinite_frame(f"streams {bad}: frame")
        if self.nan_policy == "reset":
            for s, good in zip(slots, ok):
                if not good:
                    for p in self._pairs:
                        self._arrays[p.input][self._index(p, slice(s, s + 1))] = p.zeros(1)
        return np.flatnonzero(ok).tolist()

    def _advance(self, slots, x):
        """One stepper call: every open stream (slots None: the stacked states go in as they are and
        the outputs become the new stack) or a subset (gathered, then scattered back)."""
        if slots is None:
            state = self._arrays
        else:
            idx = np.asarray(slots)
            state = {p.input: self._arrays[p.input][self._index(p, idx)] for p in self._pairs}
        sig = self.runtime.signature
        try:
            y, new = self._stepper.run(sig.call_x(x), state)
        except Exception as e:  # onnxruntime's own error types; no state was touched
            raise checks.run_error(e) from e
        y = sig.canon_y(y)
        if self._stepper.nonfinite(new):
            checks.check_states(new, "for one of these streams")
        if slots is None:
            self._arrays = new
        else:
            for p in self._pairs:
                self._arrays[p.input][self._index(p, idx)] = new[p.input]
        return y

    @staticmethod
    def _index(p, sel):
        return (slice(None),) * p.batch_axis + (sel,)
