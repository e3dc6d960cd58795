"""Whether an ONNX file is the export of a given checkpoint, before any parity is run.

`edgernn verify A.pt B.onnx` with B exported from another model is a wrong argument (exit 2),
not a parity failure (exit 1): the file's metadata names the model it came from, and a model of
another shape is refused here with both shapes named. Files without edgernn metadata pass: their
parity says the rest.
"""

from __future__ import annotations

from edgernn.core.errors import InputError
from edgernn.core.wording import plural

# the fields that make two models different models (dropout and readout details do not)
SHAPE_FIELDS = ("cell", "features", "vocab", "embed", "hidden", "layers", "bidirectional", "outputs")


def describe(spec: dict) -> str:
    d = "bidirectional " if spec.get("bidirectional") else ""
    what = f"vocab {spec.get('vocab')}" if spec.get("vocab") else plural(int(spec.get("features") or 0), "feature")
    return f"{d}{spec.get('cell')} {spec.get('layers')}x{spec.get('hidden')}, {what}, {plural(int(spec.get('outputs') or 0), 'output')}"


def check_same_model(spec: dict, meta: dict | None, *, pt, onnx_path) -> None:
    """Refuse an ONNX file whose metadata describes another model than `spec` (ModelSpec.to_dict())."""
    theirs = ((meta or {}).get("model") or {}).get("spec")
    if not theirs:
        return
    differ = [f for f in SHAPE_FIELDS if f in theirs and theirs.get(f) != spec.get(f)]
    if differ:
        raise InputError(f"{onnx_path} was exported from another model ({describe(theirs)}; {pt} is "
                         f"{describe(spec)}: {', '.join(differ)} differ); expected the .onnx exported from {pt}")


def seq2seq_role(meta: dict | None, onnx_path) -> str:
    """'encoder' or 'decoder' for one file of an exported seq2seq pair, from its metadata."""
    role = ((meta or {}).get("seq2seq") or {}).get("role")
    if role not in ("encoder", "decoder"):
        raise InputError(f"{onnx_path}: not one half of an exported seq2seq pair (no seq2seq role in its metadata); "
                         "expected NAME.encoder.onnx or NAME.decoder.onnx written by `edgernn export` from this file")
    return role
