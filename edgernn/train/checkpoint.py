"""Checkpoints: spec + weights + what rebuilds the model, loaded with `weights_only=True`.

Also reads a plain PyTorch `state_dict` of a user's own model made of one nn.RNN/LSTM/GRU
(under any attribute name) and an optional nn.Linear head, by reading the architecture from the
weight names and shapes.
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgernn.core import fileio
from edgernn.core.errors import InputError, ModelFileError
from edgernn.train import ensemble
from edgernn.train.models import RNNModel
from edgernn.core.spec import ModelSpec

FORMAT = "edgernn-checkpoint/1"


@dataclass
class Loaded:
    """A model rebuilt from a file, with what travels beside it into the ONNX metadata."""

    model: RNNModel  # or an edgernn.train.ensemble.Ensemble, which has its interface
    kind: str  # "checkpoint" | "state_dict"
    labels: list | None = None
    frontend: dict | None = None
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # the whole checkpoint dict (minus weights)


def save(path, model: RNNModel, **info) -> None:
    """Write atomically: a killed process leaves the old checkpoint or the new one, never half."""
    ckpt = {"format": FORMAT, "spec": model.spec.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **info}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    fileio.write_bytes(path, buf.getvalue())


def read(path, *, unsafe: bool = False, unsafe_hint: bool = False):
    """torch.load with weights_only=True unless the user explicitly asked for `unsafe`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a checkpoint (.pt) made by `edgernn train` or a state_dict")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: the file is empty; expected a PyTorch checkpoint or state_dict")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and not magic.startswith(b"\x80"):
        raise ModelFileError(f"{path}: not a PyTorch file (starts with {magic!r}); "
                             "expected a checkpoint (.pt) or a state_dict saved with torch.save")
    try:
        with warnings.catch_warnings():  # a damaged header claims odd pickle protocols; the error says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it would import {found.group(1)}" if found else "it holds objects other than tensors"
        hint = " Only if you trust this file, pass --unsafe-load" if unsafe_hint else ""
        raise ModelFileError(f"{path}: refused to unpickle: {what}; expected a checkpoint or state_dict of tensors."
                             + hint) from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError, IndexError,
            TypeError, struct.error) as e:  # what torch's unpickler raises on damaged bytes
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise ModelFileError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {first}); "
                             "expected a checkpoint (.pt) or a state_dict saved with torch.save") from e


def load(path, *, unsafe: bool = False, nonlinearity: str | None = None, unsafe_hint: bool = False,
         obj=None) -> Loaded:
    """Rebuild the model from an edgernn checkpoint or a user's state_dict (`obj`: what read()
    already returned for `path`)."""
    if obj is None:
        obj = read(path, unsafe=unsafe, unsafe_hint=unsafe_hint)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _from_checkpoint(obj, path)
    if isinstance(obj, dict) and obj.get("format") == ensemble.FORMAT:
        return _from_ensemble(obj, path)
    if _is_state_dict(obj):
        return _from_state_dict(obj, path, nonlinearity)
    if isinstance(obj, torch.nn.Module):
        return _from_state_dict(obj.state_dict(), path, nonlinearity)
    if isinstance(obj, dict):
        key = wrapped_state_dict_key(obj, path)
        if key is not None:
            return _from_state_dict(obj[key], path, nonlinearity)
    raise ModelFileError(f"{path}: holds a {type(obj).__name__} that is neither an edgernn checkpoint nor a state_dict; "
                         "expected the file `edgernn train` wrote, or torch.save(model.state_dict(), path)")


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
"""Where training scripts put the weights in a checkpoint dict (with the optimizer, the epoch...)."""


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def wrapped_state_dict_key(obj: dict, path) -> str | None:
    """The key of a training script's checkpoint dict that holds the model's state_dict, or None.
    Several candidates and none of the usual names: refused, naming them."""
    for key in WRAPPER_KEYS:
        if _is_state_dict(obj.get(key)):
            return key
    found = [k for k, v in obj.items() if _is_state_dict(v)]
    if len(found) == 1:
        return found[0]
    if found:
        raise ModelFileError(f"{path}: a checkpoint dict with several state_dicts ({', '.join(map(repr, found))}); "
                             f"expected one under {' or '.join(map(repr, WRAPPER_KEYS[:3]))}, or save the model's alone "
                             "with torch.save(model.state_dict(), path)")
    return None


