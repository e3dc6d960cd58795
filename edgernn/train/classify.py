"""Keyword spotting: many-to-one classification of short audio clips, in numpy. Torch-free.

The data set is a folder in the Google Speech Commands layout:

    DIR/<class>/<speaker>_nohash_<n>.wav     one clip per file, any rate (resampled), mono or not
    DIR/validation_list.txt                  optional: held-out clips, relative to DIR
    DIR/testing_list.txt                     optional: clips kept out of training and validation

Every clip's log-mel features are computed once, at construction. Validation holds out whole
speakers: those named by validation_list.txt, else a stable hash of the speaker id (as Speech
Commands does), so a score measures new voices, never a voice already heard.

Training examples are built for a model that will run on a live microphone with its state never
reset: each target clip is preceded by up to `context` seconds of another random clip, and may be
followed by up to `trailing` seconds of silence (digital zeros, or a stretch of a `_silence_`
clip), and the label is read at the last frame: a word's label holds after the word is over. A
`_silence_` target is never preceded by a keyword (that keyword would still be the last word
heard). Shape legend: N clips, L frames, M mel bands, C classes.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from edgernn.audio.wav import read_wav
from edgernn.core.errors import InputError
from edgernn.audio.frontend import LogMel, hz_to_mel

SPEAKER_SEP = "_nohash_"  # <speaker>_nohash_<n>.wav: what comes before it is the speaker id
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
SILENCE = "_silence_"
NOT_KEYWORDS = ("_silence_", "_unknown_")  # the labels that are no keyword (edgernn.runtime.events.IGNORED)
NOISE_DIR = "_background_noise_"  # Speech Commands' long noise recordings: not a class
LAYOUT = "DIR/<class>/<speaker>_nohash_<n>.wav"
_HASH_BUCKETS = 2**27  # Speech Commands' MAX_NUM_WAVS_PER_CLASS + 1: keeps its split stable
_EVAL_CHUNK = 512  # clips per predict call in evaluate: bounds memory on large sets
_FEATURE_CHUNK = 16  # clips per front-end call: 1600 frames of 1 s clips, one FFT block


def clip_features(path, frontend: LogMel = LogMel(), *, seconds: float | None = None) -> np.ndarray:
    """One WAV file -> (L, M) float32 log-mel features, L = frontend.frames(samples).

    The audio is resampled to the front end's rate; with `seconds`, it is first zero-padded or
    cut at the end to exactly that long, so every clip gives the same number of frames.
    """
    samples, _ = read_wav(path, sample_rate=frontend.sample_rate)
    if seconds is not None:
        want = int(round(seconds * frontend.sample_rate))
        samples = np.pad(samples[:want], (0, max(0, want - len(samples))))
    return frontend.compute(samples)


def clips_features(paths, frontend: LogMel = LogMel(), *, seconds: float, delay: int = 0) -> np.ndarray:
    """Many WAV files -> (N, L, M) float32, equal to stacking `clip_features(p, frontend, seconds=seconds)`.

    With `delay`, each clip starts that many zero samples late (its end cut to keep `seconds`):
    a delay of a fraction of a hop puts the hops at another phase of the sound, as a microphone
    stream, which starts anywhere, does.

    Clips go through the front end a few dozen at a time, laid end to end with hop-aligned zeros
    before each that cover its window's history (the zeros `compute` puts before one clip): one
    large matrix product per batch instead of thousands of small ones, which a busy multi-threaded
    BLAS runs far slower.
    """
    hop = frontend.hop
    frames = frontend.frames(int(round(seconds * frontend.sample_rate)))
    lead = -(-(frontend.window - hop) // hop) * hop  # >= window - hop zeros, a whole number of hops
    seg = lead + frames * hop
    if not 0 <= delay < frames * hop:
        raise InputError(f"delay={delay} samples; expected 0 to {frames * hop - 1} (shorter than the clip)")
    out = np.empty((len(paths), frames, frontend.mels), np.float32)
    for lo in range(0, len(paths), _FEATURE_CHUNK):
        chunk = paths[lo:lo + _FEATURE_CHUNK]
        signal = np.zeros(len(chunk) * seg, np.float32)
        for k, path in enumerate(chunk):
            samples = read_wav(path, sample_rate=frontend.sample_rate)[0][:frames * hop - delay]
            at = k * seg + lead + delay
            signal[at:at + len(samples)] = samples
        out[lo:lo + len(chunk)] = frontend.compute(signal).reshape(len(chunk), seg // hop, -1)[:, lead // hop:]
    return out


def speaker_of(path) -> str:
    """The speaker id of a clip: the file name before `_nohash_` (the whole stem without it)."""
    stem = Path(path).stem
    return stem.split(SPEAKER_SEP, 1)[0]


def hash_held_out(speaker: str, val_fraction: float) -> bool:
    """Whether `speaker` is held out, by the Speech Commands rule: stable across runs and machines."""
    bucket = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16) % _HASH_BUCKETS
    return bucket * (100.0 / (_HASH_BUCKETS - 1)) < 100.0 * val_fraction


def scan(data_dir) -> dict[str, list[Path]]:
    """{class: sorted WAV paths} for every class folder of `data_dir` that holds WAV files."""
    root = Path(data_dir)
    if not root.is_dir():
        what = "is a file" if root.exists() else "no such folder"
        raise InputError(f"{root}: {what}; expected a folder of class folders of WAV files ({LAYOUT})")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != NOISE_DIR)
    classes, empty = {}, []
    for folder in folders:
        wavs = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")
        if wavs:
            classes[folder.name] = wavs
        else:
            empty.append(folder.name)
    if not classes:
        found = f"class folders {empty[:5]} without WAV files" if empty else "no class folders"
        raise InputError(f"{root}: empty folder ({found}); expected WAV files laid out as {LAYOUT}")
    if empty:
        # Usable without them, but the model will not know those classes: say so.
        warnings.warn(f"{root}: class folders {empty} hold no WAV files and are left out; "
                      "add clips to them or remove them", stacklevel=3)
    if len(classes) < 2:
        raise InputError(f"{root}: only one class ({next(iter(classes))}); expected at least 2 class folders "
                         f"({LAYOUT}), e.g. a keyword and _unknown_")
    return classes


def _read_list(root: Path, name: str, known: set[str]) -> set[str] | None:
    """The clips named in DIR/name that exist (as DIR-relative posix paths); None if no such file."""
    path = root / name
    if not path.is_file():
        return None
    listed = {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}
    missing = sorted(listed - known)
    if missing:
        warnings.warn(f"{path}: {len(missing)} listed clips are not among the class folders' WAV files "
                      f"(first: {missing[0]}); they are ignored", stacklevel=4)
    return listed & known


def split(root: Path, clips: dict[str, list[Path]], *, val_fraction: float = 0.2) -> tuple[list, list, set]:
    """(train, val, val_speakers): DIR-relative clip paths, no speaker in both lists.

    With validation_list.txt, every speaker it names is held out whole (with a warning if it named
    only some of that speaker's clips); without it, speakers are held out by `hash_held_out`.
    Clips in testing_list.txt are in neither list.
    """
    rel = [f"{label}/{p.name}" for label, paths in clips.items() for p in paths]
    known = set(rel)
    testing = _read_list(root, TESTING_LIST, known) or set()
    listed = _read_list(root, VALIDATION_LIST, known)
    pool = [r for r in rel if r not in testing]
    if listed is None:
        val_speakers = {s for s in map(speaker_of, pool) if hash_held_out(s, val_fraction)}
        source = f"speakers hashed into the held-out {val_fraction:.0%}"
    else:
        val_speakers = {speaker_of(r) for r in listed}
        source = f"speakers named in {VALIDATION_LIST}"
    val = [r for r in pool if speaker_of(r) in val_speakers]
    train = [r for r in pool if speaker_of(r) not in val_speakers]
    if listed is not None and len(val) > len(listed - testing):
        warnings.warn(f"{root / VALIDATION_LIST} names only some clips of its speakers; all {len(val)} clips of "
                      f"those {len(val_speakers)} speakers are held out, so no voice is in both splits", stacklevel=3)
    if not val:
        raise InputError(f"{root}: no validation clips after the split (no {source}, among "
                         f"{len(set(map(speaker_of, pool)))} speakers); expected held-out speakers: add "
                         f"{VALIDATION_LIST} naming their clips, or clips from more speakers ({LAYOUT})")
    if not train:
        raise InputError(f"{root}: no training clips: every speaker is held out ({source}); expected some "
                         f"speakers left for training: name fewer clips in {VALIDATION_LIST}")
    return train, val, val_speakers


class ClassifyTask:
    """Keyword spotting over a Speech-Commands-style folder: (N, L, M) log-mel -> class at the last frame.

    Args:
        data_dir: the folder (see the module docstring).
        frontend: the log-mel front end; its config travels into the model's metadata.
        seed: picks the clips before each held-out clip in `evaluate_streaming`.
        clip_seconds: clips are padded or cut at the end to this length.
        context: seconds of another clip (0 to this, drawn per batch) before each training clip.
        trailing: seconds of silence (0 to this, drawn per batch) after each training clip: exact
            digital silence (the front end's floor) or a stretch of a `_silence_` clip, half each.
        gain_db: each training clip and its context get a random gain of +-gain_db (log domain).
        mask_bands: each training example has up to this many adjacent mel bands set to their
            mean (SpecAugment's frequency mask), so no single band decides.
        warp: vocal tract length perturbation: half the training examples have their frequency
            axis scaled by a factor drawn log-uniformly in [1 / (1 + warp), 1 + warp] (formants move
            up or down together, as between a long and a short vocal tract), read off the mel bands
            by linear interpolation. 0 turns it off.
        val_fraction: speakers held out when there is no validation_list.txt.
        phases: the training clips' features are also computed with the clip delayed by k/phases of
            a hop, k = 1 .. phases - 1, and each training example draws one of them: a live stream's
            hops fall anywhere in a word, and a model that met one framing only can miss or fire
            late at another. Costs `phases` times the training features' memory. Validation
            stays at phase 0.
    """

    name = "classify"
    metric = "accuracy"
    loss = "ce"
    greater_is_better = True
    label_frames = 1  # frames at the end of the last batch that carry its labels (see `batch`)

    def __init__(self, data_dir, *, frontend: LogMel = LogMel(), seed: int = 0, clip_seconds: float = 1.0,
                 context: float = 1.0, gain_db: float = 6.0, mask_bands: int = 6, val_fraction: float = 0.2,
                 trailing: float = 0.0, warp: float = 0.0, phases: int = 1):
        if not 0.0 < val_fraction < 1.0:
            raise InputError(f"val_fraction={val_fraction}; expected a fraction between 0 and 1, e.g. 0.2")
        if clip_seconds <= 0 or context < 0 or gain_db < 0 or mask_bands < 0 or trailing < 0 or not warp >= 0:
            raise InputError(f"clip_seconds={clip_seconds}, context={context}, gain_db={gain_db}, mask_bands="
                             f"{mask_bands}, trailing={trailing}, warp={warp}; expected clip_seconds > 0 and the "
                             "others >= 0")
        if not isinstance(phases, (int, np.integer)) or not 1 <= phases <= frontend.hop:
            raise InputError(f"phases={phases}; expected a whole number from 1 (off) to the hop, {frontend.hop} "
                             "samples, e.g. 4")
        if frontend.frames(int(round(clip_seconds * frontend.sample_rate))) < 1:
            raise InputError(f"clip_seconds={clip_seconds} is shorter than one hop ({frontend.hop} samples at "
                             f"{frontend.sample_rate} Hz); expected clips of at least one frame, e.g. 1.0")
        self.data_dir = Path(data_dir)
        self.frontend = frontend
        clips = scan(self.data_dir)
        train, val, val_speakers = split(self.data_dir, clips, val_fraction=val_fraction)
        self.labels = sorted(clips)
        self.spec_args = {"features": frontend.mels, "outputs": len(self.labels), "readout": "last",
                          "task": "classify"}
        self.frontend_meta = frontend.to_meta()
        self.val_speakers = sorted(val_speakers)
        self.train_paths, self.val_paths = train, val
        self.features = clips_features([self.data_dir / r for r in train + val], frontend,
                                       seconds=clip_seconds)  # (N, L, M)
        self.phases = int(phases)
        self._delays = [round(k * frontend.hop / self.phases) for k in range(1, self.phases)]
        # (phases - 1, N_train, L, M): row i of each is training clip i, delayed by one of _delays
        self._shifted = None
        if self._delays:
            self._shifted = np.empty((len(self._delays),) + (len(train),) + self.features.shape[1:], np.float32)
            for k, d in enumerate(self._delays):
                self._shifted[k] = clips_features([self.data_dir / r for r in train], frontend, seconds=clip_seconds,
                                                  delay=d)
        self.targets = np.array([self.labels.index(r.split("/", 1)[0]) for r in train + val], np.int64)
        self._train = np.arange(len(train))
        self._val = np.arange(len(train), len(train) + len(val))
        self.context_frames = min(frontend.frames(int(round(context * frontend.sample_rate))),
                                  self.features.shape[1])
        self.trailing_frames = frontend.frames(int(round(trailing * frontend.sample_rate)))
        keyword = np.array([label not in NOT_KEYWORDS for label in self.labels])
        self._quiet_context = self._train[~keyword[self.targets[self._train]]]  # before a _silence_ target
        silent = [self.labels.index(SILENCE)] if SILENCE in self.labels else []
        self._silence_clips = self._train[np.isin(self.targets[self._train], silent)]
        self._log_gain = gain_db * np.log(10.0) / 10.0  # dB of power -> natural log of power
        self._log_floor = float(np.log(frontend.floor))
        self.seed = seed
        self.mask_bands = min(int(mask_bands), frontend.mels - 1)
        self._stats = self._band_stats()
        self._band_mean = self._stats[0].astype(np.float32)  # (M,): what a masked band becomes
        self.warp = float(warp)
        self._centres_hz = frontend.band_centres  # (M,) Hz, for the warp
        counts = np.bincount(self.targets[self._train], minlength=len(self.labels))
        self.majority = int(np.argmax(counts))

    def _band_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(M,) mean and std of the training features, band by band; a constant band gets std 1."""
        x = self.features[self._train].reshape(-1, self.features.shape[-1])
        mean = x.mean(axis=0, dtype=np.float64)
        std = np.sqrt(np.mean(np.square(x - mean), axis=0, dtype=np.float64))
        return mean, np.where(std > 1e-6, std, 1.0)

    @property
    def normalization(self) -> dict:
        """Per-band mean and std of the training features, for RNNModel.set_normalization."""
        mean, std = self._stats
        return {"in_mean": mean.tolist(), "in_std": std.tolist()}

    def batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n random training clips, each after a random stretch of another: x (N, P+L, M), y (N,)."""
        target = rng.choice(self._train, n)
        x = self.features[target]
        if self._shifted is not None:
            phase = rng.integers(0, self.phases, n)
            late = phase > 0
            x[late] = self._shifted[phase[late] - 1, target[late]]  # _train is 0 .. N_train - 1
        x = self._gain(rng, x)
        p = int(rng.integers(0, self.context_frames + 1))  # one length per batch: no padding needed
        if p:
            source = rng.choice(self._train, n)
            if len(self._quiet_context) and SILENCE in self.labels:  # no keyword before a _silence_ target
                quiet = self.targets[target] == self.labels.index(SILENCE)
                source[quiet] = rng.choice(self._quiet_context, int(quiet.sum()))
            start = rng.integers(0, self.features.shape[1] - p + 1, n)
            before = self.features[source[:, None], start[:, None] + np.arange(p)]  # (N, P, M)
            x = np.concatenate([self._gain(rng, before), x], axis=1)
        if self.warp:
            x = self._warp(rng, x)
        q = int(rng.integers(0, self.trailing_frames + 1)) if self.trailing_frames else 0
        self.label_frames = q + 1  # the clip's last frame and the silence after it: the loss reads them all
        if q:
            x = np.concatenate([x, self._silence_after(rng, n, q)], axis=1)
        if self.mask_bands:
            x = self._mask(rng, x)
        return x.astype(np.float32, copy=False), self.targets[target]

    def _silence_after(self, rng: np.random.Generator, n: int, q: int) -> np.ndarray:
        """(N, Q, M): digital silence (the log floor) for half the examples, else `_silence_` frames."""
        out = np.full((n, q, self.features.shape[-1]), self._log_floor, np.float32)
        if len(self._silence_clips):
            noisy = rng.random(n) < 0.5
            src = rng.choice(self._silence_clips, n)
            frames = self.features[src[:, None], np.arange(q)[None, :] % self.features.shape[1]]
            out[noisy] = self._gain(rng, frames[noisy])
        return out

    def _warp(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        """Half the examples with their spectrum S(f) replaced by S(f / a), a log-uniform in 1 +- warp."""
        n, m = len(x), x.shape[-1]
        span = np.log1p(self.warp)
        alpha = np.where(rng.random(n) < 0.5, np.exp(rng.uniform(-span, span, n)), 1.0)  # (N,)
        source_hz = self._centres_hz[None, :] / alpha[:, None]  # (N, M): where band k reads from
        pos = np.interp(hz_to_mel(source_hz), hz_to_mel(self._centres_hz), np.arange(m))  # clamps at the ends
        lo = np.minimum(pos.astype(np.int64), m - 1)
        hi = np.minimum(lo + 1, m - 1)
        w = (pos - lo).astype(np.float32)[:, None, :]  # (N, 1, M)
        take = lambda idx: np.take_along_axis(x, np.broadcast_to(idx[:, None, :], x.shape), axis=2)  # noqa: E731
        return take(lo) * (1.0 - w) + take(hi) * w

    def _mask(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        """Up to `mask_bands` adjacent bands per example replaced by their training mean."""
        n, m = len(x), x.shape[-1]
        width = rng.integers(0, self.mask_bands + 1, n)
        lo = rng.integers(0, m - width + 1)  # (N,)
        bands = np.arange(m)
        masked = (bands >= lo[:, None]) & (bands < (lo + width)[:, None])  # (N, M)
        return np.where(masked[:, None, :], self._band_mean, x)

    def _gain(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        """A random gain per clip: a constant added to log power, with the floor kept a floor."""
        if not self._log_gain:
            return x
        g = rng.uniform(-self._log_gain, self._log_gain, (len(x), 1, 1)).astype(np.float32)
        return np.maximum(x + g, self._log_floor)

    def evaluate(self, predict) -> tuple[float, float]:
        """(accuracy, majority baseline) on the held-out speakers, read at each clip's last frame.

        `predict` takes raw features (N, L, M) and returns logits (N, L, C), from a zero state.
        """
        return self._accuracy(predict, self.features[self._val]), self.baseline

    def evaluate_streaming(self, predict) -> float:
        """Accuracy on the held-out clips each preceded by a whole other held-out clip (state not reset)."""
        rng = np.random.default_rng(self.seed)
        x = self.features[self._val]
        before = self.features[rng.permutation(self._val)]
        return self._accuracy(predict, np.concatenate([before, x], axis=1))

    def _accuracy(self, predict, x: np.ndarray) -> float:
        y = self.targets[self._val]
        hits = 0
        for lo in range(0, len(x), _EVAL_CHUNK):
            logits = predict(x[lo:lo + _EVAL_CHUNK])[:, -1]  # (N', C)
            hits += int(np.sum(np.argmax(logits, axis=-1) == y[lo:lo + _EVAL_CHUNK]))
        return hits / len(x)

    @property
    def baseline(self) -> float:
        """Accuracy of always answering the most frequent training class."""
        return float(np.mean(self.targets[self._val] == self.majority))

    def checkpoint_info(self) -> dict:
        return {"task": {"name": self.name, "data": os.fspath(self.data_dir), "classes": self.labels,
                         "train_clips": len(self._train), "val_clips": len(self._val),
                         "val_speakers": self.val_speakers, "phases": self.phases}}
