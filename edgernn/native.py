"""onnxruntime's C API through ctypes: a CPU session without the Python binding.

Why: a streaming step of a small LSTM is mostly call overhead. The Python binding converts every
input and output between numpy and onnxruntime on each call; through the C API a stream binds its
frame, output and two sets of state buffers once and each step is ONE foreign call that writes
into them (the state ping-pongs between the two sets). On the reference LSTM that takes about a
fifth off a step (tools/bench.py). A runtime-only process also never loads the Python binding,
so it is smaller than a bare onnxruntime process.

The library is the `libonnxruntime` shipped inside the onnxruntime wheel, the same version as the
binding. Only CPU sessions go this way; anything this module does not cover (no library in the
wheel, an old API, non-tensor or string inputs, accelerators) uses the Python binding instead.
`EDGERNN_NATIVE=0` turns it off.

The function table below is the stable, append-only OrtApi layout (index = slot in the struct);
tests/test_native.py checks it against onnxruntime_c_api.h when the headers are at hand.
"""

from __future__ import annotations

import ctypes as C
import functools
import glob
import importlib.util
import os
import threading
import weakref
from dataclasses import dataclass

import numpy as np

API_VERSION = 11  # the oldest OrtApi with every function used here (onnxruntime >= 1.11)

_vp, _sz, _i64, _cp = C.c_void_p, C.c_size_t, C.c_int64, C.c_char_p
_P = C.POINTER
# name: (slot in OrtApi, return type, argument types); every OrtStatus* comes back as a void pointer
_TABLE = {
    "GetErrorMessage": (2, _cp, [_vp]),
    "CreateEnv": (3, _vp, [C.c_int, _cp, _P(_vp)]),
    "CreateSession": (7, _vp, [_vp, _cp, _vp, _P(_vp)]),
    "CreateSessionFromArray": (8, _vp, [_vp, _vp, _sz, _vp, _P(_vp)]),
    "Run": (9, _vp, [_vp, _vp, _P(_cp), _P(_vp), _sz, _P(_cp), _sz, _P(_vp)]),
    "CreateSessionOptions": (10, _vp, [_P(_vp)]),
    "SetSessionExecutionMode": (13, _vp, [_vp, C.c_int]),
    "SetSessionLogSeverityLevel": (22, _vp, [_vp, C.c_int]),
    "SetSessionGraphOptimizationLevel": (23, _vp, [_vp, C.c_int]),
    "SetIntraOpNumThreads": (24, _vp, [_vp, C.c_int]),
    "SetInterOpNumThreads": (25, _vp, [_vp, C.c_int]),
    "SessionGetInputCount": (30, _vp, [_vp, _P(_sz)]),
    "SessionGetOutputCount": (31, _vp, [_vp, _P(_sz)]),
    "SessionGetInputTypeInfo": (33, _vp, [_vp, _sz, _P(_vp)]),
    "SessionGetOutputTypeInfo": (34, _vp, [_vp, _sz, _P(_vp)]),
    "SessionGetInputName": (36, _vp, [_vp, _sz, _vp, _P(_vp)]),
    "SessionGetOutputName": (37, _vp, [_vp, _sz, _vp, _P(_vp)]),
    "CreateTensorWithDataAsOrtValue": (49, _vp, [_vp, _vp, _sz, _P(_i64), _sz, C.c_int, _P(_vp)]),
    "GetTensorMutableData": (51, _vp, [_vp, _P(_vp)]),
    "CastTypeInfoToTensorInfo": (55, _vp, [_vp, _P(_vp)]),
    "GetOnnxTypeFromTypeInfo": (56, _vp, [_vp, _P(C.c_int)]),
    "GetTensorElementType": (60, _vp, [_vp, _P(C.c_int)]),
    "GetDimensionsCount": (61, _vp, [_vp, _P(_sz)]),
    "GetDimensions": (62, _vp, [_vp, _P(_i64), _sz]),
    "GetSymbolicDimensions": (63, _vp, [_vp, _P(_cp), _sz]),
    "GetTensorTypeAndShape": (65, _vp, [_vp, _P(_vp)]),
    "CreateCpuMemoryInfo": (69, _vp, [C.c_int, C.c_int, _P(_vp)]),
    "AllocatorFree": (76, _vp, [_vp, _vp]),
    "GetAllocatorWithDefaultOptions": (78, _vp, [_P(_vp)]),
    "ReleaseStatus": (93, None, [_vp]),
    "ReleaseSession": (95, None, [_vp]),
    "ReleaseValue": (96, None, [_vp]),
    "ReleaseTypeInfo": (98, None, [_vp]),
    "ReleaseTensorTypeAndShapeInfo": (99, None, [_vp]),
    "ReleaseSessionOptions": (100, None, [_vp]),
    "SessionGetModelMetadata": (111, _vp, [_vp, _P(_vp)]),
    "ModelMetadataLookupCustomMetadataMap": (116, _vp, [_vp, _vp, _cp, _P(_vp)]),
    "ReleaseModelMetadata": (118, None, [_vp]),
    "ModelMetadataGetCustomMetadataMapKeys": (123, _vp, [_vp, _vp, _P(_vp), _P(_i64)]),
    "RunWithBinding": (133, _vp, [_vp, _vp, _vp]),
    "CreateIoBinding": (134, _vp, [_vp, _P(_vp)]),
    "ReleaseIoBinding": (135, None, [_vp]),
    "BindInput": (136, _vp, [_vp, _cp, _vp]),
    "BindOutput": (137, _vp, [_vp, _cp, _vp]),
}

