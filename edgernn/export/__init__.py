"""Export (torch + onnx): one ONNX file per model with explicit state, verified against PyTorch.

Importing this package imports nothing; ``graph`` and ``parity`` import torch themselves.
"""