def _from_checkpoint(ckpt: dict, path) -> Loaded:
    try:
        spec = ModelSpec.from_dict(ckpt["spec"])
        model = RNNModel(spec)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, InputError) as e:
        raise ModelFileError(f"{path}: a damaged edgernn checkpoint ({str(e).splitlines()[0][:200]}); "
                             "expected spec and weights that match; retrain or restore it") from e
    model.eval()
    extra = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return Loaded(model, "checkpoint", labels=ckpt.get("labels"), frontend=ckpt.get("frontend"),
                  metrics=ckpt.get("metrics") or {}, extra=extra)


_RNN_KEY = re.compile(r"^(?P<prefix>.*?)weight_ih_l0$")


def infer_spec(sd: dict, *, nonlinearity: str | None = None, source="state_dict") -> tuple[ModelSpec, dict]:
    """Read the architecture from weight names and shapes.

    Returns the spec and the state_dict renamed into RNNModel's names (rnn.*, head.*).
    """
    prefixes = [m.group("prefix") for k in sd if (m := _RNN_KEY.match(k))]
    if len(prefixes) != 1:
        found = "no" if not prefixes else f"{len(prefixes)} ({', '.join(p or '<bare>' for p in prefixes)})"
        raise ModelFileError(f"{source}: found {found} recurrent modules; expected exactly one nn.RNN/nn.LSTM/nn.GRU "
                             "(keys like 'rnn.weight_ih_l0') and an optional nn.Linear head")
    p = prefixes[0]
    if any(k.startswith(p + "weight_hr_l") for k in sd):
        raise ModelFileError(f"{source}: an LSTM with proj_size is not supported; expected proj_size=0")
    w_ih, w_hh = sd[p + "weight_ih_l0"], sd.get(p + "weight_hh_l0")
    if w_hh is None or w_ih.dim() != 2 or w_hh.dim() != 2:
        raise ModelFileError(f"{source}: '{p}weight_hh_l0' is missing or not 2-D; expected a complete RNN state_dict")
    hidden = w_hh.shape[1]
    gates = w_ih.shape[0] // hidden
    cell = {4: "lstm", 3: "gru"}.get(gates)
    if gates == 1:
        if nonlinearity not in (None, "tanh", "relu"):
            raise InputError(f"--nonlinearity {nonlinearity!r}; expected tanh or relu")
        cell = "rnn_relu" if nonlinearity == "relu" else "rnn_tanh"
    if cell is None or w_ih.shape[0] != gates * hidden:
        raise ModelFileError(f"{source}: weight_ih_l0 has {w_ih.shape[0]} rows for hidden {hidden}; "
                             "expected 1, 3 or 4 gates (RNN, GRU, LSTM)")
    layers = 0
    while p + f"weight_ih_l{layers}" in sd:
        layers += 1
    bidirectional = p + "weight_ih_l0_reverse" in sd
    rnn_keys = {k for k in sd if k.startswith(p) and re.match(r"^(weight|bias)_(ih|hh)_l\d+(_reverse)?$", k[len(p):])}
    renamed = {"rnn." + k[len(p):]: v for k, v in sd.items() if k in rnn_keys}
    rest = {k: v for k, v in sd.items() if k not in rnn_keys}
    d = 2 if bidirectional else 1
    head, renamed_head = _find_head(rest, d * hidden, source)
    renamed.update(renamed_head)
    spec = ModelSpec(cell=cell, features=w_ih.shape[1], hidden=hidden, layers=layers, bidirectional=bidirectional,
                     outputs=head or d * hidden, head=bool(head))
    # A bias-free RNN (bias=False) simply has zero biases.
    for l in range(layers):
        for suffix in ("", "_reverse")[:d]:
            for kind in ("ih", "hh"):
                renamed.setdefault(f"rnn.bias_{kind}_l{l}{suffix}", torch.zeros(gates * hidden))
    return spec, renamed


