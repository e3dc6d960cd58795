"""From a checkpoint to the files `edgernn export` writes, in one call.

    r = export_checkpoint("kws.pt")          # kws.onnx, verified against PyTorch
    r.files, r.max_error                     # (Path('kws.onnx'),), 3.1e-07

The chain: load the checkpoint, build the graph from its weights, check it against PyTorch,
write the parity into its metadata, add the lookahead companion of a bidirectional model, make
the fp16/int8 variant if asked (checked against the fp32 graph), write the file atomically, and
optionally a Triton model repository around it. An encoder–decoder checkpoint becomes its two
linked files (edgernn.export.seq2seq). Nothing is written when a check fails (ParityError).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from edgernn.core import fileio
from edgernn.core.errors import InputError, ParityError
from edgernn.export import companion, ensemble, graph, parity, seq2seq
from edgernn.export import precision as prec
from edgernn.export import usercode
from edgernn.export.exported import Exported
from edgernn.export.module import export_module
from edgernn.export.onnxmeta import DEFAULT_OPSET, set_meta
from edgernn.serve import triton as triton_mod
from edgernn.train import checkpoint, seq2seq_io

PRECISION_CASES = ((1, 1), (50, 3))  # (length, batch) feeds the fp16/int8 variant is compared on


def export_checkpoint(model_pt, output=None, *, opset: int = DEFAULT_OPSET, precision: str = "fp32",
                      verify: bool = True, nonlinearity: str | None = None, unsafe_load: bool = False,
                      triton=None, triton_options: dict | None = None,
                      progress: Callable[[int, int], None] | None = None, module: str | None = None,
                      module_kwargs=None, offline: bool = False, features: int | None = None,
                      vocab: int | None = None) -> Exported:
    """Export `model_pt` to `output` (default: beside it, .onnx) as `edgernn export` does.

    precision: "fp32", "fp16" or "int8" weights. verify=False skips the parity checks.
    nonlinearity: "tanh"/"relu" for a plain RNN state_dict. unsafe_load unpickles arbitrary
    objects (only for files you trust). triton: a folder for a Triton model repository, with
    `triton_options` passed to edgernn.serve.triton.write_repository. progress(done, total) is
    called as parity cases finish.

    module: "FILE.py:NAME", the user's class or factory (called with `module_kwargs`; this runs
    their code) whose weights `model_pt` holds; a `.pt2` from torch.export.save, or a pickled
    module (unsafe_load), is exported the same way: by edgernn.export.module.export_module, with
    `offline`, `features` and `vocab` passed on.
    """
    output = Path(output or Path(model_pt).with_suffix(".onnx"))
    user, raw = usercode.read_user(model_pt, module=module, kwargs=module_kwargs, unsafe=unsafe_load)
    if user is not None:
        return _export_user(user, output, precision=precision, triton=triton, triton_options=triton_options,
                            verify=verify, offline=offline, features=features, vocab=vocab, opset=opset,
                            progress=progress)
    if seq2seq_io.is_seq2seq_checkpoint(raw):
        if triton:
            raise InputError("--triton serves one stateful model; an encoder-decoder is two files: export it without --triton")
        return _export_pair(model_pt, output, opset=opset, verify=verify)
    loaded = checkpoint.load(model_pt, unsafe=unsafe_load, nonlinearity=nonlinearity, unsafe_hint=True, obj=raw)
    if loaded.kind == "state_dict" and loaded.model.spec.cell == "rnn_tanh" and nonlinearity is None:
        warnings.warn(f"{model_pt}: a plain RNN's state_dict does not say tanh or relu; assumed tanh: pass "
                      "--nonlinearity relu if it is, or --module FILE.py:NAME to read it from the model")
    meta = graph.metadata_for(loaded, opset=opset)
    build = ensemble.build if hasattr(loaded.model, "members") else graph.build  # members side by side
    proto = build(loaded.model, meta, opset=opset)
    report = parity.check(loaded.model, proto.SerializeToString(), progress=progress) if verify else None
    meta["export"]["parity"] = parity.summary(report) if report else None
    set_meta(proto, meta)
    files = (output,)
    if loaded.model.spec.bidirectional:  # the companion graph that streams it with bounded lookahead
        meta.update(companion.write_companion(loaded.model, meta, output, opset=opset, verify=verify))
        set_meta(proto, meta)
        files += (output.parent / meta["lookahead"]["file"],)
    if precision != "fp32":
        proto = reduce_precision(proto, meta, precision, loaded.model.spec)
    fileio.write_bytes(output, proto.SerializeToString())
    folder = triton_mod.write_repository(output, triton, **(triton_options or {})) if triton else None
    return Exported(files, report["max_abs_err"] if report else None, meta,
                    {"model": report} if report else {}, folder)


def _export_user(user, output: Path, *, precision: str, triton, triton_options, **options) -> Exported:
    """A module of the user's (code + weights, .pt2, or pickled) through export_module."""
    if precision != "fp32":
        raise InputError(f"--precision {precision} applies to edgernn checkpoints; a module export is fp32: "
                         "leave --precision out")
    r = export_module(user, output, **options)
    folder = triton_mod.write_repository(output, triton, **(triton_options or {})) if triton else None
    return Exported(r.files, r.max_error, r.meta, r.reports, folder)


def reduce_precision(proto, meta: dict, precision: str, spec):
    """The fp16/int8 variant of a verified fp32 graph, checked against it with a precision-fit
    tolerance; its error goes into `meta` (export.precision). Raises ParityError when it is off."""
    variant, used = prec.convert(proto, precision, spec.cell)
    rng = np.random.default_rng(0)
    feeds = []
    for t, n in PRECISION_CASES:
        x, states = parity.random_inputs(spec, n, t, rng)
        feeds.append(dict(zip(["x"] + [i for i, _ in spec.state_names], [x, *states])))
    err = prec.compare(proto.SerializeToString(), variant.SerializeToString(), inputs=feeds)
    meta["export"]["precision"] = {"weights": used, "max_err_vs_fp32": err, "tolerance": prec.TOLERANCE[used]}
    if err > prec.TOLERANCE[used]:
        raise ParityError(f"{used} variant differs from fp32 by {err:.3g} > tolerance {prec.TOLERANCE[used]}; "
                          "no file written: keep fp32 for this model")
    set_meta(variant, meta)
    return variant


def _export_pair(model_pt, output, *, opset: int, verify: bool) -> Exported:
    stem = Path(output).with_suffix("") if output else Path(model_pt).with_suffix("")
    enc, dec, reports = seq2seq.export_pair(model_pt, stem, opset=opset, verify=verify)
    reports = {role: r for role, r in reports.items() if r}
    worst = max((r["max_abs_err"] for r in reports.values()), default=None)
    return Exported((enc, dec), worst, None, reports)

