"""edgernn.audio.mic and `edgernn stream --input mic` / `edgernn devices`.

Two halves. A scripted stand-in for `sounddevice` pins the bookkeeping down exactly (drops,
overflows, gaps, the duration cut, device choice). Then a real microphone: PortAudio hears a
private PulseAudio daemon (tools/vmic.sh) into which the test plays tones and espeak-ng speech,
while `edgernn stream --input mic` runs in a subprocess, torch-free.

On time means: the event fires between the word's (or tone's) onset and 0.3 s after its end,
on the microphone's clock (t = 0 at the first captured sample). The moment the audio was
played on that clock is measured as (paplay start) - (the CLI's "listening" line), which is
exact to a few tens of milliseconds (process start-up, PulseAudio's ~10 ms latency).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import NO_TORCH, ROOT
from edgernn.audio import mic
from edgernn.audio.wav import resample, write_wav
from edgernn.core.errors import InputError
from edgernn.audio.frontend import LogMel
from test_stream_audio import SR, TONE_HZ, events_of, one_line_exit_2, tone_model, tone_track

# ---------------------------------------------------------------- a scripted sounddevice


class FakeSD:
    """Just enough of `sounddevice` for edgernn.mic: devices, settings checks, an input stream."""

    class PortAudioError(Exception):
        pass

    def __init__(self, devices=({"name": "Fake Mic", "max_input_channels": 1, "default_samplerate": 48000.0},),
                 default=0, rates=(16000, 48000), mono=True):
        self.devices = [dict(d, hostapi=0) for d in devices]
        self.default, self.rates, self.mono = default, rates, mono
        self.script = []  # (samples (n, ch), adc_time, overflow) per callback
        self.streams = []

    def query_devices(self, kind=None):
        if kind == "input":
            if self.default is None:
                raise self.PortAudioError("Error querying device -1")
            return dict(self.devices[self.default], index=self.default)
        return self.devices

    def query_hostapis(self):
        return [{"name": "Fake API"}]

    def check_input_settings(self, device, samplerate, channels, dtype):
        if samplerate not in self.rates or (channels == 1 and not self.mono):
            raise self.PortAudioError("Invalid sample rate" if samplerate not in self.rates else "Invalid channels")

    def InputStream(self, **kw):  # noqa: N802 (sounddevice's name)
        s = FakeStream(self.script, kw)
        self.streams.append(s)
        return s


class FakeStream:
    """Plays its script into the callback on its own thread, as fast as it can, on start()."""

    def __init__(self, script, kw):
        self.script, self.kw, self.thread = script, kw, None

    def start(self):
        def play():
            for x, adc, overflow in self.script:
                self.kw["callback"](x, len(x), SimpleNamespace(inputBufferAdcTime=adc),
                                    SimpleNamespace(input_overflow=overflow))
        self.thread = threading.Thread(target=play, daemon=True)
        self.thread.start()

    def stop(self):
        self.thread.join(timeout=5)

    def close(self):
        pass


def scripted(sd, n_blocks, block, rate, channels=1, lost_after=None, lost=0):
    """Blocks whose sample values are their own sample index; `lost` samples vanish after block
    `lost_after` (PortAudio overflow: flagged, the ADC clock jumps)."""
    pos = 0
    for i in range(n_blocks):
        if i == lost_after:
            pos += lost
        x = (pos + np.arange(block, dtype=np.float32))[:, None].repeat(channels, axis=1)
        sd.script.append((x, 100.0 + pos / rate, i == lost_after))
        pos += block


def test_devices_listed_and_chosen_by_index_or_name():
    sd = FakeSD(devices=[{"name": "Speakers", "max_input_channels": 0, "default_samplerate": 48000.0},
                         {"name": "USB Audio Mic", "max_input_channels": 2, "default_samplerate": 44100.0},
                         {"name": "default", "max_input_channels": 32, "default_samplerate": 44100.0}], default=2)
    devs = mic.input_devices(sd)
    assert [(d.index, d.name, d.is_default) for d in devs] == [(1, "USB Audio Mic", False), (2, "default", True)]
    assert mic.find_device(None, sd).index == 2
    assert mic.find_device("1", sd).name == "USB Audio Mic"
    assert mic.find_device("usb", sd).index == 1
    with pytest.raises(InputError, match="no input device with that index"):
        mic.find_device(0, sd)  # an output-only device
    with pytest.raises(InputError, match="no input device matches"):
        mic.find_device("bluetooth", sd)


def test_no_device_is_one_clear_error():
    sd = FakeSD(devices=[], default=None)
    with pytest.raises(InputError, match="no audio input device found.*tools/vmic.sh start"):
        mic.find_device(None, sd)


def test_sounddevice_missing_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(InputError, match="pip install sounddevice.*libportaudio2"):
        mic.load_backend()


def test_negotiate_rate_and_channels():
    dev = mic.find_device(None, FakeSD())
    assert mic.negotiate(dev, 16000, FakeSD()) == (16000, 1)
    assert mic.negotiate(dev, None, FakeSD()) == (48000, 1)  # the device's default
    with pytest.raises(InputError, match="refuses 22050 Hz.*--sample-rate 48000"):
        mic.negotiate(dev, 22050, FakeSD())
    stereo = FakeSD(devices=[{"name": "Stereo", "max_input_channels": 2, "default_samplerate": 16000.0}], mono=False)
    assert mic.negotiate(mic.find_device(None, stereo), 16000, stereo) == (16000, 2)


def test_callback_only_enqueues_and_counts_what_a_slow_reader_loses():
    sd = FakeSD()
    scripted(sd, n_blocks=50, block=160, rate=16000, channels=2)
    m = mic.Microphone(device=mic.find_device(None, sd), sample_rate=16000, block=160, channels=2, max_lag=0.1,
                       backend=sd)
    assert m.capacity == 10
    with m:
        sd.streams[0].thread.join(timeout=5)  # the reader has not read yet: the queue overflowed
        got = list(m.blocks(duration=50 * 160 / 16000))
    st = m.snapshot()
    assert [b.start for b in got] == [160 * i for i in range(10)]
    np.testing.assert_array_equal(got[3].samples, 480 + np.arange(160))  # stereo mixed down, in order
    assert (st.dropped_blocks, st.dropped_samples, st.received_samples) == (40, 40 * 160, 50 * 160)
    assert "dropped 40 blocks (0.400 s lost)" in st.summary()


def test_portaudio_overflow_is_counted_and_measured_from_the_adc_clock():
    sd = FakeSD()
    scripted(sd, n_blocks=20, block=160, rate=16000, lost_after=8, lost=5 * 160)
    m = mic.Microphone(device=mic.find_device(None, sd), sample_rate=16000, block=160, backend=sd)
    with m:
        got = list(m.blocks(duration=(20 + 5) * 160 / 16000))
    st = m.snapshot()
    assert (st.overflows, st.overflow_samples, st.dropped_blocks) == (1, 800, 0)
    assert got[8].start == 13 * 160 and got[8].samples[0] == 13 * 160  # the clock jumped with the audio
    assert len(got) == 20 and got[-1].start + len(got[-1].samples) == 25 * 160
    (line,) = st.losses_since(mic.Stats(16000), at=1.0)
    assert "PortAudio reported 1 input overflow(s) (0.050 s lost)" in line


def test_duration_cuts_the_last_block_exactly():
    sd = FakeSD()
    scripted(sd, n_blocks=10, block=160, rate=16000)
    m = mic.Microphone(device=mic.find_device(None, sd), sample_rate=16000, block=160, backend=sd)
    with m:
        got = list(m.blocks(duration=0.0655))  # 1048 samples: 6 blocks and 88 samples
    assert sum(len(b.samples) for b in got) == 1048 and len(got[-1].samples) == 88


def test_a_silent_device_stalls_with_a_clear_error():
    sd = FakeSD()
    m = mic.Microphone(device=mic.find_device(None, sd), sample_rate=16000, block=160, backend=sd)
    with m, pytest.raises(InputError, match="delivered no audio for 0.2 s"):
        list(m.blocks(stall=0.2))

# ---------------------------------------------------------------- the live front end


def live_frames(x, in_rate, blocks, gaps=()):
    """Run LiveAudio over x cut into `blocks` sizes; `gaps` are block indices dropped on the way."""
    fe = LogMel()
    got, skipped = [], []
    live = mic.LiveAudio(fe.stream(), rate=fe.sample_rate, hop=fe.hop, in_rate=in_rate,
                         on_audio=lambda s, f: got.append(f), on_gap=lambda f, s: skipped.append((len(got), f, s)))
    pos = 0
    for i, size in enumerate(blocks):
        if i not in gaps:
            live.block(pos, x[pos:pos + size])
        pos += size
    live.end()
    return got, skipped


def test_live_front_end_equals_offline_frame_by_frame():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, 16000).astype(np.float32)
    sizes = list(rng.choice([1, 7, 100, 160, 161, 333, 1024], size=200))
    got, _ = live_frames(x, 16000, sizes)
    live, offline = np.concatenate(got), LogMel().compute(x)
    assert live.shape == offline.shape == (100, 40)
    for i in range(len(offline)):
        np.testing.assert_allclose(live[i], offline[i], atol=1e-5, err_msg=f"frame {i}")


def test_live_front_end_resamples_a_48k_microphone_like_the_file_path():
    rng = np.random.default_rng(1)
    x48 = rng.uniform(-0.5, 0.5, 48000).astype(np.float32)
    got, _ = live_frames(x48, 48000, [480] * 100)
    live, offline = np.concatenate(got), LogMel().compute(resample(x48, 48000, 16000))
    assert live.shape == offline.shape
    np.testing.assert_allclose(live, offline, atol=2e-3)  # float32 filtering vs float32 offline, then log


def test_a_gap_skips_its_frames_and_keeps_the_clock():
    x = np.random.default_rng(2).uniform(-0.5, 0.5, 16000).astype(np.float32)
    got, skipped = live_frames(x, 16000, [160] * 100, gaps=range(30, 45))
    assert skipped == [(30, 15, 15 * 160)]  # after 30 frames, 15 frames (2400 samples) lost
    after = np.concatenate(got[30:])
    assert len(after) == 55
    np.testing.assert_allclose(after, LogMel().compute(x[45 * 160:]), atol=1e-5)  # a fresh start after the gap

# ---------------------------------------------------------------- the CLI with no device


def cli_command(*args, env=None):
    """(argv, env) for `edgernn ARGS` torch-free, with `devices` registered even before cli.py does."""
    code = NO_TORCH + ("from edgernn.cli import main\nif 'devices' not in main.commands:\n"
                       "    from edgernn.cli.mic import devices\n    main.add_command(devices)\nmain()\n")
    return [sys.executable, "-c", code, *map(str, args)], dict(env or os.environ, PYTHONPATH=str(ROOT))


def run_mic_cli(*args, env=None, timeout=60):
    cmd, env = cli_command(*args, env=env)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def no_device_env():
    if Path("/dev/snd").exists():
        pytest.skip("this machine has a sound card: 'no input device' cannot be arranged")
    return dict(os.environ, PULSE_SERVER="unix:/nonexistent/edgernn-test/native")


@pytest.mark.parametrize("args", [["devices"], ["stream", "--model", "MODEL", "--input", "mic", "--duration", "1"]])
def test_no_input_device_is_one_line_exit_2(args, tmp_path):
    model = tone_model(tmp_path / "tone.onnx")
    line = one_line_exit_2(run_mic_cli(*[model if a == "MODEL" else a for a in args], env=no_device_env()))
    assert "no audio input device found" in line or "sounddevice" in line or "PortAudio" in line, line

# ---------------------------------------------------------------- a real (virtual) microphone

VMIC = ROOT / "tools" / "vmic.sh"


@pytest.fixture(scope="session")
def vmic():
    """A private PulseAudio daemon whose default source hears its default sink: env for clients."""
    missing = [t for t in ("pulseaudio", "pactl", "paplay") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"virtual microphone needs {', '.join(missing)}: apt-get install pulseaudio pulseaudio-utils "
                    "libasound2-plugins libportaudio2")
    probe = subprocess.run([sys.executable, "-c", "import sounddevice"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip("sounddevice cannot be imported (pip install sounddevice; apt-get install libportaudio2): "
                    + (probe.stderr.strip().splitlines() or ["?"])[-1])
    env = dict(os.environ, VMIC_DIR=f"/tmp/edgernn-vmic-{os.getpid()}")  # short: socket paths <= 108 bytes
    r = subprocess.run(["bash", str(VMIC), "start"], env=env, capture_output=True, text=True, timeout=30)
    if r.returncode:
        pytest.fail(f"tools/vmic.sh start failed: {r.stderr.strip()}")
    for name, value in re.findall(r"(\w+)=(\S+)", r.stdout):
        env[name] = value
    yield env
    subprocess.run(["bash", str(VMIC), "stop"], env=env, capture_output=True, timeout=30)


def listen_while_playing(vmic, wav, model, *args, lead=0.3):
    """Start `edgernn stream --input mic ...`, play `wav` into the microphone once it listens.

    Returns (completed process, when the playing began on the microphone's clock)."""
    cmd, env = cli_command("stream", "--model", model, "--input", "mic", *args, env=vmic)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = []
    while not first or not first[-1].startswith("listening:"):
        line = proc.stderr.readline()
        if not line:
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"the CLI never listened: {''.join(first)}{err}")
        first.append(line)
    t_listen = time.monotonic()
    time.sleep(lead)
    t_play = time.monotonic()
    subprocess.run(["paplay", str(wav)], env=env, check=True, timeout=60)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "".join(first) + err), t_play - t_listen


