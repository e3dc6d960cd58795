"""Export (torch + onnx): one ONNX file per model with explicit state, verified against PyTorch.

`export_module` writes any PyTorch module with recurrent layers as one streaming file
(`module` drives `streamify`, which makes each layer's state explicit, `recurrent`, the RNN
forwards it threads, `refuse`, which names the layers that cannot stream, and `module_parity`,
its check). `pipeline.export_checkpoint` is the whole chain `edgernn export` runs on a
checkpoint; `graph` builds the file from the weights, `parity` checks it, `precision` makes
fp16/int8 variants, `companion` the lookahead graph of a bidirectional model, `seq2seq` an
encoder–decoder pair; `usercode` loads a user's module for the CLI; `exported` is the report
they return; `onnxmeta` (the metadata plumbing) is torch-free. Importing this package imports
nothing until `export_module` is used.
"""


def export_module(module, path, **options):
    """`edgernn.export.module.export_module`: any nn.Module with recurrent layers as one streaming file."""
    from edgernn.export.module import export_module as run

    return run(module, path, **options)
