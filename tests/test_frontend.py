"""edgernn.audio.frontend: framing, mel placement, streaming == offline, metadata round trip."""

import json

import numpy as np
import pytest

from edgernn.core.errors import InputError
from edgernn.audio.frontend import LogMel, LogMelStream


def reference_frame(fe: LogMel, samples: np.ndarray, i: int) -> np.ndarray:
    """Frame i written out longhand from the spec, independent of the module's vectorising."""
    history = np.concatenate([np.zeros(fe.window - fe.hop), samples.astype(np.float64)])
    chunk = history[i * fe.hop:i * fe.hop + fe.window]  # ends at sample (i + 1) * hop
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(fe.window) / fe.window)
    power = np.abs(np.fft.rfft(chunk * hann, n=fe.n_fft)) ** 2
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(fe.fmin), mel(fe.fmax), fe.mels + 2) / 2595) - 1)
    freqs = np.arange(fe.n_fft // 2 + 1) * fe.sample_rate / fe.n_fft
    energies = []
    for lo, mid, hi in zip(edges, edges[1:], edges[2:]):
        tri = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
        energies.append(tri @ power)
    return np.log(np.maximum(energies, fe.floor))


def noise(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)


@pytest.mark.parametrize("n,frames", [(0, 0), (159, 0), (160, 1), (16000, 100), (16159, 100)])
def test_shape_and_frame_count(n, frames):
    out = LogMel().compute(noise(n))
    assert out.shape == (frames, 40)
    assert out.dtype == np.float32


@pytest.mark.parametrize("fe", [LogMel(), LogMel(sample_rate=8000, window=200, hop=80, mels=23,
                                                 n_fft=256, fmin=0.0, fmax=3800.0)])
def test_matches_longhand_reference(fe):
    x = noise(fe.hop * 7 + 5)
    out = fe.compute(x)
    for i in range(len(out)):
        np.testing.assert_allclose(out[i], reference_frame(fe, x, i), atol=1e-5)


def test_framing_is_causal():
    fe, x = LogMel(), noise(1600)
    changed = x.copy()
    changed[800:] = 0.9  # samples from 800 on may only affect frames 4 and later
    a, b = fe.compute(x), fe.compute(changed)
    np.testing.assert_array_equal(a[:5], b[:5])
    assert not np.allclose(a[5:], b[5:])


def test_silence_is_the_floor():
    out = LogMel().compute(np.zeros(800, np.float32))
    np.testing.assert_array_equal(out, np.log(np.float32(1e-6)))


@pytest.mark.parametrize("band", [3, 12, 25, 38])
def test_tone_lands_in_its_band(band):
    fe = LogMel()
    to_mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    mel_edges = np.linspace(to_mel(fe.fmin), to_mel(fe.fmax), fe.mels + 2)
    centres = 700 * (10 ** (mel_edges[1:-1] / 2595) - 1)
    t = np.arange(8000) / fe.sample_rate
    out = fe.compute((0.5 * np.sin(2 * np.pi * centres[band] * t)).astype(np.float32))
    assert np.all(np.argmax(out[3:], axis=1) == band)  # from frame 3 the window is all tone


def push_all(stream: LogMelStream, x: np.ndarray, sizes) -> np.ndarray:
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(stream.push(x[pos:pos + size]))
        assert pieces[-1].shape[1] == stream.frontend.mels
        pos += size
    assert pos >= len(x)
    return np.concatenate(pieces)


def test_stream_equals_offline_random_chunks():
    fe, rng = LogMel(), np.random.default_rng(1)
    x = noise(16000 * 3 + 77)
    sizes = rng.choice([0, 1, 3, 159, 160, 161, 400, 1234, 5000], size=len(x))
    sizes = sizes[:np.searchsorted(np.cumsum(sizes), len(x)) + 1]
    streamed = push_all(fe.stream(), x, sizes)
    offline = fe.compute(x)
    assert streamed.shape == offline.shape
    for i in range(len(offline)):  # frame by frame, so a failure names the frame
        np.testing.assert_allclose(streamed[i], offline[i], atol=1e-5, err_msg=f"frame {i}")


def test_stream_one_hop_at_a_time_equals_offline():
    """A microphone pushes one hop a call; that path (one frame per push) gives the offline frames."""
    fe = LogMel()
    x = noise(16000 + 160 * 7, seed=3)
    streamed = push_all(fe.stream(), x, [fe.hop] * (len(x) // fe.hop))
    offline = fe.compute(x)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-5)


def test_stream_one_sample_at_a_time():
    fe = LogMel(window=40, hop=16, n_fft=64, mels=8, sample_rate=1600)
    x = noise(333, seed=2)
    np.testing.assert_allclose(push_all(fe.stream(), x, [1] * len(x)), fe.compute(x), atol=1e-5)


def test_stream_keeps_a_bounded_tail_and_resets():
    fe = LogMel()
    stream, x = fe.stream(), noise(4000)
    first = stream.push(x)
    assert len(stream._tail) < fe.window
    stream.reset()
    np.testing.assert_array_equal(stream.push(x), first)


def test_meta_round_trip():
    fe = LogMel(mels=80, fmin=0, floor=1e-10)
    meta = json.loads(json.dumps(fe.to_meta()))
    assert meta == {"kind": "logmel", "sample_rate": 16000, "window": 400, "hop": 160,
                    "mels": 80, "n_fft": 512, "fmin": 0.0, "fmax": 8000.0, "floor": 1e-10}
    assert LogMel.from_meta(meta) == fe
    assert LogMel() == LogMel(fmax=8000) and LogMel().features == 40


@pytest.mark.parametrize("change,message", [
    ({"kind": "mfcc"}, "kind 'mfcc' is not supported"),
    ({"hop": 500}, "hop=500 is longer than window=400"),
    ({"mels": 0}, "mels=0; expected a positive integer"),
    ({"window": 400.5}, "window=400.5; expected a positive integer"),
    ({"fmax": 9000.0}, "expected 0 <= fmin < fmax <= sample_rate / 2"),
    ({"n_fft": 256}, "n_fft=256 is shorter than window=400"),
    ({"floor": 0.0}, "expected a positive log floor"),
    ({"fmin": float("nan")}, "fmin=nan; expected a finite number"),
    ({"extra": 1}, "unknown keys ['extra']"),
])
def test_bad_meta(change, message):
    meta = {**LogMel().to_meta(), **change}
    with pytest.raises(InputError) as info:
        LogMel.from_meta(meta)
    assert message in str(info.value)


def test_bad_meta_shape():
    meta = LogMel().to_meta()
    del meta["hop"]
    with pytest.raises(InputError, match=r"lacks \['hop'\]"):
        LogMel.from_meta(meta)
    with pytest.raises(InputError, match="expected a dict"):
        LogMel.from_meta([1, 2])


def test_bad_samples():
    with pytest.raises(InputError, match="mono"):
        LogMel().compute(np.zeros((160, 2), np.float32))
    with pytest.raises(InputError, match="int16 / 32768"):
        LogMel().stream().push(np.zeros(160, np.int16))


def test_empty_bands_warn():
    with pytest.warns(UserWarning, match="always empty"):
        LogMel(mels=128)
