"""onnxruntime's C API reached through ctypes: the function table, the library, conversions.

The library is the `libonnxruntime` shipped inside the onnxruntime wheel, the same version as its
Python binding, found without importing the binding. The table below is the stable, append-only
OrtApi layout (index = slot in the struct); tests/test_native.py checks it against
onnxruntime_c_api.h when the headers are at hand. `EDGERNN_NATIVE=0` makes it unavailable.
Sessions and bindings built on it are in edgernn.native.
"""

from __future__ import annotations

import ctypes as C
import functools
import glob
import importlib.util
import os
import threading

import numpy as np

from edgernn.core import dtypes
from edgernn.core.errors import NativeError

API_VERSION = 11  # the oldest OrtApi with every function used here (onnxruntime >= 1.11)

vp, sz, i64, cp = C.c_void_p, C.c_size_t, C.c_int64, C.c_char_p
_P = C.POINTER
# name: (slot in OrtApi, return type, argument types); every OrtStatus* comes back as a void pointer
TABLE = {
    "GetErrorMessage": (2, cp, [vp]),
    "CreateEnv": (3, vp, [C.c_int, cp, _P(vp)]),
    "CreateSession": (7, vp, [vp, cp, vp, _P(vp)]),
    "CreateSessionFromArray": (8, vp, [vp, vp, sz, vp, _P(vp)]),
    "Run": (9, vp, [vp, vp, _P(cp), _P(vp), sz, _P(cp), sz, _P(vp)]),
    "CreateSessionOptions": (10, vp, [_P(vp)]),
    "SetSessionExecutionMode": (13, vp, [vp, C.c_int]),
    "SetSessionLogSeverityLevel": (22, vp, [vp, C.c_int]),
    "SetSessionGraphOptimizationLevel": (23, vp, [vp, C.c_int]),
    "SetIntraOpNumThreads": (24, vp, [vp, C.c_int]),
    "SetInterOpNumThreads": (25, vp, [vp, C.c_int]),
    "SessionGetInputCount": (30, vp, [vp, _P(sz)]),
    "SessionGetOutputCount": (31, vp, [vp, _P(sz)]),
    "SessionGetInputTypeInfo": (33, vp, [vp, sz, _P(vp)]),
    "SessionGetOutputTypeInfo": (34, vp, [vp, sz, _P(vp)]),
    "SessionGetInputName": (36, vp, [vp, sz, vp, _P(vp)]),
    "SessionGetOutputName": (37, vp, [vp, sz, vp, _P(vp)]),
    "CreateTensorWithDataAsOrtValue": (49, vp, [vp, vp, sz, _P(i64), sz, C.c_int, _P(vp)]),
    "GetTensorMutableData": (51, vp, [vp, _P(vp)]),
    "CastTypeInfoToTensorInfo": (55, vp, [vp, _P(vp)]),
    "GetOnnxTypeFromTypeInfo": (56, vp, [vp, _P(C.c_int)]),
    "GetTensorElementType": (60, vp, [vp, _P(C.c_int)]),
    "GetDimensionsCount": (61, vp, [vp, _P(sz)]),
    "GetDimensions": (62, vp, [vp, _P(i64), sz]),
    "GetSymbolicDimensions": (63, vp, [vp, _P(cp), sz]),
    "GetTensorTypeAndShape": (65, vp, [vp, _P(vp)]),
    "CreateCpuMemoryInfo": (69, vp, [C.c_int, C.c_int, _P(vp)]),
    "AllocatorFree": (76, vp, [vp, vp]),
    "GetAllocatorWithDefaultOptions": (78, vp, [_P(vp)]),
    "ReleaseStatus": (93, None, [vp]),
    "ReleaseSession": (95, None, [vp]),
    "ReleaseValue": (96, None, [vp]),
    "ReleaseTypeInfo": (98, None, [vp]),
    "ReleaseTensorTypeAndShapeInfo": (99, None, [vp]),
    "ReleaseSessionOptions": (100, None, [vp]),
    "SessionGetModelMetadata": (111, vp, [vp, _P(vp)]),
    "ModelMetadataLookupCustomMetadataMap": (116, vp, [vp, vp, cp, _P(vp)]),
    "ReleaseModelMetadata": (118, None, [vp]),
    "ModelMetadataGetCustomMetadataMapKeys": (123, vp, [vp, vp, _P(vp), _P(i64)]),
    "RunWithBinding": (133, vp, [vp, vp, vp]),
    "CreateIoBinding": (134, vp, [vp, _P(vp)]),
    "ReleaseIoBinding": (135, None, [vp]),
    "BindInput": (136, vp, [vp, cp, vp]),
    "BindOutput": (137, vp, [vp, cp, vp]),
}

