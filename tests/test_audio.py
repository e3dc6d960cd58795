"""edgernn.audio.wav: WAV files built byte by byte, and the resampler against known signals."""

import math
import struct

import numpy as np
import pytest

from edgernn.audio.wav import StreamResampler, read_wav, resample, write_wav
from edgernn.core.errors import InputError

GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
# Exactly representable in every encoding below, so decoding can be checked for equality.
VALUES = np.array([0.0, 0.5, -0.5, 0.25, -1.0, 0.125, -0.75, 0.0078125], dtype=np.float64)


def chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt(code: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return chunk(b"fmt ", struct.pack("<HHIIHH", code, channels, rate, rate * block, block, bits))


def fmt_extensible(sub: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    head = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
    ext = struct.pack("<HHI", 22, bits, (1 << channels) - 1) + struct.pack("<H", sub) + GUID_TAIL
    return chunk(b"fmt ", head + ext)


def encode(values: np.ndarray, code: int, bits: int) -> bytes:
    if code == 3:
        return values.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return (np.round(values * 128) + 128).astype(np.uint8).tobytes()
    ints = np.round(values * 2.0 ** (bits - 1)).astype(np.int64)
    return b"".join(int(v).to_bytes(bits // 8, "little", signed=True) for v in ints)


ENCODINGS = [(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]


def write(tmp_path, blob: bytes, name="x.wav"):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("code,bits", ENCODINGS)
@pytest.mark.parametrize("extensible", [False, True])
def test_read_each_encoding(tmp_path, code, bits, extensible):
    header = (fmt_extensible if extensible else fmt)(code, 1, 22050, bits)
    path = write(tmp_path, riff(header, chunk(b"data", encode(VALUES, code, bits))))
    samples, rate = read_wav(path)
    assert rate == 22050
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, VALUES.astype(np.float32))


@pytest.mark.parametrize("code,bits", ENCODINGS)
def test_stereo_is_averaged_to_mono(tmp_path, code, bits):
    left, right = VALUES, VALUES[::-1]
    interleaved = np.stack([left, right], axis=1).reshape(-1)
    data = chunk(b"data", encode(interleaved, code, bits))
    path = write(tmp_path, riff(fmt(code, 2, 8000, bits), data))
    samples, _ = read_wav(path)
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-7)


def test_unknown_and_odd_sized_chunks_are_skipped(tmp_path):
    odd_list = chunk(b"LIST", b"INFOx")  # 5 bytes: padded to 6 on disk
    odd_data = chunk(b"data", encode(VALUES[:3], 1, 24))  # 9 bytes: padded to 10
    path = write(tmp_path, riff(odd_list, fmt(1, 1, 16000, 24), odd_data, chunk(b"junk", b"abc")))
    samples, rate = read_wav(path)
    assert rate == 16000
    np.testing.assert_array_equal(samples, VALUES[:3].astype(np.float32))


def test_float_beyond_full_scale_is_clipped(tmp_path):
    values = np.array([1.5, -2.0, 0.5])
    path = write(tmp_path, riff(fmt(3, 1, 16000, 32), chunk(b"data", encode(values, 3, 32))))
    np.testing.assert_array_equal(read_wav(path)[0], [1.0, -1.0, 0.5])


def test_write_then_read_round_trip(tmp_path):
    x = np.sin(np.linspace(0, 20, 1000)) * 0.9
    path = tmp_path / "out.wav"
    write_wav(path, np.concatenate([x, [3.0, -3.0]]), 16000)
    samples, rate = read_wav(path)
    assert rate == 16000
    np.testing.assert_allclose(samples[:-2], x, atol=1 / 16000)
    np.testing.assert_allclose(samples[-2:], [32767 / 32768, -32767 / 32768])  # clipped
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temp file left behind


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(InputError, match="mono"):
        write_wav(tmp_path / "a.wav", np.zeros((10, 2)), 16000)
    with pytest.raises(InputError, match="sample rate"):
        write_wav(tmp_path / "a.wav", np.zeros(10), 0)
    with pytest.raises(InputError, match="cannot write"):
        write_wav(tmp_path / "missing" / "a.wav", np.zeros(10), 16000)


def test_read_resamples_on_request(tmp_path):
    path = tmp_path / "in.wav"
    write_wav(path, np.zeros(16001), 16000)
    samples, rate = read_wav(path, sample_rate=8000)
    assert (rate, len(samples)) == (8000, 8001)
    assert read_wav(path, sample_rate=16000)[1] == 16000


@pytest.mark.parametrize("blob,parts", [
    (b"", ["empty file", "RIFF/WAVE"]),
    (b"\x89PNG\r\n\x1a\n" + bytes(40), ["not a RIFF/WAVE file", "PNG", "sox"]),
    (b"RIFF\x10\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", ["truncated", "'fmt '"]),
    (b"RIFF\x04\x00\x00\x00WAVE", ["no 'fmt ' chunk"]),
])
def test_garbage_is_a_clear_error(tmp_path, blob, parts):
    path = write(tmp_path, blob)
    with pytest.raises(InputError) as info:
        read_wav(path)
    for part in [str(path), *parts]:
        assert part in str(info.value)


def test_truncated_data_chunk(tmp_path):
    blob = riff(fmt(1, 1, 16000, 16), chunk(b"data", bytes(100)))[:-40]
    with pytest.raises(InputError, match="truncated.*100 bytes but only 60 follow.*ignore-length"):
        read_wav(write(tmp_path, blob))


def test_missing_data_chunk(tmp_path):
    with pytest.raises(InputError, match="no 'data' chunk"):
        read_wav(write(tmp_path, riff(fmt(1, 1, 16000, 16))))


@pytest.mark.parametrize("data", [b"", b"\x01"])
def test_empty_data_chunk(tmp_path, data):
    with pytest.raises(InputError, match="no complete sample"):
        read_wav(write(tmp_path, riff(fmt(1, 1, 16000, 16), chunk(b"data", data))))


@pytest.mark.parametrize("code,label", [(0x0011, "IMA ADPCM"), (0x0007, "mu-law"),
                                        (0x1234, "unknown")])
def test_unsupported_format_names_it_and_the_fix(tmp_path, code, label):
    path = write(tmp_path, riff(fmt(code, 1, 8000, 8), chunk(b"data", bytes(16))))
    with pytest.raises(InputError) as info:
        read_wav(path)
    message = str(info.value)
    expected = [f"0x{code:04X} ({label}) is not supported", "PCM 8/16/24/32-bit", "sox"]
    for part in [str(path), *expected]:
        assert part in message


def test_unsupported_extensible_subformat_and_depth(tmp_path):
    with pytest.raises(InputError, match="sub-format .* is not supported"):
        head = fmt_extensible(1, 1, 8000, 16)
        read_wav(write(tmp_path, riff(head[:-1] + b"\x99", chunk(b"data", bytes(4)))))
    with pytest.raises(InputError, match="16-bit float"):
        read_wav(write(tmp_path, riff(fmt(3, 1, 8000, 16), chunk(b"data", bytes(4)))))


def test_missing_file():
    with pytest.raises(InputError, match="cannot read"):
        read_wav("/nonexistent/x.wav")


def sine(freq, rate, seconds):
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def test_tone_keeps_frequency_amplitude_and_alignment():
    y = resample(sine(1000, 44100, 0.5), 44100, 16000)
    assert len(y) == 8000
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spectrum) * 16000 / len(y) == 1000
    inner = slice(300, -300)  # the ends see the zeros outside the signal
    assert abs(np.abs(y[inner]).max() - 1.0) < 0.01
    # Aligned: no delay, so it matches the ideal 16 kHz tone sample for sample.
    np.testing.assert_allclose(y[inner], sine(1000, 16000, 0.5)[inner], atol=1e-4)


@pytest.mark.parametrize("freq", [9000, 10000, 12000, 20000])
def test_above_new_nyquist_is_removed(freq):
    x = sine(freq, 48000, 0.25)
    sliced = x[::3]  # naive decimation: folds the tone back into the band at full strength
    assert np.sqrt(np.mean(sliced**2)) > 0.5
    y = resample(x, 48000, 16000)[200:-200]
    assert 20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(0.5)) < -40


def test_top_of_new_band_is_kept():
    y = resample(sine(7000, 48000, 0.25), 48000, 16000)[200:-200]
    assert abs(np.sqrt(np.mean(y**2)) / np.sqrt(0.5) - 1) < 0.01


@pytest.mark.parametrize("n", [0, 1, 2, 441, 1000, 4801])
@pytest.mark.parametrize("src,dst", [(44100, 16000), (16000, 44100), (48000, 16000),
                                     (8000, 16000), (3, 7)])
def test_length_is_ceil(n, src, dst):
    g = math.gcd(src, dst)
    assert len(resample(np.ones(n, np.float32), src, dst)) == -(-n * (dst // g) // (src // g))


def test_equal_rates_are_identity():
    x = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)


@pytest.mark.parametrize("src,dst", [(44100, 16000), (16000, 44100), (48000, 16000),
                                     (8000, 16000), (16000, 16000), (22050, 16000)])
def test_stream_equals_offline(src, dst):
    rng = np.random.default_rng(src + dst)
    x = rng.uniform(-1, 1, 12000).astype(np.float32)
    stream, pieces, pos = StreamResampler(src, dst), [], 0
    while pos < len(x):
        size = int(rng.choice([0, 1, 7, 160, 999, 3000]))
        pieces.append(stream.process(x[pos:pos + size]))
        pos += size
    pieces.append(stream.flush())
    np.testing.assert_allclose(np.concatenate(pieces), resample(x, src, dst), atol=1e-6, rtol=0)
    # flush() resets: the same object serves the next utterance.
    again = np.concatenate([stream.process(x[:500]), stream.flush()])
    np.testing.assert_allclose(again, resample(x[:500], src, dst), atol=1e-6, rtol=0)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, True, "16000"])
