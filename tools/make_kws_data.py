"""Synthesise a keyword-spotting data set offline from several speech engines, with augmentation.

    python tools/make_kws_data.py OUT_DIR [--per-class N] [--seed S] [--jobs J]
                                  [--engines espeak,festival] [--unseen festival-hts,flite]
                                  [--unseen-per-class M] [--unknown-per-class U]
                                  [--unknown-words base|wide|FILE]
                                  [--val-fraction F] [--test-fraction F]
                                  [--val-voices NAME ...] [--recordings DIR ...] [--force]

The layout follows Google Speech Commands, so the usual loaders read it unchanged:

    OUT_DIR/<class>/<speaker>_nohash_<n>.wav   16 kHz, mono, 16-bit PCM, exactly 1.0 s
    OUT_DIR/validation_list.txt                validation speakers' files (checkpoint choice)
    OUT_DIR/testing_list.txt                   test speakers' files (reported once, never used to choose)
    OUT_DIR/classes.txt  OUT_DIR/README.txt    class order; how the set was made

Engines (Debian packages, and real recordings where you have them):
- `espeak`: espeak-ng, every English voice x every variant it lists (robots and whispers too),
  one call per clip at a random speed (-s) and pitch (-p). Speaker `en-us_m3`.
- `festival`: Festival's diphone voices kal and ked (festvox-kallpc16k, festvox-kdlpc16k), each
  at several target F0 means (variants `f70` ... `f230`); duration stretch drawn per clip.
  Speaker `fest-kal_f110`.
- `festival-hts`: Festival's HTS voice cmu_us_slt_arctic_hts (festvox-us-slt-hts), pitch moved
  by -4..+4 semitones in numpy (variants `pm4` ... `pp4`). Speaker `hts-slt_p0`.
- `flite`: Flite's voices kal, kal16, awb, rms, slt, at several F0 targets. Speaker `flite-rms_f100`.
- `festival-intl`: Festival's Italian, Finnish, Czech and Russian voices (INTL_VOICES) saying the
  keywords in their own spelling (INTL_SPELLINGS), pitch moved like festival-hts. Speaker `intl-lj_pp2`.
- `rhvoice`: RHVoice's English voices (RHVOICE_VOICES: alan, bdl, clb, evgeniy-eng, ksp, lyubov; three
  CMU Arctic speakers among them, two female), built from source (no Debian package) with RHVoice-test
  on PATH, at five pitch levels (variants `t70` ... `t130`); speaking rate drawn per clip.
  slt is left out: it is the festival-hts test voice's speaker. Speaker `rhv-clb_t85`.
- `recorded` (--recordings DIR): real clips in the Speech Commands layout, the word trimmed and
  augmented like the others; one speaker per Speech Commands speaker hash. Speaker `rec-0a7c2a8d`.
  Several folders may be given; each one's new speakers are split on their own.

A speaker is one (engine, voice, variant). Speakers of the `--engines` are split three ways per
engine by a seeded permutation (train / validation / test, --val-fraction and --test-fraction);
every speaker of the `--unseen` engines is test only, so the test also measures engines the
training data never used. Every class, `_silence_` too, is split in the same proportions.

Each clip: the word from its engine, trimmed, then (edgernn/audio/augment.py, numpy) speed and
pitch perturbation, tempo, a random offset, a simulated room (image-source impulse response) on
some clips, a device response (telephone, small microphone, laptop, dull) on some, a random
gain, white/pink/brown/blue/violet noise at 5-40 dB SNR (mains hum on some), and on some clips a
digitally silent end (exact zeros after the word). `_silence_` clips are noise of every colour
and level, some with a digitally silent stretch or wholly zero. The same seed gives
byte-identical WAV files, whatever --jobs is.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import cycle, islice
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # edgernn.audio from a checkout
from edgernn.audio import augment  # noqa: E402  (numpy only: no torch)
from edgernn.audio.wav import read_wav  # noqa: E402

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1.0 s clips
MAX_WORD_SAMPLES = int(0.9 * SAMPLE_RATE)  # longer words are sped up, never cut
FRAME = SAMPLE_RATE // 100  # 10 ms, for silence trimming

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "learn", "follow", "forward", "backward", "visual", "music", "water", "table", "green",
    "paper", "orange", "yellow", "window", "apple", "garden", "river", "monkey", "pencil",
    "doctor", "tiger",
    # near misses of the keywords (no homophones: "know" would be "no")
    "yet", "yeah", "low", "so", "toe", "goal", "gold", "load", "light", "bright", "ride",
    "lift", "loft", "top", "stock", "step", "shop", "cup", "town", "dawn", "own", "hello",
)  # fmt: skip
# --unknown-words wide: UNKNOWN_WORDS and these, so that `_unknown_` is not a short list the model can
# learn by heart. Everyday words, function words and more near misses, which may differ from a keyword
# by one sound ("nose", "town", "stomp"); no keyword, no homophone of one ("know", "write", "of") and
# no keyword with an ending ("going", "offer", "upper").
WIDE_UNKNOWN_WORDS = (
    "yell", "mess", "less", "guess", "dress", "chess", "snow", "nose", "note", "now", "new", "knee", "nod",
    "pup", "hop", "cop", "jump", "gown", "brown", "crown", "doubt", "done", "loud", "laughed", "lest", "theft",
    "leaf", "lit", "fight", "night", "kite", "white", "ripe", "rice", "rock", "in", "and", "odd", "cough",
    "golf", "soft", "moth", "stomp", "drop", "spot", "stuck", "slow", "grow", "glow", "dough", "coat", "boat",
    "show", "road",
    "the", "but", "what", "when", "where", "why", "how", "this", "that", "with", "from", "have", "will",
    "just", "like", "make", "take", "see", "look", "come", "think", "want", "give", "tell", "work", "call",
    "find", "keep", "help", "play", "move", "live", "turn", "start", "hear", "sing", "read", "walk", "talk",
    "sit", "stand", "open", "close", "wait", "hold", "bring", "send", "buy", "pay", "eat", "drink", "sleep",
    "wash", "cook", "clean", "build", "break", "please", "thanks", "sorry", "maybe", "really", "never",
    "always", "again", "today", "tomorrow", "tonight", "something", "okay",
    "time", "year", "day", "week", "people", "family", "child", "world", "school", "city", "country",
    "money", "morning", "evening", "weather", "coffee", "tea", "milk", "bread", "cheese", "butter", "sugar",
    "salt", "pepper", "chicken", "fish", "soup", "pizza", "banana", "lemon", "tomato", "potato", "carrot",
    "cookie", "kitchen", "bedroom", "door", "floor", "wall", "chair", "sofa", "lamp", "clock", "phone",
    "computer", "keyboard", "mouse", "screen", "camera", "picture", "letter", "number", "minute", "hour",
    "moment", "question", "answer", "problem", "story", "friend", "sister", "brother", "mother", "father",
    "baby", "teacher", "student", "police", "farmer", "summer", "winter", "autumn", "birthday", "holiday",
    "party", "ticket", "train", "bus", "car", "bicycle", "airplane", "engine", "rocket", "planet", "moon",
    "star", "sun", "cloud", "rain", "wind", "storm", "island", "ocean", "beach", "mountain", "valley",
    "flower", "grass", "rabbit", "turtle", "spider", "zebra", "lion", "horse", "sheep", "duck", "elephant",
    "giraffe", "penguin", "dolphin", "butterfly", "basket", "button", "candle", "carpet", "castle", "circle",
    "ladder", "magnet", "market", "mirror", "pillow", "pocket", "wallet", "violin", "guitar", "drum", "piano",
    "blanket", "jacket", "shirt", "shoes", "hat", "glasses", "umbrella", "medicine", "hospital", "library",
    "museum", "restaurant", "station", "airport", "bridge", "street", "garage", "big", "small", "hot", "cold",
    "good", "bad", "fast", "sad", "early", "late", "easy", "heavy", "empty", "quiet", "noisy", "pretty",
    "funny", "purple", "black", "pink", "silver", "ten", "eleven", "twelve", "twenty", "hundred", "thousand",
)  # fmt: skip
UNKNOWN_SETS = {"base": UNKNOWN_WORDS, "wide": tuple(dict.fromkeys(UNKNOWN_WORDS + WIDE_UNKNOWN_WORDS))}
# espeak-ng's English accents (mbrola voices need the mbrola program: left out).
VOICES = (
    "en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)  # fmt: skip
FESTIVAL_VOICES = {"kal": "kal_diphone", "ked": "ked_diphone"}
HTS_VOICES = {"slt": "cmu_us_slt_arctic_hts"}
# Festival's voices of other languages (real speakers' diphones/units) saying the keywords in their
# own spelling, as accented speakers: only the (voice, spelling) pairs that pocketsphinx's US English
# model heard as the keyword (a closed grammar of the keywords and the near misses) are used.
INTL_VOICES = {  # name: (festival voice, Debian package, sex)
    "lp": ("lp_diphone", "festvox-italp16k", "f"), "pc": ("pc_diphone", "festvox-itapc16k", "m"),
    "lj": ("suo_fi_lj_diphone", "festvox-suopuhe-lj", "f"), "mv": ("hy_fi_mv_diphone", "festvox-suopuhe-mv", "m"),
    "dita": ("czech_dita", "festvox-czech-dita", "f"), "nsh": ("msu_ru_nsh_clunits", "festvox-ru", "m"),
}
INTL_SPELLINGS = {
    "lp": {"yes": ("iess", "jes"), "no": ("nou",), "up": ("ap",), "on": ("on", "onn"), "stop": ("stop", "stopp"),
           "go": ("gou",)},
    "pc": {"yes": ("ies", "iess", "jes", "yes"), "up": ("up",), "on": ("on",), "off": ("of", "off")},
    "lj": {"yes": ("jes", "jess", "yes"), "up": ("ap", "app"), "down": ("dauun",), "right": ("rait",),
           "on": ("on", "oon"), "off": ("of", "off", "oof"), "stop": ("stop", "stopp"), "go": ("gou", "goou")},
    "mv": {"yes": ("yes",), "no": ("nou",), "up": ("ap", "app", "up"), "on": ("on", "onn", "oon"), "off": ("of",)},
    "dita": {"yes": ("jes", "jess", "yes"), "no": ("no",), "up": ("ap", "up"), "down": ("daun",), "left": ("lefd",),
             "on": ("onn",), "stop": ("stopp",)},
    "nsh": {"yes": ("йес", "ес", "йэс"), "no": ("ноу", "но"), "left": ("лэфт",), "stop": ("стоп",), "go": ("гоу",)},
}
# What they say for _unknown_: words of several syllables, far from every keyword in any accent.
INTL_UNKNOWN = ("zero", "seven", "happy", "marvin", "sheila", "monkey", "yellow", "window", "garden", "doctor",
                "tiger", "paper", "banana", "lemon", "tomato", "piano")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_F0 = (70, 85, 100, 115, 130, 150, 175, 200, 230)  # target F0 means, Hz
FLITE_F0 = (80, 100, 130, 170, 210)
HTS_SEMITONES = (-4, -2, 0, 2, 4)
STRETCH = (0.8, 0.9, 1.0, 1.15, 1.3)  # Festival/Flite duration stretch, one drawn per clip
# RHVoice's English voices (github.com/RHVoice/RHVoice, built from source: no Debian package).
# slt is left out: it is the CMU Arctic speaker of festival-hts, the unseen engine of the test.
RHVOICE_VOICES = ("alan", "bdl", "clb", "evgeniy-eng", "ksp", "lyubov")  # alan first: the default voice
RHVOICE_PITCH = (70, 85, 100, 115, 130)  # RHVoice-test -t, % of the voice's own pitch: the variants
RHVOICE_RATE = (70, 140)  # RHVoice-test -r, %, drawn per clip
ENGINES = ("espeak", "festival", "festival-hts", "flite", "festival-intl", "recorded", "rhvoice")  # new ones last: splits keep
ENGINE_SHARE = {"espeak": 0.65, "festival": 0.35, "festival-hts": 0.35, "flite": 0.35, "festival-intl": 0.35,
                "rhvoice": 0.35}

SPEED_WPM = (110, 240)  # espeak-ng -s
PITCH = (10, 90)  # espeak-ng -p
SPEED_PERTURB = (0.85, 1.15)  # resampling: tempo and pitch together
PITCH_SEMITONES = (-3.0, 3.0)
TEMPO = (0.8, 1.25)
PEAK_DBFS = (-30.0, -1.0)  # clip peak after gain
SNR_DB = (5.0, 40.0)  # word RMS over noise RMS
P = {"speed": 0.5, "pitch": 0.5, "tempo": 0.3, "room": 0.4, "channel": 0.5, "hum": 0.25,
     "silent_end": 0.25, "silent_all": 0.05}
# --augment light: what a new user's own test clips look like (the word at a random offset, light
# noise): the engines' own speed and pitch, no rooms, devices or perturbation, SNR 20-40 dB.
LIGHT = {"P": {**{k: 0.0 for k in P}, "hum": 0.1}, "SNR_DB": (20.0, 40.0), "PEAK_DBFS": (-20.0, -1.0)}
RT60 = (0.15, 0.9)
HUM_BELOW_WORD_DB = (25.0, 45.0)
SILENCE_DBFS = (-96.0, -25.0)  # down to below one LSB: near-digital silence
ESPEAK_MISSING = "espeak-ng not found; install it with apt-get install espeak-ng"
MISSING = {"festival": "festival or its voices not found; apt-get install festival festvox-kallpc16k festvox-kdlpc16k",
           "festival-hts": "festival's HTS voice not found; apt-get install festival festvox-us-slt-hts",
           "flite": "flite not found; apt-get install flite",
           "rhvoice": "RHVoice-test not found on PATH, or none of its English voices "
                      f"({', '.join(RHVOICE_VOICES)}); build github.com/RHVoice/RHVoice (scons) and put RHVoice-test on PATH",
           "festival-intl": "festival's voices of other languages not found; apt-get install festival "
                            + " ".join(v[1] for v in INTL_VOICES.values())}


class ToolError(Exception):
    """A one-line problem the user can fix; main() prints it and exits with status 2."""


@dataclass(frozen=True)
class Speaker:
    voice: str  # espeak-ng voice (en-us), or the engine's voice name (kal, slt, rms)
    variant: str  # espeak-ng variant ("" = the voice's own), or f<Hz> / p<semitones>
    engine: str = "espeak"

    @property
    def spec(self) -> str:  # espeak-ng -v; engine:voice+variant for the others
        if self.engine == "espeak":
            return f"{self.voice}+{self.variant}" if self.variant else self.voice
        return f"{self.engine}:{self.voice}+{self.variant}"

    @property
    def id(self) -> str:  # safe in a file name, and free of "_nohash_"
        prefix = {"espeak": "", "festival": "fest-", "festival-hts": "hts-", "flite": "flite-",
                  "festival-intl": "intl-", "recorded": "rec-", "rhvoice": "rhv-"}[self.engine]
        name = f"{self.voice}_{self.variant}" if self.variant else self.voice
        return prefix + re.sub(r"[^A-Za-z0-9_-]", "-", name)


@dataclass(frozen=True)
class Clip:
    label: str  # class folder
    word: str | None  # what is spoken; None for _silence_
    speaker: Speaker
    number: int  # n in <speaker>_nohash_<n>.wav, counted per (class, speaker)
    seed: tuple[int, ...]  # everything random about this clip derives from it
    split: str  # "train", "validation" or "test"
    source: str | None = None  # engine "recorded": the WAV file the word comes from

    @property
    def relpath(self) -> str:
        return f"{self.label}/{self.speaker.id}_nohash_{self.number}.wav"

    @property
    def validation(self) -> bool:
        return self.split == "validation"

    @property
    def stretch(self) -> float:  # drawn apart from the rest: Festival speaks every word first
        return float(np.random.default_rng((*self.seed, 1)).choice(STRETCH))

    @property
    def text(self) -> str | None:
        """What the engine is given: the word, or for festival-intl one of its voice's spellings of it."""
        if self.speaker.engine != "festival-intl" or self.word not in KEYWORDS:
            return self.word
        return str(np.random.default_rng((*self.seed, 2)).choice(INTL_SPELLINGS[self.speaker.voice][self.word]))