# ONNX tensor element types <-> numpy
_ELEM = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
         9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
_CODE = {np.dtype(t): c for c, t in _ELEM.items()}
_TYPE_NAME = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
              9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64"}
_CODE_OF_TYPE = {f"tensor({name})": code for code, name in _TYPE_NAME.items()}
_ONNX_TYPE_TENSOR = 1
_ORT_ENABLE_ALL, _ORT_SEQUENTIAL, _LOG_ERROR = 99, 0, 3


class NativeError(RuntimeError):
    """onnxruntime refused a call; the message is onnxruntime's own."""


class Unsupported(Exception):
    """This model or build is not for the C path; use the Python binding."""


def _library_path() -> str | None:
    """The shared library inside the installed onnxruntime package, found without importing it."""
    spec = importlib.util.find_spec("onnxruntime")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for pattern in ("libonnxruntime.so*", "libonnxruntime*.dylib", "onnxruntime.dll"):
            found = sorted(p for p in glob.glob(os.path.join(root, "capi", pattern)) if "providers" not in p)
            if found:
                return found[-1]
    return None


class _Api:
    """The function table, the process-wide environment and the CPU memory description."""

    def __init__(self, path: str):
        lib = C.CDLL(path)
        lib.OrtGetApiBase.restype = _vp
        base = C.cast(lib.OrtGetApiBase(), _P(_vp))
        api = C.CFUNCTYPE(_vp, C.c_uint32)(base[0])(API_VERSION)
        if not api:
            raise Unsupported(f"{path} has no OrtApi version {API_VERSION}")
        self.version = C.CFUNCTYPE(_cp)(base[1])().decode()
        table = C.cast(api, _P(_vp))
        self.lib = lib  # keeps the library loaded
        for name, (slot, res, args) in _TABLE.items():
            setattr(self, name, C.CFUNCTYPE(res, *args)(table[slot]))
        self.env = self.out(self.CreateEnv, _LOG_ERROR, b"edgernn")
        self.cpu = self.out(self.CreateCpuMemoryInfo, 1, 0)  # arena allocator, default memory
        self.allocator = self.out(self.GetAllocatorWithDefaultOptions)

    def check(self, status) -> None:
        if status:
            message = self.GetErrorMessage(status).decode("utf-8", "replace")
            self.ReleaseStatus(status)
            raise NativeError(message)

    def out(self, fn, *args, kind=_vp):
        """Call an OrtApi function whose last argument is an out-pointer; return what it wrote."""
        value = kind()
        self.check(fn(*args, C.byref(value)))
        return value.value

    def string(self, ptr) -> str:
        """A char* onnxruntime allocated for us: read it, then give it back."""
        try:
            return C.string_at(ptr).decode("utf-8")
        finally:
            self.AllocatorFree(self.allocator, ptr)

    def tensor(self, a: np.ndarray) -> int:
        """An OrtValue over `a`'s memory (no copy): `a` must outlive it and stay C-contiguous."""
        code = _CODE.get(a.dtype)
        if code is None:
            raise NativeError(f"numpy dtype {a.dtype} is not a tensor type onnxruntime takes here")
        value = _vp()
        status = self.CreateTensorWithDataAsOrtValue(self.cpu, a.__array_interface__["data"][0], a.nbytes,
                                                     (_i64 * a.ndim)(*a.shape), a.ndim, code, C.byref(value))
        if status:
            self.check(status)
        return value.value

    def to_numpy(self, value, dtype) -> np.ndarray:
        """Copy a tensor OrtValue onnxruntime allocated (of a known dtype) into a numpy array."""
        info, n, ptr = _vp(), _sz(), _vp()
        self.check(self.GetTensorTypeAndShape(value, C.byref(info)))
        try:
            self.check(self.GetDimensionsCount(info, C.byref(n)))
            dims = (_i64 * n.value)()
            self.check(self.GetDimensions(info, dims, n.value))
        finally:
            self.ReleaseTensorTypeAndShapeInfo(info)
        a = np.empty(tuple(dims), dtype)
        if a.nbytes:
            self.check(self.GetTensorMutableData(value, C.byref(ptr)))
            C.memmove(a.__array_interface__["data"][0], ptr.value, a.nbytes)
        return a


