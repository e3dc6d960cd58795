"""The torch-free runtime: onnxruntime + numpy, nothing of train or export.

    from edgernn.runtime import Runtime
    rt = Runtime("model.onnx")
    s = rt.stream(); y = s.step(frame)

Layout: ``engine`` (Runtime: one opened model), ``stream`` / ``batch`` (state carried between
calls), ``backend`` (the one interface every session call goes through: CPU-native, Python
binding, device), ``native`` / ``ortapi`` (onnxruntime's C API through ctypes), ``signature``
(which input pairs with which output), and the streaming helpers (framing, events, lookahead,
generate, statefile, sources, bench).
"""

from edgernn.runtime.engine import Runtime, Stream

__all__ = ["Runtime", "Stream"]
