"""Real third-party files: two Silero VAD builds as their packages ship them (models/third_party).

v5 takes raw samples `[batch, sequence]` (a symbolic length) with `sr` and one `[2, batch, 128]`
state; v6 takes `[seq_len, 576]` with fixed-shape `h, c [1, 1, 128]` and answers `[seq_len]`.
Both stream through Runtime (C API and Python binding) and `edgernn stream --window 576 --hop 512`
exactly as the loop their authors document (64 samples of context + 512 new ones per call).
"""

import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgernn.runtime import Runtime

from conftest import run_cli

MODELS = Path(__file__).resolve().parents[1] / "models" / "third_party"
V5, V6 = MODELS / "silero_vad_v5.onnx", MODELS / "silero_vad_v6.onnx"
CONTEXT, HOP = 64, 512


def _windows(samples: np.ndarray) -> np.ndarray:
    """576-sample windows: the previous 64 samples (zeros at first) and 512 new ones."""
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), samples])
    n = len(samples) // HOP
    return np.stack([padded[k * HOP:k * HOP + CONTEXT + HOP] for k in range(n)])


def _silero_loop(path, windows, sr=16000) -> np.ndarray:
    """The loop Silero's README gives, one call per window."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if path == V5:
        state, out = np.zeros((2, 1, 128), np.float32), []
        for w in windows:
            p, state = sess.run(None, {"input": w[None], "state": state, "sr": np.array(sr, np.int64)})
            out.append(p[0, 0])
        return np.array(out, np.float32)
    h = c = np.zeros((1, 1, 128), np.float32)
    out = []
    for w in windows:
        p, h, c = sess.run(None, {"input": w[None], "h": h, "c": c})
        out.append(p[0])
    return np.array(out, np.float32)


def _signal(seconds=3.0, rate=16000) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    voiced = (np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t)) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    return (0.3 * voiced + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _write_wav(path, samples, rate=16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.mark.parametrize("path", [V5, V6], ids=["v5", "v6"])
@pytest.mark.parametrize("use_native", [True, False], ids=["c-api", "binding"])
def test_runtime_equals_silero_loop(path, use_native):
    windows = _windows(_signal())
    want = _silero_loop(path, windows)
    rt = Runtime(path, constants={"sr": 16000} if path == V5 else None, use_native=use_native)
    s = rt.stream()
    got = np.stack([s.step(w) for w in windows])[:, 0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    if path == V6:  # [seq_len, 576]: a whole file in one call carries h, c as the loop does
        np.testing.assert_allclose(rt.stream().feed(windows)[:, 0], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", [V5, V6], ids=["v5", "v6"])
def test_stream_command_equals_silero_loop(path, tmp_path):
    samples = _signal()
    wav = tmp_path / "in.wav"
    _write_wav(wav, samples)
    with wave.open(str(wav)) as w:  # the numbers the file holds, after 16-bit rounding
        heard = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    want = _silero_loop(path, _windows(heard))
    args = ["stream", "--model", path, "--input", wav, "--window", 576, "--hop", 512]
    r = run_cli(*args, *(["--const", "sr=16000"] if path == V5 else []), torch_free=True)
    assert r.returncode == 0, r.stderr
    got = np.array([json.loads(line)["y"][0] for line in r.stdout.splitlines()], np.float32)
    assert len(got) == len(want)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_speech_is_told_from_silence(tmp_path):
    """espeak-ng speech between two seconds of silence: Silero hears the words, not the silence."""
    assert shutil.which("espeak-ng"), "espeak-ng is needed (.ci/run installs it)"
    raw = tmp_path / "raw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "voice activity detection runs on the edge"], check=True)
    with wave.open(str(raw)) as w:
        rate = w.getframerate()
        speech = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    silence = np.zeros(2 * rate, np.float32)
    wav = tmp_path / "speech.wav"
    _write_wav(wav, np.concatenate([silence, speech, silence]), rate)
    r = run_cli("stream", "--model", V5, "--input", wav, "--window", 576, "--hop", 512, "--const", "sr=16000",
                "--sample-rate", 16000, torch_free=True)
    assert r.returncode == 0, r.stderr
    p = np.array([json.loads(line)["y"][0] for line in r.stdout.splitlines()])
    step = 512 / 16000
    quiet = np.r_[p[:int(1.5 / step)], p[-int(1.5 / step):]]
    middle = p[int(2.2 / step):-int(2.2 / step)]
    assert quiet.max() < 0.2 and (middle > 0.5).mean() > 0.5, (quiet.max(), (middle > 0.5).mean())
