"""Parity between a PyTorch model and its ONNX file: the check every export runs.

Offline at several lengths and batch sizes from a random (non-zero) state, and streaming:
T=1 steps with the state carried must reproduce the whole-sequence output.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from edgernn.core.errors import ParityError
from edgernn.runtime.native import open_session
from edgernn.train.models import RNNModel

LENGTHS = (1, 7, 300)
BATCHES = (1, 3)
STEPS = 500
TOLERANCE = 1e-5  # on |err| / max(1, |reference|): absolute for outputs of unit scale


def random_inputs(spec, n: int, t: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """x (n, t, F) in raw units or (n, t) token ids, and a random non-zero state per state input."""
    if spec.vocab:
        x = rng.integers(0, spec.vocab, size=(n, t), dtype=np.int64)
    else:
        # Raw units: undo the model's normalisation so the network sees unit-scale inputs.
        x = rng.standard_normal((n, t, spec.features)).astype(np.float32)
    states = [(0.5 * rng.standard_normal((*spec.state_shape[:1], n, spec.hidden))).astype(np.float32)
              for _ in spec.state_names]
    return x, states


def _err(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.max(np.abs(ref - got)) / max(1.0, float(np.max(np.abs(ref)))) if ref.size else 0.0)


def _torch(model: RNNModel, x, states):
    xt = torch.from_numpy(x)
    if not model.spec.vocab:
        xt = xt * model.in_std + model.in_mean
    with torch.no_grad():
        y, st = model(xt, tuple(torch.from_numpy(s) for s in states))
    return xt.numpy(), [y.numpy()] + [s.numpy() for s in st]


def verify(model: RNNModel, onnx_model, *, seed: int = 0, lengths=LENGTHS, batches=BATCHES, steps: int = STEPS,
           progress: Callable[[int, int], None] | None = None) -> dict:
    """Compare the file with PyTorch; returns a report whose 'ok' says whether it passed."""
    model.eval()
    spec = model.spec
    sess = open_session(onnx_model)
    names = ["x"] + [i for i, _ in spec.state_names]
    outs = ["y"] + [o for _, o in spec.state_names]
    rng = np.random.default_rng(seed)
    cases, worst = [], 0.0
    total = len(lengths) * len(batches) + (0 if spec.bidirectional else 1)
    done = 0
    for t in lengths:
        for n in batches:
            x, states = random_inputs(spec, n, t, rng)
            xr, ref = _torch(model, x, states)
            got = sess.run(outs, dict(zip(names, [xr, *states])))
            err = max(_err(r, g) for r, g in zip(ref, got))
            cases.append({"length": t, "batch": n, "err": err})
            worst = max(worst, err)
            done += 1
            if progress:
                progress(done, total)
    report = {"max_abs_err": worst, "lengths": list(lengths), "batches": list(batches), "cases": cases,
              "tolerance": TOLERANCE, "seed": seed}
    if not spec.bidirectional:
        report = with_steps(report, steps, _step_parity(model, sess, names, outs, steps, rng))
        if progress:
            progress(total, total)
    report["ok"] = bool(report["max_abs_err"] <= TOLERANCE)
    return report


def with_steps(report: dict, steps: int, step_err: float) -> dict:
    """The report with the carried-steps check in it: its error counts towards max_abs_err."""
    return {**report, "steps": steps, "step_max_abs_err": step_err,
            "max_abs_err": max(report["max_abs_err"], step_err)}


def check(model: RNNModel, onnx_model, *, progress: Callable[[int, int], None] | None = None) -> dict:
    """`verify`, raising ParityError (with the report) when the file is not this model."""
    try:
        report = verify(model, onnx_model, progress=progress)
    except Exception as e:  # onnxruntime refusing the inputs means the file is not this model
        raise ParityError(f"the ONNX model does not accept this model's inputs ({str(e).splitlines()[0][:200]}); "
                          "expected the file exported from this checkpoint") from e
    if not report["ok"]:
        raise failed(report)
    return report


def failed(report: dict) -> ParityError:
    """The one parity-failure message: the worst case and the stepped error, nothing written."""
    worst = max(report["cases"], key=lambda c: c["err"])
    return ParityError(f"parity FAILED: max error {report['max_abs_err']:.3g} > tolerance {report['tolerance']:g} "
                       f"(worst case length {worst['length']}, batch {worst['batch']}; "
                       f"stepped {report.get('step_max_abs_err', 'n/a')}); no file written", report)


def summary(report: dict) -> dict:
    """What a file's metadata keeps of a `verify` report (`export.parity`)."""
    return {k: report[k] for k in ("max_abs_err", "lengths", "batches", "steps", "step_max_abs_err", "tolerance")
            if k in report}


def _step_parity(model, sess, names, outs, steps, rng) -> float:
    """T=1 steps carrying the state vs PyTorch over the whole sequence, batch 2."""
    x, states = random_inputs(model.spec, 2, steps, rng)
    xr, ref = _torch(model, x, states)
    cur = list(states)
    ys = []
    for t in range(steps):
        res = sess.run(outs, dict(zip(names, [xr[:, t:t + 1], *cur])))
        ys.append(res[0])
        cur = res[1:]
    got = [np.concatenate(ys, axis=1)] + cur
    return max(_err(r, g) for r, g in zip(ref, got))
