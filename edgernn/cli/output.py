"""Writers for per-step results: jsonl, csv, text. Each line is flushed so a pipe sees it live.

Printer is the consumer that `edgernn stream` hands to its edgernn.runtime.drive.Driver."""

from __future__ import annotations

import json
import math
import sys

import numpy as np

FORMATS = ("jsonl", "csv", "text")


def _num(v: float) -> str:
    v = float(v)
    return format(v, ".9g") if math.isfinite(v) else "null"  # round-trips float32; JSON has no NaN


def softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Writer:
    """Formats y rows; classifiers also get the top label and its probability."""

    def __init__(self, fmt: str, *, labels=None, classify: bool = False, out=None):
        self.fmt, self.labels, self.classify = fmt, labels, classify
        self.out = out or sys.stdout
        self._header_done = fmt != "csv"

    def _label(self, y: np.ndarray):
        p = softmax(y)
        k = int(np.argmax(p))
        return (self.labels[k] if self.labels else str(k)), float(p[k])

    def write(self, t: int, y: np.ndarray) -> None:
        y = np.asarray(y).reshape(-1)
        label = self._label(y) if self.classify else None
        if self.fmt == "jsonl":
            rec = '{"t": %d, "y": [%s]' % (t, ", ".join(_num(v) for v in y))
            if label:
                rec += ', "label": %s, "p": %s' % (json.dumps(label[0]), _num(label[1]))
            line = rec + "}"
        elif self.fmt == "csv":
            if not self._header_done:
                cols = ["t"] + [f"y{i}" for i in range(len(y))] + (["label", "p"] if label else [])
                self.out.write(",".join(cols) + "\n")
                self._header_done = True
            line = ",".join([str(t)] + [_num(v) for v in y] + ([label[0], _num(label[1])] if label else []))
        else:
            line = f"{t}\t" + (f"{label[0]}\t{label[1]:.3f}" if label else " ".join(f"{v:.6g}" for v in y))
        self.out.write(line + "\n")
        self.out.flush()

    def write_all(self, t0: int, ys: np.ndarray) -> None:
        for i, y in enumerate(ys):
            self.write(t0 + i, y)


class Printer:
    """A Driver's consumer for the terminal: frame lines (writer), event lines, the plot's history."""

    def __init__(self, rt, *, writer, detector, history, loudness=None):
        self.rt, self.writer, self.detector, self.history = rt, writer, detector, history
        self.loudness = loudness  # frames -> dB per frame, so events can find the end of a word
        self.events = 0

    def consume(self, t: int, x: np.ndarray, y: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.write_all(t, y)
        if self.history is not None:
            self.history.add_frames(x, y)
        if self.detector is not None:
            loud = self.loudness(x) if self.loudness is not None else None
            for e in self.detector.push(softmax(np.asarray(y, np.float64)), loud):
                self.events += 1
                sys.stdout.write(e.to_json() + "\n")
                sys.stdout.flush()
                if self.history is not None:
                    self.history.add_event(e)

    def skip(self, n: int) -> None:
        if self.detector is not None:
            self.detector.skip(n)
        if self.history is not None:
            self.history.skip_frames(n, int(np.prod(self.rt.signature.frame_shape) or 1), self.rt.out_size or 1)
