"""The onnxruntime call floor: a graph with a model's exact inputs and outputs and no work.

Needs the onnx package, imported inside (this is core: importing it needs only numpy).
"""

from __future__ import annotations

import numpy as np

from edgernn.core import dtypes


def identity_graph(rt) -> bytes:
    """y = x[..., :1] broadcast to the output width (one cheap node); states pass through."""
    from onnx import TensorProto, helper, numpy_helper

    sig = rt.signature
    ins = [i for i in rt.session.get_inputs()]
    outs = [o for o in rt.session.get_outputs() if o.name in sig.outputs]
    def vi(a, dtype=None):
        shape = [d if isinstance(d, int) else (d or None) for d in a.shape]
        return helper.make_tensor_value_info(a.name, dtype or dtypes.BY_ORT[a.type].code, shape)
    nodes = [helper.make_node("Identity", [s.input], [s.output]) for s in sig.states]
    width = rt.out_size or 1
    if sig.dtype == np.int64:
        nodes.append(helper.make_node("Cast", [sig.x], ["xf"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Unsqueeze", ["xf", "ax"], ["x3"]))
        src = "x3"
    else:
        src = sig.x
    nodes.append(helper.make_node("MatMul", [src, "w"], [sig.y]))
    k = 1 if sig.dtype == np.int64 else sig.frame_shape[0]
    inits = [numpy_helper.from_array(np.zeros((k, width), np.float32), "w"),
             numpy_helper.from_array(np.array([-1], np.int64), "ax")]
    graph = helper.make_graph(nodes, "floor", [vi(a) for a in ins], [vi(o) for o in outs], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()
