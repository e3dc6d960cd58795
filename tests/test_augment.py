"""edgernn.audio.augment: speed, tempo, pitch, rooms, device responses, noise colours, digital silence."""

import subprocess
import sys

import numpy as np
import pytest

from edgernn.audio import augment as A

SR = 16000


def tone(hz=440.0, seconds=1.0):
    t = np.arange(int(SR * seconds)) / SR
    return np.sin(2 * np.pi * hz * t) * np.hanning(len(t))


def peak_hz(y):
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.argmax(spectrum) * SR / len(y)


def level_db(y, hz):
    """Gain at `hz` of the response whose impulse response is y (impulse at sample 0)."""
    h = np.abs(np.fft.rfft(y))
    return 20 * np.log10(h[int(round(hz * len(y) / SR))] + 1e-12)


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_speed_changes_length_and_pitch_together(factor):
    y = A.speed(tone(), factor)
    assert abs(len(y) - SR / factor) <= 2
    assert abs(peak_hz(y) - 440 * factor) < 6


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_tempo_keeps_pitch(factor):
    y = A.tempo(tone(), factor)
    assert len(y) == round(SR / factor)
    assert abs(peak_hz(y) - 440) < 4
    assert abs(A.rms(y) - A.rms(tone())) < 0.1 * A.rms(tone())


@pytest.mark.parametrize("semitones", [-3.0, 3.0])
def test_pitch_moves_pitch_keeps_length(semitones):
    y = A.pitch(tone(), semitones)
    assert len(y) == SR
    assert abs(peak_hz(y) - 440 * 2 ** (semitones / 12)) < 6


def test_identity_cases_copy():
    x = tone()
    for y in (A.speed(x, 1.0), A.tempo(x, 1.0), A.pitch(x, 0.0), A.gain(x, 0.0)):
        assert np.array_equal(y, x) and y is not x
    with pytest.raises(ValueError):
        A.speed(x, 0.0)


def t20(ir):
    """Reverberation time from the -5 to -25 dB stretch of the Schroeder decay, extrapolated to 60 dB."""
    energy = np.cumsum(ir[::-1] ** 2)[::-1]
    edc = 10 * np.log10(energy / energy[0])
    return (np.argmax(edc < -25) - np.argmax(edc < -5)) / SR * 3


@pytest.mark.parametrize("rt60", [0.4, 0.8])
def test_room_ir_decays_at_about_its_rt60(rt60):
    for seed in (1, 2, 3):
        ir = A.room_ir(np.random.default_rng(seed), rt60)
        assert ir[0] == 1.0 and np.isfinite(ir).all() and len(ir) == int(rt60 * SR)
        assert 0.8 * rt60 < t20(ir) < 1.25 * rt60, t20(ir)
    y = A.reverb(tone(), ir)
    assert len(y) == SR and A.rms(y) > A.rms(tone())  # reflections add energy


def test_short_rooms_decay_faster_than_long_ones():
    # the image-source part makes small rooms ring longer than asked (about 0.3 s for 0.15 s)
    assert t20(A.room_ir(np.random.default_rng(1), 0.15)) < 0.5 < t20(A.room_ir(np.random.default_rng(1), 0.8))


def test_room_ir_is_deterministic_by_seed():
    a, b = A.room_ir(np.random.default_rng(5), 0.5), A.room_ir(np.random.default_rng(5), 0.5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, A.room_ir(np.random.default_rng(6), 0.5))


def test_band_limit_is_a_telephone():
    impulse = np.zeros(SR)
    impulse[0] = 1.0
    y = A.band_limit(impulse, 300, 3400)
    assert abs(level_db(y, 300) + 3) < 0.5 and abs(level_db(y, 3400) + 3) < 0.5
    assert level_db(y, 1000) > -0.5 and level_db(y, 100) < -30 and level_db(y, 7000) < -20


def test_tilt_and_channels():
    impulse = np.zeros(SR)
    impulse[0] = 1.0
    y = A.tilt(impulse, 3.0)
    assert abs(level_db(y, 2000) - 3) < 0.2 and abs(level_db(y, 500) + 3) < 0.2
    rng = np.random.default_rng(0)
    for kind in A.CHANNELS:
        y, got = A.channel(rng, impulse, kind)
        assert got == kind and len(y) == SR and np.isfinite(y).all()
    assert A.channel(rng, impulse)[1] in A.CHANNELS
    with pytest.raises(ValueError):
        A.channel(rng, impulse, "radio")


def test_noise_colours_have_their_slopes():
    rng = np.random.default_rng(0)
    for colour, slope in A.NOISE_SLOPES.items():
        y = A.noise(rng, SR, colour)
        assert abs(A.rms(y) - 1.0) < 1e-9
        power = np.abs(np.fft.rfft(y)) ** 2
        low, high = power[200:400].mean(), power[4000:8000].mean()  # 200-400 Hz vs 4-8 kHz
        measured = -10 * np.log10(high / low) / (20 * np.log10(6000 / 300))  # amplitude slope
        assert abs(measured - slope) < 0.15, (colour, measured)
    h = A.hum(rng, SR)
    assert abs(A.rms(h) - 1) < 1e-9 and peak_hz(h) in (50.0, 60.0)


def test_digital_silence_is_exact_zeros():
    y = A.digital_silence(np.ones(100), 60)
    assert (y[:60] == 1).all() and (y[60:] == 0).all()


def test_torch_free():
    code = "import sys, edgernn.audio.augment; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
