"""Serving: a Triton python-backend model repository around an edgernn ONNX file."""
