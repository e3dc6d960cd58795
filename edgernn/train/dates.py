"""Synthetic date normalisation: many written forms of a date -> ISO 8601 ("2026-11-30"). Torch-free.

The data of the encoder–decoder task (edgernn.seq2seq). Rules the formats follow:

- Numeric dates with `/` or `.` between day and month are DAY-FIRST ("30/11/2026", "30.11.2026");
  numeric dates that start with the year are year-first ("2026.11.30", "2026-11-30", "20261130").
  No month-first numeric form is generated, so no numeric string is ambiguous.
- Two-digit years follow POSIX `strptime("%y")`: 69–99 -> 1969–1999, 00–68 -> 2000–2068. A
  two-digit form is only drawn for dates inside that window, so every source names one date.
- Weekday names are those of the date itself (from `datetime`), never random.
- Names are English, from fixed lists (not the locale), in Title, lower or UPPER case.

Dates run from 1900-01-01 to 2099-12-31. About 5% of them, picked by a hash of the ISO string
(`is_held_out`), are validation dates: training never samples them, in any format.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import date

import numpy as np

from edgernn.core.errors import InputError

# Vocabulary: special tokens first, then every character a source or target can hold.
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARS = " ',-./" + "0123456789" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKENS = list(SPECIALS) + list(CHARS)  # id -> token; travels in the model metadata
VOCAB = len(TOKENS)
UNK_CHAR = "\ufffd"  # how decode() renders UNK
_ID = {c: i for i, c in enumerate(TOKENS) if len(c) == 1}

FIRST, LAST = date(1900, 1, 1), date(2099, 12, 31)
TARGET_LENGTH = len("2026-11-30")
MAX_LENGTH = 16  # greedy decoding stops after this many tokens if no EOS came
HELD_OUT_PER_MILLE = 50  # share of dates held out for validation, by hash

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Placeholders: {d} 7, {dd} 07, {dth} 7th, {m} 3, {mm} 03, {mon} Mar, {month} March, {yyyy} 2026,
# {yy} 26 (POSIX window), {wd} Sat, {weekday} Saturday.
FORMATS = (
    "{d} {mon} {yyyy}", "{d} {month} {yyyy}", "{dd} {mon} {yyyy}", "{month} {d}, {yyyy}", "{mon} {d} {yyyy}",
    "{mon}. {d}, {yyyy}", "{dd}/{mm}/{yyyy}", "{d}/{m}/{yyyy}", "{dd}/{mm}/{yy}", "{dd}.{mm}.{yyyy}",
    "{d}.{m}.{yyyy}", "{yyyy}.{mm}.{dd}", "{yyyy}-{mm}-{dd}", "{yyyy}/{mm}/{dd}", "{yyyy}{mm}{dd}",
    "{weekday}, {d} {month} {yyyy}", "{weekday}, {month} {d}, {yyyy}", "{wd} {d} {mon} {yyyy}",
    "{wd}, {dd}.{mm}.{yyyy}", "{dd}-{mon}-{yy}", "{d} {mon} '{yy}", "the {dth} of {month}, {yyyy}",
    "{month} {dth}, {yyyy}", "{dth} {month} {yyyy}", "{weekday} the {dth} of {month} {yyyy}",
)
CASES = ("title", "lower", "upper")
_CASE_P = (0.6, 0.25, 0.15)


def encode(text: str) -> np.ndarray:
    """Characters -> token ids (L,) int64; characters outside the vocabulary become UNK."""
    return np.array([_ID.get(c, UNK) for c in text], dtype=np.int64)


def decode(ids) -> str:
    """Token ids -> text: stops at the first EOS, drops PAD and BOS, renders UNK as U+FFFD."""
    out = []
    for i in np.asarray(ids, dtype=np.int64).reshape(-1):
        if i == EOS:
            break
        if i == UNK:
            out.append(UNK_CHAR)
        elif i > UNK:
            out.append(TOKENS[i])
    return "".join(out)


def ordinal(n: int) -> str:
    """1 -> '1st', 12 -> '12th', 22 -> '22nd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def two_digit_ok(d: date) -> bool:
    """Whether a two-digit year names this date under the POSIX window (1969–2068)."""
    return 1969 <= d.year <= 2068