def test_bad_rates(rate):
    with pytest.raises(InputError, match="positive integer"):
        resample(np.zeros(10), rate, 16000)
    with pytest.raises(InputError, match="positive integer"):
        StreamResampler(16000, rate)


def test_resample_wants_mono():
    with pytest.raises(InputError, match=r"shape \(10, 2\)"):
        resample(np.zeros((10, 2)), 16000, 8000)


def test_a_damaged_rate_cannot_exhaust_memory(tmp_path):
    """Found by fuzzing: a header claiming 1 Hz, resampled to 44.1 kHz, asked for 40 GB."""
    data = encode(np.zeros(10_000), 1, 16)
    with pytest.raises(InputError, match="would make 441000000 samples; expected at most"):
        read_wav(write(tmp_path, riff(fmt(1, 1, 1, 16), chunk(b"data", data))), sample_rate=44100)
    x, rate = read_wav(write(tmp_path, riff(fmt(1, 1, 100, 16), chunk(b"data", data)), "slow.wav"))
    assert rate == 100 and len(x) == 10_000  # a low rate is fine as long as nothing explodes
    with pytest.raises(InputError, match="header says 3000000 samples per second; expected at most 768000"):
        read_wav(write(tmp_path, riff(fmt(1, 1, 3_000_000, 16), chunk(b"data", data)), "fast.wav"))
    with pytest.raises(InputError, match="divides the rate by more than 4096"):
        resample(np.zeros(100, np.float32), 768_000, 100)
    with pytest.raises(InputError, match="divides the rate by more than 4096"):
        StreamResampler(768_000, 100)
