"""tools/make_kws_data.py: layout, WAV format, three-way speaker split, engines, determinism, errors, resampler."""

import importlib.util
import os
import re
import shutil
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_kws_data.py"
TINY = ["--per-class", "3", "--words", "yes,no", "--engines", "espeak"]  # 4 classes x 3 clips: about a second


def load_tool():
    spec = importlib.util.spec_from_file_location("make_kws_data", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


kws = load_tool()


def need_espeak():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")


def read_wav(path: Path) -> tuple[tuple, np.ndarray]:
    with wave.open(str(path), "rb") as f:
        params = (f.getframerate(), f.getnchannels(), f.getsampwidth(), f.getnframes())
        return params, np.frombuffer(f.readframes(f.getnframes()), "<i2") / 32768.0


def speaker_of(relpath: str) -> str:
    return Path(relpath).name.split("_nohash_")[0]


def wav_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    need_espeak()
    out = tmp_path_factory.mktemp("kws") / "data"
    assert kws.main([str(out), *TINY, "--seed", "7"]) == 0
    return out


def test_layout(tiny):
    classes = (tiny / "classes.txt").read_text().split()
    assert classes == ["_silence_", "_unknown_", "yes", "no"]
    assert sorted(p.name for p in tiny.iterdir() if p.is_dir()) == sorted(classes)
    for label in classes:
        names = [p.name for p in (tiny / label).iterdir()]
        assert len(names) == 3
        assert all(re.fullmatch(r"[A-Za-z0-9-]+(_[A-Za-z0-9]+)?_nohash_\d+\.wav", n) for n in names)
    readme = (tiny / "README.txt").read_text()
    assert "espeak-ng: eSpeak NG" in readme and "--per-class 3" in readme
    assert not list(tiny.parent.glob(".data.partial-*")), "temp folder left behind"


def test_wav_format(tiny):
    for path in tiny.rglob("*.wav"):
        params, _ = read_wav(path)
        assert params == (16000, 1, 2, 16000), f"{path}: (rate, channels, bytes, frames)"


def test_validation_speakers_are_held_out(tiny):
    held_out = (tiny / "validation_list.txt").read_text().split()
    all_files = set(wav_files(tiny))
    assert held_out and set(held_out) <= all_files
    val_speakers = {speaker_of(p) for p in held_out}
    train_speakers = {speaker_of(p) for p in all_files - set(held_out)}
    assert train_speakers and not val_speakers & train_speakers
    assert {p.split("/")[0] for p in held_out} == {"_silence_", "_unknown_", "yes", "no"}


def test_three_way_split(tiny):
    val = set((tiny / "validation_list.txt").read_text().split())
    test = set((tiny / "testing_list.txt").read_text().split())
    train = set(wav_files(tiny)) - val - test
    assert val and test and train and not val & test
    groups = [set(map(speaker_of, g)) for g in (train, val, test)]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert {p.split("/")[0] for p in test} == {"_silence_", "_unknown_", "yes", "no"}


def test_every_espeak_variant_is_a_speaker():
    need_espeak()
    speakers = kws.espeak_speakers(kws.find_espeak())
    variants = {s.variant for s in speakers}
    assert {"", "m3", "f1", "whisper", "klatt", "Storm"} <= variants and len(variants) > 50
    assert {s.voice for s in speakers} <= set(kws.VOICES)


def need(engine):
    exes, _ = kws.find_engines([engine])
    try:
        kws.engine_speakers(engine, exes)
    except kws.ToolError as e:
        pytest.skip(str(e))


def test_festival_and_unseen_flite(tmp_path):
    need_espeak(), need("festival"), need("flite")
    out = tmp_path / "multi"
    args = ["--per-class", "4", "--words", "go", "--engines", "espeak,festival", "--unseen", "flite",
            "--unseen-per-class", "2", "--seed", "3"]
    assert kws.main([str(out), *args]) == 0
    files = set(wav_files(out))
    test = set((out / "testing_list.txt").read_text().split())
    fest = {p for p in files if speaker_of(p).startswith("fest-")}
    flite = {p for p in files if speaker_of(p).startswith("flite-")}
    assert fest and flite <= test and len(flite) == 3 * 2  # 3 classes x 2 clips, all test
    assert re.fullmatch(r"fest-k[ae][ld]_f\d+", speaker_of(sorted(fest)[0]))
    for p in fest | flite:
        if p.startswith("go/"):
            _, x = read_wav(out / p)
            assert np.abs(x).max() > 0.02, p
    readme = (out / "README.txt").read_text()
    assert "festival:" in readme and "flite:" in readme and "go festival" in readme


def test_missing_engine_is_one_line(tmp_path, monkeypatch, capsys):
    need_espeak()
    real = shutil.which
    monkeypatch.setattr(kws.shutil, "which", lambda name: None if name == "flite" else real(name))
    assert kws.main([str(tmp_path / "out"), *TINY, "--unseen", "flite"]) == 2
    assert capsys.readouterr().err.strip() == "make_kws_data: error: " + kws.MISSING["flite"]
    assert list(tmp_path.iterdir()) == []


def test_render_ends_some_clips_in_digital_silence():
    need_espeak()
    synth = kws.Synth({"espeak": kws.find_espeak()})
    speaker = kws.Speaker("en-us", "m3")
    tails = []
    for i in range(24):
        clip = kws.Clip("yes", "yes", speaker, i, (11, i), "train")
        x = kws.render(synth, clip)
        assert len(x) == kws.CLIP_SAMPLES and np.isfinite(x).all()
        tails.append(np.count_nonzero(x[-800:]) == 0)
        assert np.array_equal(x, kws.render(synth, clip))  # a pure function of the seed
    assert 0 < sum(tails) < 24


def test_keyword_clips_are_not_silent(tiny):
    for label in ["yes", "no", "_unknown_"]:
        for path in (tiny / label).glob("*.wav"):
            _, x = read_wav(path)
            frames = np.sqrt(np.mean(x.reshape(100, 160) ** 2, axis=1))  # 10 ms RMS
            assert np.abs(x).max() > 0.025, f"{path} peaks at {np.abs(x).max():.4f}"  # peaks from -30 dBFS
            quiet = np.percentile(frames, 10)  # a word lasts at most 0.9 s
            assert frames.max() > 3 * quiet, f"{path}: no word stands out of the noise"


def test_same_seed_same_files(tiny, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    assert kws.main([str(again), *TINY, "--seed", "7", "--jobs", "1"]) == 0
    assert kws.main([str(other), *TINY, "--seed", "8"]) == 0
    assert wav_files(again) == wav_files(tiny)
    assert (again / "validation_list.txt").read_text() == (tiny / "validation_list.txt").read_text()
    assert wav_files(other) != wav_files(tiny)


def test_more_unknown_clips_leave_every_other_clip_and_the_split_as_they_were(tiny, tmp_path):
    more = tmp_path / "more"
    assert kws.main([str(more), *TINY, "--seed", "7", "--unknown-per-class", "7"]) == 0
    counts = {label: len(list((more / label).iterdir())) for label in ("_silence_", "_unknown_", "yes", "no")}
    assert counts == {"_silence_": 3, "_unknown_": 7, "yes": 3, "no": 3}
    before, after = wav_files(tiny), wav_files(more)
    assert {k: v for k, v in after.items() if not k.startswith("_unknown_/")} == \
           {k: v for k, v in before.items() if not k.startswith("_unknown_/")}
    def split(root):  # speaker -> the split its files are listed in
        val, test = ((root / name).read_text().split() for name in ("validation_list.txt", "testing_list.txt"))
        return {speaker_of(p): "validation" if p in val else "test" if p in test else "train" for p in wav_files(root)}
    mine, theirs = split(more), split(tiny)
    assert len(mine) > len(theirs) and all(mine[s] == where for s, where in theirs.items())


def test_bad_unknown_per_class_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        kws.main([str(tmp_path / "x"), *TINY, "--unknown-per-class", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--unknown-per-class" in err and "at least 1" in err
    assert not (tmp_path / "x").exists()


def test_named_validation_voice(tmp_path):
    need_espeak()
    out = tmp_path / "named"
    assert kws.main([str(out), *TINY, "--val-voices", "en-029", "en-us+m3"]) == 0
    held_out = set((out / "validation_list.txt").read_text().split())
    named = {p for p in wav_files(out) if re.match(r"en-029(_|$)|en-us_m3$", speaker_of(p))}
    assert held_out == named and len(held_out) == 4  # one per class


def test_non_empty_out_dir_is_refused(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert kws.main([str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists and is not empty" in err and "--force" in err and "\n" not in err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_missing_espeak_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no espeak-ng on it
    assert kws.main([str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "make_kws_data: error: " + kws.ESPEAK_MISSING
    assert list(tmp_path.iterdir()) == []


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    need_espeak()

    def broken(exe, clip):
        raise kws.ToolError("synthetic failure")

    monkeypatch.setattr(kws, "render", broken)
    assert kws.main([str(tmp_path / "out"), *TINY]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("freq, gain_db", [(1000, 0.0), (5000, 0.0), (9000, -90.0), (10500, -90.0)])
def test_resample_passes_speech_band_and_blocks_aliases(freq, gain_db):
    t = np.arange(22050) / 22050
    y = kws.resample(np.sin(2 * np.pi * freq * t), 22050, 16000)[1000:-1000]  # skip edges
    level = 20 * np.log10(np.sqrt(2 * np.mean(y**2)) + 1e-12)
    if gain_db == 0.0:
        ideal = np.sin(2 * np.pi * freq * (np.arange(len(y)) + 1000) / 16000)
        assert np.abs(y - ideal).max() < 1e-3
    else:
        assert level < gain_db, f"{freq} Hz aliases at {level:.1f} dB"


def test_light_augmentation_is_scoped(tmp_path):
    need_espeak()
    before = dict(kws.P), kws.SNR_DB
    out = tmp_path / "light"
    assert kws.main([str(out), *TINY, "--augment", "light"]) == 0
    assert (dict(kws.P), kws.SNR_DB) == before  # back to full for whatever runs next
    readme = (out / "README.txt").read_text()
    assert "(20.0, 40.0) dB" in readme and "'room': 0.0" in readme
    full = tmp_path / "full"
    assert kws.main([str(full), *TINY]) == 0
    assert (full / "testing_list.txt").read_text() == (out / "testing_list.txt").read_text()  # same split


def test_test_voices_are_test_only(tmp_path):
    need_espeak()
    out = tmp_path / "testvoice"
    assert kws.main([str(out), *TINY, "--per-class", "40", "--test-voices", "espeak:en-029"]) == 0
    test = set((out / "testing_list.txt").read_text().split())
    en029 = {p for p in wav_files(out) if speaker_of(p).startswith("en-029")}
    assert en029 and en029 <= test and test - en029  # the voice's clips, and other test speakers
    assert kws.main([str(tmp_path / "bad"), *TINY, "--test-voices", "flite:nobody"]) == 2


def fake_recordings(root: Path, *, speakers: int = 10, first: int = 0) -> Path:
    """A Speech Commands folder: per speaker one `yes` and one `_unknown_` clip, a tone burst in noise."""
    rng = np.random.default_rng(first)
    for label in ("yes", "_unknown_"):
        (root / label).mkdir(parents=True)
        for s in range(first, first + speakers):
            t = np.arange(16000) / 16000
            burst = np.sin(2 * np.pi * (200 + 40 * s) * t) * ((t > 0.3) & (t < 0.6))
            x = 0.5 * burst + 0.003 * rng.standard_normal(len(t))
            with wave.open(str(root / label / f"{s:08x}_nohash_0.wav"), "wb") as f:
                f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
                f.writeframes(np.round(x * 32767).astype("<i2").tobytes())
    return root


def test_recordings_are_split_by_speaker_and_copied_in_train(tmp_path):
    need_espeak()
    out = tmp_path / "data"
    rec = fake_recordings(tmp_path / "rec")
    args = [str(out), *TINY, "--words", "yes", "--recordings", str(rec), "--recording-copies", "2"]
    assert kws.main(args) == 0
    files = [p for p in wav_files(out) if speaker_of(p).startswith("rec-")]
    val = set((out / "validation_list.txt").read_text().split())
    test = set((out / "testing_list.txt").read_text().split())
    split_of = {}
    for p in files:
        split = "validation" if p in val else "test" if p in test else "train"
        assert split_of.setdefault(speaker_of(p), split) == split, p  # a speaker is in one split only
    assert set(split_of.values()) == {"train", "validation", "test"}
    for who, split in split_of.items():
        for label in ("yes", "_unknown_"):
            mine = [p for p in files if p.startswith(f"{label}/{who}_nohash_")]
            assert len(mine) == (2 if split == "train" else 1), (who, label, mine)
    # the burst was trimmed and placed again in a 1 s clip
    _, x = read_wav(out / files[0])
    assert len(x) == 16000 and 0.02 < np.abs(x).max() <= 1.0  # peaks are drawn from -30 to -1 dBFS
    assert f"recordings {rec}:" in (out / "README.txt").read_text()


def splits_of(out: Path) -> dict[str, str]:
    val = set((out / "validation_list.txt").read_text().split())
    test = set((out / "testing_list.txt").read_text().split())
    return {speaker_of(p): "validation" if p in val else "test" if p in test else "train"
            for p in wav_files(out) if speaker_of(p).startswith("rec-")}


def test_a_second_recordings_folder_keeps_the_first_folders_splits(tmp_path):
    need_espeak()
    one, two = fake_recordings(tmp_path / "one", speakers=14), fake_recordings(tmp_path / "two", speakers=14, first=10)
    base = [*TINY, "--words", "yes", "--recordings", str(one)]
    assert kws.main([str(tmp_path / "a"), *base]) == 0
    assert kws.main([str(tmp_path / "b"), *base, "--recordings", str(two)]) == 0
    a, b = splits_of(tmp_path / "a"), splits_of(tmp_path / "b")
    assert len(a) == 14 and len(b) == 24  # speakers 10..13 are in both folders
    assert {who: b[who] for who in a} == a  # nobody of the first folder moved
    new = {who: split for who, split in b.items() if who not in a}
    assert set(new.values()) == {"train", "validation", "test"}  # the new ones are split among themselves
    # a speaker in both folders keeps the first folder's split and has both folders' clips
    assert len([p for p in wav_files(tmp_path / "b") if p.startswith("yes/rec-0000000a_nohash_")]) == 2
    assert "recordings " + str(two) in (tmp_path / "b" / "README.txt").read_text()


def test_bad_recordings_folder_is_one_line(tmp_path, capsys):
    need_espeak()
    assert kws.main([str(tmp_path / "out"), *TINY, "--recordings", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("make_kws_data: error: --recordings") and "no such folder" in err[-1]
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    assert kws.main([str(tmp_path / "out"), *TINY, "--recordings", str(tmp_path / "empty")]) == 2
    assert "no WAV files" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_festival_intl_voices_say_only_their_checked_spellings(tmp_path):
    need("festival")
    if not any((Path("/usr/share/festival/voices") / lang / voice).is_dir() for lang, voice in
               (("finnish", "suo_fi_lj_diphone"), ("czech", "czech_dita"), ("italian", "lp_diphone"))):
        pytest.skip("no festival voice of another language (apt-get install festvox-suopuhe-lj)")
    out = tmp_path / "intl"
    assert kws.main([str(out), "--per-class", "8", "--words", "right,yes", "--engines", "festival-intl"]) == 0
    files = wav_files(out)
    voices = {label: {speaker_of(p).split("_")[0][len("intl-"):] for p in files if p.startswith(label + "/")}
              for label in ("right", "yes", "_unknown_")}
    assert voices["right"] and all("right" in kws.INTL_SPELLINGS[v] for v in voices["right"])
    assert voices["yes"] and voices["_unknown_"]
    for p, data in files.items():
        if not p.startswith("_silence_"):
            _, x = read_wav(out / p)
            assert np.abs(x).max() > 0.02, p


FAKE_RHVOICE = '''#!{python}
"""A stand-in RHVoice-test: a tone per voice; an unknown voice gets the default voice's (as RHVoice does)."""
import argparse, sys, wave
import numpy as np
HAS = {has!r}
p = argparse.ArgumentParser()
p.add_argument("-p", default="alan"); p.add_argument("-t", type=int, default=100)
p.add_argument("-r", type=int, default=100); p.add_argument("-o", required=True)
a = p.parse_args()
voice = a.p if a.p in HAS else HAS[0]
word = sys.stdin.read().strip()
t = np.arange(int(24000 * 0.4 * 100 / a.r)) / 24000
f0 = (120 + 40 * HAS.index(voice)) * a.t / 100 + len(word)
x = 0.3 * np.sin(2 * np.pi * f0 * t)
with wave.open(a.o, "wb") as f:
    f.setnchannels(1); f.setsampwidth(2); f.setframerate(24000)
    f.writeframes(np.round(x * 32767).astype("<i2").tobytes())
'''


def fake_rhvoice(folder: Path, has: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "RHVoice-test"
    exe.write_text(FAKE_RHVOICE.format(python=sys.executable, has=has))
    exe.chmod(0o755)
    return exe


def test_rhvoice_voices_are_only_those_that_sound_their_own(tmp_path):
    # alan is the default: names this RHVoice lacks come out as alan and do not count
    assert kws.rhvoice_voices(str(fake_rhvoice(tmp_path / "a", ["alan", "clb", "ksp"]))) == ("alan", "clb", "ksp")
    # slt is never used: it is the speaker of the festival-hts test voice
    assert kws.rhvoice_voices(str(fake_rhvoice(tmp_path / "b", ["alan", "slt", "bdl"]))) == ("alan", "bdl")
    assert kws.rhvoice_voices(None) == ()


def test_rhvoice_engine_makes_speakers_per_pitch_and_one_line_without_it(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    fake_rhvoice(bin_dir, ["alan", "lyubov"])
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "data"
    assert kws.main([str(out), "--per-class", "4", "--words", "yes", "--engines", "rhvoice"]) == 0
    speakers = {speaker_of(p) for p in wav_files(out)}
    assert speakers <= {f"rhv-{v}_t{t}" for v in ("alan", "lyubov") for t in kws.RHVOICE_PITCH} and speakers
    assert "rhvoice:" in (out / "README.txt").read_text()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert kws.main([str(tmp_path / "none"), "--per-class", "4", "--words", "yes", "--engines", "rhvoice"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("make_kws_data: error: RHVoice-test not found") and not (tmp_path / "none").exists()


def test_unknown_words_from_a_file_are_what_unknown_clips_say(tmp_path):
    need_espeak()
    words = tmp_path / "words.txt"
    words.write_text("# my own non-keywords\nbanana\n  Kite  # a near miss of 'right'\n\nbanana\n", encoding="utf-8")
    out = tmp_path / "own"
    assert kws.main([str(out), *TINY, "--seed", "7", "--unknown-words", str(words)]) == 0
    assert "_unknown_ words (2): banana kite" in (out / "README.txt").read_text().splitlines()
    assert len(list((out / "_unknown_").glob("*.wav"))) == 3
    wide = kws.parse_args(["x", "--unknown-words", "wide"]).unknown_words
    assert set(kws.UNKNOWN_WORDS) < set(wide) and not set(wide) & set(kws.KEYWORDS)
    assert kws.parse_args(["x"]).unknown_words == kws.UNKNOWN_WORDS


@pytest.mark.parametrize("content, expect", [
    (None, "No such file"),
    ("banana\nstop\n", "'stop' is a keyword"),
    ("banana\nhello!\n", "'hello!' is not a word"),
    ("# nothing\n\n", "no words"),
    (b"\xff\xfe\x00banana", "not UTF-8"),
])
def test_bad_unknown_words_is_one_line(tmp_path, capsys, content, expect):
    words = tmp_path / "words.txt"
    if isinstance(content, bytes):
        words.write_bytes(content)
    elif content is not None:
        words.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        kws.main([str(tmp_path / "x"), "--per-class", "3", "--engines", "espeak", "--unknown-words", str(words)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--unknown-words" in err and expect in err
    assert not (tmp_path / "x").exists()
