"""onnxruntime sessions as edgernn opens them: on the CPU through the C API, not the Python binding.

Why: a streaming step of a small LSTM is mostly call overhead. The Python binding converts every
input and output between numpy and onnxruntime on each call; through the C API (edgernn.ortapi)
a stream binds its frame, output and two sets of state buffers once and each step is ONE foreign
call that writes into them (the state ping-pongs between the two sets). On the reference LSTM
that takes about a fifth off a step (tools/bench.py). A runtime-only process also never loads
the Python binding, so it is smaller than a bare onnxruntime process.

Only CPU sessions go this way; anything the C path does not cover (no library in the wheel, an
old API, non-tensor or string inputs, accelerators) uses the Python binding instead, and
`EDGERNN_NATIVE=0` turns the C path off.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import functools
import io
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgernn.core.errors import InputError, ModelFileError
from edgernn.runtime.ortapi import (CODE_OF_TYPE, ELEM, LOG_FATAL, ONNX_TYPE_TENSOR, ORT_ENABLE_ALL, ORT_SEQUENTIAL,
                            TYPE_NAME, Api, NativeError, Unsupported, api, available, cp, i64, lock, sz, vp)

__all__ = ["NativeError", "Unsupported", "available", "open_session", "fast_run", "NativeSession", "Bound"]


def open_session(model, *, threads: int = 1, providers=("CPUExecutionProvider",), use_native: bool = True):
    """An onnxruntime session as edgernn runs them (one sequential thread pool, quiet) from a path
    or serialized bytes; a file that cannot be loaded is a ModelFileError naming it. On the CPU it
    is a NativeSession (the C API) unless use_native=False or the build does not allow it."""
    if not isinstance(model, (bytes, bytearray)) and not Path(model).is_file():
        raise InputError(f"{model}: no such model file; expected an .onnx file written by `edgernn export`")
    if not isinstance(model, (bytes, bytearray)):
        _refuse_a_checkpoint(model)
    source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
    try:
        if use_native and list(providers) == ["CPUExecutionProvider"]:
            with contextlib.suppress(Unsupported):
                return NativeSession(source, threads=threads)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 4  # fatal only: a load error reaches the user once, as our one line
        # onnxruntime prints some load failures to stdout; stdout belongs to the stream's output lines
        with contextlib.redirect_stdout(io.StringIO()):
            return ort.InferenceSession(source, opts, providers=list(providers))
    except Exception as e:  # onnxruntime raises its own untyped errors for unreadable graphs
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        name = "the model" if isinstance(model, (bytes, bytearray)) else model
        raise ModelFileError(f"{name}: onnxruntime cannot load it ({first}); expected a valid ONNX model") from e


def _refuse_a_checkpoint(path) -> None:
    """A PyTorch file (a zip archive or a raw pickle) where a model is expected: say what to run."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise InputError(f"{path}: a PyTorch checkpoint (a zip archive or a pickle), not an ONNX model; expected "
                         f"an .onnx file: run `edgernn export {path}` first and pass the .onnx it writes")


def fast_run(session):
    """session.run minus its Python-side input validation (about 3 µs a call, a tenth of a small
    LSTM step): onnxruntime still checks every input natively and raises on a bad one. Falls back
    to the public method on builds that lay the binding out differently."""
    inner = getattr(session, "_sess", None)
    if inner is not None and callable(getattr(inner, "run", None)):
        run = inner.run
        call = lambda outputs, feed, run_options=None: run(outputs, feed, run_options)  # noqa: E731
        call.raw = run  # (outputs, feed, run_options): for loops that cannot afford the extra frame
        return call
    return session.run


@dataclass(frozen=True)
class Arg:
    """What InferenceSession.get_inputs() gives: name, shape (int, a dimension's name, or None), type."""

    name: str
    shape: list
    type: str


@dataclass(frozen=True)
class ModelMeta:
    custom_metadata_map: dict


