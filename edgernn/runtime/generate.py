"""Text out of token models, torch-free: numpy + edgernn.runtime only.

    greedy_decode("dates.decoder.onnx", "30 Nov 2026")     # -> "2026-11-30"

An encoder–decoder pair is two stateful files linked by their metadata (`seq2seq` key): the
encoder reads the prompt, its final state seeds the decoder's stream, and the decoder feeds its
own argmax back one step at a time until EOS. Load an `EncoderDecoder` once to decode many
prompts; `greedy_decode` is the one-call form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgernn.core.errors import InputError, ModelFileError
from edgernn.runtime.engine import Runtime

UNK_CHAR = "\ufffd"  # how an UNK token is written out


class Vocabulary:
    """The token list from a model's metadata: characters plus special tokens at given ids."""

    def __init__(self, tokens: list, *, pad: int, bos: int, eos: int, unk: int):
        self.tokens, self.pad, self.bos, self.eos, self.unk = list(tokens), pad, bos, eos, unk
        self.specials = {pad, bos, eos, unk}
        self._ids = {t: i for i, t in enumerate(self.tokens) if i not in self.specials}

    def encode(self, text: str) -> np.ndarray:
        """text -> (L,) int64 ids; characters outside the vocabulary become UNK."""
        return np.array([self._ids.get(c, self.unk) for c in text], dtype=np.int64)

    def text(self, ids) -> str:
        """ids (already cut at EOS) -> text; PAD and BOS are dropped, UNK is U+FFFD."""
        return "".join(UNK_CHAR if i == self.unk else ("" if i in self.specials else self.tokens[i]) for i in ids)


def _seq2seq_meta(rt: Runtime, role: str) -> dict:
    link = (rt.meta or {}).get("seq2seq")
    if not isinstance(link, dict) or link.get("role") != role:
        found = f"a seq2seq {link.get('role')}" if isinstance(link, dict) else "not part of an encoder–decoder pair"
        hint = f"; pass {link['decoder']} instead" if isinstance(link, dict) and link.get("decoder") else ""
        raise ModelFileError(f"{rt.path}: {found}; expected a seq2seq {role} (NAME.{role}.onnx written by "
                             f"`edgernn export` of a seq2seq checkpoint){hint}")
    return link


class EncoderDecoder:
    """An encoder–decoder pair loaded once; `greedy(prompt)` decodes one prompt on fresh streams."""

    def __init__(self, decoder_path, *, provider: str = "cpu", threads: int = 1):
        self.decoder = Runtime(decoder_path, provider=provider, threads=threads)
        link = _seq2seq_meta(self.decoder, "decoder")
        encoder_path = Path(decoder_path).parent / str(link.get("encoder", ""))
        if not link.get("encoder") or not encoder_path.is_file():
            raise ModelFileError(f"{decoder_path}: its encoder {encoder_path.name!r} is not beside it in "
                                 f"{encoder_path.parent}; expected both files of the pair in one folder")
        self.encoder = Runtime(encoder_path, provider=provider, threads=threads)
        enc_link = _seq2seq_meta(self.encoder, "encoder")
        try:
            self.vocab = Vocabulary(link["tokens"], pad=link.get("pad", 0), bos=link["bos"], eos=link["eos"],
                                    unk=link.get("unk", enc_link.get("unk")))
        except (KeyError, TypeError) as e:
            raise ModelFileError(f"{decoder_path}: seq2seq metadata lacks {e}; expected tokens, bos, eos and unk: "
                                 "re-export the pair") from e
        self.max_length = int(link.get("max_length") or 64)
        self._check_states()

    def _check_states(self) -> None:
        enc, dec = self.encoder.zero_state(1), self.decoder.zero_state(1)
        if {k: v.shape for k, v in enc.items()} != {k: v.shape for k, v in dec.items()}:
            raise ModelFileError(f"{self.decoder.path}: encoder state {[(k, v.shape) for k, v in enc.items()]} does "
                                 f"not fit decoder state {[(k, v.shape) for k, v in dec.items()]}; expected the pair "
                                 "exported together")

    def encode(self, prompt: str) -> dict:
        """The encoder's final state after the prompt: {"h0": (L, 1, H)[, "c0": ...]}."""
        if not isinstance(prompt, str) or not prompt:
            raise InputError(f"prompt {prompt!r}; expected a non-empty string such as '30 Nov 2026'")
        stream = self.encoder.stream()
        stream.feed(self.vocab.encode(prompt))
        return stream.get_state()

    def greedy(self, prompt: str, *, max_length: int | None = None) -> str:
        """Decode `prompt`: BOS, then the argmax fed back, until EOS or `max_length` tokens."""
        limit = self.max_length if max_length is None else int(max_length)
        if limit < 1:
            raise InputError(f"max_length={max_length}; expected a positive integer")
        stream = self.decoder.stream()
        stream.set_state(self.encode(prompt))
        ids, tok = [], self.vocab.bos
        for _ in range(limit):
            tok = int(np.argmax(stream.step(np.int64(tok))))
            if tok == self.vocab.eos:
                break
            ids.append(tok)
        return self.vocab.text(ids)


def greedy_decode(decoder_path, prompt: str, *, max_length: int | None = None, provider: str = "cpu") -> str:
    """One prompt through NAME.decoder.onnx and the encoder its metadata names; returns the text."""
    if not isinstance(prompt, str) or not prompt:
        raise InputError(f"prompt {prompt!r}; expected a non-empty string such as '30 Nov 2026'")
    return EncoderDecoder(decoder_path, provider=provider).greedy(prompt, max_length=max_length)


def is_decoder(path) -> bool:
    """True when the file is the decoder half of a seq2seq pair (metadata `seq2seq.role`)."""
    meta = Runtime(path).meta or {}
    return (meta.get("seq2seq") or {}).get("role") == "decoder"


def sample_text(model_path, prompt: str, length: int, *, temperature: float = 1.0, seed: int | None = None,
                runtime: Runtime | None = None) -> str:
    """One-to-many: the prompt primes the state, then each sampled character is fed back.

    temperature 0 takes the argmax; the same seed gives the same text.
    """
    rt = runtime or Runtime(model_path)
    if (rt.meta or {}).get("seq2seq"):
        _seq2seq_meta(rt, "decoder")  # an encoder: says which file to pass instead
    tokens = (rt.meta or {}).get("tokens")
    if not tokens:
        raise ModelFileError(f"{model_path}: no 'tokens' in its metadata; expected a character model exported from "
                             "`edgernn train --task charlm`")
    if length < 0 or temperature < 0:
        raise InputError(f"--length {length} --temperature {temperature}; expected length >= 0 and temperature >= 0")
    if not prompt:
        raise InputError("--prompt is empty; expected at least one character to prime the model")
    index = {c: i for i, c in enumerate(tokens)}
    unknown = sorted({c for c in prompt if c not in index})
    if unknown:
        raise InputError(f"--prompt has characters the model never saw: {''.join(unknown)!r}; expected characters from "
                         f"its vocabulary ({''.join(t for t in tokens if t.isprintable())!r})")
    rng = np.random.default_rng(seed)
    s = rt.stream()
    logits = s.feed(np.array([index[c] for c in prompt], np.int64))[-1]
    out = []
    for _ in range(length):
        if temperature == 0:
            k = int(np.argmax(logits))
        else:
            z = logits / temperature
            p = np.exp(z - z.max())
            k = int(rng.choice(len(p), p=p / p.sum()))
        out.append(tokens[k])
        logits = s.step(np.int64(k))
    return "".join(out)
