"""The ONNX model wrapper and its edgernn metadata, torch-free: what the exporter, the lookahead
companion and the Triton repository writer share.

`onnx` is imported inside each function, so importing this module needs neither torch nor onnx
(edgernn.serve reads it on machines that only serve).
"""

from __future__ import annotations

from edgernn.core import meta as meta_mod

DEFAULT_OPSET = 17
IR_VERSION = 8  # readable by onnxruntime builds from 2022 on


def set_meta(proto, meta: dict) -> None:
    """Write `meta` as the model's one edgernn metadata entry, replacing any earlier one."""
    import onnx

    for p in list(proto.metadata_props):
        if p.key == meta_mod.KEY:
            proto.metadata_props.remove(p)
    proto.metadata_props.append(onnx.StringStringEntryProto(key=meta_mod.KEY, value=meta_mod.dumps(meta)))


def meta_text(proto) -> str | None:
    """The raw edgernn metadata JSON of a model, or None when it has none."""
    return {p.key: p.value for p in proto.metadata_props}.get(meta_mod.KEY)


def make_model(graph, meta: dict, *, opset: int = DEFAULT_OPSET):
    """A checked ModelProto around `graph`, stamped with edgernn's producer and `meta`."""
    import onnx
    from onnx import helper

    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgernn",
                              producer_version=__import__("edgernn").__version__)
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    set_meta(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto
