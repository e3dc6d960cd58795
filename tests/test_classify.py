"""edgernn.train.classify: the speaker split, batches, bad folders, a tiny training run, the shipped model."""

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_torch_free
from edgernn.audio.wav import write_wav
from edgernn.train.classify import ClassifyTask, clip_features, clips_features, hash_held_out, speaker_of
from edgernn.core.errors import InputError
from edgernn.audio.frontend import LogMel

RATE = 16000
SECONDS = 0.25  # short clips keep the tests fast: 25 frames each
FE = LogMel(mels=16)
SOUNDS = ("hiss", "hum", "whistle")  # folder names: sorted, they are the labels


def sound(kind: str, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(SECONDS * rate)) / rate
    if kind == "hiss":
        x = rng.standard_normal(len(t)) * 0.3
    else:
        f = (300.0 if kind == "hum" else 3000.0) * rng.uniform(0.9, 1.1)
        x = 0.5 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(len(t))
    return x * rng.uniform(0.3, 1.0)


def make_set(root: Path, *, speakers: int = 6, per: int = 2, val_speakers: int | None = 2, seed: int = 0) -> Path:
    """SOUNDS x speakers x per clips; the last `val_speakers` speakers in validation_list.txt (None: no list)."""
    rng = np.random.default_rng(seed)
    listed = []
    for kind in SOUNDS:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for s in range(speakers):
            for n in range(per):
                rel = f"{kind}/spk{s}_nohash_{n}.wav"
                write_wav(root / rel, sound(kind, rng), RATE)
                if val_speakers is not None and s >= speakers - val_speakers:
                    listed.append(rel)
    if val_speakers is not None:
        (root / "validation_list.txt").write_text("".join(f"{r}\n" for r in listed))
    return root


def task_of(root: Path, **kw) -> ClassifyTask:
    return ClassifyTask(root, frontend=FE, clip_seconds=SECONDS, context=0.1, **kw)


def split_speakers(task: ClassifyTask) -> tuple[set, set]:
    return set(map(speaker_of, task.train_paths)), set(map(speaker_of, task.val_paths))


@pytest.mark.parametrize("val_speakers", [2, None], ids=["validation_list", "hashed"])
def test_split_never_shares_a_speaker(tmp_path, val_speakers):
    task = task_of(make_set(tmp_path, speakers=12 if val_speakers is None else 6, val_speakers=val_speakers))
    train, val = split_speakers(task)
    assert train and val and not train & val
    assert task.val_speakers == sorted(val)
    assert len(task.train_paths) + len(task.val_paths) == len(SOUNDS) * 2 * (12 if val_speakers is None else 6)
    if val_speakers is None:
        assert val == {s for s in train | val if hash_held_out(s, 0.2)}


def test_partly_listed_speaker_is_held_out_whole(tmp_path):
    root = make_set(tmp_path, val_speakers=None)
    (root / "validation_list.txt").write_text("hum/spk0_nohash_0.wav\n")  # spk0 has 6 clips in all
    with pytest.warns(UserWarning, match="all 6 clips"):
        task = task_of(root)
    train, val = split_speakers(task)
    assert val == {"spk0"} and "spk0" not in train


def test_hash_split_is_stable_and_about_a_fifth():
    ids = [f"speaker{i:04d}" for i in range(2000)]
    held = [hash_held_out(s, 0.2) for s in ids]
    assert held == [hash_held_out(s, 0.2) for s in ids]
    assert 0.17 < np.mean(held) < 0.23


def test_task_interface(tmp_path):
    task = task_of(make_set(tmp_path))
    assert task.labels == list(SOUNDS)
    assert task.spec_args == {"features": 16, "outputs": 3, "readout": "last", "task": "classify"}
    assert task.greater_is_better and task.loss == "ce" and task.metric == "accuracy"
    assert LogMel.from_meta(task.frontend_meta) == FE
    norm = task.normalization
    assert set(norm) == {"in_mean", "in_std"} and len(norm["in_mean"]) == len(norm["in_std"]) == 16
    assert np.isfinite(norm["in_mean"]).all() and (np.asarray(norm["in_std"]) > 0).all()
    rng = np.random.default_rng(0)
    lengths = set()
    for _ in range(20):
        x, y = task.batch(rng, 5)
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape[0] == y.shape[0] == 5
        assert x.shape[2] == 16 and 25 <= x.shape[1] <= 25 + 10 and np.isfinite(x).all()
        assert set(y.tolist()) <= {0, 1, 2}
        lengths.add(x.shape[1])
    assert len(lengths) > 1  # the context before each clip varies
    info = json.loads(json.dumps(task.checkpoint_info()))["task"]  # JSON-ready
    assert info["name"] == "classify" and info["classes"] == list(SOUNDS)
    assert (info["train_clips"], info["val_clips"]) == (24, 12) and info["val_speakers"] == ["spk4", "spk5"]
    assert info["phases"] == 1


