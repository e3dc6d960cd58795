"""Many streams, one session call per step. Torch-free.

States live stacked on each state's batch axis in slots; `step({id: frame})` gathers the slots of
the streams that have a frame, runs the model once, and scatters the new states back. When every
open stream steps (the common case), the gather and scatter are plain slices: no copies beyond
the session's own. Streams join and leave at any step; a closed stream's slot is refilled by the
last one, and storage shrinks when most streams have left, so memory follows the open count.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from edgernn.errors import InputError, ModelFileError


class Batch:
    """Streams over one shared Runtime; `step`/`feed` take and return dicts keyed by stream id."""

    def __init__(self, runtime, *, nan_policy: str = "raise"):
        sig = runtime.signature
        if runtime.bidirectional:
            raise InputError("this model is bidirectional: it cannot be stepped; run it offline (Runtime.offline)")
        if any(s.batch_axis < 0 for s in sig.states):
            raise InputError("this model's states have no batch axis; expected a symbolic batch dim to batch streams "
                             "(use one Runtime.stream() per stream instead)")
        if nan_policy not in ("raise", "skip", "reset"):
            raise InputError(f"nan_policy={nan_policy!r}; expected raise, skip or reset")
        self.runtime, self.nan_policy = runtime, nan_policy
        self._pairs = sig.states
        self._cap = 0
        self._arrays = {s.input: s.zeros(0) for s in sig.states}
        self._slot: dict[int, int] = {}
        self._ids: list[int] = []
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._float = np.issubdtype(sig.dtype, np.floating)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    def open(self, state: dict | None = None) -> int:
        """A new stream (zero state, or `state` as from Stream.get_state); returns its id."""
        with self._lock:
            sid = next(self._next)
            self._resize(len(self._ids) + 1)
            slot = len(self._ids)
            self._ids.append(sid)
            self._slot[sid] = slot
            for p in self._pairs:
                value = state[p.input] if state is not None else p.zeros(1)
                self._put(p, [slot], np.asarray(value, dtype=p.dtype))
            return sid

    def close(self, sid: int) -> None:
        with self._lock:
            slot = self._slot.pop(self._check(sid))
            last = len(self._ids) - 1
            if slot != last:  # move the last stream into the hole
                moved = self._ids[last]
                for p in self._pairs:
                    self._put(p, [slot], self._take(p, [last]))
                self._ids[slot], self._slot[moved] = moved, slot
            self._ids.pop()
            self._resize(len(self._ids))

    def get_state(self, sid: int) -> dict:
        with self._lock:
            slot = self._slot[self._check(sid)]
            return {p.input: self._take(p, [slot]).copy() for p in self._pairs}

    def step(self, frames: dict) -> dict:
        """{id: frame (F,)} -> {id: y (outputs,)}, one session call for all of them."""
        rt = self.runtime
        sig = rt.signature
        if not frames:
            return {}
        with self._lock:
            ids = [self._check(i) for i in frames]
            x = self._stack(frames, ids, sig.frame_shape)
            ids, x = self._finite(ids, x)
            if not ids:
                return {}
            x = x.reshape((len(ids), 1) + sig.frame_shape) if sig.has_time else x
            y = self._run(ids, x)
            y = y[:, -1] if sig.has_time else y
            return dict(zip(ids, y))

    def feed(self, frames: dict) -> dict:
        """{id: frames (T_i, F)} -> {id: Y (T_i, outputs)}: one call per distinct length."""
        from edgernn.runtime import check_frames

        out = {}
        with self._lock:
            groups: dict[int, list] = {}
            arrays = {}
            for sid, f in frames.items():
                self._check(sid)
                arrays[sid] = check_frames(self.runtime, f)
                if self._float and not np.isfinite(arrays[sid]).all():
                    raise InputError(f"stream {sid}: frames hold NaN or Inf; expected finite numbers (no state changed)")
                groups.setdefault(len(arrays[sid]), []).append(sid)
            for length, ids in groups.items():
                if length == 0:
                    out.update({i: np.zeros((0, self.runtime.out_size or 0), np.float32) for i in ids})
                    continue
                if not self.runtime.signature.has_time:
                    raise InputError("feed needs a model with a time axis; expected step() for rank-2 inputs")
                y = self._run(ids, np.stack([arrays[i] for i in ids]))
                out.update(zip(ids, y))
        return out

    # -- internals -------------------------------------------------------------------------------
    def _check(self, sid):
        if sid not in self._slot:
            raise InputError(f"stream id {sid!r} is not open; expected one of the ids open() returned")
        return sid

    def _stack(self, frames, ids, shape):
        try:
            x = np.stack([np.asarray(frames[i], dtype=self.runtime.signature.dtype) for i in ids])
        except (ValueError, TypeError):
            x = None
        if x is None or x.shape[1:] != shape:
            for i in ids:
                got = np.shape(frames[i])
                if got != shape:
                    raise InputError(f"stream {i}: frame of shape {got}; expected {shape} (no state changed)")
            raise InputError(f"frames could not be read as numbers; expected {shape} per stream")
        return x

    def _finite(self, ids, x):
        if not self._float:
            return ids, x
        ok = np.isfinite(x.reshape(len(ids), -1)).all(axis=1)
        if ok.all():
            return ids, x
        bad = [i for i, good in zip(ids, ok) if not good]
        if self.nan_policy == "raise":
            raise InputError(f"streams {bad}: frame holds NaN or Inf; expected finite numbers (no state changed)")
        if self.nan_policy == "reset":
            for i in bad:
                for p in self._pairs:
                    self._put(p, [self._slot[i]], p.zeros(1))
        return [i for i, good in zip(ids, ok) if good], x[ok]

    def _run(self, ids, x):
        slots = [self._slot[i] for i in ids]
        everyone = len(slots) == len(self._ids) and slots == list(range(len(slots)))
        state = {p.input: self._take(p, slots, everyone) for p in self._pairs}
        y, new = self.runtime.run(x, state)
        for p in self._pairs:
            v = new[p.input]
            if not np.isfinite(v).all():
                raise ModelFileError(f"state {p.input!r} became non-finite for streams {ids}; "
                                     "the model diverged on this input (states kept as before)")
        for p in self._pairs:
            self._put(p, slots, new[p.input], everyone)
        return y

    def _index(self, p, slots, everyone=False):
        sl = slice(0, len(slots)) if everyone else np.asarray(slots)
        return (slice(None),) * p.batch_axis + (sl,)

    def _take(self, p, slots, everyone=False):
        return self._arrays[p.input][self._index(p, slots, everyone)]

    def _put(self, p, slots, value, everyone=False):
        self._arrays[p.input][self._index(p, slots, everyone)] = value

    def _resize(self, n: int) -> None:
        """Grow by doubling; shrink to half when a quarter is used, so memory follows the streams."""
        if n <= self._cap and (n >= self._cap // 4 or self._cap <= 16):
            return
        cap = max(16, 1 << max(0, (max(n, 1) - 1).bit_length()))
        for p in self._pairs:
            old = self._arrays[p.input]
            new = p.zeros(cap)
            keep = min(len(self._ids), cap, old.shape[p.batch_axis])
            idx = (slice(None),) * p.batch_axis + (slice(0, keep),)
            new[idx] = old[idx]
            self._arrays[p.input] = new
        self._cap = cap