def render(d: date, fmt: str, case: str = "title") -> str:
    """The source text of `d` in format `fmt` (one of FORMATS) and letter case `case`."""
    if "{yy}" in fmt and not two_digit_ok(d):
        raise InputError(f"{d.isoformat()} is outside 1969–2068: a two-digit year would name another date")
    text = fmt.format(d=d.day, dd=f"{d.day:02d}", dth=ordinal(d.day), m=d.month, mm=f"{d.month:02d}",
                      mon=MONTHS[d.month - 1][:3], month=MONTHS[d.month - 1], yyyy=f"{d.year:04d}",
                      yy=f"{d.year % 100:02d}", wd=WEEKDAYS[d.weekday()][:3], weekday=WEEKDAYS[d.weekday()])
    return {"title": text, "lower": text.lower(), "upper": text.upper()}[case]


def _formats_for(d: date) -> tuple[str, ...]:
    return FORMATS if two_digit_ok(d) else _FOUR_DIGIT


_FOUR_DIGIT = tuple(f for f in FORMATS if "{yy}" not in f)


def example(d: date, rng: np.random.Generator) -> tuple[str, str]:
    """(source, target) for date `d` in a random format and case."""
    fmts = _formats_for(d)
    fmt = fmts[rng.integers(len(fmts))]
    case = CASES[rng.choice(len(CASES), p=_CASE_P)]
    return render(d, fmt, case), d.isoformat()


def sample(rng: np.random.Generator, dates: np.ndarray | None = None) -> tuple[str, str]:
    """A random (source, target): a date drawn from `dates` (ordinals; default all) in a random format."""
    if dates is None:
        o = int(rng.integers(FIRST.toordinal(), LAST.toordinal() + 1))
    else:
        o = int(dates[rng.integers(len(dates))])
    return example(date.fromordinal(o), rng)


def is_held_out(d: date) -> bool:
    """Fixed validation dates: a hash of the ISO string, the same on every machine and seed."""
    h = hashlib.blake2b(d.isoformat().encode(), digest_size=8, person=b"edgernn-dates").digest()
    return int.from_bytes(h, "little") % 1000 < HELD_OUT_PER_MILLE


@dataclass(frozen=True)
class Split:
    """Training dates, held-out dates (both as ordinals) and a fixed validation set of pairs."""

    train_dates: np.ndarray  # (n_train,) int64 ordinals
    val_dates: np.ndarray  # (n_val_dates,) int64 ordinals, disjoint from train_dates
    val: list  # [(source, target)] over distinct held-out dates

    def sample(self, rng: np.random.Generator) -> tuple[str, str]:
        """A training pair: never a held-out date."""
        return sample(rng, self.train_dates)

    def batch(self, rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
        return [self.sample(rng) for _ in range(n)]


@functools.lru_cache(maxsize=1)
def _all_dates() -> tuple[np.ndarray, np.ndarray]:
    """(every ordinal FIRST..LAST, whether it is held out); computed once per process."""
    ords = np.arange(FIRST.toordinal(), LAST.toordinal() + 1, dtype=np.int64)
    held = np.array([is_held_out(date.fromordinal(int(o))) for o in ords])
    ords.flags.writeable = held.flags.writeable = False
    return ords, held


def make_split(seed: int = 0, *, val_size: int = 3000) -> Split:
    """Hold out ~5% of the dates (by hash, independent of seed); `seed` picks the validation pairs."""
    ords, held = _all_dates()
    val_dates = ords[held]
    if not 1 <= val_size <= len(val_dates):
        raise InputError(f"val_size={val_size}; expected 1..{len(val_dates)} (one pair per held-out date)")
    rng = np.random.default_rng(seed + 10_000)
    picked = rng.choice(val_dates, size=val_size, replace=False)  # in random order: any prefix is a fair sample
    val = [example(date.fromordinal(int(o)), rng) for o in picked]
    return Split(ords[~held], val_dates, val)


def encode_batch(texts, *, bos: bool = False, eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (ids (N, L) int64 right-padded with PAD, lengths (N,) int64), optional BOS/EOS."""
    seqs = [np.concatenate([[BOS]] * bos + [encode(t)] + [[EOS]] * eos).astype(np.int64) for t in texts]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.full((len(seqs), int(lengths.max(initial=0))), PAD, dtype=np.int64)
    for row, s in zip(ids, seqs):
        row[: len(s)] = s
    return ids, lengths
