"""Audio augmentation for keyword-spotting data, in numpy: torch-free, deterministic by `rng`.

Every function takes float samples (S,) in [-1, 1] and returns new float64 samples; those that
draw anything take a `numpy.random.Generator`, so a seed gives the same audio on every machine.

- `speed(x, f)`: played f times faster (tempo and pitch together), band-limited resampling.
- `tempo(x, f)`: f times faster, pitch kept (WSOLA: 30 ms Hann frames, 50 % overlap, each
  placed where it best continues the last one, within +-10 ms).
- `pitch(x, semitones)`: pitch moved, duration kept (tempo, then speed).
- `room_ir(rng, rt60)`, `reverb(x, ir)`: a simulated room. No pyroomacoustics here: the impulse
  response is a numpy image-source approximation of a random shoebox room (Allen & Berkley 1979,
  images up to 3 reflections per axis, wall reflection from Sabine's formula for the asked RT60)
  for the early part, and exponentially decaying noise at that RT60 for the late tail. From 0.4 s
  up the measured decay matches the RT60 asked; small dead rooms come out longer (0.3 s for 0.15).
- `band_limit(x, lo, hi)`, `tilt(x, db_per_octave)`, `channel(rng, x)`: zero-phase Butterworth
  magnitude responses (telephone 300-3400 Hz, small microphones, tinny or boomy ones).
- `noise(rng, n, colour)`: unit-RMS white, pink, brown, blue or violet noise; `hum(rng, n)`.
- `digital_silence(x, start)`: exact zeros from `start` on, as a gated or trimmed recording ends.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from edgernn.audio.wav import resample

SAMPLE_RATE = 16000
NOISE_SLOPES = {"white": 0.0, "pink": 0.5, "brown": 1.0, "blue": -0.5, "violet": -1.0}  # amplitude ~ f ** -slope
SOUND_SPEED = 343.0  # m/s


def _f64(x) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(-1)


def rms(x) -> float:
    x = _f64(x)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def speed(x, factor: float, *, max_denominator: int = 50) -> np.ndarray:
    """x played `factor` times faster: len / factor samples, pitch times factor."""
    if not factor > 0:
        raise ValueError(f"speed factor {factor!r}; expected > 0")
    ratio = Fraction(factor).limit_denominator(max_denominator)
    if ratio == 1:
        return _f64(x).copy()
    return resample(_f64(x), ratio.numerator, ratio.denominator).astype(np.float64)


def tempo(x, factor: float, *, sample_rate: int = SAMPLE_RATE, frame: float = 0.03,
          tolerance: float = 0.01) -> np.ndarray:
    """x `factor` times faster (round(len / factor) samples), its pitch kept: WSOLA."""
    x = _f64(x)
    if not factor > 0:
        raise ValueError(f"tempo factor {factor!r}; expected > 0")
    n = max(4, int(frame * sample_rate)) // 2 * 2
    hop, tol = n // 2, int(tolerance * sample_rate)
    out_len = int(round(len(x) / factor))
    if len(x) < n or factor == 1.0:
        return speed(x, len(x) / max(out_len, 1)) if factor != 1.0 else x.copy()
    window = np.sin(np.pi * np.arange(n) / n) ** 2  # periodic Hann: halves sum to 1 at 50 % overlap
    xp = np.pad(x, (tol + n, tol + 2 * n + int(hop * factor) + 2))
    frames = out_len // hop + 3
    out = np.zeros(frames * hop + n)
    norm = np.zeros_like(out)
    prev = None
    for k in range(frames):
        nominal = tol + n + int(round((k - 1) * hop * factor))  # frame k: output time (k - 1) hop
        if prev is None:
            pos = nominal
        else:
            target = xp[prev + hop: prev + hop + n]  # what would follow the last frame naturally
            region = xp[nominal - tol: nominal + tol + n]
            pos = nominal - tol + int(np.argmax(np.correlate(region, target, "valid")))
        out[k * hop: k * hop + n] += window * xp[pos: pos + n]
        norm[k * hop: k * hop + n] += window
        prev = pos
    y = out / np.maximum(norm, 1e-3)
    y = y[hop: hop + out_len]
    return y if len(y) == out_len else np.pad(y, (0, out_len - len(y)))


def pitch(x, semitones: float, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """x with its pitch moved by `semitones`, its duration (nearly) kept."""
    x = _f64(x)
    if semitones == 0:
        return x.copy()
    r = 2.0 ** (semitones / 12.0)
    y = speed(tempo(x, 1.0 / r, sample_rate=sample_rate), r)
    return y[:len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def gain(x, db: float) -> np.ndarray:
    return _f64(x) * 10.0 ** (db / 20.0)


def room_ir(rng: np.random.Generator, rt60: float, *, sample_rate: int = SAMPLE_RATE, order: int = 3) -> np.ndarray:
    """A room impulse response (direct path 1.0) for a random shoebox room of reverberation time rt60 s."""
    dims = np.array([rng.uniform(3.0, 10.0), rng.uniform(3.0, 8.0), rng.uniform(2.4, 4.0)])
    src = dims * rng.uniform(0.15, 0.85, 3)
    mic = dims * rng.uniform(0.15, 0.85, 3)
    volume, surface = float(np.prod(dims)), 2.0 * float(dims[0] * dims[1] + dims[1] * dims[2] + dims[0] * dims[2])
    alpha = min(0.161 * volume / (surface * rt60), 0.99)  # Sabine absorption for this rt60
    beta = math.sqrt(1.0 - alpha)  # pressure reflection of every wall
    m = np.arange(-order, order + 1)
    axes = []
    for d in range(3):  # image coordinate (1 - 2q) src + 2 m L, |m - q| + |m| reflections
        coord = np.concatenate([src[d] + 2 * m * dims[d], -src[d] + 2 * m * dims[d]])
        hits = np.concatenate([2 * np.abs(m), np.abs(m - 1) + np.abs(m)])
        axes.append((coord - mic[d], hits))
    dx, dy, dz = np.meshgrid(axes[0][0], axes[1][0], axes[2][0], indexing="ij")
    hx, hy, hz = np.meshgrid(axes[0][1], axes[1][1], axes[2][1], indexing="ij")
    dist = np.sqrt(dx**2 + dy**2 + dz**2).ravel()
    amp = beta ** (hx + hy + hz).ravel() / np.maximum(dist, 0.1)
    direct = float(dist.min())
    delay = np.round((dist - direct) * sample_rate / SOUND_SPEED).astype(int)
    length = int(min(rt60, 1.0) * sample_rate)
    ir = np.zeros(length)
    keep = delay < length
    np.add.at(ir, delay[keep], amp[keep])
    early = int(delay[keep].max()) if keep.any() else 0
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: max(early // 2, 1)] = 0.0
    # the tail carries what the truncated image set leaves out: scale it to the energy Sabine predicts
    tail_energy = np.sum(amp[keep] ** 2) * (1.0 / max(alpha, 0.05) - 1.0) * 0.5
    tail *= math.sqrt(tail_energy / max(np.sum(tail**2), 1e-12))
    ir = ir + tail
    return ir / ir[0] if ir[0] != 0 else ir / np.abs(ir).max()


def reverb(x, ir, *, wet: float = 1.0) -> np.ndarray:
    """x through the room `ir` (same length as x), mixed `wet` with the dry signal."""
    x, ir = _f64(x), _f64(ir)
    n = len(x) + len(ir) - 1
    size = 1 << max(n - 1, 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    return wet * y + (1.0 - wet) * x


def _response(x, sample_rate: int, gains) -> np.ndarray:
    x = _f64(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    return np.fft.irfft(np.fft.rfft(x) * gains(np.maximum(f, 1e-3)), len(x))


def band_limit(x, lo: float, hi: float, *, order: int = 4, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-phase Butterworth band pass: -3 dB at lo and hi Hz, `order` poles each side."""
    return _response(x, sample_rate, lambda f: 1.0 / np.sqrt((1 + (lo / f) ** (2 * order)) * (1 + (f / hi) ** (2 * order))))


