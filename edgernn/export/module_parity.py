"""Parity between a user's module and the ONNX file made from it: the check every export_module runs.

Three comparisons, all within TOLERANCE on |err| / max(1, |reference|):
- offline: lengths {1, 7, 300} x batches {1, 3} from zero state, the file's y against the
  module's own forward (not our rewrite of it);
- from a random state: y and every new state against the streaming form in PyTorch
  (edgernn.export.streamify), so each state input is really read;
- streaming: STEPS single frames with every state carried against the module over the whole
  sequence (skipped for an offline file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from edgernn.core.errors import ParityError
from edgernn.export import parity
from edgernn.export.parity import BATCHES, LENGTHS, STEPS, TOLERANCE
from edgernn.export.streamify import Streaming, first_tensor
from edgernn.runtime import signature
from edgernn.runtime.native import open_session


@dataclass(frozen=True)
class Input:
    """What x is: float frames of `features` values, or int64 token ids below `vocab`."""

    features: int | None = None
    vocab: int | None = None

    def random(self, n: int, t: int, rng: np.random.Generator) -> np.ndarray:
        if self.vocab:
            return rng.integers(0, self.vocab, size=(n, t), dtype=np.int64)
        return rng.standard_normal((n, t, self.features)).astype(np.float32)

    def torch(self, n: int, t: int, seed: int = 0) -> torch.Tensor:
        return torch.from_numpy(self.random(n, t, np.random.default_rng(seed)))


def err(ref: np.ndarray, got: np.ndarray) -> float:
    if ref.shape != got.shape:
        return float("inf")
    return float(np.max(np.abs(ref - got)) / max(1.0, float(np.max(np.abs(ref)))) if ref.size else 0.0)


def module_y(stream: Streaming, x: np.ndarray) -> np.ndarray:
    """The user's module itself on x (N, T, ...) from its own (zero) initial state."""
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y = first_tensor(stream.model(xt.transpose(0, 1) if stream.time_major else xt))
    return (y.transpose(0, 1) if stream.y_time_major else y).numpy()


def _stream(stream: Streaming, x: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [v.numpy() for v in stream(torch.from_numpy(x), *map(torch.from_numpy, states))]


def _random_states(stream: Streaming, n: int, rng) -> list[np.ndarray]:
    return [(0.5 * rng.standard_normal(s.zeros(n).shape)).astype(np.float32) for s in stream.states]


class Binding:
    """A file's inputs and outputs matched to the streaming form's: by name when the file is ours,
    else each state in turn to the file's next state pair of the same shape (the pairs from its
    metadata or its names, as the runtime reads them), in the file's own frame layout."""

    def __init__(self, sess, stream: Streaming, source: str = "the ONNX model"):
        self.sess = sess
        sig, _ = signature.from_session(sess, source=source, require_constants=False)
        self.sig = sig
        free = list(sig.states)
        self.pairs = []
        for ours in stream.states:
            same = [p for p in free if p.input == ours.input] or \
                   [p for p in free if p.batch_axis == ours.batch_axis and p.shape == ours.shape]
            if not same:
                raise ParityError(f"{source} has no state like {ours.input} {list(ours.meta()['shape'])} "
                                  f"(its states: {[(p.input, list(p.shape)) for p in sig.states]}); expected the file "
                                  "exported from this module")
            free.remove(same[0])
            self.pairs.append(same[0])
        if free:
            raise ParityError(f"{source} has states {[p.input for p in free]} this module does not; expected the file "
                              "exported from this module")

    def run(self, x: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
        """x (N, T, ...) and the states in the stream's order -> [y (N, T, ...), new states...]."""
        feed = dict(self.sig.constants)
        feed[self.sig.x] = self.sig.call_x(x.astype(self.sig.dtype, copy=False))
        feed.update({p.input: v for p, v in zip(self.pairs, states)})
        out = self.sess.run([self.sig.y] + [p.output for p in self.pairs], feed)
        return [self.sig.canon_y(out[0])] + list(out[1:])


def verify(stream: Streaming, onnx_model, inp: Input, *, readout: str = "every", offline: bool = False,
           seed: int = 0, lengths=LENGTHS, batches=BATCHES, steps: int = STEPS,
           progress: Callable[[int, int], None] | None = None) -> dict:
    """Compare the file with the module; returns a report whose 'ok' says whether it passed."""
    sess = Binding(open_session(onnx_model), stream)
    rng = np.random.default_rng(seed)
    cases, total, done = [], len(lengths) * len(batches) + (0 if offline else 1), 0
    for t in lengths:
        for n in batches:
            x = inp.random(n, t, rng)
            zeros = [s.zeros(n).numpy() for s in stream.states]
            plain = err(module_y(stream, x), sess.run(x, zeros)[0])
            states = _random_states(stream, n, rng)
            ref = _stream(stream, x, states)
            got = sess.run(x, states)
            cases.append({"length": t, "batch": n, "err": max(plain, *(err(r, g) for r, g in zip(ref, got)))})
            done += 1
            if progress:
                progress(done, total)
    report = {"lengths": list(lengths), "batches": list(batches), "cases": cases, "tolerance": TOLERANCE,
              "seed": seed, "max_abs_err": max(c["err"] for c in cases)}
    if not offline:
        report = parity.with_steps(report, steps, _step_parity(stream, sess, inp, readout, steps, rng))
        if progress:
            progress(total, total)
    report["ok"] = bool(report["max_abs_err"] <= TOLERANCE)
    return report


def _step_parity(stream: Streaming, sess: Binding, inp: Input, readout: str, steps: int, rng) -> float:
    """`steps` single frames with all states carried vs the module over the whole sequence, batch 2."""
    x = inp.random(2, steps, rng)
    whole = module_y(stream, x)
    final = _stream(stream, x, [s.zeros(2).numpy() for s in stream.states])[1:]
    cur, ys = [s.zeros(2).numpy() for s in stream.states], []
    for t in range(steps):
        res = sess.run(x[:, t:t + 1], cur)
        ys.append(res[0])
        cur = res[1:]
    got = np.concatenate(ys, axis=1) if readout == "every" else ys[-1]
    return max([err(whole, got)] + [err(r, g) for r, g in zip(final, cur)])


def check(stream: Streaming, onnx_model, inp: Input, **kw) -> dict:
    """`verify`, raising ParityError (with the report) when the file is not this module."""
    try:
        report = verify(stream, onnx_model, inp, **kw)
    except ParityError:
        raise
    except Exception as e:  # onnxruntime refusing the inputs means the file is not this model
        raise ParityError(f"the ONNX model does not accept this module's inputs ({str(e).splitlines()[0][:200]}); "
                          "expected the file exported from this module") from e
    if not report["ok"]:
        raise parity.failed(report)
    return report
