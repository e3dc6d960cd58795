"""WAV files in and out, and sample-rate conversion, with numpy only.

Everything here speaks mono float32 samples in [-1, 1] and integer rates in Hz.
Shape legend: S input samples, T output samples, K filter taps, L/M the reduced up/down factors.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import struct
import uuid
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgernn.core import fileio
from edgernn.core.errors import InputError

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# Every standard KSDATAFORMAT_SUBTYPE GUID ends like this; its first two bytes are the format code.
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
# Named so an error says "IMA ADPCM" rather than only a number; the code is always shown too.
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MP3", 0x0161: "WMA", 0x2000: "AC-3",
    0xF1AC: "FLAC",
}
_SUPPORTED = "expected PCM 8/16/24/32-bit or IEEE float 32/64-bit"
_CONVERT = "convert with `sox in.wav -e signed-integer -b 16 out.wav`"

# Resampling filter: 32 sinc zero crossings each side and Kaiser beta 8.6 keep the passband flat
# (-0.1 dB at 0.94 of the new Nyquist) and put everything above 1.12 x Nyquist at least 80 dB down.
_ZERO_CROSSINGS = 32
_KAISER_BETA = 8.6


@dataclass(frozen=True)
class _Format:
    code: int  # _PCM or _FLOAT, after unwrapping WAVE_FORMAT_EXTENSIBLE
    channels: int  # interleaved channels per sample frame
    rate: int  # sample frames per second
    width: int  # bytes per sample in its container (block_align // channels)


def read_wav(path: str | os.PathLike, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono float32 samples in [-1, 1].

    Reads PCM 8-bit unsigned, 16/24/32-bit signed, IEEE float 32/64-bit, and
    WAVE_FORMAT_EXTENSIBLE wrapping any of those. Channels are averaged to mono; float samples
    beyond full scale are clipped, as an integer encoder would have done.

    Args:
        path: the .wav file.
        sample_rate: if given and different from the file's, resample to it with `resample`.

    Returns:
        (samples, rate): samples (S,) float32, and the rate they are at.

    Raises:
        InputError: unreadable file, not a RIFF/WAVE file, truncated, no samples, or an
            encoding not listed above (mu-law, ADPCM, MP3...).
    """
    name = os.fspath(path)
    try:
        blob = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{name}: cannot read it ({e.strerror}); expected a readable WAV file; "
                         "check the path") from e
    fmt_body, data = _chunks(name, blob)
    fmt = _parse_fmt(name, fmt_body)
    samples = _decode(name, fmt, data)
    if sample_rate is not None:
        target = _check_rate(sample_rate, "sample_rate")
        if target != fmt.rate:
            return resample(samples, fmt.rate, target), target
    return samples, fmt.rate


