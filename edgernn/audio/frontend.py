"""The log-mel front end, written once and used by training and by the runtime alike.

Framing is causal and matches the runtime's raw-sample framing: every `hop` new samples make
one frame, whose window is the previous `window - hop` samples plus those `hop` new ones; before
the first sample there are `window - hop` zeros. So S samples give S // hop frames, and frame i
depends only on samples before (i + 1) * hop. Samples that do not fill a hop make no frame yet.

Shape legend: S samples, F frames (= S // hop), M mel bands (= mels), B = n_fft // 2 + 1 bins.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgernn.core.errors import InputError

_KIND = "logmel"
_BLOCK = 2048  # frames per FFT batch: bounds the temporaries for long files


@dataclass(frozen=True)
class LogMel:
    """Log mel energies on the HTK/Kaldi mel scale, one frame per `hop` samples.

    Each frame: periodic Hann window of `window` samples, zero-padded rfft of `n_fft`, power
    |X|^2, triangular filters of unit peak spaced evenly on the HTK mel scale
    mel = 2595 log10(1 + f / 700) between `fmin` and `fmax` (as HTK and Kaldi fbank do, the
    usual choice for speech), then log(max(energy, floor)).
    """

    sample_rate: int = 16000  # Hz the samples must be at; resample first if they are not
    window: int = 400  # analysis window in samples (25 ms at 16 kHz)
    hop: int = 160  # new samples per frame (10 ms at 16 kHz)
    mels: int = 40  # mel bands: the model's features per frame
    n_fft: int = 512  # FFT size, >= window; the window is zero-padded up to it
    fmin: float = 20.0  # lowest filter edge in Hz; keeps DC and rumble out
    fmax: float | None = None  # highest filter edge in Hz; None means sample_rate / 2
    floor: float = 1e-6  # energies are clamped to this before the log, so silence stays finite

    def __post_init__(self):
        for name in ("sample_rate", "window", "hop", "mels", "n_fft"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        fmax = self.sample_rate / 2 if self.fmax is None else self.fmax
        for name, value in (("fmin", self.fmin), ("fmax", fmax), ("floor", self.floor)):
            object.__setattr__(self, name, _finite_float(name, value))
        if self.hop > self.window:
            raise InputError(f"LogMel hop={self.hop} is longer than window={self.window}; "
                             "expected hop <= window, else samples are skipped; lower hop")
        if self.n_fft < self.window:
            raise InputError(f"LogMel n_fft={self.n_fft} is shorter than window={self.window}; "
                             "expected n_fft >= window; use the next power of two")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise InputError(f"LogMel fmin={self.fmin}, fmax={self.fmax} at sample_rate="
                             f"{self.sample_rate}; expected 0 <= fmin < fmax <= sample_rate / 2; "
                             "fix the band edges")
        if self.floor <= 0.0:
            raise InputError(f"LogMel floor={self.floor}; expected a positive log floor; "
                             "use e.g. 1e-6")
        empty = np.flatnonzero(~self.filterbank.any(axis=1))
        if empty.size:
            # Usable, but those bands are always log(floor): the model gets dead inputs.
            warnings.warn(f"LogMel: mel bands {empty.tolist()} fall between FFT bins and are "
                          f"always empty; use fewer mels than {self.mels} or a larger n_fft "
                          f"than {self.n_fft}", stacklevel=3)

    @property
    def features(self) -> int:
        """Values per frame: the model's input size."""
        return self.mels

    @property
    def band_centres(self) -> np.ndarray:
        """(M,) centre frequency in Hz of each mel band (the peaks of `filterbank`'s triangles)."""
        return _mel_to_hz(np.linspace(hz_to_mel(self.fmin), hz_to_mel(self.fmax), self.mels + 2))[1:-1]

    @property
    def filterbank(self) -> np.ndarray:
        """(M, B) read-only triangular mel filters, shared by every equal config."""
        return _filterbank(self.sample_rate, self.n_fft, self.mels, self.fmin, self.fmax)

    def frames(self, samples: int) -> int:
        """How many frames `samples` samples make."""
        return samples // self.hop

    def compute(self, samples: np.ndarray) -> np.ndarray:
        """(S,) float samples in [-1, 1] -> (F, M) float32 log mel, F = S // hop."""
        x = _signal(samples)
        count = self.frames(len(x))
        padded = np.concatenate([np.zeros(self.window - self.hop), x[:count * self.hop]])
        return self._frames(padded, count)

    def stream(self) -> LogMelStream:
        """A fresh incremental front end over this config."""
        return LogMelStream(self)

    def to_meta(self) -> dict:
        """JSON-ready dict that `from_meta` turns back into an equal LogMel."""
        return {"kind": _KIND, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_meta(cls, meta: Mapping) -> LogMel:
        """Rebuild from `to_meta` output (e.g. read back from model metadata), validating it."""
        if not isinstance(meta, Mapping):
            raise InputError(f"front-end metadata is a {type(meta).__name__}; expected a dict "
                             "from LogMel.to_meta(); re-export the model")
        if meta.get("kind") != _KIND:
            raise InputError(f"front-end kind {meta.get('kind')!r} is not supported; expected "
                             f"{_KIND!r}; re-export the model with this edgernn version")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(meta) - names - {"kind"})
        missing = sorted(names - set(meta))
        if unknown or missing:
            raise InputError(f"front-end metadata has unknown keys {unknown} and lacks "
                             f"{missing}; expected exactly kind, {', '.join(sorted(names))}; "
                             "re-export the model with this edgernn version")
        return cls(**{name: meta[name] for name in names})

    def _frames(self, padded: np.ndarray, count: int) -> np.ndarray:
        """(window - hop + count * hop,) float64 -> (count, M) float32; both paths end here."""
        out = np.empty((count, self.mels), np.float32)
        if count == 0:
            return out
        if count == 1:  # one hop at a time (a microphone): a slice, without the strided view's cost
            windows = padded[None, :self.window]
        else:
            windows = sliding_window_view(padded, self.window)[::self.hop]  # (F, window) view
        hann = _hann(self.window)
        weights = self.filterbank.T  # (B, M)
        for lo in range(0, count, _BLOCK):
            spectrum = np.fft.rfft(windows[lo:lo + _BLOCK] * hann, n=self.n_fft)  # (F', B)
            power = spectrum.real**2 + spectrum.imag**2
            out[lo:lo + _BLOCK] = np.log(np.maximum(power @ weights, self.floor))
        return out