def find_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ToolError(ESPEAK_MISSING)
    return exe


def tool_version(exe: str, *args: str) -> str:
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    out = (r.stdout or r.stderr).split("Data at")[0].strip()
    return out.splitlines()[0] if out else "unknown"


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, timeout=600, **kw)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise ToolError(f"{what} failed: {reason[-1]}")
    return result


def espeak_speakers(exe: str) -> list[Speaker]:
    """VOICES x every variant this espeak-ng lists, less the voices it lacks."""
    listing = subprocess.run([exe, "--voices"], capture_output=True, text=True).stdout
    voices = {line.split()[1] for line in listing.splitlines()[1:] if line.split()}
    listing = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True).stdout
    variants = [""] + sorted({t[3:] for t in listing.split() if t.startswith("!v/")})
    missing = sorted(set(VOICES) - voices)
    if missing:
        print(f"make_kws_data: note: this espeak-ng lacks {', '.join(missing)}; skipping them", file=sys.stderr)
    speakers = [Speaker(v, x) for v in VOICES if v in voices for x in variants]
    if not speakers:
        raise ToolError(f"espeak-ng at {exe} has none of the English voices {', '.join(VOICES)}")
    return speakers


def _festival_dirs() -> set[str]:
    return {p.name for p in Path("/usr/share/festival/voices").glob("*/*") if p.is_dir()}


