"""Serving: a Triton Inference Server model repository around an edgernn ONNX file (torch-free)."""