def test_evaluate_scores_the_last_frame(tmp_path):
    task = task_of(make_set(tmp_path))
    truth = task.targets[task._val]

    def oracle(x):  # right only at the last frame
        y = np.zeros((len(x), x.shape[1], 3), np.float32)
        y[:, -1] = np.eye(3)[truth[:len(x)]]
        return y

    assert task.evaluate(oracle) == (1.0, pytest.approx(1 / 3))
    assert task.evaluate_streaming(oracle) == 1.0
    assert task.evaluate(lambda x: np.zeros((len(x), x.shape[1], 3)))[0] == pytest.approx(1 / 3)


def test_clip_features_resamples_and_pads(tmp_path):
    rng = np.random.default_rng(1)
    write_wav(tmp_path / "a.wav", sound("hum", rng, rate=8000), 8000)
    f = clip_features(tmp_path / "a.wav", FE)
    assert f.shape == (25, 16) and f.dtype == np.float32
    assert clip_features(tmp_path / "a.wav", FE, seconds=1.0).shape == (100, 16)
    write_wav(tmp_path / "b.wav", sound("hiss", rng)[:1234], RATE)  # short: padded
    write_wav(tmp_path / "c.wav", np.tile(sound("whistle", rng), 3), RATE)  # long: cut
    paths = [tmp_path / n for n in ("a.wav", "b.wav", "c.wav")] * 7  # more than one chunk
    one_by_one = np.stack([clip_features(p, FE, seconds=SECONDS) for p in paths])
    np.testing.assert_array_equal(clips_features(paths, FE, seconds=SECONDS), one_by_one)