def engine_speakers(engine: str, exes: dict) -> list[Speaker]:
    if engine == "espeak":
        return espeak_speakers(exes["espeak"])
    if engine == "festival-intl":
        voices = [v for v, (d, _, _) in INTL_VOICES.items() if d in _festival_dirs()]
        if not exes.get("festival") or not voices:
            raise ToolError(MISSING[engine])
        return [Speaker(v, semitone_variant(s), engine) for v in voices for s in HTS_SEMITONES]
    if engine in ("festival", "festival-hts"):
        table = FESTIVAL_VOICES if engine == "festival" else HTS_VOICES
        voices = [v for v, d in table.items() if d in _festival_dirs()]
        if not exes.get("festival") or not voices:
            raise ToolError(MISSING[engine])
        if engine == "festival":
            return [Speaker(v, f"f{f0}", engine) for v in voices for f0 in FESTIVAL_F0]
        return [Speaker(v, semitone_variant(s), engine) for v in voices for s in HTS_SEMITONES]
    if engine == "rhvoice":
        voices = rhvoice_voices(exes.get("rhvoice"))
        if not voices:
            raise ToolError(MISSING[engine])
        return [Speaker(v, f"t{t}", engine) for v in voices for t in RHVOICE_PITCH]
    if engine == "flite":
        if not exes.get("flite"):
            raise ToolError(MISSING[engine])
        listed = subprocess.run([exes["flite"], "-lv"], capture_output=True, text=True).stdout.split()
        return [Speaker(v, f"f{f0}", engine) for v in FLITE_VOICES if v in listed for f0 in FLITE_F0]
    raise ToolError(f"engine {engine!r}; expected one of {', '.join(ENGINES)}")


