"""What every layer shares and that imports nothing else of ours: errors, the model spec, the
metadata contract, file writes, the one dtype table and ONNX-only graph helpers (no torch, no
onnxruntime)."""