class LogMelStream:
    """Incremental `LogMel.compute`: push audio in chunks of any size, get frames as they fill.

    Concatenating every `push` result equals `compute` on the concatenated audio. Between
    pushes it keeps only `window - 1` samples at most: the overlap and an unfinished hop.
    """

    def __init__(self, frontend: LogMel):
        self.frontend = frontend
        self.reset()

    def reset(self) -> None:
        """Start over, as before the first sample (the window's history is zeros again)."""
        fe = self.frontend
        self._tail = np.zeros(fe.window - fe.hop)  # overlap + unfinished hop, float64

    def push(self, samples: np.ndarray) -> np.ndarray:
        """(S,) new samples -> (k, M) float32 frames they completed; k may be 0."""
        fe = self.frontend
        buf = np.concatenate([self._tail, _signal(samples)])
        count = fe.frames(len(buf) - (fe.window - fe.hop))
        out = fe._frames(buf, count)
        self._tail = buf[count * fe.hop:].copy()  # copy: don't pin the whole chunk
        return out


class ModelFrontend:
    """How samples at `rate` Hz become this model's frames: its log-mel front end, raw windows
    (--window/--hop), or one sample per step. `push` is the live path, `offline` the file path."""

    def __init__(self, rt, framer, rate: int | None, what: str):
        fe = (rt.meta or {}).get("frontend")
        self.logmel = LogMel.from_meta(fe) if fe else None
        self.framer = framer
        if self.logmel is not None:
            self.rate, self.hop, self._live = self.logmel.sample_rate, self.logmel.hop, self.logmel.stream()
        elif framer is not None:
            self.rate, self.hop, self._live = int(rate or 16000), framer.hop, framer
        elif rt.signature.frame_shape == (1,):
            self.rate, self.hop, self._live = int(rate or 16000), 1, None
        else:
            raise InputError(f"{what}: audio input needs a model with an audio front end in its metadata, or "
                             f"--window N --hop M to frame raw samples; this model takes frames of "
                             f"{rt.signature.frame_shape}")

    def push(self, samples: np.ndarray) -> np.ndarray:
        return samples[:, None] if self._live is None else self._live.push(samples)

    def offline(self, samples: np.ndarray) -> np.ndarray:
        if self.logmel is not None:
            return self.logmel.compute(samples)
        return samples[:, None] if self.framer is None else self.framer.frame_all(samples)

    def reset(self) -> None:
        if self._live is not None:
            self._live.reset()


def _signal(samples) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InputError(f"log-mel front end: expected mono samples of shape (S,), got shape "
                         f"{x.shape}; mix channels down first, e.g. samples.mean(axis=1)")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"log-mel front end: expected float samples in [-1, 1], got {x.dtype}; "
                         "scale integers first (int16 / 32768), as edgernn.audio.read_wav does")
    return x.astype(np.float64, copy=False)


@lru_cache(maxsize=8)
def _hann(window: int) -> np.ndarray:
    """(window,) periodic Hann: the window repeats exactly when frames overlap by half."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(window) / window)
    w.setflags(write=False)
    return w


@lru_cache(maxsize=8)
def _filterbank(sample_rate: int, n_fft: int, mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(M, B) HTK-mel triangles of unit peak, evaluated at the FFT bin frequencies."""
    edges = _mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft  # (B,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank.setflags(write=False)
    return bank


def hz_to_mel(hz):
    """The HTK mel scale of the filterbank."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise InputError(f"LogMel {name}={value!r}; expected a positive integer; fix {name}")
    return int(value)


def _finite_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"LogMel {name}={value!r}; expected a finite number; fix {name}")
    return float(value)