def semitone_variant(semitones: int) -> str:
    return f"p{'m' if semitones < 0 else 'p' if semitones > 0 else ''}{abs(semitones)}"


def variant_semitones(variant: str) -> int:
    return int(variant[2:] or 0) * (-1 if variant.startswith("pm") else 1)


def can_say(speaker: Speaker, word: str | None) -> bool:
    """Whether the speaker's engine speaks `word` (festival-intl: its keywords and INTL_UNKNOWN only)."""
    if speaker.engine != "festival-intl" or word is None:
        return True
    return word in INTL_SPELLINGS[speaker.voice] or word in INTL_UNKNOWN


def parse_wav(data: bytes) -> tuple[int, np.ndarray]:
    """(rate, float samples) from a 16-bit WAV; espeak-ng's --stdout sizes are placeholders."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ToolError(f"the engine wrote {len(data)} bytes that are not a WAV file")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos: pos + 4], int.from_bytes(data[pos + 4: pos + 8], "little")
        body = data[pos + 8: pos + 8 + size]
        if chunk == b"fmt ":
            rate = int.from_bytes(body[4:8], "little")
        elif chunk == b"data":
            pcm = body[: len(body) // 2 * 2]
            return rate, np.frombuffer(pcm, "<i2").astype(np.float64) / 32768.0
        pos += 8 + size + (size & 1)
    raise ToolError("the engine wrote a WAV file without a data chunk")


def speak(exe: str, word: str, speaker: Speaker, *, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng: the word at SAMPLE_RATE, as float samples; -a 60 keeps loud variants from clipping."""
    cmd = [exe, "-v", speaker.spec, "-s", str(speed), "-p", str(pitch), "-a", "60", "--stdout", word]
    rate, audio = parse_wav(_run(cmd, shlex.join(cmd)).stdout)
    return resample(audio, rate, SAMPLE_RATE)


def speak_flite(exe: str, word: str, speaker: Speaker, *, stretch: float) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="kws-flite-") as tmp:
        out = Path(tmp) / "w.wav"
        cmd = [exe, "-voice", speaker.voice, "--setf", f"int_f0_target_mean={speaker.variant[1:]}",
               "--setf", f"duration_stretch={stretch}", "-t", word, "-o", str(out)]
        _run(cmd, shlex.join(cmd))
        rate, audio = parse_wav(out.read_bytes())
    return resample(audio, rate, SAMPLE_RATE)


def speak_rhvoice(exe: str, word: str, speaker: Speaker, *, rate: int) -> np.ndarray:
    """RHVoice-test reads the text on stdin and writes a WAV file (24 kHz)."""
    with tempfile.TemporaryDirectory(prefix="kws-rhvoice-") as tmp:
        out = Path(tmp) / "w.wav"
        cmd = [exe, "-p", speaker.voice, "-t", speaker.variant[1:], "-r", str(rate), "-o", str(out)]
        _run(cmd, shlex.join(cmd), input=(word + "\n").encode())
        rate_hz, audio = parse_wav(out.read_bytes())
    return resample(audio, rate_hz, SAMPLE_RATE)


@lru_cache(maxsize=2)
def rhvoice_voices(exe: str | None) -> tuple[str, ...]:
    """RHVOICE_VOICES that this RHVoice has. It speaks an unknown voice name with its default voice
    (alan) instead of failing, so a voice counts only if it sounds unlike a made-up name, or is
    alan itself; two names that sound alike count once."""
    if not exe:
        return ()
    heard: dict[str, bytes] = {}
    for voice in ("edgernn-no-such-voice", *RHVOICE_VOICES):
        with tempfile.TemporaryDirectory(prefix="kws-rhvoice-") as tmp:
            out = Path(tmp) / "w.wav"
            done = subprocess.run([exe, "-p", voice, "-o", str(out)], input="yes\n", capture_output=True, text=True)
            if done.returncode == 0 and out.is_file():
                heard[voice] = out.read_bytes()
    fallback = heard.pop("edgernn-no-such-voice", None)
    kept: dict[bytes, str] = {}
    for voice, sound in heard.items():
        if sound != fallback or voice == RHVOICE_VOICES[0]:
            kept.setdefault(sound, voice)
    return tuple(kept.values())


def festival_batch(exe: str, speaker: Speaker, items: list[tuple[str, float]], tmp: Path) -> dict:
    """{(word, stretch): samples} for one Festival speaker, all spoken by one festival process."""
    voice = INTL_VOICES[speaker.voice][0] if speaker.engine == "festival-intl" else (FESTIVAL_VOICES | HTS_VOICES)[speaker.voice]
    lines = [f"(voice_{voice})"]
    if speaker.engine == "festival":  # the diphone voices' F0 model: move its target mean
        f0 = int(speaker.variant[1:])
        lines.append(f"(set! int_lr_params '((target_f0_mean {f0}) (target_f0_std {f0 * 0.14:.1f}) "
                     "(model_f0_mean 170) (model_f0_std 34)))")
    files = {}
    for i, (word, stretch) in enumerate(sorted(items)):
        path = tmp / f"{speaker.id}-{i}.wav"
        files[(word, stretch)] = path
        lines.append(f"(Parameter.set 'Duration_Stretch {stretch})")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{word}")) "{path}" \'riff)')
    script = tmp / f"{speaker.id}.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run([exe, "-b", str(script)], f"festival -b {script} ({speaker.spec})")
    out = {}
    for key, path in files.items():
        rate, audio = parse_wav(path.read_bytes())
        out[key] = resample(audio, rate, SAMPLE_RATE)
    return out


