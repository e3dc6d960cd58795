"""Microphone capture through PortAudio (`sounddevice`), imported only when a microphone is used.

    device = find_device(None)                      # the system's default input (or "USB", or 3)
    rate, channels = negotiate(device, 16000)       # InputError if the device refuses 16 kHz
    with Microphone(device=device, sample_rate=rate, block=160, channels=channels) as m:
        for b in m.blocks(duration=5.0):            # Block(start, samples), start in samples
            live.block(b.start, b.samples)          # LiveAudio: resample, front end, frames
    m.snapshot()                                    # Stats: dropped blocks, overflows, seconds lost

PortAudio calls back on its own thread once per `block` samples. The callback only copies the
block into a bounded queue; the caller's thread does the inference. Nothing is lost silently:

* when the caller falls behind and the queue (`max_lag` seconds of audio) is full, the new
  block is dropped and counted (`stats.dropped_blocks`, `stats.dropped_samples`);
* when PortAudio itself reports an input overflow (audio lost before it reached us), the
  callback counts it (`stats.overflows`) and, where PortAudio's ADC timestamps allow, measures
  how much audio was lost (`stats.overflow_samples`).

Either way the sample clock keeps counting the audio that was lost, so `Block.start` of the next
block jumps ahead by the gap and times stay true to the wall clock.

Torch-free: stdlib, numpy, and sounddevice (optional extra `edgernn[audio]`, needs the system's
libportaudio2).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edgernn.core.errors import InputError

_NO_PORTAUDIO = ("the microphone needs the sounddevice package and the PortAudio library; install them with "
                 "`pip install sounddevice` (or edgernn[audio]) and `apt-get install libportaudio2`")
_NO_DEVICE = ("no audio input device found{why}; connect a microphone, check `edgernn devices`, or start a "
              "virtual one with `tools/vmic.sh start` (PulseAudio)")


def load_backend():
    """`import sounddevice`, turning its failures into one InputError that names the fix."""
    try:
        import sounddevice
    except ImportError as e:
        raise InputError(f"sounddevice is not installed; {_NO_PORTAUDIO}") from e
    except OSError as e:  # the wheel is there but libportaudio.so is not
        raise InputError(f"PortAudio library not found ({e}); {_NO_PORTAUDIO}") from e
    return sounddevice


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    channels: int  # input channels it offers
    default_rate: int  # Hz
    hostapi: str
    is_default: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def input_devices(backend=None) -> list[Device]:
    """Every device with at least one input channel; InputError if there is none."""
    sd = backend or load_backend()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
    except sd.PortAudioError as e:
        raise InputError(_NO_DEVICE.format(why=f" (PortAudio: {e})")) from e
    default = _default_input(sd)
    out = [Device(i, d["name"], int(d["max_input_channels"]), int(round(d["default_samplerate"])),
                  apis[d["hostapi"]]["name"] if d["hostapi"] < len(apis) else "?", i == default)
           for i, d in enumerate(devices) if d["max_input_channels"] > 0]
    if not out:
        raise InputError(_NO_DEVICE.format(why=" (PortAudio lists none)"))
    return out


def _default_input(sd) -> int | None:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except (sd.PortAudioError, ValueError, KeyError, TypeError):
        return None


def find_device(spec=None, backend=None) -> Device:
    """The input device for `--device`: None (the default), an index, or a name or part of one."""
    devices = input_devices(backend)
    if spec is None or str(spec).strip() == "":
        chosen = [d for d in devices if d.is_default] or devices[:1]
        return chosen[0]
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        match = [d for d in devices if d.index == int(text)]
        if not match:
            raise InputError(f"--device {text}: no input device with that index; expected one of "
                             f"{[d.index for d in devices]} (see `edgernn devices`)")
        return match[0]
    match = [d for d in devices if d.name == text] or [d for d in devices if text.lower() in d.name.lower()]
    if len(match) != 1:
        what = "no input device matches" if not match else f"{len(match)} input devices match"
        names = [d.name for d in (match or devices)]
        raise InputError(f"--device {text!r}: {what}; expected exactly one of {names} (or an index; "
                         "see `edgernn devices`)")
    return match[0]


def negotiate(device: Device, rate: int | None, backend=None) -> tuple[int, int]:
    """(rate, channels) to open `device` with: `rate` (None: the device's default), checked.

    Mono is asked for first; a device that refuses it is opened with up to two channels, which
    `Microphone` averages. InputError if the device refuses the rate.
    """
    sd = backend or load_backend()
    want = device.default_rate if rate is None else int(rate)
    for channels in dict.fromkeys([1, min(2, device.channels), device.channels]):
        try:
            sd.check_input_settings(device=device.index, samplerate=want, channels=channels, dtype="float32")
            return want, channels
        except (sd.PortAudioError, ValueError) as e:
            error = e
    raise InputError(f"input device {device.name!r} refuses {want} Hz ({error}); expected a rate it supports, "
                     f"e.g. --sample-rate {device.default_rate}")


@dataclass
class Stats:
    """What the microphone lost, counted by the callback (read by the caller at any time)."""

    sample_rate: int
    received_samples: int = 0  # audio the clock has seen, lost audio included
    dropped_blocks: int = 0  # blocks thrown away because the queue was full (inference behind)
    dropped_samples: int = 0
    overflows: int = 0  # callbacks where PortAudio flagged an input overflow
    overflow_samples: int = 0  # audio PortAudio lost, where its timestamps tell (else 0)

    @property
    def dropped_seconds(self) -> float:
        return self.dropped_samples / self.sample_rate

    @property
    def overflow_seconds(self) -> float:
        return self.overflow_samples / self.sample_rate

    def summary(self) -> str:
        return (f"dropped {self.dropped_blocks} blocks ({self.dropped_seconds:.3f} s lost), "
                f"{self.overflows} PortAudio overflows ({self.overflow_seconds:.3f} s lost)")

    def losses_since(self, before: Stats, at: float) -> list[str]:
        """One line per kind of loss new since `before`, `at` seconds into the audio."""
        lines = []
        if self.dropped_blocks > before.dropped_blocks:
            lost = (self.dropped_samples - before.dropped_samples) / self.sample_rate
            lines.append(f"dropped {self.dropped_blocks - before.dropped_blocks} audio blocks ({lost:.3f} s) by "
                         f"{at:.2f} s: inference fell behind the microphone; try --chunk 4, a smaller model, "
                         "or a larger --max-lag")
        if self.overflows > before.overflows:
            lost = (self.overflow_samples - before.overflow_samples) / self.sample_rate
            lines.append(f"PortAudio reported {self.overflows - before.overflows} input overflow(s) ({lost:.3f} s "
                         f"lost) by {at:.2f} s: audio was lost before edgernn saw it; the machine is too busy")
        return lines


@dataclass(frozen=True)
class Block:
    start: int  # index of samples[0] on the microphone's clock, lost audio included
    samples: np.ndarray  # (S,) float32 mono


class Microphone:
    """One open input stream; iterate `blocks()` in the thread that does the work."""

    def __init__(self, *, device: Device, sample_rate: int, block: int, channels: int = 1,
                 max_lag: float = 2.0, backend=None):
        if block < 1 or sample_rate < 1:
            raise InputError(f"block={block}, sample_rate={sample_rate}; expected positive integers")
        if not max_lag > 0:
            raise InputError(f"--max-lag {max_lag}; expected a positive number of seconds")
        self.device, self.sample_rate, self.block, self.channels = device, int(sample_rate), int(block), channels
        self.capacity = max(1, math.ceil(max_lag * sample_rate / block))  # blocks the queue holds
        self.stats = Stats(self.sample_rate)
        self._sd = backend or load_backend()
        self._queue: queue.Queue = queue.Queue(maxsize=self.capacity)
        self._adc0 = None  # ADC time of sample 0, re-anchored after each overflow
        self.end = None  # sample count after which the callback ignores audio (--duration reached)
        self._stream = None
        self._lock = threading.Lock()  # guards stats between the callback and readers

    def __enter__(self) -> Microphone:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        sd = self._sd
        try:
            self._stream = sd.InputStream(device=self.device.index, samplerate=self.sample_rate,
                                          blocksize=self.block, channels=self.channels, dtype="float32",
                                          callback=self._callback)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            self.close()
            raise InputError(f"cannot open input device {self.device.name!r} at {self.sample_rate} Hz ({e}); "
                             "expected a working microphone; check `edgernn devices`") from e

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                stream.stop()
            finally:
                stream.close()

    def _callback(self, indata, frames, time_info, status) -> None:
        """PortAudio's thread: copy, count, enqueue. Never blocks, never computes."""
        samples = indata[:, 0].copy() if indata.shape[1] == 1 else indata.mean(axis=1, dtype=np.float32)
        with self._lock:
            st = self.stats
            if self.end is not None and st.received_samples >= self.end:
                return  # past the end the caller asked for: neither queued nor counted as lost
            if status.input_overflow:
                st.overflows += 1
                st.received_samples += self._lost_to_overflow(time_info)
            adc = getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0
            if self._adc0 is None or status.input_overflow:
                self._adc0 = adc - st.received_samples / self.sample_rate if adc else None
            try:
                self._queue.put_nowait(Block(st.received_samples, samples))
            except queue.Full:
                st.dropped_blocks += 1
                st.dropped_samples += frames if self.end is None else min(frames, self.end - st.received_samples)
            st.received_samples += frames

    def _lost_to_overflow(self, time_info) -> int:
        """Samples PortAudio lost before this block, from its ADC clock; 0 when unknown."""
        adc = getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0
        if not adc or self._adc0 is None:
            return 0
        gap = round((adc - self._adc0) * self.sample_rate) - self.stats.received_samples
        if gap <= self.block // 2:  # jitter, not loss
            return 0
        self.stats.overflow_samples += gap
        return gap

    def blocks(self, *, duration: float | None = None, stall: float = 2.0) -> Iterator[Block]:
        """Blocks in order until `duration` seconds of audio (lost audio counts) or forever.

        The last block is cut at exactly `duration`. InputError if no audio comes for `stall`
        seconds (a device that stopped delivering).
        """
        end = None if duration is None else round(duration * self.sample_rate)
        with self._lock:
            self.end = end
        last = time.monotonic()
        while True:
            try:
                b = self._queue.get(timeout=0.05)
            except queue.Empty:
                with self._lock:
                    if end is not None and self.stats.received_samples >= end:
                        return  # the rest was dropped (and counted); the capture is over
                if time.monotonic() - last > stall:
                    raise InputError(f"input device {self.device.name!r} delivered no audio for {stall:g} s; "
                                     "expected a running microphone; check it is not muted or taken") from None
                continue
            last = time.monotonic()
            if end is not None and b.start + len(b.samples) >= end:
                if b.start < end:
                    yield Block(b.start, b.samples[:end - b.start])
                return
            yield b

    def snapshot(self) -> Stats:
        with self._lock:
            return Stats(**self.stats.__dict__)



class LiveAudio:
    """Blocks on the device's clock -> frames at the model's rate, as they arrive, time kept true.

    `front` is the model's incremental front end: anything with `push(samples) -> (k, F)` frames
    and `reset()` (edgernn.frontend.LogMelStream, edgernn.framing.Framer). Audio at another rate
    is resampled first (edgernn.audio.StreamResampler: filtered, no aliasing). Each piece goes to
    `on_audio(samples, frames)`; lost audio (a jump in `Block.start`) to `on_gap(frames, samples)`
    with the frames and model-rate samples it cost, after which the front end starts afresh
    (zeros before the first new sample) so no frame mixes audio from both sides of the gap.
    """

    def __init__(self, front, *, rate: int, hop: int, in_rate: int, on_audio, on_gap):
        from edgernn.audio.wav import StreamResampler

        self.front, self.rate, self.hop, self.in_rate = front, int(rate), int(hop), int(in_rate)
        self.on_audio, self.on_gap = on_audio, on_gap
        self.resampler = StreamResampler(in_rate, rate) if in_rate != rate else None
        self.next_in = 0  # device sample expected next
        self.samples = 0  # model-rate samples so far, lost ones included
        self.frames = 0  # frames so far, lost ones included

    def block(self, start: int, x: np.ndarray) -> None:
        """Device samples x beginning at device sample `start`."""
        if start > self.next_in:
            self._gap(start)
        self._push(self.resampler.process(x) if self.resampler else np.asarray(x, np.float32))
        self.next_in = start + len(x)

    def end(self) -> None:
        """No more audio: the resampler's look-ahead comes out (a partial hop makes no frame)."""
        if self.resampler:
            self._push(self.resampler.flush())

    def _push(self, x: np.ndarray) -> None:
        frames = self.front.push(x)
        self.samples += len(x)
        self.frames += len(frames)
        self.on_audio(x, frames)

    def _gap(self, start: int) -> None:
        if self.resampler:
            self._push(self.resampler.flush())
        resume = round(start * self.rate / self.in_rate)  # model-rate sample where audio resumes
        lost_frames = max(0, round(resume / self.hop) - self.frames)
        lost_samples = max(0, resume - self.samples)
        self.front.reset()
        self.samples, self.frames = self.samples + lost_samples, self.frames + lost_frames
        self.on_gap(lost_frames, lost_samples)