# ONNX tensor element types <-> numpy and onnxruntime's names, as the C API wants them (edgernn.core.dtypes)
ELEM = {d.code: d.numpy for d in dtypes.TABLE if d.numpy is not None}
CODE = {np.dtype(t): c for c, t in ELEM.items()}
TYPE_NAME = {d.code: d.ort_elem for d in dtypes.TABLE}
CODE_OF_TYPE = {d.ort: d.code for d in dtypes.TABLE}
ONNX_TYPE_TENSOR = 1
ORT_ENABLE_ALL, ORT_SEQUENTIAL, LOG_FATAL = 99, 0, 4  # LOG_FATAL: errors come back as statuses, not log lines


class Unsupported(Exception):
    """This model or build is not for the C path; use the Python binding."""


TESTED = ("1.24", "1.33")  # onnxruntime releases the C path is tested with; pyproject pins the same range


def _release(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("+")[0].split(".")[:3])


def tested(version: str) -> bool:
    """Whether this onnxruntime release is inside the tested range (outside: the Python binding)."""
    return _release(TESTED[0]) <= _release(version) < _release(TESTED[1])


def _library_path() -> str | None:
    """The shared library inside the installed onnxruntime package, found without importing it."""
    spec = importlib.util.find_spec("onnxruntime")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for pattern in ("libonnxruntime.so*", "libonnxruntime*.dylib"):
            found = sorted(p for p in glob.glob(os.path.join(root, "capi", pattern)) if "providers" not in p)
            if found:
                return found[-1]
    return None


class Api:
    """The function table, the process-wide environment and the CPU memory description."""

    def __init__(self, path: str):
        lib = C.CDLL(path)
        lib.OrtGetApiBase.restype = vp
        base = C.cast(lib.OrtGetApiBase(), _P(vp))
        api = C.CFUNCTYPE(vp, C.c_uint32)(base[0])(API_VERSION)
        if not api:
            raise Unsupported(f"{path} has no OrtApi version {API_VERSION}")
        self.version = C.CFUNCTYPE(cp)(base[1])().decode()
        if not tested(self.version):
            raise Unsupported(f"onnxruntime {self.version} is outside the range this C path is tested with "
                              f"({TESTED[0]} <= version < {TESTED[1]}); the Python binding is used")
        table = C.cast(api, _P(vp))
        self.lib = lib  # keeps the library loaded
        for name, (slot, res, args) in TABLE.items():
            setattr(self, name, C.CFUNCTYPE(res, *args)(table[slot]))
        self.env = self.out(self.CreateEnv, LOG_FATAL, b"edgernn")
        self.cpu = self.out(self.CreateCpuMemoryInfo, 1, 0)  # arena allocator, default memory
        self.allocator = self.out(self.GetAllocatorWithDefaultOptions)

    def check(self, status) -> None:
        if status:
            message = self.GetErrorMessage(status).decode("utf-8", "replace")
            self.ReleaseStatus(status)
            raise NativeError(message)

    def out(self, fn, *args, kind=vp):
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
        code = CODE.get(a.dtype)
        if code is None:
            raise NativeError(f"numpy dtype {a.dtype} is not a tensor type onnxruntime takes here")
        value = vp()
        status = self.CreateTensorWithDataAsOrtValue(self.cpu, a.__array_interface__["data"][0], a.nbytes,
                                                     (i64 * a.ndim)(*a.shape), a.ndim, code, C.byref(value))
        if status:
            self.check(status)
        return value.value

    def to_numpy(self, value, dtype) -> np.ndarray:
        """Copy a tensor OrtValue onnxruntime allocated (of a known dtype) into a numpy array."""
        info, n, ptr = vp(), sz(), vp()
        self.check(self.GetTensorTypeAndShape(value, C.byref(info)))
        try:
            self.check(self.GetDimensionsCount(info, C.byref(n)))
            dims = (i64 * n.value)()
            self.check(self.GetDimensions(info, dims, n.value))
        finally:
            self.ReleaseTensorTypeAndShapeInfo(info)
        a = np.empty(tuple(dims), dtype)
        if a.nbytes:
            self.check(self.GetTensorMutableData(value, C.byref(ptr)))
            C.memmove(a.__array_interface__["data"][0], ptr.value, a.nbytes)
        return a


lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _api_or_reason():
    if os.environ.get("EDGERNN_NATIVE", "1") == "0":
        return None, "EDGERNN_NATIVE=0"
    if os.name == "nt":  # model paths are wchar_t there; the Python binding handles them
        return None, "Windows: the Python binding is used"
    path = _library_path()
    if path is None:
        return None, "the onnxruntime package ships no libonnxruntime"
    try:
        return Api(path), None
    except (OSError, AttributeError, Unsupported, NativeError) as e:
        return None, f"{os.path.basename(path)}: {e}"


def api() -> Api:
    with lock:
        found, why = _api_or_reason()
    if found is None:
        raise Unsupported(why)
    return found


def reason() -> str | None:
    """Why sessions use the Python binding instead of the C API; None when they use the C API."""
    with lock:
        return _api_or_reason()[1]


def available() -> bool:
    try:
        api()
        return True
    except Unsupported:
        return False