@dataclass
class Synth:
    """The engines' programs, and Festival's words spoken ahead of the clips."""

    exes: dict
    cache: dict = field(default_factory=dict)  # (speaker, text, stretch) -> samples

    def word(self, clip: Clip, rng: np.random.Generator) -> np.ndarray:
        sp = clip.speaker
        if sp.engine == "espeak":
            speed, pitch = int(rng.integers(*SPEED_WPM, endpoint=True)), int(rng.integers(*PITCH))
            return speak(self.exes["espeak"], clip.word, sp, speed=speed, pitch=pitch)
        if sp.engine == "recorded":
            return trim_silence(read_wav(clip.source, sample_rate=SAMPLE_RATE)[0].astype(np.float64), floor_db=-30.0)
        if sp.engine == "flite":
            return speak_flite(self.exes["flite"], clip.word, sp, stretch=clip.stretch)
        if sp.engine == "rhvoice":
            return speak_rhvoice(self.exes["rhvoice"], clip.word, sp, rate=int(rng.integers(*RHVOICE_RATE, endpoint=True)))
        audio = self.cache[(sp, clip.text, clip.stretch)]
        if sp.engine in ("festival-hts", "festival-intl"):
            audio = augment.pitch(audio, variant_semitones(sp.variant))
        return audio

    def prepare(self, clips: list[Clip], *, jobs: int) -> None:
        """Speak every Festival word the clips need, one festival process per speaker."""
        need: dict[Speaker, set] = {}
        for c in clips:
            if c.word is not None and c.speaker.engine.startswith("festival"):
                need.setdefault(c.speaker, set()).add((c.text, c.stretch))
        if not need:
            return
        with tempfile.TemporaryDirectory(prefix="kws-festival-") as tmp, ThreadPoolExecutor(jobs) as pool:
            futures = {pool.submit(festival_batch, self.exes["festival"], s, sorted(items), Path(tmp)): s
                       for s, items in need.items()}
            for future in as_completed(futures):
                for (word, stretch), audio in future.result().items():
                    self.cache[(futures[future], word, stretch)] = audio


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
    return x[start: (loud[-1] + 2) * FRAME]


def db(value: float) -> float:
    return 10.0 ** (value / 20.0)


def background(rng: np.random.Generator, level: float) -> np.ndarray:
    """Noise of a random colour at RMS `level`, sometimes with hum a little below it."""
    noise = augment.noise(rng, CLIP_SAMPLES, str(rng.choice(list(augment.NOISE_SLOPES)))) * level
    if rng.random() < P["hum"]:
        noise += augment.hum(rng, CLIP_SAMPLES) * level * db(-rng.uniform(0.0, 10.0))
    return noise