def test_devices_lists_the_virtual_microphone(vmic):
    r = run_mic_cli("devices", "--json", env=vmic)
    assert r.returncode == 0, r.stderr
    devices = [json.loads(x) for x in r.stdout.splitlines()]
    assert any(d["is_default"] and d["channels"] >= 1 for d in devices), devices


def test_tones_into_a_44k_microphone_fire_on_time_like_the_file(vmic, tmp_path):
    """Captured at 44.1 kHz and resampled live to the model's 16 kHz (the spoken test runs at 16 kHz)."""
    samples, spans = tone_track()
    write_wav(tmp_path / "track.wav", samples, SR)
    model = tone_model(tmp_path / "tone.onnx")
    file_events = events_of(run_mic_cli("stream", "--model", model, "--input", tmp_path / "track.wav", "--events").stdout)

    def check():
        r, offset = listen_while_playing(vmic, tmp_path / "track.wav", model, "--events", "--duration",
                                         len(samples) / SR + 0.6, "--sample-rate", "44100")
        assert r.returncode == 0, r.stderr
        events, targets = events_of(r.stdout), [(a, b) for hz, a, b in spans if hz == TONE_HZ]
        assert [e["event"] for e in events] == ["tone"] * len(targets), (events, r.stderr)
        errors = [e["t"] - offset - onset for e, (onset, _) in zip(events, targets)]
        assert all(onset <= e["t"] - offset <= end + 0.3 for e, (onset, end) in zip(events, targets)), (errors, offset)
        assert [e["event"] for e in file_events] == [e["event"] for e in events]
        assert all(abs(m["t"] - offset - f["t"]) <= 0.1 for m, f in zip(events, file_events)), (events, file_events, offset)
        assert re.search(r"summary: mic .* 3 events, dropped 0 blocks", r.stderr), r.stderr
    _twice(check)


