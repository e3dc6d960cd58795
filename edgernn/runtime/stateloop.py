"""One stream stepped through preallocated buffers on the C API: one foreign call a step.

A NativeSession's `bind` makes the two IO bindings; this module owns the buffers they share and
the ping-pong between them (edgernn.runtime.backend.NativeStepper drives it).
"""

from __future__ import annotations

import numpy as np

from edgernn.core.errors import NativeError


class StateLoop:
    """Steps one stream through preallocated buffers, so that a step is one foreign call.

    Two buffer sets take turns: a call reads the state from one set and writes the new state into
    the other, so a failed or refused call leaves the state it was given untouched. Each set is ONE
    flat array holding every state tensor and, when they share a dtype, the frame too: the frame of
    a call is written into the set that receives the new state, so after the call `flat` holds the
    frame and the new state together and one reduction checks both for NaN/Inf.

    `run(x, state)` accepts the state dict it last returned (nothing copied) or any other dict of
    arrays (copied in once, after a reset or a restore)."""

    def __init__(self, session: NativeSession, *, x_name: str, x: np.ndarray, constants: dict,
                 states: list[tuple[str, str]], y_name: str, example: list[np.ndarray]):
        """states: (input, output) pairs; example: the outputs [y, *states] of one ordinary call,
        which fix every shape and dtype."""
        x = np.ascontiguousarray(x)
        self.x_shape = x.shape
        shapes = [v.shape for v in example[1:]]
        dtypes = {v.dtype for v in example[1:]}
        if len(dtypes) != 1:
            raise NativeError("state tensors of different dtypes are not bound")
        dtype = dtypes.pop()
        sizes = [int(np.prod(sh)) for sh in shapes]
        self.frame_inside = x.dtype == dtype
        total = sum(sizes) + (x.size if self.frame_inside else 0)
        self._flat = [np.zeros(total, dtype) for _ in range(2)]
        self._sets, self._xs = [], []
        for flat in self._flat:
            views, at = {}, 0
            for (name, _), sh, n in zip(states, shapes, sizes):
                views[name] = flat[at:at + n].reshape(sh)
                at += n
            self._sets.append(views)
            self._xs.append(flat[at:].reshape(x.shape) if self.frame_inside else np.zeros_like(x))
        self.y = np.zeros_like(example[0])
        consts = {k: np.ascontiguousarray(v) for k, v in constants.items()}
        self._calls = []
        for k in (0, 1):
            src, dst = self._sets[k], self._sets[1 - k]
            ins = {x_name: self._xs[1 - k], **consts, **src}
            outs = {y_name: self.y, **{o: dst[i] for i, o in states}}
            self._calls.append(session.bind(ins, outs))
        # per current set k: where the frame goes, the call, and what the caller gets back
        self._plan = [(self._xs[1 - k], self._calls[k].fn, self._calls[k].args, self._sets[1 - k],
                       self._flat[1 - k]) for k in (0, 1)]

    @classmethod
    def for_signature(cls, session, sig, x: np.ndarray, example: list) -> "StateLoop | None":
        """The loop for a model's signature (edgernn.signature), or None where it cannot bind."""
        try:
            return cls(session, x_name=sig.x, x=x, constants=sig.constants,
                       states=[(p.input, p.output) for p in sig.states], y_name=sig.y, example=example)
        except NativeError:
            return None

    def _adopt(self, state: dict) -> int:
        for name, buf in self._sets[0].items():
            np.copyto(buf, state[name], casting="same_kind")
        return 0

    def run(self, x: np.ndarray, state: dict) -> tuple[np.ndarray, dict, np.ndarray]:
        """-> (y, a copy; the new state; the flat buffer holding it and, if frame_inside, the
        frame). Nothing is committed: the caller adopts the new state."""
        sets = self._sets
        xk, run, args, new, flat = self._plan[1 if state is sets[1] else 0 if state is sets[0] else self._adopt(state)]
        xk[...] = x
        status = run(*args)
        if status:
            self._calls[0].check(status)
        return self.y.copy(), new, flat