_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _api_or_reason():
    if os.environ.get("EDGERNN_NATIVE", "1") == "0":
        return None, "EDGERNN_NATIVE=0"
    path = _library_path()
    if path is None:
        return None, "the onnxruntime package ships no libonnxruntime"
    try:
        return _Api(path), None
    except (OSError, AttributeError, Unsupported, NativeError) as e:
        return None, f"{os.path.basename(path)}: {e}"


def api() -> _Api:
    with _lock:
        found, why = _api_or_reason()
    if found is None:
        raise Unsupported(why)
    return found


def available() -> bool:
    try:
        api()
        return True
    except Unsupported:
        return False


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
        self._api = a = api()
        opts = a.out(a.CreateSessionOptions)
        try:
            for fn, value in ((a.SetIntraOpNumThreads, threads), (a.SetInterOpNumThreads, 1),
                              (a.SetSessionExecutionMode, _ORT_SEQUENTIAL),
                              (a.SetSessionGraphOptimizationLevel, _ORT_ENABLE_ALL),
                              (a.SetSessionLogSeverityLevel, _LOG_ERROR)):
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
        self._dtypes = {o.name: _ELEM[_CODE_OF_TYPE[o.type]] for o in self._outputs}
        self._names: dict[str, bytes] = {}
        self._shaped: dict = {}  # call shape -> _Shaped, for shapes seen twice
        self._seen: dict = {}  # call shape -> times run the ordinary way; -1: not bindable

    def _args(self, count, name, type_info) -> list[Arg]:
        a, out = self._api, []
        for i in range(a.out(count, self._ptr, kind=_sz)):
            arg_name = a.string(a.out(name, self._ptr, i, a.allocator))
            info = a.out(type_info, self._ptr, i)
            try:
                if a.out(a.GetOnnxTypeFromTypeInfo, info, kind=C.c_int) != _ONNX_TYPE_TENSOR:
                    raise Unsupported(f"{arg_name!r} is not a tensor")
                tinfo = a.out(a.CastTypeInfoToTensorInfo, info)  # owned by info
                code = a.out(a.GetTensorElementType, tinfo, kind=C.c_int)
                if code not in _ELEM:
                    raise Unsupported(f"{arg_name!r} holds {_TYPE_NAME.get(code, code)}")
                n = a.out(a.GetDimensionsCount, tinfo, kind=_sz)
                dims, syms = (_i64 * n)(), (_cp * n)()
                a.check(a.GetDimensions(tinfo, dims, n))
                a.check(a.GetSymbolicDimensions(tinfo, syms, n))
            finally:
                a.ReleaseTypeInfo(info)
            shape = [int(d) if d >= 0 else (s.decode() if s else None) for d, s in zip(dims, syms)]
            out.append(Arg(arg_name, shape, f"tensor({_TYPE_NAME[code]})"))
        return out

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
            keys, n = _vp(), _i64()
            a.check(a.ModelMetadataGetCustomMetadataMapKeys(md, a.allocator, C.byref(keys), C.byref(n)))
            names = []
            if keys.value:
                arr = C.cast(keys, _P(_vp))
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
            if shaped.broken:  # never bound again
                with _lock:
                    self._shaped.pop(key, None)
                    self._seen[key] = -1
        result = self._run_once(outs, feed)
        if shaped is None and self._seen.get(key, 0) >= 1:
            self._bind_shape(key, feed, outs, result)
        else:
            with _lock:
                if len(self._seen) > 64:  # shapes that come once (variable-length feeds) are not kept
                    self._seen = {k: n for k, n in self._seen.items() if n < 0}
                if self._seen.get(key, 0) >= 0:
                    self._seen[key] = self._seen.get(key, 0) + 1
        return result

    def _bind_shape(self, key, feed: dict, outs, result: list) -> None:
        if sum(np.asarray(v).nbytes for v in feed.values()) + sum(r.nbytes for r in result) > _SHAPED_BYTES:
            return
        with _lock:
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
        in_names = (_cp * len(arrays))(*[self._name(k) for k in feed])
        in_vals = (_vp * len(arrays))()
        out_names = (_cp * len(outs))(*[self._name(k) for k in outs])
        out_vals = (_vp * len(outs))()
        try:
            for i, arr in enumerate(arrays):
                in_vals[i] = a.tensor(arr)
            a.check(a.Run(self._ptr, None, in_names, in_vals, len(arrays), out_names, len(outs), out_vals))
            return [a.to_numpy(v, self._dtypes.get(k) or _ELEM[1]) for k, v in zip(outs, out_vals)]
        finally:
            for v in (*in_vals, *out_vals):
                if v:
                    a.ReleaseValue(v)

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
        self._args = (session._ptr, None, binding)
        self._run, self._check = a.RunWithBinding, a.check

    def __call__(self) -> None:
        status = self._run(*self._args)
        if status:
            self._check(status)


_SHAPED_MAX = 8  # bound call shapes kept per session
_SHAPED_BYTES = 8 << 20  # inputs and outputs of a bound shape, at most


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
        if not self.lock.acquire(blocking=False):
            return None
        try:
            for buf, v in zip(self.inputs.values(), feed.values()):
                buf[...] = v
            try:
                self.call()
            except NativeError:  # an output whose shape depends on the values: not bindable
                self.broken = True
                return None
            return [o.copy() for o in self.outputs.values()]
        finally:
            self.lock.release()


def _release(a: _Api, owned: list) -> None:
    if owned:
        a.ReleaseIoBinding(owned[0])
    for v in owned[1:]:
        a.ReleaseValue(v)


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
        self._consts = consts
        # per current set k: where the frame goes, the call, and what the caller gets back
        self._plan = [(self._xs[1 - k], self._calls[k]._run, self._calls[k]._args, self._sets[1 - k],
                       self._flat[1 - k]) for k in (0, 1)]

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
            self._calls[0]._check(status)
        return self.y.copy(), new, flat
