"""Synthesise a small keyword-spotting data set offline with espeak-ng.

    python tools/make_kws_data.py OUT_DIR [--per-class N] [--seed S] [--jobs J]
                                  [--val-voices NAME ...] [--val-fraction F] [--force]

The layout follows Google Speech Commands, so the usual loaders read it unchanged:

    OUT_DIR/<class>/<speaker>_nohash_<n>.wav   16 kHz, mono, 16-bit PCM, exactly 1.0 s
    OUT_DIR/validation_list.txt                held-out files, relative to OUT_DIR
    OUT_DIR/classes.txt  OUT_DIR/README.txt    class order; how the set was made

A speaker is one espeak-ng (voice, variant) pair, e.g. `en-us+m3`, written `en-us_m3` in file
names. Validation speakers never appear in training, and every class (`_silence_` too) is split
in the same proportion. Each clip is its own espeak-ng call with a random speed and pitch; the
word is trimmed, resampled 22050 -> 16000 Hz with a windowed-sinc filter, placed at a random
offset with a random gain, and mixed with white/pink/brown noise (sometimes mains hum).
The same seed gives byte-identical WAV files, whatever --jobs is.

Default size (300 clips x 12 classes = 3600 clips, 113 MB): 52-56 s wall on 2 cores (Debian 12,
espeak-ng 1.51), about 15 ms of espeak-ng and numpy per clip.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from itertools import cycle, islice
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1.0 s clips
MAX_WORD_SAMPLES = int(0.9 * SAMPLE_RATE)  # longer words are re-spoken faster, never cut
FRAME = SAMPLE_RATE // 100  # 10 ms, for silence trimming

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "learn", "follow", "forward", "backward", "visual", "music", "water", "table", "green",
    "paper", "orange", "yellow", "window", "apple", "garden", "river", "monkey", "pencil",
    "doctor", "tiger",
)  # fmt: skip
# English accents shipped with espeak-ng 1.51 (mbrola voices need extra packages: left out).
VOICES = (
    "en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)  # fmt: skip
# Human-sounding variants ("" = the voice's own); robots, long echoes and whispers left out.
VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt2",
    "klatt3", "Andy", "Annie", "Denis", "Mike", "belinda", "grandpa", "linda", "steph",
    "travis", "quincy", "robert",
)  # fmt: skip

SPEED_WPM = (120, 220)  # espeak-ng -s
PITCH = (20, 80)  # espeak-ng -p
PEAK_DBFS = (-24.0, -1.0)  # word peak after gain
SNR_DB = (10.0, 40.0)  # word RMS over noise RMS
HUM_PROBABILITY = 0.25
HUM_BELOW_WORD_DB = (25.0, 45.0)
SILENCE_DBFS = (-96.0, -25.0)  # down to below one LSB: near-digital silence
NOISE_SLOPES = {"white": 0.0, "pink": 0.5, "brown": 1.0}  # amplitude ~ f ** -slope
ESPEAK_MISSING = "espeak-ng not found; install it with apt-get install espeak-ng"


class ToolError(Exception):
    """A one-line problem the user can fix; main() prints it and exits with status 2."""


@dataclass(frozen=True)
class Speaker:
    voice: str  # espeak-ng voice, e.g. "en-us"
    variant: str  # espeak-ng variant, e.g. "m3"; "" for the voice's own

    @property
    def spec(self) -> str:  # what espeak-ng -v takes
        return f"{self.voice}+{self.variant}" if self.variant else self.voice

    @property
    def id(self) -> str:  # safe in a file name, and free of "_nohash_"
        return re.sub(r"[^A-Za-z0-9-]", "_", self.spec.replace("+", "_"))


@dataclass(frozen=True)
class Clip:
    label: str  # class folder
    word: str | None  # what is spoken; None for _silence_
    speaker: Speaker
    number: int  # n in <speaker>_nohash_<n>.wav, counted per (class, speaker)
    seed: tuple[int, ...]  # everything random about this clip derives from it
    validation: bool

    @property
    def relpath(self) -> str:
        return f"{self.label}/{self.speaker.id}_nohash_{self.number}.wav"


def find_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ToolError(ESPEAK_MISSING)
    return exe


def espeak_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return out.split("Data at")[0].strip() or "unknown"


def installed_speakers(exe: str) -> list[Speaker]:
    """VOICES x VARIANTS, less whatever this espeak-ng install lacks."""
    listing = subprocess.run([exe, "--voices"], capture_output=True, text=True).stdout
    voices = {line.split()[1] for line in listing.splitlines()[1:] if line.split()}
    listing = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True).stdout
    variants = {t[3:] for t in listing.split() if t.startswith("!v/")} | {""}
    missing = sorted(set(VOICES) - voices) + sorted(set(VARIANTS) - variants)
    if missing:
        note = f"make_kws_data: note: this espeak-ng lacks {', '.join(missing)}; skipping them"
        print(note, file=sys.stderr)
    speakers = [Speaker(v, x) for v in VOICES if v in voices for x in VARIANTS if x in variants]
    if not speakers:
        raise ToolError(f"espeak-ng at {exe} has none of the English voices {', '.join(VOICES)}")
    return speakers


def parse_wav(data: bytes) -> tuple[int, np.ndarray]:
    """(rate, float samples) from espeak-ng's --stdout WAV, whose sizes are placeholders."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ToolError(f"espeak-ng wrote {len(data)} bytes that are not a WAV file")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if chunk == b"fmt ":
            rate = int.from_bytes(body[4:8], "little")
        elif chunk == b"data":
            pcm = body[: len(body) // 2 * 2]
            return rate, np.frombuffer(pcm, "<i2").astype(np.float64) / 32768.0
        pos += 8 + size + (size & 1)
    raise ToolError("espeak-ng wrote a WAV file without a data chunk")


def speak(exe: str, word: str, speaker: Speaker, *, speed: int, pitch: int) -> np.ndarray:
    """The word at SAMPLE_RATE, as float samples; -a 60 keeps loud variants from clipping."""
    cmd = [exe, "-v", speaker.spec, "-s", str(speed), "-p", str(pitch), "-a", "60", "--stdout"]
    result = subprocess.run([*cmd, word], capture_output=True, timeout=60)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise ToolError(f"{shlex.join([*cmd, word])} failed: {reason[-1]}")
    rate, audio = parse_wav(result.stdout)
    return resample(audio, rate, SAMPLE_RATE)


@lru_cache(maxsize=4)
def _sinc_bank(up: int, down: int, half: int) -> np.ndarray:
    """(up, 2*half) Kaiser-windowed sinc taps, one row per output phase, each summing to 1."""
    cutoff = 0.5 * min(1.0, up / down) * 0.9  # cycles per input sample, 10% below Nyquist
    phase = np.arange(up)[:, None] / up
    u = np.arange(-half + 1, half + 1)[None, :] - phase  # tap time minus output time
    window = np.i0(8.0 * np.sqrt(np.clip(1.0 - (u / half) ** 2, 0.0, None))) / np.i0(8.0)
    taps = np.sinc(2.0 * cutoff * u) * window
    return taps / taps.sum(axis=1, keepdims=True)


def resample(x: np.ndarray, src: int, dst: int, *, half: int = 32) -> np.ndarray:
    """Band-limited polyphase resampling; the filter cuts at 0.45 of the lower rate."""
    if src == dst:
        return x.copy()
    g = math.gcd(src, dst)
    up, down = dst // g, src // g
    n_out = -(-len(x) * up // down)
    pos = np.arange(n_out) * down
    base, phase = pos // up, pos % up  # output n sits at input base + phase/up
    padded = np.pad(x, (half, half))
    index = base[:, None] + 1 + np.arange(2 * half)[None, :]  # (n_out, 2*half)
    return np.einsum("ij,ij->i", padded[index], _sinc_bank(up, down, half)[phase])


def trim_silence(x: np.ndarray, *, floor_db: float = -50.0) -> np.ndarray:
    """Drop leading/trailing 10 ms frames more than floor_db below the loudest; keep 10 ms."""
    n = len(x) // FRAME
    frames = np.sqrt(np.mean(x[: n * FRAME].reshape(n, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(frames > frames.max(initial=0.0) * 10 ** (floor_db / 20))
    if len(loud) == 0 or frames.max() == 0.0:
        return x[:0]
    start = max(0, (loud[0] - 1) * FRAME)
    return x[start : (loud[-1] + 2) * FRAME]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def db(value: float) -> float:
    return 10.0 ** (value / 20.0)


def coloured_noise(rng: np.random.Generator, colour: str) -> np.ndarray:
    """CLIP_SAMPLES of unit-RMS white, pink or brown noise, shaped in the frequency domain."""
    bins = CLIP_SAMPLES // 2 + 1
    spectrum = rng.standard_normal(bins) + 1j * rng.standard_normal(bins)
    spectrum *= np.maximum(np.arange(bins), 1.0) ** -NOISE_SLOPES[colour]
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, CLIP_SAMPLES)
    return noise / rms(noise)


def mains_hum(rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 50 or 60 Hz hum with four decaying harmonics at random phases."""
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    f0 = float(rng.choice([50.0, 60.0]))
    hum = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    return hum / rms(hum)


def background(rng: np.random.Generator, level: float) -> np.ndarray:
    """Noise of a random colour at RMS `level`, sometimes with hum a little below it."""
    noise = coloured_noise(rng, str(rng.choice(list(NOISE_SLOPES)))) * level
    if rng.random() < HUM_PROBABILITY:
        noise += mains_hum(rng) * level * db(-rng.uniform(0.0, 10.0))
    return noise


def spoken_word(exe: str, clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """The trimmed word at a random speed and pitch, re-spoken faster if over 0.9 s."""
    speed, pitch = int(rng.integers(*SPEED_WPM, endpoint=True)), int(rng.integers(*PITCH))
    for _ in range(4):
        word = trim_silence(speak(exe, clip.word, clip.speaker, speed=speed, pitch=pitch))
        if len(word) == 0:
            raise ToolError(f"espeak-ng -v {clip.speaker.spec} said nothing for {clip.word!r}")
        if len(word) <= MAX_WORD_SAMPLES:
            return word
        speed = math.ceil(speed * len(word) / (0.85 * SAMPLE_RATE))  # duration ~ 1 / speed
    raise ToolError(f"{clip.word!r} by {clip.speaker.spec} stays over 0.9 s even at -s {speed}")


def render(exe: str, clip: Clip) -> np.ndarray:
    """One clip of float samples, a pure function of the clip's seed (and espeak-ng)."""
    rng = np.random.default_rng(clip.seed)
    if clip.word is None:
        return background(rng, db(rng.uniform(*SILENCE_DBFS)))
    word = spoken_word(exe, clip, rng)
    word *= db(rng.uniform(*PEAK_DBFS)) / np.abs(word).max()
    audio = np.zeros(CLIP_SAMPLES)
    start = int(rng.integers(0, CLIP_SAMPLES - len(word), endpoint=True))
    audio[start : start + len(word)] = word
    audio += background(rng, rms(word) * db(-rng.uniform(*SNR_DB)))
    if rng.random() < HUM_PROBABILITY:  # low hum under the word, whatever the noise
        audio += mains_hum(rng) * rms(word) * db(-rng.uniform(*HUM_BELOW_WORD_DB))
    return audio


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(pcm.tobytes())


def pick_validation(
    speakers: list[Speaker], *, names: list[str] | None, fraction: float, seed: int
) -> set[Speaker]:
    """Speakers named (ids, `voice+variant` specs, or whole voices), else a seeded fraction."""
    if names:
        unknown = [n for n in names if not any(n in (s.id, s.spec, s.voice) for s in speakers)]
        if unknown:
            voices = ", ".join(sorted({s.voice for s in speakers}))
            raise ToolError(f"--val-voices: no speaker {', '.join(unknown)}; voices are {voices}")
        return {s for s in speakers if {s.id, s.spec, s.voice} & set(names)}
    order = np.random.default_rng([seed, 0xD1CE]).permutation(len(speakers))
    return {speakers[i] for i in order[: round(fraction * len(speakers))]}


def round_robin(items: list, n: int, rng: np.random.Generator) -> list:
    """n items cycling through a shuffled copy of `items`."""
    return list(islice(cycle([items[i] for i in rng.permutation(len(items))]), n)) if items else []


def plan_class(
    label: str, words: list, speakers: list[Speaker], val: set[Speaker], *, n: int, seed: tuple
) -> list[Clip]:
    """n clips, split train/validation in proportion to the speakers held out."""
    rng = np.random.default_rng(seed)
    held_out = [s for s in speakers if s in val]
    n_val = round(n * len(held_out) / len(speakers))
    n_val = max(n_val, 1) if held_out and n >= 2 else n_val  # tiny sets still get validation
    train = [s for s in speakers if s not in val]
    chosen = round_robin(held_out, n_val, rng) + round_robin(train, n - n_val, rng)
    counts: dict[Speaker, int] = {}
    clips = []
    for i, (speaker, word) in enumerate(zip(chosen, round_robin(words, n, rng), strict=True)):
        counts[speaker] = counts.get(speaker, -1) + 1
        clips.append(Clip(label, word, speaker, counts[speaker], (*seed, i), speaker in val))
    return clips


def plan(keywords: list[str], speakers: list[Speaker], val: set[Speaker], *, n: int, seed: int):
    """Classes in TensorFlow Speech Commands order, and every clip to make."""
    classes = [SILENCE, UNKNOWN, *keywords]
    words = {SILENCE: [None], UNKNOWN: list(UNKNOWN_WORDS)}
    clips = []
    for k, label in enumerate(classes):
        clips += plan_class(label, words.get(label, [label]), speakers, val, n=n, seed=(seed, k))
    return classes, clips


def wait_all(futures: list) -> None:
    """Re-raise the first failure; count finished clips on stderr (with tqdm if installed)."""
    done = as_completed(futures)
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        done = tqdm(done, total=len(futures), unit="clip", file=sys.stderr, desc="make_kws_data")
    for i, future in enumerate(done, 1):
        future.result()
        if tqdm is None:
            end = "\n" if i == len(futures) else ""
            print(f"\rmake_kws_data: {i}/{len(futures)} clips", end=end, file=sys.stderr)


def make_clip(exe: str, clip: Clip, root: Path) -> None:
    write_wav(root / clip.relpath, render(exe, clip))


def make_clips(exe: str, clips: list[Clip], root: Path, *, jobs: int) -> None:
    for label in sorted({c.label for c in clips}):
        (root / label).mkdir()
    pool = ThreadPoolExecutor(max_workers=jobs)  # espeak-ng runs outside the GIL
    try:
        wait_all([pool.submit(make_clip, exe, clip, root) for clip in clips])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def describe(
    classes: list[str], clips: list[Clip], speakers: list[Speaker], val: set[Speaker], *,
    command: str, version: str,
) -> str:  # fmt: skip
    """README.txt: how the set was made and what is in it."""
    lines = [
        "Synthetic keyword-spotting data set, made offline with espeak-ng.",
        f"command: {command}",
        f"espeak-ng: {version}",
        f"format: {SAMPLE_RATE} Hz mono 16-bit PCM WAV, {CLIP_SAMPLES / SAMPLE_RATE:.1f} s",
        f"variation: -s {SPEED_WPM} wpm, -p {PITCH}, word peak {PEAK_DBFS} dBFS, SNR {SNR_DB} dB"
        f" of {'/'.join(NOISE_SLOPES)} noise, hum on some clips, _silence_ at {SILENCE_DBFS} dBFS",
        f"_unknown_ words: {' '.join(UNKNOWN_WORDS)}",
        f"clips: {len(clips)}, of which {sum(c.validation for c in clips)} in validation_list.txt",
        "class train validation",
    ]
    for label in classes:
        n_val = sum(c.validation for c in clips if c.label == label)
        lines.append(f"{label} {sum(c.label == label for c in clips) - n_val} {n_val}")
    for name, group in [("train", [s for s in speakers if s not in val]), ("validation", val)]:
        lines.append(f"{name} speakers ({len(group)}): {' '.join(sorted(s.id for s in group))}")
    return "\n".join(lines) + "\n"


def write_index(root: Path, classes: list[str], clips: list[Clip], readme: str) -> None:
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    held_out = sorted(c.relpath for c in clips if c.validation)
    (root / "validation_list.txt").write_text("".join(f"{p}\n" for p in held_out))
    (root / "README.txt").write_text(readme)


def umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def check_out_dir(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ToolError(f"OUT_DIR {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ToolError(f"OUT_DIR {out} exists and is not empty; pick another or pass --force")


def build(args: argparse.Namespace, *, command: str) -> Path:
    """Write the whole set into a temp folder beside OUT_DIR, then rename it into place."""
    out = Path(args.out_dir).resolve()
    check_out_dir(out, force=args.force)
    exe = find_espeak()
    speakers = installed_speakers(exe)
    names, fraction = args.val_voices, args.val_fraction
    val = pick_validation(speakers, names=names, fraction=fraction, seed=args.seed)
    classes, clips = plan(args.words, speakers, val, n=args.per_class, seed=args.seed)
    readme = describe(classes, clips, speakers, val, command=command, version=espeak_version(exe))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~umask())  # mkdtemp makes it private; the data set need not be
        make_clips(exe, clips, tmp, jobs=args.jobs)
        write_index(tmp, classes, clips, readme)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:  # Ctrl-C and SIGTERM too: never leave half a data set behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make_kws_data.py", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("out_dir", metavar="OUT_DIR", help="folder to create; must be absent or empty")
    add("--per-class", type=int, default=300, metavar="N",
        help="clips per class, _unknown_ and _silence_ included (default 300)")  # fmt: skip
    add("--seed", type=int, default=0, help="same seed, same WAV files (default 0)")
    add("--jobs", type=int, default=2, metavar="J", help="parallel espeak-ng calls (default 2)")
    add("--val-voices", nargs="+", metavar="NAME",
        help="held-out speakers: ids (en-us_m3), specs (en-us+m3) or whole voices (en-029);"
        " default: a seeded --val-fraction of all speakers")  # fmt: skip
    add("--val-fraction", type=float, default=0.2, metavar="F",
        help="share of speakers held out when --val-voices is not given (default 0.2)")  # fmt: skip
    add("--force", action="store_true", help="replace OUT_DIR even if it is not empty")
    add("--words", type=lambda s: s.split(","), default=list(KEYWORDS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.jobs < 1 or not 0.0 <= args.val_fraction < 1.0:
        parser.error("--per-class and --jobs must be at least 1, --val-fraction in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        out = build(args, command=shlex.join(["python", "tools/make_kws_data.py", *argv]))
    except ToolError as e:
        print(f"make_kws_data: error: {e}", file=sys.stderr)
        return 2
    print(f"make_kws_data: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a killed run cleans up
    sys.exit(main())