def tilt(x, db_per_octave: float, *, pivot: float = 1000.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A spectral tilt around `pivot` Hz, clamped to +-12 dB: tinny (> 0) or dull (< 0) microphones."""
    return _response(x, sample_rate, lambda f: 10 ** (np.clip(db_per_octave * np.log2(f / pivot), -12, 12) / 20))


CHANNELS = ("flat", "telephone", "small_mic", "laptop", "dull")


def channel(rng: np.random.Generator, x, kind: str | None = None, *, sample_rate: int = SAMPLE_RATE):
    """(samples, kind): x through a random (or the named) device response from CHANNELS."""
    kind = kind or str(rng.choice(CHANNELS))
    if kind == "telephone":
        y = band_limit(x, rng.uniform(250, 400), rng.uniform(3000, 3600), sample_rate=sample_rate)
    elif kind == "small_mic":
        y = tilt(band_limit(x, rng.uniform(100, 300), rng.uniform(4500, 7000), order=2, sample_rate=sample_rate),
                 rng.uniform(0.5, 3.0), sample_rate=sample_rate)
    elif kind == "laptop":
        y = band_limit(x, rng.uniform(200, 500), rng.uniform(6000, 7800), order=3, sample_rate=sample_rate)
    elif kind == "dull":
        y = tilt(x, -rng.uniform(1.0, 4.0), sample_rate=sample_rate)
    elif kind == "flat":
        y = _f64(x).copy()
    else:
        raise ValueError(f"channel {kind!r}; expected one of {', '.join(CHANNELS)}")
    return y, kind


def noise(rng: np.random.Generator, n: int, colour: str = "white") -> np.ndarray:
    """n samples of unit-RMS coloured noise, shaped in the frequency domain."""
    bins = n // 2 + 1
    spectrum = rng.standard_normal(bins) + 1j * rng.standard_normal(bins)
    spectrum *= np.maximum(np.arange(bins), 1.0) ** -NOISE_SLOPES[colour]
    spectrum[0] = 0.0
    y = np.fft.irfft(spectrum, n)
    return y / max(rms(y), 1e-12)


def hum(rng: np.random.Generator, n: int, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-RMS 50 or 60 Hz mains hum with four decaying harmonics at random phases."""
    t = np.arange(n) / sample_rate
    f0 = float(rng.choice([50.0, 60.0]))
    y = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    return y / rms(y)


def digital_silence(x, start: int) -> np.ndarray:
    """x with every sample from `start` on exactly zero."""
    y = _f64(x).copy()
    y[max(int(start), 0):] = 0.0
    return y