def _find_head(rest: dict, width: int, source) -> tuple[int, dict]:
    weights = [k for k, v in rest.items() if k.endswith("weight") and v.dim() == 2]
    if not rest:
        return 0, {}
    if len(weights) == 1 and rest[weights[0]].shape[1] == width:
        wk = weights[0]
        bk = wk[: -len("weight")] + "bias"
        leftovers = set(rest) - {wk, bk}
        if not leftovers:
            w = rest[wk]
            b = rest.get(bk, torch.zeros(w.shape[0]))
            return w.shape[0], {"head.weight": w, "head.bias": b}
    raise ModelFileError(f"{source}: parameters {sorted(rest)[:6]} are not a Linear head on the RNN's {width} outputs; "
                         "expected one nn.RNN/LSTM/GRU plus at most one nn.Linear(hidden*directions, outputs)")


def _from_state_dict(sd: dict, path, nonlinearity) -> Loaded:
    spec, renamed = infer_spec(sd, nonlinearity=nonlinearity, source=str(path))
    model = RNNModel(spec)
    try:
        missing, unexpected = model.load_state_dict(renamed, strict=False)
    except RuntimeError as e:
        raise ModelFileError(f"{path}: weights do not fit a {spec.layers}-layer {spec.cell} of hidden {spec.hidden} "
                             f"({str(e).splitlines()[-1].strip()[:160]}); expected consistent shapes") from e
    assert not unexpected, unexpected
    bad = [k for k in missing if not k.startswith(("in_", "out_"))]
    if bad:
        raise ModelFileError(f"{path}: state_dict lacks {bad[:4]}; expected all weights of a {spec.layers}-layer {spec.cell}")
    model.eval()
    return Loaded(model, "state_dict")


def save_ensemble(paths, output) -> dict:
    """Write one ensemble checkpoint of the checkpoints at `paths` (atomically); returns it."""
    paths = [str(p) for p in paths]
    loaded = [load(p) for p in paths]
    ensemble.check_members(loaded, paths)
    members = []
    for lo in loaded:
        members.append({**lo.extra, "state_dict": {k: v.detach().cpu() for k, v in lo.model.state_dict().items()}})
    ckpt = {"format": ensemble.FORMAT, "combine": ensemble.COMBINE, "members": members, "labels": list(loaded[0].labels),
            "frontend": loaded[0].frontend, "task": loaded[0].extra.get("task"), "sources": paths}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    fileio.write_bytes(output, buf.getvalue())
    return ckpt


def _from_ensemble(ckpt: dict, path) -> Loaded:
    """The Loaded of an ensemble checkpoint: an Ensemble model, the members' labels and front end."""
    if ckpt.get("combine", ensemble.COMBINE) != ensemble.COMBINE or not isinstance(ckpt.get("members"), list):
        raise ModelFileError(f"{path}: an ensemble checkpoint combining by {ckpt.get('combine')!r}; "
                             f"expected members combined by {ensemble.COMBINE!r}: rebuild it with `edgernn ensemble`")
    members = [load(f"{path} (member {k + 1})", obj=m) for k, m in enumerate(ckpt["members"])]
    ensemble.check_members(members, [f"{path} member {k + 1}" for k in range(len(members))])
    model = ensemble.Ensemble([m.model for m in members]).eval()
    extra = {k: v for k, v in ckpt.items() if k != "members"}
    extra["ensemble"] = ensemble.summary(ckpt)
    return Loaded(model, "checkpoint", labels=ckpt.get("labels"), frontend=ckpt.get("frontend"),
                  metrics={}, extra=extra)
