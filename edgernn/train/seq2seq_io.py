"""The encoder–decoder checkpoint: ONE .pt with both halves and the vocabulary, written
atomically and read back with `weights_only=True` (edgernn.train.seq2seq trains what it holds).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch

from edgernn.core import fileio
from edgernn.core.errors import InputError, ModelFileError
from edgernn.core.spec import ModelSpec
from edgernn.train import checkpoint, dates
from edgernn.train.models import RNNModel
from edgernn.train.seq2seq import greedy

FORMAT = "edgernn-seq2seq/1"


def _half(model: RNNModel) -> dict:
    return {"spec": model.spec.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def save(path, encoder: RNNModel, decoder: RNNModel, result: dict) -> None:
    """Write ONE .pt atomically (loadable with torch.load(weights_only=True))."""
    ckpt = {"format": FORMAT, "task": "dates", "encoder": _half(encoder), "decoder": _half(decoder),
            "tokens": list(dates.TOKENS), "pad": dates.PAD, "bos": dates.BOS, "eos": dates.EOS, "unk": dates.UNK,
            "max_length": dates.MAX_LENGTH, "metrics": result.get("metrics", {}),
            "history": result.get("history", []), "config": result.get("config", {})}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    fileio.write_bytes(path, buf.getvalue())


def is_seq2seq_checkpoint(obj) -> bool:
    """True for what `checkpoint.read(path)` returns on a file `save` wrote."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


@dataclass
class Pair:
    """An encoder–decoder rebuilt from a checkpoint, with what its ONNX metadata must carry."""

    encoder: RNNModel
    decoder: RNNModel
    tokens: list
    pad: int
    bos: int
    eos: int
    unk: int
    max_length: int
    metrics: dict = field(default_factory=dict)

    def greedy(self, texts, *, max_length: int | None = None) -> list[str]:
        return greedy(self.encoder, self.decoder, texts, max_length=max_length or self.max_length)


def load(path) -> Pair:
    """Rebuild both halves from a seq2seq checkpoint (weights_only loading)."""
    obj = checkpoint.read(path)
    if not is_seq2seq_checkpoint(obj):
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ModelFileError(f"{path}: not a seq2seq checkpoint (format {got!r}); expected {FORMAT!r}, "
                             "the file `edgernn train --task seq2seq` writes")
    try:
        halves = []
        for role in ("encoder", "decoder"):
            model = RNNModel(ModelSpec.from_dict(obj[role]["spec"]))
            model.load_state_dict(obj[role]["state_dict"])
            halves.append(model.eval())
        pair = Pair(*halves, tokens=list(obj["tokens"]), pad=int(obj["pad"]), bos=int(obj["bos"]),
                    eos=int(obj["eos"]), unk=int(obj["unk"]), max_length=int(obj["max_length"]),
                    metrics=obj.get("metrics") or {})
    except (KeyError, TypeError, RuntimeError, InputError) as e:
        raise ModelFileError(f"{path}: a damaged seq2seq checkpoint ({str(e).splitlines()[0][:200]}); "
                             "expected an encoder and a decoder whose specs match their weights; retrain it") from e
    _check_pair(pair, path)
    return pair


def _check_pair(pair: Pair, path) -> None:
    e, d = pair.encoder.spec, pair.decoder.spec
    if (e.cell, e.hidden, e.layers) != (d.cell, d.hidden, d.layers) or e.bidirectional or d.bidirectional:
        raise ModelFileError(f"{path}: encoder {e.layers}x{e.cell} {e.hidden} (bidirectional={e.bidirectional}) "
                             f"cannot hand its state to decoder {d.layers}x{d.cell} {d.hidden}; expected the same "
                             "unidirectional cell, hidden size and layers in both")
    if not (e.vocab == d.vocab == d.outputs == len(pair.tokens)):
        raise ModelFileError(f"{path}: vocabularies differ (encoder {e.vocab}, decoder {d.vocab} in / {d.outputs} out, "
                             f"{len(pair.tokens)} tokens); expected one vocabulary throughout")
