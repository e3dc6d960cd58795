"""The torch-free runtime: load a stateful ONNX model once, stream through it many times.

    rt = Runtime("model.onnx")          # the engine: one session, shared
    s = rt.stream()                     # a stream: nothing but its own state
    y = s.step(frame)                   # (F,) -> (outputs,)
    Y = s.feed(frames)                  # (T, F) -> (T, outputs), one session call

Only stdlib, numpy and onnxruntime are imported here; on the CPU, onnxruntime's C API is driven
directly (edgernn.runtime.native) and its Python binding is not even loaded. Every session call
goes through the Runtime's backend (edgernn.runtime.backend), chosen once when the model opens.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

from edgernn.core.errors import InputError, ModelFileError
from edgernn.core.wording import plural
from edgernn.runtime import backend as backend_mod
from edgernn.runtime import lookahead as lookahead_mod
from edgernn.runtime import statefile
from edgernn.runtime import providers as providers_mod
from edgernn.runtime import signature
from edgernn.runtime.batch import Batch
from edgernn.runtime.checks import NAN_POLICIES, check_frames  # noqa: F401  (NAN_POLICIES: public name)
from edgernn.runtime.native import open_session
from edgernn.runtime.stream import Stream


class Runtime:
    """One loaded model. Thread-safe to share; each stream carries only its own state."""

    def __init__(self, path, *, provider: str = "cpu", threads: int = 1, states: dict | None = None,
                 constants: dict | None = None, strict: bool = False, provider_options: dict | None = None,
                 fp16: bool = False, cache_dir: str | None = None, layout: str | None = None,
                 frame: int | None = None, use_native: bool = True, _describe_only: bool = False):
        """provider: cpu | cuda | tensorrt (falls back with a warning unless strict=True).
        provider_options: {"cuda": {...}, "tensorrt": {...}} to override the defaults derived
        from the model (edgernn.runtime.providers.default_options); fp16 / cache_dir: TensorRT only.
        layout: the frame input's axes (btf, tbf, bf, tf, bt, tb; read from the graph when not given).
        frame: the frame size when the graph leaves it symbolic (else the first frame's length).
        use_native=False: the Python binding even where the C API would serve."""
        if int(threads) < 1:
            raise InputError(f"threads={threads}; expected a positive integer")
        self.path = Path(path)
        self._options = dict(states=states, constants=constants, layout=layout, frame=frame,
                             describe_only=_describe_only)
        chain = providers_mod.resolve(provider, strict=strict)
        if chain != ["CPUExecutionProvider"]:
            # The model opens once, on the accelerator. TensorRT's default profiles name the model's
            # inputs and shapes, so for it alone the signature is read first from a CPU session.
            sig = None
            if provider == "tensorrt" and not provider_options:
                sig = self._read_signature(open_session(path, threads=int(threads)))[0]
            options = provider_options or providers_mod.default_options(provider, sig, fp16=fp16, cache_dir=cache_dir)
            chain = providers_mod.resolve(provider, strict=strict, options=options, quiet=True)
        self.session = open_session(path, threads=int(threads), providers=chain, use_native=use_native)
        self.signature, self.meta = self._read_signature(self.session)
        self.providers = self.session.get_providers()
        device_id = int(((provider_options or {}).get(provider) or {}).get("device_id", 0))
        # On CUDA a stream keeps its state in device memory between steps (backend.DeviceStepper).
        self.backend = backend_mod.for_session(self.session, device_id=device_id)
        self.on_device = self.backend.kind == "device"
        if chain != ["CPUExecutionProvider"] and self.providers[0] == "CPUExecutionProvider":
            warnings.warn(f"provider {provider!r} failed to initialise; running on CPU", RuntimeWarning, stacklevel=2)
        sig = self.signature
        self._outputs = sig.outputs
        self.frame_call_shape = self._x_shape = sig.step_shape  # x of one step, in the file's layout
        y_shape = self.session.get_outputs()[[o.name for o in self.session.get_outputs()].index(sig.y)].shape
        width = 1 if "b" not in sig.layout and len(y_shape) == 1 else y_shape[-1]  # [T]: one value a step
        self.out_size = width if isinstance(width, int) else (self.meta["output"].get("size") if self.meta else None)
        self._check_output_meta(width)

    def _read_signature(self, session):
        o = self._options
        try:
            return signature.from_session(session, source=str(self.path), states=o["states"], constants=o["constants"],
                                          require_constants=not o["describe_only"], layout=o["layout"],
                                          frame=o["frame"])
        except UnicodeDecodeError as e:
            raise ModelFileError(f"{self.path}: a name or the metadata is not valid UTF-8 ({e.reason} at byte "
                                 f"{e.start}); expected a well-formed ONNX model") from e

    def _check_output_meta(self, width) -> None:
        out = (self.meta or {}).get("output") or {}
        size, labels = out.get("size"), out.get("labels")
        if isinstance(width, int) and ((isinstance(size, int) and size != width) or (labels and len(labels) != width)):
            raise ModelFileError(f"{self.path}: metadata says {plural(size, 'output')} ({len(labels or [])} labels) but the graph's "
                                 f"y has {width}; the metadata contradicts the graph: re-export it")

    def set_frame(self, size: int) -> None:
        """Fix a frame size the graph leaves symbolic (once; streams then take frames of `size`)."""
        sig = self.signature
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise InputError(f"frame size {size!r}; expected a positive whole number of values")
        if not sig.frame_open:
            if sig.frame_shape != (int(size),):
                raise InputError(f"frames of {plural(size, 'value')}; {self.path.name} takes frames of {sig.frame_shape}")
            return
        self.signature = sig.with_frame(int(size))
        self.frame_call_shape = self._x_shape = self.signature.step_shape

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
        feed[self.signature.x] = self.signature.call_x(x)
        out = self.backend.run(self._outputs, feed)
        return self.signature.canon_y(out[0]), {s.input: v for s, v in zip(self.signature.states, out[1:])}

    def offline(self, frames) -> np.ndarray:
        """The whole sequence from a zero state: (T, F) -> (T, outputs). Bidirectional models too."""
        x = check_frames(self, frames)
        if not self.signature.has_time:
            return self.stream().feed(x)
        y, _ = self.run(x[None])
        return y[0]

    def stream(self, *, nan_policy: str = "raise", lookahead=None, chunk: int = 1):
        """A stream. With `lookahead=R` (frames, or math.inf) and `chunk=C`, a bidirectional model
        streams by the latency-controlled rule (edgernn.runtime.lookahead): outputs lag by at most C+R-1
        frames; `feed` returns those that became ready and `flush` the rest."""
        if lookahead is not None:
            return lookahead_mod.LookaheadStream(self, lookahead=lookahead, chunk=chunk, nan_policy=nan_policy)
        return Stream(self, nan_policy=nan_policy)

    @functools.cached_property
    def lookahead_companion(self):
        """The companion graph of a bidirectional model (NAME.lookahead.onnx), loaded once."""
        return lookahead_mod.Companion.for_runtime(self) if lookahead_mod.has_companion(self) else None

    def batch(self, *, nan_policy: str = "raise"):
        """Many streams stepped in one session call (see edgernn.runtime.batch.Batch)."""
        return Batch(self, nan_policy=nan_policy)

    @functools.cached_property
    def model_sha256(self) -> str:
        """Content hash of the model file: state files name the model they belong to."""
        return statefile.model_hash(self.path)
