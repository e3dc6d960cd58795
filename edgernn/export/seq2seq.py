"""An encoder–decoder checkpoint as two stateful ONNX files, NAME.encoder.onnx and
NAME.decoder.onnx, linked by relative file names in their metadata (`seq2seq` key) and each
parity-checked against PyTorch before either is written.
"""

from __future__ import annotations

from pathlib import Path

from edgernn.core import fileio
from edgernn.core.errors import ParityError
from edgernn.export import graph as export_mod
from edgernn.export import parity
from edgernn.export.onnxmeta import DEFAULT_OPSET, set_meta
from edgernn.train import checkpoint
from edgernn.train.models import RNNModel
from edgernn.train.seq2seq_io import Pair, load


def onnx_paths(out_stem) -> tuple[Path, Path]:
    """STEM -> (STEM.encoder.onnx, STEM.decoder.onnx); a trailing .onnx or .pt on STEM is dropped."""
    stem = Path(out_stem)
    if stem.suffix in (".onnx", ".pt"):
        stem = stem.with_suffix("")
    return stem.parent / f"{stem.name}.encoder.onnx", stem.parent / f"{stem.name}.decoder.onnx"


def _link(pair: Pair, role: str, other: Path) -> dict:
    other_role = "decoder" if role == "encoder" else "encoder"
    link = {"role": role, other_role: other.name, "tokens": pair.tokens,
            "pad": pair.pad, "bos": pair.bos, "eos": pair.eos, "unk": pair.unk}
    if role == "decoder":
        link["max_length"] = pair.max_length
    return link


def _verified(model: RNNModel, proto, meta: dict, role: str) -> dict:
    report = parity.verify(model, proto.SerializeToString())
    if not report["ok"]:
        raise ParityError(f"{role} parity FAILED: max error {report['max_abs_err']:.3g} > tolerance "
                          f"{report['tolerance']:g}; no file written", report)
    meta["export"]["parity"] = parity.summary(report)
    set_meta(proto, meta)
    return report


def export_pair(path_pt, out_stem, *, opset: int = DEFAULT_OPSET, verify: bool = True):
    """Write STEM.encoder.onnx and STEM.decoder.onnx, linked by relative file names in metadata.

    Both are parity-checked before either is written. Returns (enc_path, dec_path, reports), the
    reports keyed "encoder" / "decoder" (None without verify).
    """
    pair = load(path_pt)
    paths = dict(zip(("encoder", "decoder"), onnx_paths(out_stem)))
    protos, reports = {}, {}
    for role, other in (("encoder", "decoder"), ("decoder", "encoder")):
        model = getattr(pair, role)
        loaded = checkpoint.Loaded(model, "seq2seq", metrics=pair.metrics)
        meta = export_mod.metadata_for(loaded, opset=opset)
        meta["seq2seq"] = _link(pair, role, paths[other])
        proto = export_mod.build(model, meta, opset=opset)
        if verify:
            reports[role] = _verified(model, proto, meta, role)
        else:
            meta["export"]["parity"], reports[role] = None, None
            set_meta(proto, meta)
        protos[role] = proto
    for role, proto in protos.items():
        fileio.write_bytes(paths[role], proto.SerializeToString())
    return paths["encoder"], paths["decoder"], reports
