"""Export (torch + onnx): one ONNX file per model with explicit state, verified against PyTorch.

`pipeline.export_checkpoint` is the whole chain `edgernn export` runs; `graph` builds the file
from the weights, `parity` checks it, `precision` makes fp16/int8 variants, `companion` the
lookahead graph of a bidirectional model, `seq2seq` an encoder–decoder pair; `onnxmeta` (the
metadata plumbing) is torch-free. Importing this package imports nothing.
"""
