"""The torch-free runtime: load a stateful ONNX model once, stream through it many times.

    rt = Runtime("model.onnx")          # the engine: one session, shared
    s = rt.stream()                     # a stream: nothing but its own state
    y = s.step(frame)                   # (F,) -> (outputs,)
    Y = s.feed(frames)                  # (T, F) -> (T, outputs), one session call

Only stdlib, numpy and onnxruntime are imported here; on the CPU, onnxruntime's C API is driven
directly (edgernn.native) and its Python binding is not even loaded.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np

from edgernn.runtime import native
from edgernn.runtime import providers as providers_mod
from edgernn.runtime import signature
from edgernn.runtime.native import fast_run, open_session
from edgernn.core.errors import InputError, ModelFileError

NAN_POLICIES = ("raise", "skip", "reset")


def _is_ortvalue(v) -> bool:
    """A tensor the Python binding holds (device state) rather than a numpy array."""
    return not isinstance(v, np.ndarray) and hasattr(v, "numpy")


class Runtime:
    """One loaded model. Thread-safe to share; each stream carries only its own state."""

    def __init__(self, path, *, provider: str = "cpu", threads: int = 1, states: dict | None = None,
                 constants: dict | None = None, strict: bool = False, provider_options: dict | None = None,
                 fp16: bool = False, cache_dir: str | None = None, _describe_only: bool = False):
        """provider: cpu | cuda | tensorrt (falls back with a warning unless strict=True).
        provider_options: {"cuda": {...}, "tensorrt": {...}} to override the defaults derived
        from the model (edgernn.providers.default_options); fp16 / cache_dir: TensorRT only."""
        if int(threads) < 1:
            raise InputError(f"threads={threads}; expected a positive integer")
        self.path = Path(path)
        chain = providers_mod.resolve(provider, strict=strict)
        cpu_only = chain == ["CPUExecutionProvider"]
        self.session = open_session(path, threads=int(threads))
        try:
            self.signature, self.meta = signature.from_session(self.session, source=str(path), states=states,
                                                               constants=constants,
                                                               require_constants=not _describe_only)
        except UnicodeDecodeError as e:
            raise ModelFileError(f"{path}: a name or the metadata is not valid UTF-8 ({e.reason} at byte {e.start}); "
                                 "expected a well-formed ONNX model") from e
        if not cpu_only:  # the accelerator's options depend on the signature read above
            options = provider_options or providers_mod.default_options(provider, self.signature, fp16=fp16,
                                                                        cache_dir=cache_dir)
            chain = providers_mod.resolve(provider, strict=strict, options=options, quiet=True)
            self.session = open_session(path, threads=int(threads), providers=chain)
        self.providers = self.session.get_providers()
        self._session_run = fast_run(self.session)
        # On CUDA the stream keeps its state in device memory between steps (IO binding).
        self.on_device = self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self.device_id = int(((provider_options or {}).get(provider) or {}).get("device_id", 0)) if self.on_device else 0
        if provider != "cpu" and self.providers[0] == "CPUExecutionProvider" and not cpu_only:
            warnings.warn(f"provider {provider!r} failed to initialise; running on CPU", RuntimeWarning, stacklevel=2)
        sig = self.signature
        self._outputs = sig.outputs
        self._x_shape = ((1, 1) if sig.has_time else (1,)) + sig.frame_shape
        width = self.session.get_outputs()[[o.name for o in self.session.get_outputs()].index(sig.y)].shape[-1]
        self.out_size = width if isinstance(width, int) else (self.meta["output"].get("size") if self.meta else None)
        self._check_output_meta(width)

    def _check_output_meta(self, width) -> None:
        out = (self.meta or {}).get("output") or {}
        size, labels = out.get("size"), out.get("labels")
        if isinstance(width, int) and ((isinstance(size, int) and size != width) or (labels and len(labels) != width)):
            raise ModelFileError(f"{self.path}: metadata says {size} outputs ({len(labels or [])} labels) but the graph's "
                                 f"y has {width}; the metadata contradicts the graph: re-export it")

    @property
    def bidirectional(self) -> bool:
        return bool(self.meta and self.meta["model"].get("bidirectional"))

    @property
    def labels(self) -> list | None:
        return self.meta["output"].get("labels") if self.meta else None

    def zero_state(self, batch: int = 1) -> dict:
        return {s.input: s.zeros(batch) for s in self.signature.states}

    def run(self, x: np.ndarray, state: dict | None = None) -> tuple[np.ndarray, dict]:
        """One session call on a whole batch: x (N, T, F) or (N, F) -> (y, new state). No checks."""
        feed = dict(self.signature.constants)
        feed.update(state if state is not None else self.zero_state(x.shape[0]))
        feed[self.signature.x] = x
        out = self.session.run(self._outputs, feed)
        return out[0], {s.input: v for s, v in zip(self.signature.states, out[1:])}

    def offline(self, frames) -> np.ndarray:
        """The whole sequence from a zero state: (T, F) -> (T, outputs). Bidirectional models too."""
        x = check_frames(self, frames)
        if not self.signature.has_time:
            return self.stream().feed(x)
        y, _ = self.run(x[None])
        return y[0]

    def stream(self, *, nan_policy: str = "raise", lookahead=None, chunk: int = 1):
        """A stream. With `lookahead=R` (frames, or math.inf) and `chunk=C`, a bidirectional model
        streams by the latency-controlled rule (edgernn.lookahead): outputs lag by at most C+R-1
        frames; `feed` returns those that became ready and `flush` the rest."""
        if lookahead is not None:
            from edgernn.runtime.lookahead import LookaheadStream

            return LookaheadStream(self, lookahead=lookahead, chunk=chunk, nan_policy=nan_policy)
        return Stream(self, nan_policy=nan_policy)

    @functools.cached_property
    def lookahead_companion(self):
        """The companion graph of a bidirectional model (NAME.lookahead.onnx), loaded once."""
        from edgernn.runtime import lookahead

        return lookahead.Companion.for_runtime(self) if lookahead.has_companion(self) else None

    def batch(self, *, nan_policy: str = "raise"):
        """Many streams stepped in one session call (see edgernn.batch.Batch)."""
        from edgernn.runtime.batch import Batch

        return Batch(self, nan_policy=nan_policy)

    @functools.cached_property
    def model_sha256(self) -> str:
        """Content hash of the model file: state files name the model they belong to."""
        from edgernn.runtime import statefile

        return statefile.model_hash(self.path)


def check_states(state: dict, where: str) -> None:
    """Refuse a new state holding NaN/Inf (the caller keeps the old one): a NaN once in a
    recurrent state poisons every later output. vdot is the cheapest reduction that turns any
    NaN/Inf into a non-finite number; the exact test runs only when it fires."""
    for name, v in state.items():
        if not math.isfinite(np.vdot(v, v)) and not np.isfinite(v).all():
            raise ModelFileError(f"state {name!r} became non-finite {where}; the model diverged on this input "
                                 "(state kept as before)")


def _run_error(e: Exception) -> ModelFileError:
    first = str(e).strip().splitlines()[-1][:240] if str(e).strip() else type(e).__name__
    return ModelFileError(f"onnxruntime refused this input ({first}); expected frames the model accepts "
                          "(state unchanged)")


def _check_tokens(rt: Runtime, x: np.ndarray) -> None:
    vocab = (rt.meta or {}).get("input", {}).get("vocab")
    if vocab and x.size and (x.min() < 0 or x.max() >= vocab):
        bad = int(x[(x < 0) | (x >= vocab)].flat[0])
        raise InputError(f"token id {bad} is outside this model's vocabulary; expected ids 0..{vocab - 1} "
                         "(state unchanged)")


def check_frames(rt: Runtime, frames) -> np.ndarray:
    """Validate (T, *frame) frames against the model: shape, dtype, finiteness."""
    sig = rt.signature
    try:
        x = np.asarray(frames, dtype=sig.dtype)
    except (TypeError, ValueError) as e:
        raise InputError(f"frames could not be read as {np.dtype(sig.dtype).name} ({e}); expected numbers") from e
    if x.ndim == len(sig.frame_shape) and x.ndim >= 1 and x.shape[-1:] == (1,) == sig.frame_shape:
        x = x[:, None]  # a column of scalars for a one-feature model
    if sig.frame_shape == () and x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]  # token ids read one per row
    if x.ndim != 1 + len(sig.frame_shape) or x.shape[1:] != sig.frame_shape:
        raise InputError(f"frames of shape {x.shape}; expected (T, {', '.join(map(str, sig.frame_shape)) or ''})"
                         .replace(", )", ")"))
    if not sig.frame_shape:
        _check_tokens(rt, x)
    return x


class Stream:
    """One stream's state over a shared Runtime. Cheap: create one per user, device, or sensor."""

    def __init__(self, runtime: Runtime, *, nan_policy: str = "raise"):
        if nan_policy not in NAN_POLICIES:
            raise InputError(f"nan_policy={nan_policy!r}; expected one of {', '.join(NAN_POLICIES)}")
        sig = runtime.signature
        self.runtime = runtime
        self.nan_policy = nan_policy
        self.steps = 0  # frames consumed so far
        self._state = runtime.zero_state(1)
        self._float = np.issubdtype(sig.dtype, np.floating)
        # The hot path, bound once: step() is a handful of attribute reads and one session call.
        self._run = runtime._session_run
        self._dtype, self._fshape, self._xname = sig.dtype, sig.frame_shape, sig.x
        self._outs = runtime._outputs
        self._names = [p.input for p in sig.states]
        self._feed = dict(sig.constants)
        self._last_y = not sig.has_time
        self._bi, self._device, self._x_shape = runtime.bidirectional, runtime.on_device, runtime._x_shape
        # C API sessions: after the first step fixes the shapes, steps go through preallocated
        # buffers (native.StateLoop); None = not built yet, False = not available for this stream.
        self._loop = None if isinstance(runtime.session, native.NativeSession) else False

    def _refuse_bidirectional(self):
        if self.runtime.bidirectional:
            raise InputError("this model is bidirectional: it reads the future, so it cannot be stepped; "
                             "run it offline (Runtime.offline / `edgernn stream` without --chunk)")

    def step(self, frame) -> np.ndarray:
        """One frame (F,) -> y (outputs,). The state advances only if the frame is accepted."""
        x = frame if type(frame) is np.ndarray and frame.dtype == self._dtype else self._coerce(frame)
        if x.shape != self._fshape:
            x = self._reshape(x)
        if self._loop:
            return self._step_bound(x)
        # vdot is the cheapest reduction that turns any NaN/Inf into a non-finite number.
        if self._float:
            if not math.isfinite(np.vdot(x, x)) and not np.isfinite(x).all():
                return self._refuse_frame()
        elif not self._fshape:
            _check_tokens(self.runtime, x)
        if self._bi:
            self._refuse_bidirectional()
        if self._device:
            return self._step_on_device(x.reshape(self._x_shape))
        feed = self._feed
        feed.update(self._state)
        feed[self._xname] = x.reshape(self._x_shape)
        try:
            out = self._run(self._outs, feed)
        except Exception as e:  # onnxruntime's own error types; the state was not touched
            raise _run_error(e) from e
        self._commit(dict(zip(self._names, out[1:])), 1)
        if self._loop is None:
            self._loop = native.StateLoop.for_signature(self.runtime.session, self.runtime.signature,
                                                        feed[self._xname], out) or False
        y = out[0]
        return y.reshape(-1) if self._last_y else y[0, -1]

    def _step_bound(self, x: np.ndarray) -> np.ndarray:
        """step() through the C API's preallocated buffers (see native.StateLoop). The frame is
        checked for NaN/Inf together with the new state, after the call: the call wrote into the
        other buffer set, so refusing the frame still leaves the state as it was."""
        loop = self._loop
        if not loop.frame_inside:
            if self._float and not math.isfinite(np.vdot(x, x)) and not np.isfinite(x).all():
                return self._refuse_frame()
            elif not self._fshape:
                _check_tokens(self.runtime, x)
        try:
            y, new, flat = loop.run(x, self._state)
        except native.NativeError as e:  # the state given was not touched
            raise _run_error(e) from e
        if not math.isfinite(np.vdot(flat, flat)):
            if loop.frame_inside and not np.isfinite(x).all():
                return self._refuse_frame()
            check_states(new, f"at frame {self.steps}")
        self._state = new
        self.steps += 1
        return y.reshape(-1) if self._last_y else y[0, -1]

    def _coerce(self, frame) -> np.ndarray:
        try:
            return np.asarray(frame, dtype=self._dtype)
        except (TypeError, ValueError) as e:
            raise InputError(f"frame could not be read as {np.dtype(self._dtype).name} ({e}); expected numbers") from e

    def _reshape(self, x: np.ndarray) -> np.ndarray:
        if x.size == 1 and self._fshape == (1,):
            return x.reshape(1)
        raise InputError(f"frame of shape {x.shape}; expected {self._fshape} (one value per feature)")

    def feed(self, frames) -> np.ndarray:
        """Frames (T, F) -> Y (T, outputs) in one session call, state carried across calls."""
        self._refuse_bidirectional()
        rt = self.runtime
        x = check_frames(rt, frames)
        if self._float and not np.isfinite(x).all():
            return self._feed_around_bad(x)
        if not rt.signature.has_time:
            return np.stack([self.step(f) for f in x]) if len(x) else np.zeros((0, 0), np.float32)
        y, state = rt.run(x[None], self._host_state())
        self._commit(state, len(x))
        return y[0]

    def _feed_around_bad(self, x: np.ndarray) -> np.ndarray:
        """nan_policy over a chunk: raise before anything runs, or skip/reset at each bad frame
        (its output row is NaN) and run the good stretches between them."""
        ok = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if self.nan_policy == "raise":
            bad = int(np.argmax(~ok))
            raise InputError(f"frame {self.steps + bad} holds NaN or Inf; expected finite numbers (state unchanged)")
        rows, start = [], 0
        for i in np.flatnonzero(~ok).tolist() + [len(x)]:
            if i > start:
                rows.append(self.feed(x[start:i]))
            if i < len(x):
                self._bad_frame("holds NaN or Inf")
                rows.append(np.full((1, self.runtime.out_size or 1), np.nan, np.float32))
            start = i + 1
        return np.concatenate(rows)

    def _step_on_device(self, x: np.ndarray) -> np.ndarray:
        """CUDA: bind the state outputs to device memory and feed them back as the next inputs,
        so per step only the frame goes up and y comes down (host copies dominate otherwise)."""
        rt = self.runtime
        sig = rt.signature
        b = rt.session.io_binding()
        b.bind_cpu_input(sig.x, x)
        for name, value in sig.constants.items():
            b.bind_cpu_input(name, value)
        for p in sig.states:
            v = self._state[p.input]
            if _is_ortvalue(v):
                b.bind_ortvalue_input(p.input, v)
            else:
                b.bind_cpu_input(p.input, np.ascontiguousarray(v))
        b.bind_output(sig.y)
        for p in sig.states:
            b.bind_output(p.output, "cuda", rt.device_id)
        rt.session.run_with_iobinding(b)
        outs = b.get_outputs()
        self._state = {p.input: v for p, v in zip(sig.states, outs[1:])}  # stays on the GPU
        self.steps += 1
        y = outs[0].numpy()
        return y.reshape(-1) if not sig.has_time else y[0, -1]

    def _host_state(self) -> dict:
        return {k: (v.numpy() if _is_ortvalue(v) else v) for k, v in self._state.items()}

    def _refuse_frame(self) -> np.ndarray:
        """A frame holding NaN/Inf: raise (nan_policy="raise"), or skip/reset and give a NaN row."""
        self._bad_frame("holds NaN or Inf")
        return np.full(self.runtime.out_size or 1, np.nan, np.float32)

    def _bad_frame(self, what: str) -> bool:
        """Apply nan_policy; True means the caller skips the frame (it still counts as consumed,
        so frame numbers stay those of the input)."""
        if self.nan_policy == "raise":
            raise InputError(f"frame {self.steps} {what}; expected finite numbers (state unchanged)")
        if self.nan_policy == "reset":
            self._state = self.runtime.zero_state(1)
        self.steps += 1
        return True

    def _commit(self, state: dict, n: int) -> None:
        check_states(state, f"at frame {self.steps + n - 1}")
        self._state = state
        self.steps += n

    def reset(self) -> None:
        self._state = self.runtime.zero_state(1)
        self.steps = 0

    def get_state(self) -> dict:
        return {k: np.array(v, copy=True) for k, v in self._host_state().items()}

    def save_state(self, path) -> None:
        """Write the state atomically (temp file + rename), tagged with the model's hash."""
        from edgernn.runtime import statefile

        statefile.save(path, self._host_state(), model_sha256=self.runtime.model_sha256, steps=self.steps)

    def load_state(self, path) -> None:
        """Continue from a saved state; refused if it belongs to another model or shape."""
        from edgernn.runtime import statefile

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
