"""The one dtype table: every lookup round-trips, and it agrees with onnx and onnxruntime."""

import numpy as np
import pytest

from edgernn.core import dtypes


def test_lookups_round_trip():
    for d in dtypes.TABLE:
        assert dtypes.BY_CODE[d.code] is d and dtypes.BY_NAME[d.name] is d and dtypes.BY_ORT[d.ort] is d
        assert d.ort == f"tensor({d.ort_elem})" and d.triton.startswith("TYPE_")
        if d.numpy is not None:
            assert dtypes.of_numpy(d.numpy) is d and np.dtype(d.numpy).name == d.name
    assert len({d.triton for d in dtypes.TABLE}) == len(dtypes.TABLE)
    assert dtypes.of_numpy(np.complex64) is None
    assert dtypes.numpy_by_ort("float32", "int64") == {"tensor(float)": np.float32, "tensor(int64)": np.int64}


def test_codes_agree_with_onnx():
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    for d in dtypes.TABLE:
        assert onnx.TensorProto.DataType.Name(d.code) == d.ort_elem.upper()
        if d.numpy is not None:
            assert helper.tensor_dtype_to_np_dtype(d.code) == np.dtype(d.numpy)


def test_names_agree_with_onnxruntime():
    """Each element type through a real session: Identity of it reports the name we hold."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    for d in dtypes.TABLE:
        graph = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "t",
                                  [helper.make_tensor_value_info("a", d.code, [2])],
                                  [helper.make_tensor_value_info("b", d.code, [2])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].type == d.ort, d
        if d.numpy is not None:
            x = np.zeros(2, d.numpy)
            assert sess.run(None, {"a": x})[0].dtype == np.dtype(d.numpy), d


def test_the_runtime_and_triton_read_the_table():
    from edgernn.runtime import ortapi, signature

    assert ortapi.ELEM == {d.code: d.numpy for d in dtypes.TABLE if d.numpy is not None}
    assert ortapi.CODE_OF_TYPE == {d.ort: d.code for d in dtypes.TABLE}
    assert ortapi.TYPE_NAME[11] == "double" and ortapi.CODE[np.dtype(np.float16)] == 10
    assert set(signature._DTYPES.values()) == {np.float32, np.int64, np.float64, np.int32, np.float16}
    from edgernn.serve import triton

    assert triton._TRITON_TYPES == {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 6: "TYPE_INT32", 7: "TYPE_INT64"}
