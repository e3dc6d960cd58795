"""Keyword events from per-frame class posteriors: smoothing, threshold, hysteresis, refractory.

    det = EventDetector(labels, step_seconds=0.01)       # 10 ms frames
    for e in det.push(probs):                            # probs (T, C), rows sum to 1
        print(e.to_json())                               # {"event": "yes", "t": 12.34, "p": 0.97, "step": 1233}

Per frame, in this order:
1. smoothing: each label's posterior is averaged over the last `smooth` seconds of frames
   (causal; fewer frames at the very start). One noisy frame does not trigger.
2. trigger: an *armed* keyword whose smoothed posterior reaches `threshold` starts a decision.
3. decision, once the word is over (models with readout "last"; `for_readout` sets
   `delay=0, endpoint=0` for per-frame ones, which then fire at the trigger frame itself): when the frame loudness (given with the posteriors) has
   stayed `endpoint` dB under its peak for 50 ms, or `endpoint_wait` s after the trigger at the
   latest; without loudness, `delay` s after the trigger. The label on top *then* fires, if it
   is an armed keyword whose smoothed posterior is (still) at least `threshold`.
   Why: a running many-to-one model (readout "last") is trained to be right once a word is
   over; mid-word it may say "go" for a quarter second of "down" or "dog". Deciding at the
   end of the word turns those into "down" and into nothing. A per-frame classifier is only
   high while the sound lasts, so for it the decision is the trigger itself.
4. hysteresis: a label re-arms only once its smoothed posterior has been below
   `threshold - hysteresis`; whatever is above `threshold` at a decision is disarmed. A model
   that keeps saying "yes" for a second after the word fires once, not every frame.
5. refractory: for `refractory` seconds after an event nothing triggers, and a label above
   threshold in that time is disarmed (suppressed, not postponed): one word, one event.
Labels in `IGNORED` (`_silence_`, `_unknown_`) and in `ignore` never fire.

Defaults, measured with models/kws.onnx by `python tools/eval_events.py --model models/kws.onnx`
(32 espeak-ng utterances: 8 voices x 2 speeds, each clean and with noise at 20 dB SNR; each the
10 keywords and 15 other words, 0.8 s pauses): 311 of 320 keywords fire on time, with 22 false
events over the 480 other words and the pauses; the single model shipped before it (one of the
ensemble's two members, before fine-tuning) gave 304 and 48, mostly "dog" -> down, "cat" -> stop,
"wow" -> no, which the model itself believed. With 0.12 s pauses (`--gap 0.12`, near-continuous
speech): 210 of 320 with 10 false. `--threshold 0.85`: 313 of 320, 42 false (307 and 62 before).
With an earlier model, firing at the threshold crossing instead (`delay=0, endpoint=0`) gave two
to three times the false events for about the same hits: the decision at the end of the word is
what removes them.

Timing: an event's `t` is the time it fired, in seconds from the start of the input: the end of
the frame of the decision, (step + 1) * step_seconds. On those utterances it fell between
0.12 s before and 0.15 s after the end of the word (median 0.05 s after). Tests count an event
as on time when it fires between the word's onset and 0.3 s after the word's end.

Torch-free: numpy only. Library code: nothing is printed here.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgernn.core.errors import InputError
from edgernn.core.wording import plural

IGNORED = ("_silence_", "_unknown_")  # labels that mean "no keyword": they never fire
_QUIET = 0.05  # s under the peak that make the end of a word (longer than most stop closures)
_LOOKBACK = 0.3  # s before the trigger searched for the word's peak loudness


@dataclass(frozen=True)
class EventOptions:
    """How posteriors become events (the CLI's --smooth, --threshold, --hysteresis, --refractory)."""

    smooth: float = 0.05  # s: moving-average window over the posteriors
    threshold: float = 0.9  # smoothed posterior at which a keyword triggers the decision
    hysteresis: float = 0.4  # a label re-arms once its smoothed posterior is below threshold - this
    refractory: float = 0.5  # s after any event during which nothing fires
    delay: float = 0.15  # s from the trigger to the decision, when there is no loudness to find the word's end
    endpoint: float = 20.0  # dB: with loudness, decide once the sound has fallen this far below its peak (0: off)
    endpoint_wait: float = 0.4  # s: with loudness, decide at the latest this long after the trigger
    ignore: tuple = ()  # labels that never fire, besides IGNORED

    def __post_init__(self):
        checks = (("smooth", self.smooth, 0.0, math.inf), ("threshold", self.threshold, 0.0, 1.0),
                  ("hysteresis", self.hysteresis, 0.0, self.threshold), ("refractory", self.refractory, 0.0, math.inf),
                  ("delay", self.delay, 0.0, math.inf), ("endpoint", self.endpoint, 0.0, math.inf),
                  ("endpoint_wait", self.endpoint_wait, 0.0, math.inf))
        for name, value, lo, hi in checks:
            if not (isinstance(value, (int, float)) and lo <= value <= hi and math.isfinite(value)):
                raise InputError(f"event option {name}={value!r}; expected a number in [{lo:g}, {hi:g}]")
        object.__setattr__(self, "ignore", tuple(self.ignore))

    @classmethod
    def for_readout(cls, readout: str | None, **given) -> EventOptions:
        """Defaults for a model's `output.readout`, then `given` on top. A per-frame classifier
        ("every") is high only while it hears the sound, so it fires at the threshold crossing
        (delay 0, no end-of-word wait); a running one ("last") is right after the word."""
        if readout != "last":
            given = {"delay": 0.0, "endpoint": 0.0, **given}
        return cls(**given)


@dataclass(frozen=True)
class Event:
    label: str
    t: float  # s from the start of the input: end of the frame that fired
    p: float  # the label's posterior in the frame that fired (unsmoothed, as in the frame lines)
    step: int  # index of that frame

    def to_dict(self) -> dict:
        return {"event": self.label, "t": round(self.t, 3), "p": round(self.p, 3), "step": self.step}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


class EventDetector:
    """Feed posteriors as they come (push), or mark frames that never came (skip)."""

    def __init__(self, labels, *, step_seconds: float, options: EventOptions = EventOptions()):
        labels = [str(x) for x in labels]
        if not labels:
            raise InputError("events need a classifier with labels; this model has no output labels")
        if not step_seconds > 0:
            raise InputError(f"step_seconds={step_seconds!r}; expected the frame duration in seconds, > 0")
        unknown = sorted(set(options.ignore) - set(labels))
        if unknown:
            raise InputError(f"--ignore {unknown[0]!r} is not a label of this model; its labels are {labels}")
        self.labels = labels
        self.step_seconds = float(step_seconds)
        self.options = options
        self.window = max(1, round(options.smooth / step_seconds))  # frames averaged
        self.refractory_steps = round(options.refractory / step_seconds)
        self.delay_steps = round(options.delay / step_seconds)
        self.wait_steps = round(options.endpoint_wait / step_seconds)
        self.quiet_steps = max(1, round(_QUIET / step_seconds))
        self.lookback_steps = max(1, round(_LOOKBACK / step_seconds))
        skip = set(IGNORED) | set(options.ignore)
        self.active = np.array([x not in skip for x in labels])  # (C,) labels that may fire
        self.reset()

    def reset(self) -> None:
        """Forget everything, as at the start of an input."""
        self.step = 0  # index of the next frame
        self._recent = np.zeros((self.window - 1, len(self.labels)))  # the last window - 1 posteriors
        self._valid = 0  # how many of those rows are real frames (fewer at the start and after a gap)
        self._armed = np.ones(len(self.labels), bool)
        self._quiet_until = 0  # first step at which the refractory time is over
        self._pending = None  # step at which a keyword crossed the threshold, awaiting the decision
        self._loud = deque(maxlen=self.lookback_steps)  # the last frames' loudness, dB
        self._peak = -math.inf  # loudest frame since shortly before the trigger
        self._below = 0  # consecutive frames `endpoint` dB under that peak

    def skip(self, steps: int) -> None:
        """`steps` frames were lost (audio dropped): the clock advances, the smoothing restarts."""
        self.step += int(steps)
        self._recent[:] = 0.0
        self._valid = 0
        self._pending = None  # the audio it hinged on is gone
        self._loud.clear()

    def push(self, probs, loudness=None) -> list[Event]:
        """(T, C) posteriors of the next T frames -> the events they fire, in time order.

        loudness: (T,) dB per frame (any reference), or None. With it, a decision waits for the
        end of the word: the sound staying `endpoint` dB under its peak for 50 ms (at most
        `endpoint_wait` s). Without it, a decision comes `delay` s after the trigger."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.labels):
            raise InputError(f"posteriors of shape {p.shape}; expected (T, {len(self.labels)}), one per label")
        loud = [None] * len(p) if loudness is None or not self.options.endpoint else np.asarray(loudness, np.float64)
        if len(loud) != len(p):
            raise InputError(f"{plural(len(loud), 'loudness value')} for {plural(len(p), 'frame')}; expected one per frame")
        if len(p) == 0:
            return []
        events = []
        for raw, row, db in zip(p, self._smooth(p), loud):
            self._frame(raw, row, db, events)
            self.step += 1
        return events

    def _frame(self, raw: np.ndarray, row: np.ndarray, db, events: list) -> None:
        low = self.options.threshold - self.options.hysteresis
        self._armed |= row < low
        if db is not None:
            self._loud.append(db)
        if self._pending is not None:
            if self._due(db):
                self._decide(row, raw, events)
        elif self.step < self._quiet_until:
            self._armed &= row < self.options.threshold  # suppressed, not postponed
        elif (self._armed & self.active & (row >= self.options.threshold)).any():
            self._pending, self._below = self.step, 0
            self._peak = max(self._loud) if self._loud else -math.inf
            if self._due(db):
                self._decide(row, raw, events)

    def _due(self, db) -> bool:
        """Is it time to decide? The word has ended (loudness), or the fixed delay is over."""
        waited = self.step - self._pending
        if db is None:
            return waited >= self.delay_steps
        self._peak = max(self._peak, db)
        self._below = self._below + 1 if db < self._peak - self.options.endpoint else 0
        return self._below >= self.quiet_steps or waited >= self.wait_steps

    def _decide(self, row: np.ndarray, raw: np.ndarray, events: list) -> None:
        """Decision time: the top label fires if it is an armed keyword at or above threshold."""
        self._pending = None
        k = int(np.argmax(row))
        if self.active[k] and self._armed[k] and row[k] >= self.options.threshold:
            events.append(Event(self.labels[k], (self.step + 1) * self.step_seconds, float(raw[k]), self.step))
            self._quiet_until = self.step + 1 + self.refractory_steps
        self._armed &= row < self.options.threshold  # what is high now must dip before it fires again

    def _smooth(self, p: np.ndarray) -> np.ndarray:
        """(T, C) -> (T, C): each row the mean of itself and up to window - 1 real rows before it.

        Each window is summed as its own W rows in a fixed order, so pushing in pieces gives
        bit-for-bit what pushing whole gives (a running cumsum would not)."""
        history = np.concatenate([self._recent, p])  # (W - 1 + T, C); zeros stand for no frame yet
        sums = sliding_window_view(history, self.window, axis=0).sum(axis=-1)  # (T, C)
        counts = np.minimum(self.window, self._valid + np.arange(1, len(p) + 1))
        self._valid = min(self.window, self._valid + len(p))
        self._recent = history[len(history) - (self.window - 1):]
        return sums / counts[:, None]


def frame_loudness(frames, *, log_energies: bool) -> np.ndarray:
    """(T, F) frames -> (T,) loudness in dB (any reference), for `EventDetector.push`.

    log_energies: the frames are log band energies (edgernn.frontend.LogMel), whose frame energy
    is the sum of their exponentials; else they are raw samples, whose energy is their mean square.
    """
    x = np.asarray(frames, np.float64).reshape(len(frames), -1)
    if log_energies:
        top = x.max(axis=1)
        return (10 / np.log(10)) * (top + np.log(np.exp(x - top[:, None]).sum(axis=1)))
    return 10 * np.log10(np.mean(np.square(x), axis=1) + 1e-10)
