"""Encoder–decoder over characters: two RNNModels joined by nothing but the recurrent state.

The encoder (no head: y is its hidden output) reads the source; its final state hn[, cn] is the
decoder's initial state; the decoder (an LM head over the vocabulary) writes the target from BOS
to EOS, one character per step. There is no attention on purpose: the hand-off is exactly the
state contract, so each half exports to one stateful ONNX file (NAME.encoder.onnx,
NAME.decoder.onnx) and the torch-free runtime joins them with `stream.set_state`
(edgernn.generate). The task is date normalisation (edgernn.dates); the metric is exact match of
greedy decoding on held-out dates, and the baseline copies the source unchanged.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from edgernn.train import checkpoint
from edgernn.train import dates
from edgernn.core import fileio
from edgernn.export import parity
from edgernn.export import graph as export_mod
from edgernn.core.errors import InputError, ModelFileError, ParityError
from edgernn.train.models import RNNModel, State
from edgernn.core.spec import ModelSpec

FORMAT = "edgernn-seq2seq/1"
METRIC = "exact_match"  # greater is better
TASK_DEFAULTS = {
    "cell": "gru",  # any of edgernn.spec.CELLS; unidirectional, since its state is handed over
    "hidden": 128,  # units per layer, the same in encoder and decoder (the state must fit both)
    "layers": 1,
    "embed": 32,  # character embedding width
    "steps": 2000,  # optimiser updates (GRU 128 passes 99.8% exact match by ~800 on one core)
    "batch_size": 128,  # pairs per update
    "lr": 3e-3,  # Adam, cosine-decayed to lr/10
    "clip": 1.0,  # global gradient-norm clip over both halves; 0 disables
    "eval_every": 200,  # updates between greedy validations
    "val_size": 3000,  # held-out pairs, one per distinct held-out date
}


def make_specs(*, cell: str, hidden: int, layers: int = 1, embed: int = 32,
               vocab: int = dates.VOCAB) -> tuple[ModelSpec, ModelSpec]:
    """(encoder, decoder) specs: same cell, width and depth, so the encoder's state fits the decoder."""
    enc = ModelSpec(cell=cell, vocab=vocab, embed=embed, hidden=hidden, layers=layers, head=False,
                    outputs=hidden, task="regress")
    dec = ModelSpec(cell=cell, vocab=vocab, embed=embed, hidden=hidden, layers=layers, outputs=vocab, task="lm")
    return enc, dec


def encode(encoder: RNNModel, src: np.ndarray, lengths: np.ndarray) -> State:
    """src (N, S) right-padded ids -> the state after each row's last real token (not after its pads).

    Packing stops each row at its own length, as the runtime does when it feeds one prompt.
    """
    x = encoder.embed(torch.from_numpy(src))  # (N, S, E)
    packed = pack_padded_sequence(x, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
    state = encoder.zero_state(len(src))
    if encoder.spec.cell == "lstm":
        _, (h, c) = encoder.rnn(packed, (state[0], state[1]))
        return h, c
    _, h = encoder.rnn(packed, state[0])
    return (h,)


def loss_on(encoder: RNNModel, decoder: RNNModel, pairs) -> torch.Tensor:
    """Teacher forcing: the decoder reads BOS + target and must predict target + EOS."""
    src, lengths = dates.encode_batch([s for s, _ in pairs])
    dec_in, _ = dates.encode_batch([t for _, t in pairs], bos=True)
    dec_out, _ = dates.encode_batch([t for _, t in pairs], eos=True)
    logits, _ = decoder.normalized(torch.from_numpy(dec_in), encode(encoder, src, lengths))  # (N, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(dec_out).reshape(-1),
                           ignore_index=dates.PAD)


@torch.no_grad()
def greedy(encoder: RNNModel, decoder: RNNModel, texts, *, max_length: int = dates.MAX_LENGTH) -> list[str]:
    """Greedy decoding in PyTorch, a batch at a time: the reference edgernn.generate must match."""
    encoder.eval()
    decoder.eval()
    src, lengths = dates.encode_batch(texts)
    state = encode(encoder, src, lengths)
    tok = torch.full((len(texts), 1), dates.BOS, dtype=torch.long)
    out, done = [], torch.zeros(len(texts), dtype=torch.bool)
    for _ in range(max_length):
        y, state = decoder(tok, state)  # (N, 1, V)
        tok = y[:, -1].argmax(-1, keepdim=True)
        out.append(tok)
        done |= tok[:, 0] == dates.EOS
        if done.all():
            break
    ids = torch.cat(out, dim=1).numpy()
    return [dates.decode(row) for row in ids]


