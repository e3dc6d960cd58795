"""Stream a bidirectional model with bounded lookahead, torch-free.

    rt = Runtime("model.onnx")                       # finds model.lookahead.onnx beside it
    s = LookaheadStream(rt, lookahead=5, chunk=1)    # output lags the input by C+R-1 frames at most
    Y = s.feed(frames)     # (T, F) -> (k, outputs): the outputs that became ready, maybe none
    Y = s.flush()          # end of input: the rest

The output of the chunk [t0, t0+C) is computed once frames up to t0+C+R-1 have arrived (or the
input ended), over the window [t0, min(t0+C+R, end)): in every layer the forward direction
starts from the state it carried at t0 and carries on its state after the chunk; the backward
direction starts from zeros at the window's end (edgernn.chunked has the PyTorch reference).
One companion call per window; only the frames not yet emitted are kept (at most C+R-1 between
calls), so each input frame costs about (C+R)/C window frames, whatever the history.

Only stdlib, numpy and onnxruntime are imported here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgernn.core import meta as meta_mod
from edgernn.core.errors import InputError, ModelFileError

COMPANION_FORMAT = 1
SUFFIX = ".lookahead.onnx"
RULE = ("chunk [t0,t0+C) over window [t0,min(t0+C+R,end)); forward from the state carried at t0, carried on "
        "after frame t0+C-1; backward from zeros at the window end; head on the chunk frames")


def check_options(chunk, lookahead) -> tuple[int, float]:
    """(C, R): C a positive integer, R a non-negative integer or None/inf (unbounded: offline)."""
    def whole(v) -> bool:
        number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        return number and float(v).is_integer()

    if not whole(chunk) or int(chunk) < 1:
        raise InputError(f"chunk={chunk!r}; expected a positive integer (frames per output chunk)")
    if lookahead is None or (isinstance(lookahead, (float, np.floating)) and math.isinf(lookahead) and lookahead > 0):
        return int(chunk), math.inf
    if not whole(lookahead) or int(lookahead) < 0:
        raise InputError(f"lookahead={lookahead!r}; expected a non-negative integer of frames, or None for unbounded")
    return int(chunk), int(lookahead)


def parse_lookahead(text: str) -> int | float:
    """'5' -> 5, 'inf' (or 'infinity', '∞') -> math.inf: R as a user writes it (`--lookahead`)."""
    if text.strip().lower() in ("inf", "infinity", "∞"):
        return math.inf
    try:
        r = int(text)
    except ValueError:
        r = -1
    if r < 0:
        raise InputError(f"--lookahead {text!r}; expected a number of frames >= 0, or inf")
    return r


def companion_path(main_path) -> Path:
    """NAME.onnx -> NAME.lookahead.onnx, beside it."""
    p = Path(main_path)
    return p.with_name((p.name[:-5] if p.name.endswith(".onnx") else p.name) + SUFFIX)


class Companion:
    """The window graph NAME.lookahead.onnx, loaded once and shared by every lookahead stream."""

    def __init__(self, model, *, providers=("CPUExecutionProvider",), threads: int = 1):
        """model: a path or the serialised bytes of a companion written by `edgernn export`."""
        from edgernn.runtime.native import open_session

        self.session = open_session(model, threads=int(threads), providers=providers)
        source = str(model) if not isinstance(model, (bytes, bytearray)) else "lookahead companion"
        text = self.session.get_modelmeta().custom_metadata_map.get(meta_mod.KEY)
        self.meta = meta_mod.parse(text, source=source) if text is not None else None
        role = ((self.meta or {}).get("lookahead") or {}).get("role")
        if role != "companion":
            raise ModelFileError(f"{source}: not a lookahead companion (its metadata has no lookahead role); expected "
                                 "the NAME.lookahead.onnx that `edgernn export` writes for a bidirectional model")
        fmt = self.meta["lookahead"].get("format", 1)
        if not isinstance(fmt, int) or fmt > COMPANION_FORMAT:
            raise ModelFileError(f"{source}: companion format {fmt!r}; this edgernn reads {COMPANION_FORMAT}: "
                                 "upgrade edgernn")
        self.states = [(s["input"], s["output"], tuple(s["shape"]), s["batch_axis"]) for s in self.meta["states"]]
        self.x = self.meta["lookahead"].get("window_input", "x")
        self.chunk = self.meta["lookahead"].get("chunk_input", "chunk")
        self.y = self.meta["output"]["name"]
        self.out_size = self.meta["output"]["size"]
        self.dtype = np.int64 if self.meta["input"]["dtype"] == "int64" else np.float32
        self._outputs = [self.y] + [o for _, o, _, _ in self.states]

    @classmethod
    def for_runtime(cls, rt) -> "Companion":
        """The companion of a loaded bidirectional Runtime: named in its metadata, else NAME.lookahead.onnx."""
        path = companion_file(rt)
        if not path.is_file():
            raise ModelFileError(f"{rt.path}: no lookahead companion ({path.name} is missing); a bidirectional model "
                                 "streams with a bounded lookahead through it: re-export with `edgernn export`, "
                                 "which writes it beside the model")
        providers = [p for p in rt.providers if p != "TensorrtExecutionProvider"]  # dynamic windows: no engine cache
        return cls(path, providers=providers or ["CPUExecutionProvider"])

    def zero_state(self, batch: int = 1) -> dict:
        out = {}
        for name, _, shape, axis in self.states:
            dims = [batch if i == axis else d for i, d in enumerate(shape)]
            out[name] = np.zeros(dims, np.float32)
        return out

    def window(self, x: np.ndarray, chunk: int, state: dict) -> tuple[np.ndarray, dict]:
        """One window: x (N, W, ...) -> y (N, chunk, outputs) and the forward states after frame chunk-1."""
        assert 1 <= chunk <= x.shape[1], (chunk, x.shape)
        feed = {self.x: np.ascontiguousarray(x, dtype=self.dtype), self.chunk: np.array([chunk], np.int64), **state}
        out = self.session.run(self._outputs, feed)
        return out[0], {name: v for (name, _, _, _), v in zip(self.states, out[1:])}

    def sequence(self, x: np.ndarray, *, chunk: int = 1, lookahead=None) -> np.ndarray:
        """Whole sequences under the rule: x (N, L, ...) -> y (N, L, outputs), the schedule a stream follows."""
        c, r = check_options(chunk, lookahead)
        n, length = x.shape[:2]
        state, ys, pos = self.zero_state(n), [], 0
        while length - pos >= c + r:
            y, state = self.window(x[:, pos:pos + c + r], c, state)
            ys.append(y)
            pos += c
        if pos < length:  # every window left ends at the input's end: they are one window
            ys.append(self.window(x[:, pos:], length - pos, state)[0])
        return np.concatenate(ys, axis=1) if ys else np.zeros((n, 0, self.out_size), np.float32)


class LookaheadStream:
    """One stream of a bidirectional model, with output lagging input by at most C+R-1 frames.

    steps: frames fed; emitted: outputs returned (the next output belongs to input frame
    `emitted`); window_frames / calls: the work done, in frames passed through windows and in
    session calls. A unidirectional model ignores lookahead and chunk: every frame is ready at once.
    """

    def __init__(self, runtime, companion=None, *, lookahead=None, chunk: int = 1, nan_policy: str = "raise"):
        """companion: a Companion, a path, or None to find it beside the runtime's model file.
        lookahead None (or math.inf) is unbounded: everything is emitted at flush(), as offline."""
        self.runtime = runtime
        self.chunk, self.lookahead = check_options(chunk, lookahead)
        if runtime.bidirectional and nan_policy != "raise":
            raise InputError(f"nan_policy={nan_policy!r} with a bidirectional model; expected 'raise': every input "
                             "frame gets exactly one output, so a bad frame cannot be skipped")
        self._inner = None if runtime.bidirectional else runtime.stream(nan_policy=nan_policy)
        self.companion = None
        if runtime.bidirectional:
            if isinstance(companion, Companion):
                self.companion = companion
            elif companion is not None:
                self.companion = Companion(companion, providers=runtime.providers)
            elif getattr(runtime, "lookahead_companion", None) is not None:  # loaded once, shared by streams
                self.companion = runtime.lookahead_companion
            elif not math.isinf(self.lookahead) or has_companion(runtime):
                self.companion = Companion.for_runtime(runtime)
            # else: unbounded and no companion (an older export): flush() runs the main graph offline.
        out = runtime.out_size or (self.companion.out_size if self.companion else 1)
        self._empty = np.zeros((0, out), np.float32)
        self.reset()

    @property
    def latency_frames(self) -> int | float:
        """The most frames an output waits for after its own frame arrives: C+R-1 (inf if unbounded)."""
        return 0 if self._inner is not None else self.chunk + self.lookahead - 1

    @property
    def pending(self) -> int:
        """Frames fed whose outputs are not out yet: fewer than C+R after every feed."""
        return self._pending

    def reset(self) -> None:
        """Forget everything: a new input starts from zero state."""
        if self._inner is not None:
            self._inner.reset()
        self._state = self.companion.zero_state(1) if self.companion else None
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self.steps = self.emitted = self.window_frames = self.calls = 0

    def step(self, frame) -> np.ndarray:
        """One frame (F,) -> y (outputs,): unidirectional models only; a bidirectional one answers later."""
        if self._inner is None:
            raise InputError("this model is bidirectional: a frame's output waits for its lookahead, so it cannot be "
                             "stepped; expected feed(frames), which returns the outputs that became ready, and flush()")
        y = self._inner.step(frame)
        self._count(1, 1, 1)
        return y

    def feed(self, frames) -> np.ndarray:
        """Frames (T, F) -> the outputs that became ready, (k, outputs) with 0 <= k; in input order."""
        from edgernn.runtime import checks

        x = checks.check_frames(self.runtime, frames)
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            bad = int(np.argmax(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
            raise checks.nonfinite_frame(f"frame {self.steps + bad}")
        if self._inner is not None:
            y = self._inner.feed(x) if len(x) else self._empty
            self._count(len(x), len(x), len(x))
            return y
        if len(x):
            self._parts.append(x)
            self._pending += len(x)
        self.steps += len(x)
        c, w = self.chunk, self.chunk + self.lookahead
        if self._pending < w:
            return self._empty
        buf = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        ys, pos = [], 0
        while len(buf) - pos >= w:
            ys.append(self._window(buf[pos:pos + int(w)], c))
            pos += c
        self._parts, self._pending = ([buf[pos:]] if pos < len(buf) else []), len(buf) - pos
        return np.concatenate(ys)

    def flush(self) -> np.ndarray:
        """End of input: the outputs of the frames still waiting for their lookahead, (k, outputs).
        The stream may go on afterwards as if the input had been cut here; reset() starts anew."""
        if self._inner is not None or not self._pending:
            return self._empty
        buf = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        self._parts, self._pending = [], 0
        if self.companion is None:  # unbounded, nothing emitted yet: exactly the offline model
            self._count(0, len(buf), len(buf))
            return self.runtime.offline(buf)
        return self._window(buf, len(buf))  # every window left ends here: they are one window

    def _window(self, x: np.ndarray, c: int) -> np.ndarray:
        y, state = self.companion.window(x[None], c, self._state)
        for name, v in state.items():
            if not np.isfinite(v).all():
                raise ModelFileError(f"state {name!r} became non-finite at frame {self.emitted + c - 1}; "
                                     "the model diverged on this input (state kept as before)")
        self._state = state
        self._count(0, c, len(x))
        return y[0]

    def _count(self, steps: int, emitted: int, window_frames: int) -> None:
        self.steps += steps
        self.emitted += emitted
        self.window_frames += window_frames
        self.calls += 1


def companion_file(rt) -> Path:
    """Where a loaded Runtime's companion is: named in its metadata, else NAME.lookahead.onnx beside it."""
    info = (rt.meta or {}).get("lookahead") or {}
    return rt.path.parent / info["file"] if info.get("file") else companion_path(rt.path)


def has_companion(rt) -> bool:
    return bool(rt.bidirectional) and companion_file(rt).is_file()


def lookahead_offline(rt, frames, *, lookahead=None, chunk: int = 1, companion=None) -> np.ndarray:
    """A whole sequence under the rule: (T, F) -> (T, outputs); lookahead None is Runtime.offline."""
    s = LookaheadStream(rt, companion, lookahead=lookahead, chunk=chunk)
    return np.concatenate([s.feed(frames), s.flush()])
