"""The one tensor element-type table: ONNX code, numpy type, onnxruntime name, short name, Triton name.

Everything that converts between them (the C API, signatures, the Triton config, the ONNX
helpers) reads this table; tests/test_dtypes.py checks it against onnx and onnxruntime.
Stdlib and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    code: int  # onnx TensorProto.DataType
    name: str  # short name, numpy's: "float32"
    numpy: type | None  # numpy scalar type; None where numpy has no fixed-size one (strings)
    ort: str  # onnxruntime's NodeArg.type: "tensor(float)"
    triton: str  # Triton's data_type: "TYPE_FP32"

    @property
    def ort_elem(self) -> str:
        """The name inside ort's "tensor(...)": "float"."""
        return self.ort[len("tensor("):-1]


TABLE = (
    DType(1, "float32", np.float32, "tensor(float)", "TYPE_FP32"),
    DType(2, "uint8", np.uint8, "tensor(uint8)", "TYPE_UINT8"),
    DType(3, "int8", np.int8, "tensor(int8)", "TYPE_INT8"),
    DType(4, "uint16", np.uint16, "tensor(uint16)", "TYPE_UINT16"),
    DType(5, "int16", np.int16, "tensor(int16)", "TYPE_INT16"),
    DType(6, "int32", np.int32, "tensor(int32)", "TYPE_INT32"),
    DType(7, "int64", np.int64, "tensor(int64)", "TYPE_INT64"),
    DType(8, "string", None, "tensor(string)", "TYPE_STRING"),
    DType(9, "bool", np.bool_, "tensor(bool)", "TYPE_BOOL"),
    DType(10, "float16", np.float16, "tensor(float16)", "TYPE_FP16"),
    DType(11, "float64", np.float64, "tensor(double)", "TYPE_FP64"),
    DType(12, "uint32", np.uint32, "tensor(uint32)", "TYPE_UINT32"),
    DType(13, "uint64", np.uint64, "tensor(uint64)", "TYPE_UINT64"),
)

BY_CODE = {d.code: d for d in TABLE}
BY_NAME = {d.name: d for d in TABLE}
BY_ORT = {d.ort: d for d in TABLE}
BY_NUMPY = {np.dtype(d.numpy): d for d in TABLE if d.numpy is not None}


def numpy_by_ort(*names: str) -> dict:
    """{"tensor(float)": np.float32, ...} for the short `names` given (all numeric ones if none)."""
    rows = [BY_NAME[n] for n in names] if names else [d for d in TABLE if d.numpy is not None]
    return {d.ort: d.numpy for d in rows}


def of_numpy(dtype) -> DType | None:
    """The row of a numpy dtype (or type), None when ONNX has no such element type."""
    return BY_NUMPY.get(np.dtype(dtype))