def spoken_word(synth: Synth, clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """The trimmed word, perturbed in speed, pitch and tempo; sped up to fit 0.9 s."""
    word = trim_silence(synth.word(clip, rng))
    if len(word) == 0:
        raise ToolError(f"{clip.speaker.spec} said nothing for {clip.word!r}")
    if rng.random() < P["speed"]:
        word = augment.speed(word, rng.uniform(*SPEED_PERTURB))
    if rng.random() < P["pitch"]:
        word = augment.pitch(word, rng.uniform(*PITCH_SEMITONES))
    if rng.random() < P["tempo"]:
        word = augment.tempo(word, rng.uniform(*TEMPO))
    if len(word) > MAX_WORD_SAMPLES:
        word = augment.tempo(word, len(word) / (0.85 * SAMPLE_RATE))
    return word[:MAX_WORD_SAMPLES]


def render(synth: Synth, clip: Clip) -> np.ndarray:
    """One clip of float samples, a pure function of the clip's seed (and the engines)."""
    rng = np.random.default_rng(clip.seed)
    if clip.word is None:
        audio = background(rng, db(rng.uniform(*SILENCE_DBFS)))
        if rng.random() < P["silent_all"]:
            return np.zeros(CLIP_SAMPLES)
        if rng.random() < P["silent_end"]:  # noise, then the recording gated to zeros (or the reverse)
            cut = int(rng.integers(0, CLIP_SAMPLES))
            audio = augment.digital_silence(audio, cut) if rng.random() < 0.5 else audio * (np.arange(CLIP_SAMPLES) >= cut)
        return audio
    word = spoken_word(synth, clip, rng)
    audio = np.zeros(CLIP_SAMPLES)
    start = int(rng.integers(0, CLIP_SAMPLES - len(word), endpoint=True))
    audio[start: start + len(word)] = word
    if rng.random() < P["room"]:
        audio = augment.reverb(audio, augment.room_ir(rng, rng.uniform(*RT60)))
    if rng.random() < P["channel"]:
        audio, _ = augment.channel(rng, audio)
    audio *= db(rng.uniform(*PEAK_DBFS)) / max(np.abs(audio).max(), 1e-9)
    level = augment.rms(audio[start: start + len(word)])
    audio += background(rng, level * db(-rng.uniform(*SNR_DB)))
    if rng.random() < P["hum"]:  # low hum under the word, whatever the noise
        audio += augment.hum(rng, CLIP_SAMPLES) * level * db(-rng.uniform(*HUM_BELOW_WORD_DB))
    if rng.random() < P["silent_end"]:  # the recording ends in digital silence soon after the word
        audio = augment.digital_silence(audio, start + len(word) + int(rng.uniform(0.0, 0.15) * SAMPLE_RATE))
    return audio


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(pcm.tobytes())


def named(s: Speaker, names) -> bool:
    """Whether `names` name s: its id (en-us_m3), spec (en-us+m3), voice (en-029) or engine:voice (flite:slt)."""
    return bool({s.id, s.spec, s.voice, f"{s.engine}:{s.voice}"} & set(names or ()))


def split_speakers(speakers: list[Speaker], *, unseen: set[str], names: list[str] | None, val_fraction: float,
                   test_fraction: float, seed: int, test_names: list[str] | None = None) -> dict[Speaker, str]:
    """{speaker: split}. Unseen engines and --test-voices: test. Others, per engine: named speakers
    or a seeded --val-fraction go to validation, a seeded --test-fraction to test."""
    for option, given in (("--val-voices", names), ("--test-voices", test_names)):
        unknown = [n for n in given or () if not any(named(s, [n]) for s in speakers)]
        if unknown:
            voices = ", ".join(sorted({f"{s.engine}:{s.voice}" for s in speakers}))
            raise ToolError(f"{option}: no speaker {', '.join(unknown)}; voices are {voices}")
    out = {s: "test" for s in speakers if named(s, test_names)}
    speakers = [s for s in speakers if s not in out]
    for k, engine in enumerate(ENGINES):
        group = [s for s in speakers if s.engine == engine]
        if not group:
            continue
        if engine in unseen:
            out.update({s: "test" for s in group})
            continue
        order = [group[i] for i in np.random.default_rng([seed, 0xD1CE, k]).permutation(len(group))]
        n_test = round(test_fraction * len(group))
        if names:
            val = {s for s in group if named(s, names)}
            rest = [s for s in order if s not in val]
        else:
            n_val = round(val_fraction * len(group))
            val, rest = set(order[:n_val]), order[n_val:]
        test = set(rest[:n_test])
        out.update({s: "validation" if s in val else "test" if s in test else "train" for s in group})
    return out


def round_robin(items: list, n: int, rng: np.random.Generator) -> list:
    """n items cycling through a shuffled copy of `items`."""
    return list(islice(cycle([items[i] for i in rng.permutation(len(items))]), n)) if items else []


def plan_class(label: str, words: list, speakers: list[Speaker], splits: dict, *, n: int, seed: tuple,
               start: int = 0) -> list[Clip]:
    """n clips from `speakers`, split train/validation/test in proportion to their speakers."""
    rng = np.random.default_rng(seed)
    counts_by = {k: [s for s in speakers if splits[s] == k] for k in ("validation", "test", "train")}
    chosen = []
    for k in ("validation", "test"):
        m = round(n * len(counts_by[k]) / len(speakers))
        m = max(m, 1) if counts_by[k] and n >= 2 else m  # tiny sets still get every split
        chosen += round_robin(counts_by[k], m, rng)
    chosen = chosen[:n]
    chosen += round_robin(counts_by["train"] or counts_by["test"], n - len(chosen), rng)
    counts: dict[Speaker, int] = {}
    clips = []
    for i, (speaker, word) in enumerate(zip(chosen, round_robin(words, n, rng), strict=True)):
        counts[speaker] = counts.get(speaker, -1) + 1
        clips.append(Clip(label, word, speaker, counts[speaker], (*seed, i + start), splits[speaker]))
    return clips


def recordings(root: Path, labels: list[str]) -> dict[Speaker, list[tuple[str, Path]]]:
    """{speaker: [(label, wav)]} of a Speech Commands folder's classes among `labels` (its other
    words count as _unknown_ only if it has an _unknown_ folder)."""
    if not root.is_dir():
        raise ToolError(f"--recordings {root}: no such folder; expected DIR/<class>/<speaker>_nohash_<n>.wav")
    out: dict[Speaker, list] = {}
    for label in labels:
        for path in sorted((root / label).glob("*.wav")) if (root / label).is_dir() else ():
            who = re.sub(r"[^A-Za-z0-9-]", "-", path.stem.split("_nohash_")[0])
            out.setdefault(Speaker(who, "", "recorded"), []).append((label, path))
    if not out:
        raise ToolError(f"--recordings {root}: no WAV files in folders named {', '.join(labels)}; expected "
                        "DIR/<class>/<speaker>_nohash_<n>.wav (the Speech Commands layout)")
    return out


def plan_recorded(recorded: dict, splits: dict, *, seed: int, copies: int) -> list[Clip]:
    """Every recording once (`copies` times in the train split, each with its own augmentation)."""
    clips, counts = [], {}
    for i, (speaker, items) in enumerate(sorted(recorded.items(), key=lambda kv: kv[0].voice)):
        for j, (label, path) in enumerate(items):
            for c in range(copies if splits[speaker] == "train" else 1):
                key = (label, speaker)
                counts[key] = counts.get(key, -1) + 1
                clips.append(Clip(label, label, speaker, counts[key], (seed, 0x5EC, i, j, c), splits[speaker],
                                  os.fspath(path)))
    return clips


def plan(keywords: list[str], speakers: list[Speaker], splits: dict, *, n: int, unseen_n: int, seed: int,
         unknown_n: int, unknown_words: tuple[str, ...] = UNKNOWN_WORDS):
    """Classes in TensorFlow Speech Commands order, and every clip to make: `n` per class from the
    seen engines together (`unknown_n` for _unknown_, saying `unknown_words`), `unseen_n` per --unseen engine."""
    classes = [SILENCE, UNKNOWN, *keywords]
    words = {SILENCE: [None], UNKNOWN: list(unknown_words)}
    engines = [e for e in ENGINES if e != "recorded" and any(s.engine == e for s in speakers)]
    seen = [e for e in engines if any(splits[s] != "test" for s in speakers if s.engine == e)]
    share = {e: ENGINE_SHARE[e] / sum(ENGINE_SHARE[x] for x in seen) for e in seen}
    clips = []
    for k, label in enumerate(classes):
        groups, quota = {}, {}
        total = unknown_n if label == UNKNOWN else n
        for engine in engines:
            mine = list(INTL_UNKNOWN) if engine == "festival-intl" and label == UNKNOWN else words.get(label, [label])
            voices = {s.voice for s in speakers if s.engine == engine}
            group = [s for s in speakers if s.engine == engine and any(can_say(s, w) for w in mine)]
            groups[engine] = mine, group
            # an engine whose voices do not all say the word gets that share of its quota, so no
            # voice stands for a word alone
            cover = len({s.voice for s in group}) / max(len(voices), 1)
            quota[engine] = round(total * share[engine] * cover) if engine in share else unseen_n * bool(group)
        quota[seen[0]] += total - sum(quota[e] for e in seen)  # the rounding and the uncovered part
        for j, engine in enumerate(engines):
            mine, group = groups[engine]
            if group and quota[engine] > 0:
                clips += plan_class(label, mine, group, splits, n=quota[engine], seed=(seed, k, j))
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


def make_clip(synth: Synth, clip: Clip, root: Path) -> None:
    write_wav(root / clip.relpath, render(synth, clip))


def make_clips(synth: Synth, clips: list[Clip], root: Path, *, jobs: int) -> None:
    for label in sorted({c.label for c in clips}):
        (root / label).mkdir()
    synth.prepare(clips, jobs=jobs)
    pool = ThreadPoolExecutor(max_workers=jobs)  # the engines run outside the GIL
    try:
        wait_all([pool.submit(make_clip, synth, clip, root) for clip in clips])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def describe(classes: list[str], clips: list[Clip], splits: dict, *, command: str, versions: dict,
             unknown_words: tuple[str, ...] = UNKNOWN_WORDS) -> str:
    """README.txt: how the set was made and what is in it."""
    lines = [
        "Synthetic keyword-spotting data set, made offline from several speech engines.",
        f"command: {command}",
        *(f"{name}: {v}" for name, v in versions.items()),
        f"format: {SAMPLE_RATE} Hz mono 16-bit PCM WAV, {CLIP_SAMPLES / SAMPLE_RATE:.1f} s",
        f"variation: espeak-ng -s {SPEED_WPM} -p {PITCH}; Festival/Flite F0 targets and stretch {STRETCH};"
        f" speed {SPEED_PERTURB}, pitch {PITCH_SEMITONES} semitones, tempo {TEMPO}; rooms RT60 {RT60} s;"
        f" {'/'.join(augment.CHANNELS)} responses; peak {PEAK_DBFS} dBFS; SNR {SNR_DB} dB of"
        f" {'/'.join(augment.NOISE_SLOPES)} noise, hum; probabilities {P};"
        f" _silence_ at {SILENCE_DBFS} dBFS",
        f"_unknown_ words ({len(unknown_words)}): {' '.join(unknown_words)}",
        f"clips: {len(clips)}: " + ", ".join(f"{sum(c.split == k for c in clips)} {k}" for k in ("train", "validation", "test")),
        "class engine train validation test",
    ]
    for label in classes:
        for engine in ENGINES:
            mine = [c for c in clips if c.label == label and c.speaker.engine == engine]
            if mine:
                lines.append(f"{label} {engine} " + " ".join(str(sum(c.split == k for c in mine))
                                                             for k in ("train", "validation", "test")))
    for k in ("train", "validation", "test"):
        group = sorted(s.id for s, v in splits.items() if v == k)
        lines.append(f"{k} speakers ({len(group)}): {' '.join(group)}")
    return "\n".join(lines) + "\n"


def write_index(root: Path, classes: list[str], clips: list[Clip], readme: str) -> None:
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for name, split in (("validation_list.txt", "validation"), ("testing_list.txt", "test")):
        (root / name).write_text("".join(f"{p}\n" for p in sorted(c.relpath for c in clips if c.split == split)))
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


@contextmanager
def augmentation(kind: str):
    """The module's augmentation settings for --augment `kind` while the set is made, then back."""
    global P, SNR_DB, PEAK_DBFS
    saved = P, SNR_DB, PEAK_DBFS
    if kind == "light":
        P, SNR_DB, PEAK_DBFS = dict(LIGHT["P"]), LIGHT["SNR_DB"], LIGHT["PEAK_DBFS"]
    try:
        yield
    finally:
        P, SNR_DB, PEAK_DBFS = saved


def find_engines(engines: list[str]) -> tuple[dict, dict]:
    """({engine: program}, {README line: version}) for the engines asked for."""
    exes, versions = {}, {}
    if "espeak" in engines:
        exes["espeak"] = find_espeak()
        versions["espeak-ng"] = tool_version(exes["espeak"], "--version")
    if {"festival", "festival-hts", "festival-intl"} & set(engines):
        exes["festival"] = shutil.which("festival")
        if exes["festival"]:
            versions["festival"] = tool_version(exes["festival"], "--version")
    if "rhvoice" in engines:
        exes["rhvoice"] = shutil.which("RHVoice-test")
        if exes["rhvoice"]:
            versions["rhvoice"] = f"{exes['rhvoice']} (voices {', '.join(rhvoice_voices(exes['rhvoice']))})"
    if "flite" in engines:
        exes["flite"] = shutil.which("flite")
        if exes["flite"]:
            versions["flite"] = tool_version(exes["flite"], "--version")
    return exes, versions


def build(args: argparse.Namespace, *, command: str) -> Path:
    """Write the whole set into a temp folder beside OUT_DIR, then rename it into place."""
    with augmentation(args.augment):
        return _build(args, command=command)


def _build(args: argparse.Namespace, *, command: str) -> Path:
    out = Path(args.out_dir).resolve()
    check_out_dir(out, force=args.force)
    engines = list(dict.fromkeys(args.engines + args.unseen))
    exes, versions = find_engines(engines)
    speakers = [s for e in engines for s in engine_speakers(e, exes)]
    recorded, batches = {}, []  # every folder's clips by speaker; each folder's speakers not seen before
    for folder in args.recordings or ():
        found = recordings(Path(folder), [UNKNOWN, *args.words])
        versions[f"recordings {folder}"] = f"{sum(map(len, found.values()))} files, {len(found)} speakers"
        batches.append(sorted((s for s in found if s not in recorded), key=lambda s: s.voice))
        for speaker, items in found.items():
            recorded.setdefault(speaker, []).extend(items)
    split = dict(unseen=set(args.unseen), val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    speakers += batches[0] if batches else []
    splits = split_speakers(speakers, names=args.val_voices, seed=args.seed, test_names=args.test_voices, **split)
    for i, batch in enumerate(batches[1:], 1):
        # a later folder's new speakers are split among themselves, so adding a folder never
        # moves a speaker of the earlier ones (their test speakers stay test)
        mine = lambda given: [n for n in given or () if any(named(s, [n]) for s in batch)]  # noqa: E731
        splits.update(split_speakers(batch, names=mine(args.val_voices) or None, seed=args.seed + 7919 * i,
                                     test_names=mine(args.test_voices) or None, **split))
    classes, clips = plan(args.words, speakers, splits, n=args.per_class, unseen_n=args.unseen_per_class,
                          seed=args.seed, unknown_n=args.unknown_per_class, unknown_words=args.unknown_words)
    clips += plan_recorded(recorded, splits, seed=args.seed, copies=args.recording_copies)
    readme = describe(classes, clips, splits, command=command, versions=versions, unknown_words=args.unknown_words)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~umask())  # mkdtemp makes it private; the data set need not be
        make_clips(Synth(exes), clips, tmp, jobs=args.jobs)
        write_index(tmp, classes, clips, readme)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:  # Ctrl-C and SIGTERM too: never leave half a data set behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _engine_list(text: str) -> list[str]:
    names = [t for t in text.split(",") if t]
    bad = [t for t in names if t not in ENGINES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown engine {bad[0]!r}; expected some of {','.join(ENGINES)}")
    return names


def _unknown_words(text: str) -> tuple[str, ...]:
    """--unknown-words: a named set, or a UTF-8 text file of words, one a line (# starts a comment)."""
    if text in UNKNOWN_SETS:
        return UNKNOWN_SETS[text]
    expected = f"expected {' or '.join(UNKNOWN_SETS)}, or a text file of words, one a line"
    try:
        lines = Path(text).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {getattr(e, 'strerror', None) or 'not UTF-8 text'}; {expected}") from None
    words = [w for w in (line.split("#")[0].strip().lower() for line in lines) if w]
    bad = [w for w in words if not re.fullmatch(r"[a-z][a-z' -]*", w)]
    if bad or not words:
        raise argparse.ArgumentTypeError(f"{text!r}: {'no words' if not words else f'{bad[0]!r} is not a word'}; {expected}"
                                         " (English letters, apostrophes, hyphens and spaces)")
    return tuple(dict.fromkeys(words))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make_kws_data.py", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("out_dir", metavar="OUT_DIR", help="folder to create; must be absent or empty")
    add("--per-class", type=int, default=300, metavar="N",
        help="clips per class from the --engines together, _unknown_ and _silence_ included (default 300)")
    add("--engines", type=_engine_list, default=["espeak", "festival"], metavar="LIST",
        help=f"engines split train/validation/test by speaker (default espeak,festival; of {','.join(ENGINES)})")
    add("--unseen", type=_engine_list, default=[], metavar="LIST",
        help="engines whose every speaker is test only, e.g. festival-hts,flite (default none)")
    add("--unseen-per-class", type=int, default=60, metavar="M", help="clips per class per --unseen engine (default 60)")
    add("--unknown-per-class", type=int, metavar="U",
        help="_unknown_ clips from the --engines together (default: --per-class). More of them, each a word"
        " that is no keyword, teach the model what not to fire on")
    add("--unknown-words", type=_unknown_words, default="base", metavar="SET|FILE",
        help=f"what _unknown_ clips say: base ({len(UNKNOWN_WORDS)} words and near misses, the default), wide"
        f" ({len(UNKNOWN_SETS['wide'])}: base and everyday words, more near misses) or a text file of words, one a line."
        " festival-intl voices say their own list")
    add("--seed", type=int, default=0, help="same seed, same WAV files (default 0)")
    add("--jobs", type=int, default=2, metavar="J", help="parallel engine calls (default 2)")
    add("--val-voices", nargs="+", metavar="NAME",
        help="validation speakers: ids (en-us_m3), specs (en-us+m3) or whole voices (en-029);"
        " default: a seeded --val-fraction of each engine's speakers")
    add("--test-voices", nargs="+", metavar="NAME",
        help="test-only speakers or whole voices, also engine:voice (flite:slt): a voice of a seen engine"
        " that no training or validation clip uses")
    add("--val-fraction", type=float, default=0.15, metavar="F", help="validation share of each engine's speakers (default 0.15)")
    add("--test-fraction", type=float, default=0.15, metavar="F", help="test share of each engine's speakers (default 0.15)")
    add("--augment", choices=("full", "light"), default="full",
        help="full: rooms, devices, speed/pitch/tempo, 5-40 dB SNR (default); light: a random offset and"
        " 20-40 dB noise only, for test sets like a user's own clips")
    add("--recordings", metavar="DIR", nargs="+", action="extend",
        help="real recordings in the Speech Commands layout (DIR/<class>/<speaker>_nohash_<n>.wav): each"
        " keyword and _unknown_ clip becomes one clip of engine `recorded`, its word trimmed and augmented like"
        " the others; its speakers are split train/validation/test like an engine's. Several folders: each"
        " one's new speakers are split on their own, so adding a folder keeps the earlier splits")
    add("--recording-copies", type=int, default=1, metavar="K",
        help="train-split recordings each used K times, with different augmentation (default 1)")
    add("--force", action="store_true", help="replace OUT_DIR even if it is not empty")
    add("--words", type=lambda s: s.split(","), default=list(KEYWORDS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.unknown_per_class is None:
        args.unknown_per_class = args.per_class
    if (args.per_class < 1 or args.unknown_per_class < 1 or args.jobs < 1 or args.recording_copies < 1 or args.unseen_per_class < 0 or not 0.0 <= args.val_fraction < 1.0
            or not 0.0 <= args.test_fraction < 1.0 or args.val_fraction + args.test_fraction >= 1.0):
        parser.error("--per-class, --unknown-per-class, --jobs and --recording-copies must be at least 1, --val-fraction and --test-fraction in [0, 1) "
                     "with a sum under 1")
    clash = [w for w in args.unknown_words if w in args.words]
    if clash:
        parser.error(f"--unknown-words: {clash[0]!r} is a keyword; expected words that are no keyword")
    args.unseen = [e for e in args.unseen]
    args.engines = [e for e in args.engines if e not in args.unseen]
    if not args.engines:
        parser.error("--engines: expected at least one engine that is not --unseen")
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