def slow_model(path, n=1536):
    """A raw-sample model (160 samples a frame) doing an n x n x n matmul per call: far slower
    than real time (about 0.2 s per 10 ms frame on a laptop core)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto as T
    from onnx import helper as h

    nodes = [h.make_node("ReduceMean", ["x"], ["s"], keepdims=0),
             h.make_node("ConstantOfShape", ["shape"], ["z"], value=h.make_tensor("v", T.FLOAT, [1], [1e-3])),
             h.make_node("Add", ["z", "s"], ["m"]), h.make_node("MatMul", ["m", "m"], ["mm"]),
             h.make_node("ReduceMean", ["mm"], ["r"], keepdims=0),
             h.make_node("Slice", ["x", "lo", "hi", "axis"], ["x2"]), h.make_node("Mul", ["x2", "zero"], ["x0"]),
             h.make_node("Add", ["x0", "r"], ["y"])]
    inits = [h.make_tensor("shape", T.INT64, [2], [n, n]), h.make_tensor("lo", T.INT64, [1], [0]),
             h.make_tensor("hi", T.INT64, [1], [2]), h.make_tensor("axis", T.INT64, [1], [2]),
             h.make_tensor("zero", T.FLOAT, [], [0.0])]
    graph = h.make_graph(nodes, "slow", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "time", 160])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["batch", "time", 2])], initializer=inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, str(path))
    return path


def test_a_model_slower_than_real_time_drops_blocks_and_says_how_many(vmic, tmp_path):
    r = run_mic_cli("stream", "--model", slow_model(tmp_path / "slow.onnx"), "--input", "mic", "--window", "160",
                    "--hop", "160", "--sample-rate", "16000", "--duration", "1.5", "--max-lag", "0.05", env=vmic)
    assert r.returncode == 0, r.stderr
    assert re.search(r"warning: dropped \d+ audio blocks", r.stderr), r.stderr
    m = re.search(r"summary: mic .*, (\d+) frames, dropped (\d+) blocks \(([\d.]+) s lost\), \d+ PortAudio overflows "
                  r"\(([\d.]+) s lost\)", r.stderr)
    assert m, r.stderr
    frames, dropped, dropped_s, overflow_s = int(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert frames == len(r.stdout.splitlines()) and dropped > 0 and dropped_s == pytest.approx(dropped * 0.01)
    assert frames + dropped + round(overflow_s / 0.01) == 150, r.stderr  # every 10 ms block accounted for

# ---------------------------------------------------------------- spoken keywords

KWS = ROOT / "models" / "kws.onnx"
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
SPOKEN = ["yes", "house", "no", "up", "happy", "down", "left", "tree", "right", "on", "off", "bird", "stop", "go"]


def speak(word: str, *, voice="en-us", speed=150) -> np.ndarray:
    """One word from espeak-ng at 16 kHz, trimmed to where it is audible, peak 0.5 (tools/eval_events.py's)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from eval_events import speak as synthesise

    return synthesise(word, voice, speed, SR).astype(np.float32)


def utterance(words, *, gap=0.6, lead=0.5):
    """(samples, [(word, onset s, end s), ...]): the words in a row, `gap` s of silence between."""
    pieces, spans, t = [np.zeros(round(lead * SR), np.float32)], [], lead
    for w in words:
        x = speak(w)
        spans.append((w, t, t + len(x) / SR))
        pieces += [x, np.zeros(round(gap * SR), np.float32)]
        t += (len(x) + round(gap * SR)) / SR
    return np.concatenate(pieces), spans


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    if not KWS.is_file():
        pytest.skip("models/kws.onnx is not there: train and export the keyword model first (see README)")
    if shutil.which("espeak-ng") is None:
        pytest.skip("speech synthesis needs espeak-ng: apt-get install espeak-ng")
    samples, spans = utterance(SPOKEN)
    path = tmp_path_factory.mktemp("kws") / "spoken.wav"
    write_wav(path, samples, SR)
    return path, samples, spans


def check_spoken(events, spans, offset=0.0):
    """Keywords fire in order, each between its onset and 0.3 s after its end; nothing else fires.
    Returns each event's time minus its word's end (s)."""
    said = [(w, a, b) for w, a, b in spans if w in KEYWORDS]
    assert [e["event"] for e in events] == [w for w, _, _ in said], (events, said)
    late = [round(e["t"] - offset - b, 3) for e, (_, a, b) in zip(events, said)]
    assert all(a <= e["t"] - offset <= b + 0.3 for e, (_, a, b) in zip(events, said)), (late, events, said)
    return late


def test_spoken_keywords_from_a_file_fire_in_order_on_time(spoken):
    path, _, spans = spoken
    r = run_mic_cli("stream", "--model", KWS, "--input", path, "--events")
    assert r.returncode == 0, r.stderr
    check_spoken(events_of(r.stdout), spans)


def _twice(check):
    """Real audio through a real sound server: a busy machine can delay `paplay` itself, which
    moves the measured offset, not the events. One retry; two misses in a row fail."""
    try:
        check()
    except AssertionError:
        check()


def _file_events_at_phases(samples, tmp, phases=range(0, 160, 10), after=1.0):
    """The file's events with k samples of silence in front, for k over a hop, and `after` s of
    silence behind (what the microphone hears after the playing): a microphone starts its frames
    wherever the sound happens to begin, so its frames sit near one of these phases."""
    out = {}
    for k in phases:
        shifted = tmp / f"shift{k}.wav"
        write_wav(shifted, np.concatenate([np.zeros(k, np.float32), samples, np.zeros(round(after * SR), np.float32)]), SR)
        r = run_mic_cli("stream", "--model", KWS, "--input", shifted, "--events")
        assert r.returncode == 0, r.stderr
        out[k] = [dict(e, t=e["t"] - k / SR) for e in events_of(r.stdout)]
    return out


def _is_subsequence(xs, ys):
    it = iter(ys)
    return all(x in it for x in xs)


def test_spoken_keywords_into_the_microphone_fire_like_the_file(vmic, spoken, tmp_path):
    """The live path (capture, incremental front end, events) gives what the file gives at the
    framing phases around the microphone's: every keyword that fires at every phase fires live,
    on time, and nothing fires live that fires at no phase. Whether every keyword fires is the
    model's business (the file test above checks it at phase 0): a keyword near the threshold
    fires at some phases and not at others (the shipped model misses "down" or the last "go" at
    some), so here one miss is allowed, and nothing out of order or unsaid."""
    path, samples, spans = spoken
    by_phase = _file_events_at_phases(samples, tmp_path)
    said = [w for w, _, _ in spans if w in KEYWORDS]

    def near(e, f, offset):
        return e["event"] == f["event"] and abs(e["t"] - offset - f["t"]) <= 0.15

    def check():
        r, offset = listen_while_playing(vmic, path, KWS, "--events", "--duration", len(samples) / SR + 1.0)
        assert r.returncode == 0, r.stderr
        events = events_of(r.stdout)
        assert events, r.stderr
        unseen = [e for e in events if not any(near(e, f, offset) for fs in by_phase.values() for f in fs)]
        assert not unseen, (unseen, offset, by_phase)
        every_phase = [f for f in by_phase[0] if all(any(near(f, g, 0.0) for g in fs) for fs in by_phase.values())]
        missed = [f for f in every_phase if not any(near(e, f, offset) for e in events)]
        assert not missed, (missed, events, offset)
        words = [e["event"] for e in events]
        assert _is_subsequence(words, said) and len(words) >= len(said) - 1, (words, said)
    _twice(check)
