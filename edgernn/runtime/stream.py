"""One stream's state over a shared Runtime: step, feed, reset, save and restore.

A step goes one way whatever the backend: check the frame, one stepper call, check what came
back, commit. The stepper (edgernn.runtime.backend) decides how the call is made.
"""

from __future__ import annotations

import math

import numpy as np

from edgernn.core.errors import InputError
from edgernn.runtime import checks, statefile
from edgernn.runtime.checks import may_be_nonfinite


class Stream:
    """One stream's state over a shared Runtime. Cheap: create one per user, device, or sensor."""

    def __init__(self, runtime, *, nan_policy: str = "raise"):
        sig = runtime.signature
        self.runtime = runtime
        self.nan_policy = checks.check_nan_policy(nan_policy)
        self.steps = 0  # frames consumed so far
        self._stepper = runtime.backend.stepper(sig)
        self._state = runtime.zero_state(1)
        self._float = np.issubdtype(sig.dtype, np.floating)
        self._dtype, self._fshape, self._x_shape = sig.dtype, sig.frame_shape, runtime.frame_call_shape
        self._bi = runtime.bidirectional

    @property
    def bound(self) -> bool:
        """Whether steps now go through buffers bound once (native or device), not ordinary calls."""
        return bool(getattr(self._stepper, "bound", False))

    def step(self, frame) -> np.ndarray:
        """One frame (F,) -> y (outputs,). The state advances only if the frame is accepted."""
        x = frame if type(frame) is np.ndarray and frame.dtype == self._dtype else self._coerce(frame)
        if x.shape != self._fshape:
            x = self._reshape(x)
        stepper = self._stepper
        if self._float:
            # a stepper whose frame shares a buffer with the new state checks both after the call
            if not stepper.frame_inside and may_be_nonfinite(x) and not np.isfinite(x).all():
                return self._refuse_frame()
        elif not self._fshape:
            checks.check_tokens(self.runtime, x)
        if self._bi:
            raise checks.cannot_step_bidirectional()
        try:
            y, new = stepper.run(x.reshape(self._x_shape), self._state)
        except Exception as e:  # onnxruntime's own error types; the state given was not touched
            raise checks.run_error(e) from e
        if self._float and stepper.nonfinite(new):
            if not np.isfinite(x).all():
                return self._refuse_frame()
            checks.check_states(stepper.host(new), f"at frame {self.steps}")
        self._state = new
        self.steps += 1
        return y.reshape(-1)  # one step of one stream: the outputs, whatever the file's layout

    def _coerce(self, frame) -> np.ndarray:
        try:
            return np.asarray(frame, dtype=self._dtype)
        except (TypeError, ValueError) as e:
            raise InputError(f"frame could not be read as {np.dtype(self._dtype).name} ({e}); expected numbers") from e

    def _reshape(self, x: np.ndarray) -> np.ndarray:
        rt = self.runtime
        if rt.signature.frame_open and x.ndim == 1 and x.size:  # the first frame fixes a symbolic size
            rt.set_frame(x.size)
        if rt.signature.frame_shape != self._fshape:
            self._fshape, self._x_shape = rt.signature.frame_shape, rt.frame_call_shape
            if x.shape == self._fshape:
                return x
        if x.size == 1 and self._fshape == (1,):
            return x.reshape(1)
        raise InputError(f"frame of shape {x.shape}; expected {self._fshape} (one value per feature)")

    def feed(self, frames) -> np.ndarray:
        """Frames (T, F) -> Y (T, outputs) in one session call, state carried across calls."""
        if self._bi:
            raise checks.cannot_step_bidirectional()
        rt = self.runtime
        x = checks.check_frames(rt, frames)
        if len(x) == 1:  # one frame (a live source's hop): the bound step path, which screens it too
            return self.step(x[0])[None]
        if self._float and not np.isfinite(x).all():
            return self._feed_around_bad(x)
        if not rt.signature.has_time:
            return np.stack([self.step(f) for f in x]) if len(x) else np.zeros((0, 0), np.float32)
        try:
            y, state = rt.run(x[None], self._host_state())
        except Exception as e:
            raise checks.run_error(e) from e
        checks.check_states(state, f"at frame {self.steps + len(x) - 1}")
        self._state = state
        self.steps += len(x)
        return y[0]

    def _feed_around_bad(self, x: np.ndarray) -> np.ndarray:
        """nan_policy over a chunk: raise before anything runs, or skip/reset at each bad frame
        (its output row is NaN) and run the good stretches between them."""
        ok = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if self.nan_policy == "raise":
            raise checks.nonfinite_frame(f"frame {self.steps + int(np.argmax(~ok))}")
        rows, start = [], 0
        for i in np.flatnonzero(~ok).tolist() + [len(x)]:
            if i > start:
                rows.append(self.feed(x[start:i]))
            if i < len(x):
                self._refuse_frame()
                rows.append(np.full((1, self.runtime.out_size or 1), np.nan, np.float32))
            start = i + 1
        return np.concatenate(rows)

    def _refuse_frame(self) -> np.ndarray:
        """A frame holding NaN/Inf: raise (nan_policy="raise"), or skip/reset and give a NaN row.
        A dropped frame still counts, so frame numbers stay those of the input."""
        if self.nan_policy == "raise":
            raise checks.nonfinite_frame(f"frame {self.steps}")
        if self.nan_policy == "reset":
            self._state = self.runtime.zero_state(1)
        self.steps += 1
        return np.full(self.runtime.out_size or 1, np.nan, np.float32)

    def _host_state(self) -> dict:
        return self._stepper.host(self._state)

    def reset(self) -> None:
        self._state = self.runtime.zero_state(1)
        self.steps = 0

    def get_state(self) -> dict:
        return {k: np.array(v, copy=True) for k, v in self._host_state().items()}

    def save_state(self, path) -> None:
        """Write the state atomically (temp file + rename), tagged with the model's hash."""
        statefile.save(path, self._host_state(), model_sha256=self.runtime.model_sha256, steps=self.steps)

    def load_state(self, path) -> None:
        """Continue from a saved state; refused if it belongs to another model or shape."""
        state, header = statefile.load(path, model_sha256=self.runtime.model_sha256, want=self.runtime.zero_state(1))
        self._state = state
        self.steps = int(header.get("steps", 0))

    def set_state(self, state: dict) -> None:
        want = self.runtime.zero_state(1)
        if set(state) != set(want):
            raise InputError(f"state has {sorted(state)}; expected exactly {sorted(want)}")
        new = {}
        for k, ref in want.items():
            v = np.asarray(state[k], dtype=ref.dtype)
            if v.shape != ref.shape:
                raise InputError(f"state {k!r} of shape {v.shape}; expected {ref.shape}")
            new[k] = v.copy()
        self._state = new