class NativeSession:
    """A CPU onnxruntime session driven through the C API, with the subset of InferenceSession's
    interface edgernn uses (get_inputs, get_outputs, get_modelmeta, get_providers, run) plus
    `bind`, which preallocates every input and output of a repeated call."""

    def __init__(self, model, *, threads: int = 1):
        self.source, self.threads = model, threads  # what opened it (a path or the bytes)
        self._api = a = api()
        opts = a.out(a.CreateSessionOptions)
        try:
            for fn, value in ((a.SetIntraOpNumThreads, threads), (a.SetInterOpNumThreads, 1),
                              (a.SetSessionExecutionMode, ORT_SEQUENTIAL),
                              (a.SetSessionGraphOptimizationLevel, ORT_ENABLE_ALL),
                              (a.SetSessionLogSeverityLevel, LOG_FATAL)):
                a.check(fn(opts, value))
            if isinstance(model, (bytes, bytearray)):
                data = bytes(model)
                self._ptr = a.out(a.CreateSessionFromArray, a.env, data, len(data), opts)
            else:
                self._ptr = a.out(a.CreateSession, a.env, os.fsencode(model), opts)
        finally:
            a.ReleaseSessionOptions(opts)
        fin = weakref.finalize(self, a.ReleaseSession, self._ptr)
        fin.atexit = False  # the process is ending: nothing to give back
        self._inputs = self._args(a.SessionGetInputCount, a.SessionGetInputName, a.SessionGetInputTypeInfo)
        self._outputs = self._args(a.SessionGetOutputCount, a.SessionGetOutputName, a.SessionGetOutputTypeInfo)
        self._output_names = [o.name for o in self._outputs]
        self._dtypes = {o.name: ELEM[CODE_OF_TYPE[o.type]] for o in self._outputs}
        self._names: dict[str, bytes] = {}
        self._shaped: dict = {}  # call shape -> _Shaped, for shapes seen twice
        self._seen: dict = {}  # call shape -> times run the ordinary way; -1: not bindable

    def _args(self, count, name, type_info) -> list[Arg]:
        a, out = self._api, []
        for i in range(a.out(count, self._ptr, kind=sz)):
            arg_name = a.string(a.out(name, self._ptr, i, a.allocator))
            info = a.out(type_info, self._ptr, i)
            try:
                if a.out(a.GetOnnxTypeFromTypeInfo, info, kind=C.c_int) != ONNX_TYPE_TENSOR:
                    raise Unsupported(f"{arg_name!r} is not a tensor")
                tinfo = a.out(a.CastTypeInfoToTensorInfo, info)  # owned by info
                code = a.out(a.GetTensorElementType, tinfo, kind=C.c_int)
                if code not in ELEM:
                    raise Unsupported(f"{arg_name!r} holds {TYPE_NAME.get(code, code)}")
                n = a.out(a.GetDimensionsCount, tinfo, kind=sz)
                dims, syms = (i64 * n)(), (cp * n)()
                a.check(a.GetDimensions(tinfo, dims, n))
                a.check(a.GetSymbolicDimensions(tinfo, syms, n))
                # the dim names live inside `info`: read them before it is released
                shape = [int(d) if d >= 0 else (s.decode("utf-8", "replace") or None if s else None)
                         for d, s in zip(dims, syms)]
            finally:
                a.ReleaseTypeInfo(info)
            out.append(Arg(arg_name, shape, f"tensor({TYPE_NAME[code]})"))
        return out

    @property
    def bound_shapes(self) -> int:
        """How many call shapes run through a binding now (run() binds a shape seen twice)."""
        return len(self._shaped)

    @property
    def unbindable_shapes(self) -> int:
        """Call shapes found not to bind (an output whose shape depends on the values)."""
        return sum(1 for n in self._seen.values() if n < 0)

    def get_inputs(self) -> list[Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[Arg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]

    def get_modelmeta(self) -> ModelMeta:
        a = self._api
        md = a.out(a.SessionGetModelMetadata, self._ptr)
        try:
            keys, n = vp(), i64()
            a.check(a.ModelMetadataGetCustomMetadataMapKeys(md, a.allocator, C.byref(keys), C.byref(n)))
            names = []
            if keys.value:
                arr = C.cast(keys, C.POINTER(vp))
                names = [a.string(arr[i]) for i in range(n.value)]
                a.AllocatorFree(a.allocator, keys)
            found = {}
            for k in names:
                v = a.out(a.ModelMetadataLookupCustomMetadataMap, md, a.allocator, k.encode())
                if v:
                    found[k] = a.string(v)
            return ModelMeta(found)
        finally:
            a.ReleaseModelMetadata(md)

    def _name(self, n: str) -> bytes:
        b = self._names.get(n)
        if b is None:
            b = self._names[n] = n.encode()
        return b

    def run(self, output_names, feed: dict, run_options=None) -> list[np.ndarray]:
        """InferenceSession.run: numpy in, numpy out.

        A foreign call through ctypes costs about a microsecond, and an ordinary run makes some
        twenty (create each input, run, read each output's shape, copy, release), so a call shape
        seen before runs through a binding instead: its inputs are copied into buffers bound once,
        ONE call runs it, its outputs are copied out (see _Shaped)."""
        outs = tuple(output_names or self._output_names)
        key = (outs, tuple((k, np.shape(v), getattr(v, "dtype", None)) for k, v in feed.items()))
        shaped = self._shaped.get(key)
        if shaped is not None:
            got = shaped.run(feed)
            if got is not None:
                return got
        result = self._run_once(outs, feed)  # a bad input raises here, and the binding stays
        if shaped is not None and shaped.broken:  # the ordinary call ran where the bound one could not
            with lock:
                self._shaped.pop(key, None)
                self._seen[key] = -1  # never bound again
            return result
        if shaped is None and self._seen.get(key, 0) >= 1:
            self._bind_shape(key, feed, outs, result)
        else:
            with lock:
                if len(self._seen) > 64:  # shapes that come once (variable-length feeds) are not kept
                    self._seen = {k: n for k, n in self._seen.items() if n < 0}
                if self._seen.get(key, 0) >= 0:
                    self._seen[key] = self._seen.get(key, 0) + 1
        return result

    def _bind_shape(self, key, feed: dict, outs, result: list) -> None:
        if sum(np.asarray(v).nbytes for v in feed.values()) + sum(r.nbytes for r in result) > _SHAPED_BYTES:
            return
        with lock:
            if len(self._shaped) >= _SHAPED_MAX:
                self._shaped.pop(next(iter(self._shaped)))
            try:
                self._shaped[key] = _Shaped(self, feed, dict(zip(outs, result)))
            except NativeError:
                pass

    def _run_once(self, outs, feed: dict) -> list[np.ndarray]:
        a = self._api
        arrays = [v if type(v) is np.ndarray and v.flags.c_contiguous else np.ascontiguousarray(v)
                  for v in feed.values()]  # alive until the call returns
        in_names = (cp * len(arrays))(*[self._name(k) for k in feed])
        in_vals = (vp * len(arrays))()
        out_names = (cp * len(outs))(*[self._name(k) for k in outs])
        out_vals = (vp * len(outs))()
        try:
            for i, arr in enumerate(arrays):
                in_vals[i] = a.tensor(arr)
            a.check(a.Run(self._ptr, None, in_names, in_vals, len(arrays), out_names, len(outs), out_vals))
            return [a.to_numpy(v, self._dtypes.get(k) or ELEM[1]) for k, v in zip(outs, out_vals)]
        finally:
            for v in (*in_vals, *out_vals):
                if v:
                    a.ReleaseValue(v)

    @functools.cached_property
    def binding_session(self):
        """The same model on onnxruntime's Python binding, opened on first use: its ordinary call
        is the faster one for call shapes that cannot be bound (one C-API call here is some
        twenty foreign calls; the binding makes them in C++)."""
        return open_session(self.source, threads=self.threads, use_native=False)

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> "Bound":
        return Bound(self, inputs, outputs)


class Bound:
    """One call shape, preallocated: calling it runs the session reading `inputs` and writing
    `outputs` in place (onnxruntime refuses, with its message, if a shape would change). The
    arrays are the caller's; they must stay alive, C-contiguous and the same objects. It is an
    onnxruntime IO binding, so a call passes three pointers and no names."""

    def __init__(self, session: NativeSession, inputs: dict, outputs: dict):
        a = self._api = session._api
        self._session = session  # keeps the session alive as long as this binding
        for v in (*inputs.values(), *outputs.values()):
            if not (isinstance(v, np.ndarray) and v.flags.c_contiguous):
                raise NativeError("bound arrays must be C-contiguous numpy arrays")
        self._arrays = list(inputs.values()) + list(outputs.values())
        owned = []  # [binding, *values]: released together when this object goes
        fin = weakref.finalize(self, _release, a, owned)
        fin.atexit = False
        binding = a.out(a.CreateIoBinding, session._ptr)
        owned.append(binding)
        for (name, arr), bind in [(kv, a.BindInput) for kv in inputs.items()] + \
                                 [(kv, a.BindOutput) for kv in outputs.items()]:
            value = a.tensor(arr)
            owned.append(value)
            a.check(bind(binding, session._name(name), value))
        # the raw call, for loops that cannot afford a Python frame: status = fn(*args); check(status)
        self.fn, self.args, self.check = a.RunWithBinding, (session._ptr, None, binding), a.check

    def __call__(self) -> None:
        status = self.fn(*self.args)
        if status:
            self.check(status)


_SHAPED_MAX = 4  # bound call shapes kept per session
_SHAPED_BYTES = 1 << 20  # inputs and outputs of a bound shape, at most (memory stays small)


class _Shaped:
    """One call shape of NativeSession.run, bound: input buffers, output buffers, one Bound. A
    thread that finds it busy (another thread inside) runs the ordinary way instead."""

    def __init__(self, session: NativeSession, feed: dict, example: dict):
        self.inputs = {k: np.empty(np.shape(v), np.asarray(v).dtype) for k, v in feed.items()}
        self.outputs = {k: np.empty_like(v) for k, v in example.items()}
        self.call = session.bind(self.inputs, self.outputs)
        self.lock = threading.Lock()
        self.broken = False

    def run(self, feed: dict) -> list[np.ndarray] | None:
        """The outputs, or None: busy, or refused (the caller runs the ordinary way; if that
        succeeds, an output's shape depended on the values and `broken` says so)."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            for buf, v in zip(self.inputs.values(), feed.values()):
                buf[...] = v
            try:
                self.call()
                self.broken = False
            except NativeError:
                self.broken = True
                return None
            return [o.copy() for o in self.outputs.values()]
        finally:
            self.lock.release()


def _release(a: Api, owned: list) -> None:
    if owned:
        a.ReleaseIoBinding(owned[0])
    for v in owned[1:]:
        a.ReleaseValue(v)