def _chunks(name: str, blob: bytes) -> tuple[memoryview, memoryview]:
    """The bodies of the first 'fmt ' and 'data' chunks; everything else (LIST...) is skipped."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        found = "an empty file" if not blob else f"a file starting {bytes(blob[:12])!r}"
        raise InputError(f"{name}: not a RIFF/WAVE file ({found}); expected a .wav file; "
                         f"{_CONVERT}")
    view, pos, bodies = memoryview(blob), 12, {}
    while pos + 8 <= len(blob):
        cid, size = struct.unpack_from("<4sI", blob, pos)
        body = view[pos + 8:pos + 8 + size]
        if cid in (b"fmt ", b"data") and cid not in bodies:
            if len(body) < size:
                raise InputError(f"{name}: truncated: the {cid.decode()!r} chunk declares {size} "
                                 f"bytes but only {len(body)} follow; expected a complete file; "
                                 "re-export it or repair with `sox --ignore-length in.wav out.wav`")
            bodies[cid] = body
        pos += 8 + size + (size & 1)  # RIFF pads odd-sized chunks to an even length
    for cid in (b"fmt ", b"data"):
        if cid not in bodies:
            raise InputError(f"{name}: no {cid.decode()!r} chunk (file truncated or not audio); "
                             f"expected a WAV file with 'fmt ' and 'data' chunks; {_CONVERT}")
    return bodies[b"fmt "], bodies[b"data"]


MAX_RATE = 768_000  # the highest sample rate a WAV header may claim (768 kHz ultrasonic recorders)
MAX_RESAMPLED = 1 << 28  # samples `resample` may produce (1 GiB of float32): a damaged rate cannot exhaust memory
MAX_DECIMATION = 4096  # src/dst rate ratio `resample` accepts: its filter grows with the ratio


def _parse_fmt(name: str, body: memoryview) -> _Format:
    if len(body) < 16:
        raise InputError(f"{name}: the 'fmt ' chunk is {len(body)} bytes, expected at least 16; "
                         f"the header is damaged; {_CONVERT}")
    code, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if code == _EXTENSIBLE:
        if len(body) < 40:
            raise InputError(f"{name}: WAVE_FORMAT_EXTENSIBLE header is {len(body)} bytes, "
                             f"expected 40; the header is damaged; {_CONVERT}")
        guid = bytes(body[24:40])
        if guid[2:] != _GUID_TAIL:
            sub = uuid.UUID(bytes_le=guid)
            raise InputError(f"{name}: WAVE_FORMAT_EXTENSIBLE sub-format {sub} is not "
                             f"supported; {_SUPPORTED}; {_CONVERT}")
        code = int.from_bytes(guid[:2], "little")
    if code not in (_PCM, _FLOAT):
        label = _FORMAT_NAMES.get(code, "unknown")
        raise InputError(f"{name}: WAV format 0x{code:04X} ({label}) is not supported; "
                         f"{_SUPPORTED}; {_CONVERT}")
    if channels == 0 or rate == 0 or block_align == 0 or block_align % channels:
        raise InputError(f"{name}: damaged 'fmt ' chunk (channels={channels}, rate={rate}, "
                         f"block_align={block_align}); expected all positive with block_align a "
                         f"multiple of channels; {_CONVERT}")
    if rate > MAX_RATE:
        raise InputError(f"{name}: the header says {rate} samples per second; expected at most {MAX_RATE} Hz; "
                         f"the header is damaged; {_CONVERT}")
    width = block_align // channels
    if width not in ((1, 2, 3, 4) if code == _PCM else (4, 8)):
        kind = "PCM" if code == _PCM else "float"
        raise InputError(f"{name}: {bits}-bit {kind} in {8 * width}-bit containers is not "
                         f"supported; {_SUPPORTED}; {_CONVERT}")
    return _Format(code=code, channels=channels, rate=rate, width=width)


def _decode(name: str, fmt: _Format, data: memoryview) -> np.ndarray:
    """Interleaved little-endian bytes to mono float32; a trailing partial frame is dropped."""
    frames = len(data) // (fmt.width * fmt.channels)
    if frames == 0:
        raise InputError(f"{name}: the data chunk holds no complete sample ({len(data)} bytes); "
                         "expected at least one sample; re-record or re-export the file")
    raw = np.frombuffer(data, dtype=np.uint8, count=frames * fmt.width * fmt.channels)
    x = _to_float(raw, fmt.code, fmt.width)  # (S * channels,) interleaved
    if fmt.code == _FLOAT:
        if not np.isfinite(x).all():
            raise InputError(f"{name}: float samples include NaN or infinity; expected finite "
                             "samples; re-export the file")
        x = np.clip(x, -1.0, 1.0)
    x = x.reshape(frames, fmt.channels)
    mono = x[:, 0] if fmt.channels == 1 else x.mean(axis=1)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _to_float(raw: np.ndarray, code: int, width: int) -> np.ndarray:
    if code == _FLOAT:
        return raw.view("<f4" if width == 4 else "<f8")
    if width == 1:  # 8-bit WAV is unsigned with 128 as silence
        return (raw.astype(np.float32) - 128.0) / 128.0
    if width == 3:  # no numpy int24: put each sample in the high bytes of an int32
        padded = np.zeros((raw.size // 3, 4), dtype=np.uint8)
        padded[:, 1:] = raw.reshape(-1, 3)
        return padded.view("<i4")[:, 0] / 2.0**31
    if width == 2:
        return raw.view("<i2") / np.float32(2.0**15)  # float32 is exact for 16-bit
    return raw.view("<i4") / 2.0**31


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM, clipping to [-1, 1].

    The file appears whole or not at all: it is written to a temporary file in the same
    directory and renamed over `path`, so a reader never sees half a file.

    Args:
        path: the .wav file to create or replace.
        samples: (S,) float samples, nominally in [-1, 1].
        sample_rate: rate in Hz stored in the header.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise InputError(f"write_wav: expected mono samples of shape (S,), got shape {x.shape}; "
                         "mix channels down first, e.g. samples.mean(axis=1)")
    if not np.isfinite(x).all():
        raise InputError("write_wav: samples include NaN or infinity; expected finite samples; "
                         "check the signal that produced them")
    rate = _check_rate(sample_rate, "sample_rate")
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    try:
        fileio.write_bytes(path, buf.getvalue(), make_parents=False)
    except OSError as e:
        raise InputError(f"{os.fspath(path)}: cannot write it ({e.strerror}); expected a "
                         "writable path in an existing directory; check the path") from e


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Change the sample rate with a band-limited polyphase filter.

    The rate ratio is reduced to L/M by their gcd; conceptually the signal is upsampled by L
    (zero-stuffed), low-passed by a Kaiser-windowed sinc (32 zero crossings each side, beta 8.6)
    whose cutoff is the lower of the two Nyquist frequencies, i.e. min(1/L, 1/M) of the
    upsampled Nyquist, then downsampled by M. The polyphase form computes only the outputs kept:
    each output is one dot product of K input samples with one of L precomputed phases, so the
    zero-stuffed signal never exists. The filter is centred (zero delay), so output t lies at
    input time t * M / L and the output has ceil(S * L / M) samples; input outside the signal is
    taken as zeros.

    Why not `x[::k]`: slicing keeps whatever lies above the new Nyquist and folds it into the
    band (a 10 kHz tone sliced from 48 kHz to 16 kHz comes back as 6 kHz); the low-pass
    removes it first (>= 80 dB down from 1.12 x the new Nyquist, flat to 0.94 x).

    Args:
        x: (S,) samples; float64 stays float64, anything else is computed in float32.
        src_rate: rate of `x` in Hz.
        dst_rate: wanted rate in Hz.

    Returns:
        (T,) samples at `dst_rate`, T = ceil(S * L / M); a copy of `x` if the rates are equal.
    """
    up, down = _ratio(src_rate, dst_rate)
    x = _as_signal(x, "resample")
    if up == down:
        return x.copy()
    n_out = -(-len(x) * up // down)
    if n_out > MAX_RESAMPLED:
        raise InputError(f"resampling {len(x)} samples from {src_rate} to {dst_rate} Hz would make {n_out} samples; "
                         f"expected at most {MAX_RESAMPLED}; check the sample rates")
    table = _phase_table(up, down, x.dtype.str)
    half = table.shape[1] // 2
    last_base = (n_out - 1) * down // up if n_out else 0
    # Zeros before and after, so every output's window lies inside the buffer.
    buf = np.concatenate([np.zeros(half - 1, x.dtype), x,
                          np.zeros(max(0, last_base + half + 1 - len(x)), x.dtype)])
    return _polyphase(buf, -(half - 1), table, up, down, 0, n_out)


class StreamResampler:
    """`resample` for audio that arrives in pieces, e.g. a microphone at the wrong rate.

    Concatenating every `process` output and the final `flush` gives what `resample` gives for
    the concatenated input (to float32 rounding). Only the filter's reach of input is kept.
    Output lags input by about K/2 input samples, the filter's look-ahead.
    """

    def __init__(self, src_rate: int, dst_rate: int):
        self.src_rate = _check_rate(src_rate, "src_rate")
        self.dst_rate = _check_rate(dst_rate, "dst_rate")
        self._up, self._down = _ratio(src_rate, dst_rate)
        self._table = _phase_table(self._up, self._down, np.dtype(np.float32).str)
        self._half = self._table.shape[1] // 2
        self.reset()

    def reset(self) -> None:
        """Forget all input, as if just constructed."""
        self._buf = np.zeros(self._half - 1, np.float32)  # the zeros resample() puts before x
        self._start = -(self._half - 1)  # input index of self._buf[0]
        self._n_in = 0
        self._n_out = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Take (S,) new samples; return the (T,) float32 outputs they completed (maybe none)."""
        chunk = _as_signal(chunk, "StreamResampler.process").astype(np.float32, copy=False)
        if self._up == self._down:
            return chunk.copy()
        self._buf = np.concatenate([self._buf, chunk])
        self._n_in += len(chunk)
        # Output t reads input up to floor(t * M / L) + K/2: count the outputs n_in inputs cover.
        ready = max(0, ((self._n_in - self._half) * self._up - 1) // self._down + 1)
        return self._emit(ready)

    def flush(self) -> np.ndarray:
        """End the stream: return the remaining outputs (input beyond the end is zeros), reset."""
        if self._up == self._down:
            return np.zeros(0, np.float32)
        total = -(-self._n_in * self._up // self._down)
        self._buf = np.concatenate([self._buf, np.zeros(2 * self._half, np.float32)])
        out = self._emit(total)
        self.reset()
        return out

    def _emit(self, stop: int) -> np.ndarray:
        out = _polyphase(self._buf, self._start, self._table, self._up, self._down,
                         self._n_out, stop - self._n_out)
        self._n_out = max(self._n_out, stop)
        first = self._n_out * self._down // self._up - self._half + 1  # next window's first input
        self._buf = self._buf[first - self._start:].copy()  # copy: don't pin the old buffer
        self._start = first
        return out


def _polyphase(buf: np.ndarray, start: int, table: np.ndarray, up: int, down: int,
               first: int, count: int) -> np.ndarray:
    """Outputs first .. first+count-1, reading `buf` whose element 0 is input sample `start`.

    Outputs t and t + L share a phase and their windows are M inputs apart, so each residue
    class mod L is one strided (rows, K) view times one (K,) phase: a matrix-vector product.
    Work goes in blocks of about 64k input samples so that the L passes over a block hit cache.
    """
    out = np.empty(max(count, 0), buf.dtype)
    if count <= 0:
        return out  # the buffer may be shorter than one window yet
    windows = sliding_window_view(buf, table.shape[1])  # (len(buf) - K + 1, K), a view
    block = up * max(64, 65536 // down)
    for lo in range(0, count, block):
        hi = min(lo + block, count)
        out[lo:hi] = _polyphase_block(windows, start, table, up, down, first + lo, hi - lo)
    return out


def _polyphase_block(windows: np.ndarray, start: int, table: np.ndarray, up: int, down: int,
                     first: int, count: int) -> np.ndarray:
    out = np.empty(count, windows.dtype)
    for r in range(min(count, up)):
        pos = (first + r) * down
        lo = pos // up - table.shape[1] // 2 + 1 - start  # buf index of this window's start
        n = len(range(r, count, up))
        rows = windows[lo::down][:n]  # (n, K) strided view, no copy
        assert len(rows) == n, "buffer too short for the requested outputs"
        out[r::up] = rows @ table[pos % up]
    return out


@lru_cache(maxsize=32)
def _phase_table(up: int, down: int, dtype: str) -> np.ndarray:
    """(L, K) windowed-sinc phases; row p weighs the K inputs around input time base + p / L."""
    cutoff = 0.5 * min(1.0, up / down)  # cycles per input sample: the lower Nyquist
    reach = _ZERO_CROSSINGS / (2.0 * cutoff)  # window half-width in input samples
    half = math.ceil(reach)
    offsets = np.arange(-half + 1, half + 1)  # (K,) input index relative to floor(time)
    u = np.arange(up)[:, None] / up - offsets[None, :]  # (L, K) time minus input index
    inside = np.clip(1.0 - (u / reach) ** 2, 0.0, None)
    window = np.i0(_KAISER_BETA * np.sqrt(inside)) / np.i0(_KAISER_BETA)
    window[np.abs(u) > reach] = 0.0
    table = 2.0 * cutoff * np.sinc(2.0 * cutoff * u) * window
    table /= table.sum(axis=1, keepdims=True)  # exact unit DC gain for every phase
    table = table.astype(np.dtype(dtype))
    table.setflags(write=False)  # shared through the cache
    return table


def _ratio(src_rate: int, dst_rate: int) -> tuple[int, int]:
    src, dst = _check_rate(src_rate, "src_rate"), _check_rate(dst_rate, "dst_rate")
    if src > MAX_DECIMATION * dst:  # the anti-alias filter's length grows with this ratio
        raise InputError(f"resampling from {src} to {dst} Hz divides the rate by more than {MAX_DECIMATION}; "
                         "expected rates within that ratio; check the sample rates")
    g = math.gcd(src, dst)
    return dst // g, src // g


def _check_rate(rate, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or rate <= 0:
        raise InputError(f"{what}={rate!r} is not a sample rate; expected a positive integer "
                         "in Hz such as 16000; pass an int")
    return int(rate)


def _as_signal(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise InputError(f"{what}: expected mono samples of shape (S,), got shape {x.shape}; "
                         "mix channels down first, e.g. samples.mean(axis=1)")
    return x if x.dtype == np.float64 else x.astype(np.float32, copy=False)
