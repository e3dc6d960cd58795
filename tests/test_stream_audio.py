"""`edgernn stream` on audio: WAV in any format through the model's front end, events, plots.

The model here is a hand-built "tone spotter" with the standard log-mel front end in its
metadata: it says `tone` while the mel band around 1 kHz is loud and `_silence_` otherwise, so
the right events and their times are known exactly. All CLI runs are torch-free.
"""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import NO_TORCH, ROOT, run_cli
from edgernn.audio.wav import resample, write_wav
from edgernn.audio.frontend import LogMel

SR = 16000
TONE_HZ, OTHER_HZ = 1000.0, 3000.0
# (what, seconds): a tone in Hz or None for silence. Starts and ends with silence.
TRACK = [(None, 0.5), (TONE_HZ, 0.4), (None, 0.7), (OTHER_HZ, 0.4), (None, 0.6), (TONE_HZ, 0.3), (None, 0.6),
         (TONE_HZ, 0.5), (None, 0.8)]


def tone_model(path, *, task="classify", labels=("_silence_", "_unknown_", "tone")):
    """A stateless per-frame classifier: y = tanh(0.8 (logmel[band of 1 kHz] - 3)) [-6, -9, 6] + [0, -6, 0]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from edgernn.core import meta as meta_mod

    fe = LogMel()
    band = int(np.argmax(fe.filterbank[:, round(TONE_HZ * fe.n_fft / fe.sample_rate)]))
    w1 = np.zeros((fe.mels, 1), np.float32)
    w1[band] = 0.8
    consts = {"w1": w1, "b1": np.array([-2.4], np.float32), "w2": np.array([[-6.0, -9.0, 6.0]], np.float32),
              "b2": np.array([0.0, -6.0, 0.0], np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Add", ["a", "b1"], ["z"]),
             helper.make_node("Tanh", ["z"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["hy"]),
             helper.make_node("Add", ["hy", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "tone", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 3])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    meta = {"format": 1, "input": {"name": "x", "dtype": "float32", "features": 40},
            "output": {"name": "y", "size": 3, "readout": "every", "labels": list(labels)},
            "states": [], "model": {"cell": "none", "layers": 0, "hidden": 0, "bidirectional": False, "task": task},
            "frontend": fe.to_meta(), "normalize": None, "export": {}}
    proto.metadata_props.append(onnx.StringStringEntryProto(key=meta_mod.KEY, value=meta_mod.dumps(meta)))
    onnx.save(proto, str(path))
    return path


def tone_track(track=TRACK, sr=SR, amplitude=0.3):
    """(samples, [(hz, onset s, end s), ...]) with 5 ms fades so no tone clicks."""
    pieces, spans, t = [], [], 0.0
    for hz, seconds in track:
        n = round(seconds * sr)
        x = np.zeros(n)
        if hz:
            x = amplitude * np.sin(2 * np.pi * hz * np.arange(n) / sr)
            ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.005 * sr))
            x *= ramp
            spans.append((hz, t, t + seconds))
        pieces.append(x)
        t += seconds
    return np.concatenate(pieces), spans


def events_of(stdout: str) -> list[dict]:
    return [d for d in map(json.loads, stdout.splitlines()) if "event" in d]


def on_time(events, spans, hz=TONE_HZ, late=0.3):
    """Each target span has one event between its onset and `late` s after its end, in order."""
    targets = [(a, b) for f, a, b in spans if f == hz]
    assert [e["event"] for e in events] == ["tone"] * len(targets), events
    return all(onset <= e["t"] <= end + late for e, (onset, end) in zip(events, targets))


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    d = tmp_path_factory.mktemp("tone")
    samples, spans = tone_track()
    write_wav(d / "track.wav", samples, SR)
    return tone_model(d / "tone.onnx"), d / "track.wav", samples, spans


@pytest.fixture(scope="module")
def tone_events(tone):
    """(stdout, stderr, events) of `--events` on the 16 kHz track: the reference."""
    model, wav, _, _ = tone
    r = stream(model, wav, "--events")
    return r.stdout, r.stderr, events_of(r.stdout)


def stream(model, wav, *args):
    r = run_cli("stream", "--model", model, "--input", wav, *args, torch_free=True)
    assert r.returncode == 0, r.stderr
    return r


def test_wav_events_fire_at_the_tones_and_not_elsewhere(tone, tone_events):
    _, _, _, spans = tone
    stdout, stderr, events = tone_events
    assert len(stdout.splitlines()) == len(events) == 3  # --events alone: no frame lines
    assert on_time(events, spans)
    # smoothing 0.1 s: the mean passes 0.6 some 60-70 ms after the tone starts
    for e, (_, onset, _) in zip(events, [s for s in spans if s[0] == TONE_HZ]):
        assert 0.04 <= e["t"] - onset <= 0.1, (e, onset)
    assert all(e["p"] > 0.99 for e in events)
    assert "summary:" in stderr and "3 events" in stderr


def wav_bytes(x: np.ndarray, rate: int, kind: str) -> bytes:
    """x (S, channels) in [-1, 1] as a WAV of `kind`: pcm24, float32 or pcm16."""
    if kind == "pcm24":
        ints = np.round(np.clip(x, -1, 1) * (2**23 - 1)).astype("<i4").reshape(-1)
        data, code, width = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints), 1, 3
    elif kind == "float32":
        data, code, width = x.astype("<f4").tobytes(), 3, 4
    else:
        data, code, width = np.round(x * 32767).astype("<i2").tobytes(), 1, 2
    ch = x.shape[1]
    fmt = struct.pack("<HHIIHH", code, ch, rate, rate * ch * width, ch * width, 8 * width)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("kind,rate,channels", [("pcm24", 16000, 1), ("float32", 44100, 1), ("pcm16", 48000, 2),
                                                ("pcm16", 8000, 1)])
def test_any_wav_format_and_rate_gives_the_same_events(tone, tone_events, tmp_path, kind, rate, channels):
    model, _, samples, _ = tone
    want = tone_events[2]
    x = resample(samples, SR, rate)[:, None]
    if channels == 2:  # the tone in the left channel, silence in the right: mixed down, half as loud
        x = np.concatenate([2 * x, np.zeros_like(x)], axis=1)
    path = tmp_path / f"t.{kind}.{rate}.wav"
    path.write_bytes(wav_bytes(x, rate, kind))
    got = events_of(stream(model, path, "--events").stdout)
    assert [e["event"] for e in got] == [e["event"] for e in want]
    assert all(abs(g["t"] - w["t"]) <= 0.02 for g, w in zip(got, want)), (got, want)


def test_frames_and_events_together_each_event_after_its_frame(tone):
    model, wav, samples, _ = tone
    lines = [json.loads(x) for x in stream(model, wav, "--events", "--frames").stdout.splitlines()]
    frames = [d for d in lines if "event" not in d]
    assert len(frames) == len(samples) // 160 and [d["t"] for d in frames] == list(range(len(frames)))
    for i, d in enumerate(lines):
        if "event" in d:
            assert lines[i - 1]["t"] == d["step"] and lines[i - 1]["label"] == "tone"
            assert d["t"] == pytest.approx((d["step"] + 1) * 0.01)


def test_duration_cuts_the_file(tone):
    model, wav, _, _ = tone
    r = stream(model, wav, "--duration", "1.0")
    assert len(r.stdout.splitlines()) == 100


def test_plot_draws_a_png(tone, tmp_path):
    pytest.importorskip("matplotlib")
    model, wav, _, _ = tone
    stream(model, wav, "--events", "--plot", tmp_path / "p.png", "--plot-seconds", "3")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "p.png").stat().st_size > 10_000


def one_line_exit_2(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_plot_without_matplotlib_is_one_clear_line(tone, tmp_path):
    model, wav, _, _ = tone
    code = NO_TORCH + "sys.modules['matplotlib'] = None\nfrom edgernn.cli import main\nmain()\n"
    r = subprocess.run([sys.executable, "-c", code, "stream", "--model", str(model), "--input", str(wav), "--plot",
                        str(tmp_path / "p.png")], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert "matplotlib" in one_line_exit_2(r) and r.stdout == ""


def test_files_never_import_sounddevice(tone):
    model, wav, _, _ = tone
    code = NO_TORCH + ("from edgernn.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
                       "assert 'sounddevice' not in sys.modules, 'sounddevice imported'\n")
    r = subprocess.run([sys.executable, "-c", code, "stream", "--model", str(model), "--input", str(wav), "--events"],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and events_of(r.stdout), r.stderr


def test_events_need_a_classifier(tmp_path, tone):
    _, wav, _, _ = tone
    model = tone_model(tmp_path / "r.onnx", task="regress")
    r = run_cli("stream", "--model", model, "--input", wav, "--events", torch_free=True)
    assert "needs a classifier" in one_line_exit_2(r)


@pytest.mark.parametrize("args,match", [(["--duration", "1"], "--duration applies to audio"),
                                        (["--events", "--frames", "--format", "csv"], "cannot share stdout"),
                                        (["--events", "--threshold", "2"], "threshold")])
def test_bad_options_are_one_line(tone, tmp_path, args, match):
    model, _, _, _ = tone
    np.save(tmp_path / "f.npy", np.zeros((5, 40), np.float32))
    assert match in one_line_exit_2(run_cli("stream", "--model", model, "--input", tmp_path / "f.npy", *args,
                                            torch_free=True))


def test_features_from_npy_fire_the_same_events(tone, tone_events, tmp_path):
    model, _, samples, _ = tone
    np.save(tmp_path / "f.npy", LogMel().compute(samples.astype(np.float32)))
    assert events_of(stream(model, tmp_path / "f.npy", "--events").stdout) == tone_events[2]
