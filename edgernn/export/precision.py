"""Smaller weights: fp16 storage for every cell, int8 dynamic quantization where onnxruntime has
a kernel for it (LSTM: DynamicQuantizeLSTM; GRU and RNN have none, so they get fp16).

Each variant is checked against the fp32 graph it came from, with a tolerance that fits the
precision, and the error goes into the metadata.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TOLERANCE = {"fp32": 1e-5, "fp16": 1e-2, "int8": 1e-1}  # on |err| / max(1, |y_fp32|)


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Store float weights as fp16 and cast them back at load: half the file, fp32 arithmetic.

    onnxruntime folds the casts into constants when the session starts, so steps cost the same;
    the CPU kernels for the recurrent ops are fp32 anyway.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    casts = []
    for init in g.initializer:
        if init.data_type != TensorProto.FLOAT or len(init.dims) < 2:
            continue  # vectors (biases, normalisation) are small: keep them exact
        arr = numpy_helper.to_array(init)
        name = init.name
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), name + ".fp16"))
        casts.append(helper.make_node("Cast", [name + ".fp16"], [name], to=TensorProto.FLOAT))
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(out)
    return out


def to_int8(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime dynamic quantization of LSTM and MatMul weights (per-tensor int8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        onnx.save(proto, str(src))
        logging.disable(logging.WARNING)  # the quantizer logs advice to the root logger; we are a library
        try:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM", "MatMul"])
        finally:
            logging.disable(logging.NOTSET)
        q = onnx.load(str(dst))
    q.ClearField("metadata_props")
    q.metadata_props.extend(proto.metadata_props)
    return q


def convert(proto: onnx.ModelProto, precision: str, cell: str) -> tuple[onnx.ModelProto, str]:
    """The variant for `precision`; returns it and the precision actually used."""
    if precision == "fp32":
        return proto, "fp32"
    if precision == "int8" and cell != "lstm":
        warnings.warn(f"int8: onnxruntime has no dynamically quantized {cell.upper()} kernel; writing fp16 weights "
                      "instead", RuntimeWarning, stacklevel=2)
        precision = "fp16"
    return (to_int8(proto) if precision == "int8" else to_fp16(proto)), precision


def compare(reference: bytes, variant: bytes, *, inputs: list[dict]) -> float:
    """Largest |err| / max(1, |ref|) between two graphs over the given feeds."""
    from edgernn.runtime.native import open_session

    a, b = open_session(reference), open_session(variant)
    worst = 0.0
    for feed in inputs:
        for r, v in zip(a.run(None, feed), b.run(None, feed)):
            worst = max(worst, float(np.max(np.abs(r - v)) / max(1.0, float(np.max(np.abs(r))))))
    return worst
