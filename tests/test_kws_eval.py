"""tools/eval_kws.py: clip label at the end, events exactly the keyword, false events per hour, per engine."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgernn.audio.wav import write_wav
from edgernn.runtime.events import Event

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "eval_kws.py"
MODEL = ROOT / "models" / "kws.onnx"
SAMPLES = sorted((ROOT / "models" / "samples").glob("*.wav"))


def load_tool():
    spec = importlib.util.spec_from_file_location("eval_kws", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ev = load_tool()


def test_engine_and_voice_from_the_speaker_id():
    assert ev.engine_of("yes/fest-kal_f110_nohash_0.wav") == "festival"
    assert ev.engine_of("yes/hts-slt_pm2_nohash_3.wav") == "festival-hts"
    assert ev.engine_of("no/flite-rms_f100_nohash_1.wav") == "flite"
    assert ev.engine_of("no/en-us_m3_nohash_1.wav") == "espeak"
    assert ev.engine_of("no/rhv-clb_t85_nohash_1.wav") == "rhvoice"
    assert ev.voice_of("no/flite-rms_f100_nohash_1.wav") == "flite-rms"


def test_summary_counts_exact_events_and_labels():
    rows = [
        {"truth": "yes", "label_after_silence": "yes", "label_at_end": "yes", "events": ["yes"], "events_exact": True},
        {"truth": "no", "label_after_silence": "go", "label_at_end": "no", "events": [], "events_exact": False},
        {"truth": "_unknown_", "label_after_silence": "_unknown_", "label_at_end": "_unknown_", "events": ["go"],
         "events_exact": False},
        {"truth": "_silence_", "label_after_silence": "_silence_", "label_at_end": "_silence_", "events": [],
         "events_exact": True},
    ]
    s = ev.summarise(rows)
    assert (s["clip_label"], s["clip_label_at_end"], s["events_exact"]) == (0.75, 1.0, 0.5)
    assert (s["events_exact_keywords"], s["keyword_missed"], s["events_on_non_keywords"]) == (0.5, 0.5, 1)
    labels = ["_silence_", "_unknown_", "go", "no", "yes"]
    m = np.array(ev.confusion([{**r} for r in rows], labels))
    assert m.sum() == 4 and m[3, 2] == 1 and np.trace(m) == 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The shipped samples as test clips of two engines, plus silence and a stretch of noise."""
    if not MODEL.is_file() or not SAMPLES:
        pytest.skip("models/kws.onnx or models/samples/*.wav absent")
    root = tmp_path_factory.mktemp("evalset")
    rels = []
    for i, path in enumerate(SAMPLES):
        speaker = "en-us_m1" if i % 2 else "fest-kal_f100"
        (root / path.stem).mkdir()
        shutil.copy(path, root / path.stem / f"{speaker}_nohash_0.wav")
        rels.append(f"{path.stem}/{speaker}_nohash_0.wav")
    (root / "_silence_").mkdir()
    rng = np.random.default_rng(0)
    for n in range(3):
        write_wav(root / f"_silence_/en-us_m1_nohash_{n}.wav", (rng.standard_normal(16000) * 0.003).astype(np.float32), 16000)
        rels.append(f"_silence_/en-us_m1_nohash_{n}.wav")
    write_wav(root / "_silence_/fest-kal_f100_nohash_0.wav", np.zeros(16000, np.float32), 16000)
    rels.append("_silence_/fest-kal_f100_nohash_0.wav")
    (root / "testing_list.txt").write_text("\n".join(rels) + "\n")
    return root