def test_tiny_model_learns(tmp_path):
    torch = pytest.importorskip("torch")
    from edgernn.train import checkpoint
    from edgernn.train import loop as train_mod
    from edgernn.core.spec import ModelSpec

    task = task_of(make_set(tmp_path / "data"))
    spec = ModelSpec(cell="gru", hidden=8, **task.spec_args)
    cfg = train_mod.TrainConfig(steps=60, eval_every=20, batch_size=16, lr=1e-2)
    model, result = train_mod.train(task, spec, cfg)
    h = result["history"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert result["metrics"]["value"] > result["metrics"]["baseline"]
    train_mod.save(tmp_path / "k.pt", model, task, result)
    loaded = checkpoint.load(tmp_path / "k.pt")
    assert loaded.labels == list(SOUNDS) and loaded.frontend == FE.to_meta()
    assert loaded.extra["task"]["val_speakers"] == ["spk4", "spk5"]


def mu_law_wav(path: Path) -> None:
    body = b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 7, 1, 8000, 8000, 1, 8)
    body += b"data" + struct.pack("<I", 800) + bytes(800)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_bad_folders(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        ClassifyTask(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        ClassifyTask(tmp_path / "empty")
    (tmp_path / "empty" / "yes").mkdir()
    with pytest.raises(InputError, match="empty folder.*without WAV"):
        ClassifyTask(tmp_path / "empty")
    one = tmp_path / "one" / "yes"
    one.mkdir(parents=True)
    write_wav(one / "a_nohash_0.wav", np.zeros(400), RATE)
    with pytest.raises(InputError, match="only one class"):
        ClassifyTask(tmp_path / "one")


def test_empty_class_folder_warns_and_is_left_out(tmp_path):
    root = make_set(tmp_path)
    (root / "zzz").mkdir()
    with pytest.warns(UserWarning, match="zzz"):
        task = task_of(root)
    assert task.labels == list(SOUNDS)


def test_non_pcm_wav_is_named(tmp_path):
    root = make_set(tmp_path)
    mu_law_wav(root / "hum" / "spk0_nohash_9.wav")
    with pytest.raises(InputError, match=r"spk0_nohash_9\.wav: WAV format 0x0007 \(mu-law\)"):
        task_of(root)


def test_no_validation_clips(tmp_path):
    root = make_set(tmp_path, speakers=1, val_speakers=None)  # spk0 hashes into training
    assert not hash_held_out("spk0", 0.2)
    with pytest.raises(InputError, match="no validation clips"):
        task_of(root)
    (root / "validation_list.txt").write_text("hum/spk0_nohash_0.wav\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="no training clips"):
            task_of(root)


SHIPPED = ROOT / "models" / "kws.onnx"
SAMPLES = sorted((ROOT / "models" / "samples").glob("*.wav"))


@pytest.mark.skipif(not SHIPPED.is_file() or not SAMPLES, reason="models/kws.onnx or models/samples/*.wav absent")
def test_shipped_kws_labels_every_sample_torch_free():
    code = f"""
import json
from edgernn.train.classify import clip_features
from edgernn.audio.frontend import LogMel
from edgernn.runtime import Runtime
rt = Runtime({str(SHIPPED)!r})
fe = LogMel.from_meta(rt.meta["frontend"])
out = {{}}
for path in {[str(p) for p in SAMPLES]!r}:
    y = rt.stream().feed(clip_features(path, fe))
    out[path] = rt.labels[int(y[-1].argmax())]
print(json.dumps(out))
"""
    r = run_torch_free(code)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert {Path(p).stem: label for p, label in got.items()} == {p.stem: p.stem for p in SAMPLES}


def test_warp_moves_formants_by_the_factor(tmp_path):
    """A pure tone's peak band moves to where the tone times the factor falls; half the examples are left alone."""
    task = task_of(make_set(tmp_path), warp=0.25, mask_bands=0, gain_db=0.0)
    fe = LogMel()  # 40 bands: fine enough to see a 25 % shift
    tone = np.sin(2 * np.pi * 1000.0 * np.arange(RATE) / RATE)
    x = np.repeat(fe.compute(tone)[None], 400, axis=0)  # (N, L, M), the same frames 400 times
    task._centres_hz = fe.band_centres
    warped = task._warp(np.random.default_rng(0), x)
    assert warped.shape == x.shape and np.isfinite(warped).all()
    same = np.all(warped == x, axis=(1, 2))
    assert 0.35 < same.mean() < 0.65  # about half untouched
    centres = task._centres_hz
    peak_hz = centres[np.argmax(warped[~same, 50], axis=-1)]  # (n,) where each warped tone landed
    assert peak_hz.min() >= 1000.0 / 1.25 * 0.9 and peak_hz.max() <= 1000.0 * 1.25 * 1.1
    assert peak_hz.min() < 900.0 and peak_hz.max() > 1100.0  # both directions, not just one
    with pytest.raises(InputError, match="warp=-1"):
        task_of(tmp_path, warp=-1.0)


def test_delayed_features_are_the_clip_started_late(tmp_path):
    """clips_features(delay=d) is the clip with d zeros before it, cut back to its length: another framing."""
    rng = np.random.default_rng(4)
    clip = sound("whistle", rng)
    write_wav(tmp_path / "a.wav", clip, RATE)
    for d in (1, 53, 159):
        write_wav(tmp_path / f"late{d}.wav", np.concatenate([np.zeros(d), clip]), RATE)
        got = clips_features([tmp_path / "a.wav"] * 3, FE, seconds=SECONDS, delay=d)
        want = clip_features(tmp_path / f"late{d}.wav", FE, seconds=SECONDS)
        np.testing.assert_allclose(got, np.repeat(want[None], 3, axis=0), atol=1e-5)
        assert not np.allclose(got[0], clips_features([tmp_path / "a.wav"], FE, seconds=SECONDS)[0], atol=1e-3)
    with pytest.raises(InputError, match="delay=4000 samples; expected 0 to 3999"):
        clips_features([tmp_path / "a.wav"], FE, seconds=SECONDS, delay=4000)


def test_phases_train_on_every_framing_and_validate_on_one(tmp_path):
    root = make_set(tmp_path)
    task = ClassifyTask(root, frontend=FE, clip_seconds=SECONDS, context=0.0, phases=4, mask_bands=0, gain_db=0.0)
    assert task._delays == [40, 80, 120] and task._shifted.shape == (3, 24, 25, 16)
    train_paths = [root / r for r in task.train_paths]
    np.testing.assert_array_equal(task._shifted[1], clips_features(train_paths, FE, seconds=SECONDS, delay=80))
    np.testing.assert_array_equal(task.features, task_of(root).features)  # validation and phase 0 unchanged
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(30):
        x, y = task.batch(rng, 8)
        for row in x:
            framings = np.concatenate([task.features[task._train][None], task._shifted])  # (4, N, L, M)
            hit = np.argwhere(np.all(framings == row[:25], axis=(2, 3)))
            assert len(hit) >= 1
            seen.update(int(k) for k in hit[:, 0])
    assert seen == {0, 1, 2, 3}  # every framing drawn
    assert task.checkpoint_info()["task"]["phases"] == 4
    for bad in (0, 161, 2.5):
        with pytest.raises(InputError, match=f"phases={bad}; expected a whole number from 1"):
            task_of(root, phases=bad)