def exact_match(encoder: RNNModel, decoder: RNNModel, pairs, *, batch: int = 1000) -> float:
    hits = 0
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        hits += sum(p == t for p, (_, t) in zip(greedy(encoder, decoder, [s for s, _ in chunk]), chunk))
    return hits / max(1, len(pairs))


def copy_baseline(pairs) -> float:
    """Exact match of the trivial model that returns the source unchanged (right when it is ISO already)."""
    return sum(s == t for s, t in pairs) / max(1, len(pairs))


def _params(*models):
    return [p for m in models for p in m.parameters()]


def _update(encoder: RNNModel, decoder: RNNModel, pairs, opt, sched, clip: float) -> tuple[float, bool]:
    """One teacher-forced optimiser step; returns the loss and whether the gradient was clipped."""
    encoder.train()
    decoder.train()
    loss = loss_on(encoder, decoder, pairs)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    clipped = False
    if clip > 0:
        clipped = bool(torch.nn.utils.clip_grad_norm_(_params(encoder, decoder), clip) > clip)
    opt.step()
    sched.step()
    return loss.item(), clipped


_D = TASK_DEFAULTS


def train_seq2seq(*, cell: str = _D["cell"], hidden: int = _D["hidden"], layers: int = _D["layers"],
                  embed: int = _D["embed"], steps: int = _D["steps"], batch_size: int = _D["batch_size"],
                  lr: float = _D["lr"], clip: float = _D["clip"], seed: int = 0, eval_every: int = _D["eval_every"],
                  val_size: int = _D["val_size"], progress: Callable[[dict], None] | None = None):
    """Train encoder and decoder together; returns (encoder, decoder, result) with the best weights.

    result: {"metrics": {...}, "history": [...], "config": {...}} as edgernn.train returns, the
    metric being exact match of greedy decoding on held-out dates (greater is better).
    """
    config = {k: v for k, v in locals().items() if k != "progress"}
    for name in ("steps", "batch_size", "eval_every", "hidden", "layers", "embed"):
        if int(config[name]) < 1:
            raise InputError(f"{name}={config[name]}; expected a positive integer")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    split = dates.make_split(seed, val_size=val_size)
    baseline = copy_baseline(split.val)
    enc_spec, dec_spec = make_specs(cell=cell, hidden=hidden, layers=layers, embed=embed)
    encoder, decoder = RNNModel(enc_spec), RNNModel(dec_spec)
    opt = torch.optim.Adam(_params(encoder, decoder), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 10)
    best, best_state, history, running, clipped, t0 = -math.inf, None, [], [], 0, time.time()
    for step in range(1, steps + 1):
        loss, was_clipped = _update(encoder, decoder, split.batch(rng, batch_size), opt, sched, clip)
        running.append(loss)
        clipped += was_clipped
        if step % eval_every == 0 or step == steps:
            value = exact_match(encoder, decoder, split.val)
            row = {"step": step, "train_loss": float(np.mean(running)), "val": value, "baseline": baseline,
                   "clip_rate": clipped / step, "seconds": time.time() - t0}
            history.append(row)
            running = []
            if value > best:
                best, best_state = value, [_copy(encoder), _copy(decoder)]
            if progress:
                progress({**row, "total": steps, "best": best, "metric": METRIC})
    encoder.load_state_dict(best_state[0])
    decoder.load_state_dict(best_state[1])
    encoder.eval()
    decoder.eval()
    metrics = {"task": "dates", "metric": METRIC, "greater_is_better": True, "value": best, "baseline": baseline,
               "baseline_kind": "copy the source", "val_size": len(split.val), "steps": steps,
               "seconds": round(time.time() - t0, 1), "clip_rate": clipped / steps}
    return encoder, decoder, {"metrics": metrics, "history": history, "config": config}


def _copy(model: RNNModel) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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
    meta["export"]["parity"] = {k: report[k] for k in ("max_abs_err", "lengths", "batches", "steps",
                                                       "step_max_abs_err", "tolerance") if k in report}
    export_mod.set_meta(proto, meta)
    return report


def export_pair(path_pt, out_stem, *, opset: int = export_mod.DEFAULT_OPSET, verify: bool = True):
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
            export_mod.set_meta(proto, meta)
        protos[role] = proto
    for role, proto in protos.items():
        fileio.write_bytes(paths[role], proto.SerializeToString())
    return paths["encoder"], paths["decoder"], reports