def test_shipped_model_on_its_samples(folder, tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "c.png"
    assert ev.main(["--model", str(MODEL), "--data", str(folder), "--json", str(out), "--plot", str(png),
                    "--no-timing"]) == 0
    report = json.loads(out.read_text())
    assert set(report["engines"]) == {"espeak", "festival"}
    o = report["overall"]
    assert o["clips"] == len(SAMPLES) + 4 and o["keyword_clips"] == len(SAMPLES)
    assert o["clip_label_at_end"] == 1.0  # every shipped sample is labelled right (test_classify checks it too)
    assert o["clip_label"] >= 0.9  # and the label holds through 1 s of digital silence
    assert report["false_events"]["clips"] == 4 and report["false_events"]["seconds"] == 4.0
    assert {"onnx_bytes", "parameters"} <= set(report["size"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(r["truth"] == r["clip"].split("/")[0] for r in report["clips"])


def test_speed_is_measured(folder):
    s = ev.speed(ev.Scorer(str(MODEL)), frames=300)
    assert 0 < s["us_per_frame_model"] <= s["us_per_frame_with_frontend"] and s["realtime_factor"] < 1
    assert 0 < s["us_per_frame_live_model"] <= s["us_per_frame_live_with_frontend"] and s["realtime_factor_live"] < 1


def test_threshold_sweep_trades_events_for_false_events(folder, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert ev.main(["--model", str(MODEL), "--data", str(folder), "--split", "test", "--sweep", "0.3,0.9,1.0",
                    "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["sweep"]
    assert [r["threshold"] for r in rows] == [0.3, 0.9, 1.0]
    low, default, top = rows
    assert low["false_events"] >= default["false_events"] >= top["false_events"]  # a higher bar fires less
    assert low["events_exact_keywords"] >= top["events_exact_keywords"]
    # the default threshold's row is what the full report counts
    report = ev.evaluate(str(MODEL), str(folder), timing=False)
    assert default["events_exact"] == report["overall"]["events_exact"]
    assert default["false_events"] == report["false_events"]["events"]
    assert "false/10min" in capsys.readouterr().out


def test_pick_samples_takes_test_clips_the_model_gets_right(folder, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pick_kws_samples", ROOT / "tools" / "pick_kws_samples.py")
    pick = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pick)
    out, log = tmp_path / "samples", tmp_path / "picked.json"
    assert pick.main(["--data", str(folder), "--model", str(MODEL), "--out", str(out), "--json", str(log)]) == 0
    rows = json.loads(log.read_text())
    assert [r["keyword"] for r in rows] == list(pick.KEYWORDS)
    # only espeak and festival have clips here: the turns skip the other engines
    assert {r["engine"] for r in rows} == {"espeak", "festival"} and all(r["ok"] for r in rows)
    for r in rows:
        assert (out / f"{r['keyword']}.wav").read_bytes() == (folder / r["clip"]).read_bytes()
    assert "| yes.wav |" in capsys.readouterr().out
    assert pick.main(["--data", str(tmp_path), "--model", str(MODEL), "--out", str(out)]) == 2
    assert "testing_list.txt not found" in capsys.readouterr().err

    # a keyword with no right clip: exit 1, one line, and the samples already there are untouched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_pick = pick.pick
    def failing(*a, **k):
        rows = real_pick(*a, **k)
        rows[0] = dict(rows[0], ok=False, clip=rows[1]["clip"])
        return rows
    pick.pick = failing
    assert pick.main(["--data", str(folder), "--model", str(MODEL), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no clip of yes" in err and "left as it was" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_framing_report_runs_each_clip_at_every_delay(folder, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert ev.main(["--model", str(MODEL), "--data", str(folder), "--json", str(out), "--no-timing",
                    "--phases", "2"]) == 0
    report = json.loads(out.read_text())
    f = report["framing"]
    assert f["delays_samples"] == [0, 80] and f["keyword_clips"] == report["overall"]["keyword_clips"]
    assert f["exact_by_phase"][0] == report["overall"]["events_exact_keywords"]  # delay 0 is the plain run
    assert f["exact_every_phase"] <= min(f["exact_by_phase"]) <= max(f["exact_by_phase"]) <= f["exact_any_phase"]
    assert "framing: 2 sub-hop delays" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ev.main(["--model", str(MODEL), "--data", str(folder), "--phases", "0"])


def test_framing_report_counts_a_late_event(folder):
    """A scorer whose event comes 0.8 s late at one delay: every clip is right at every framing, and late."""
    class Stub(ev.Scorer):
        def audio(self, path):
            x = super().audio(path)
            self.truth, self.length = Path(path).parent.name, len(x)
            return x

        def run(self, samples):
            d = len(samples) - self.length - self.fe.sample_rate  # the zeros put before the clip (1 s after it)
            t = d / self.fe.sample_rate + 0.5 + (0.8 if d == 40 else 0.0)  # late at k = 1 of 4
            return None, [Event(label=self.truth, t=t, p=1.0, step=0)]

    rels = ev.clips_of(folder, "test")
    keyword = [r for r in rels if r.split("/", 1)[0] not in ev.IGNORED]
    f = ev.phase_report(Stub(str(MODEL)), folder, rels, 4, 1.0)
    assert f["delays_samples"] == [0, 40, 80, 120]
    assert f["exact_every_phase"] == 1.0 and f["keyword_clips"] == len(keyword) > 0
    assert f["late_clips"] == len(keyword) and f["onset_spread_s"] == {"median": 0.8, "max": 0.8}


def events_tool():
    spec = importlib.util.spec_from_file_location("eval_events", ROOT / "tools" / "eval_events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_events_on_running_speech_match_each_keyword_once():
    """tools/eval_events.py: a keyword is on time once, between its onset and 0.3 s after its end; the rest is false."""
    ee = events_tool()
    spans = [("yes", 1.0, 1.4), ("dog", 2.0, 2.3), ("go", 3.0, 3.3), ("no", 4.0, 4.3)]
    fired = [Event("yes", 1.45, 1.0, 0), Event("yes", 1.5, 1.0, 0),  # the second is false: one word, one hit
             Event("go", 2.35, 1.0, 0),  # inside "dog": false
             Event("go", 3.65, 1.0, 0),  # 0.35 s after the end of "go": late, so false
             Event("no", 4.2, 1.0, 0)]
    hits, false = ee.match(fired, spans)
    assert hits == [("yes", 0.05), ("no", -0.1)] and false == 3


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_events_on_running_speech_with_the_shipped_model(tmp_path):
    ee = events_tool()
    out = tmp_path / "e.json"
    assert ee.main(["--model", str(MODEL), "--voices", "en-us", "--speeds", "150", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["utterances"] == 2 and r["keywords"] == 20 and r["other_words"] == 30
    assert r["on_time"] == sum(x["on_time"] for x in r["rows"]) >= 14  # the training engine's own voice
    assert all(-0.3 <= d <= 0.3 for x in r["rows"] for d in x["late_s"])
    with pytest.raises(SystemExit):
        ee.main(["--model", str(MODEL), "--gap", "-1"])
