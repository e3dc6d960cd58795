"""Keyword events on continuous speech: espeak-ng utterances of the keywords among other words.

    python tools/eval_events.py --model models/kws.onnx [--gap 0.8] [--voices V,V] [--speeds S,S]
                                [--snr 20] [--threshold T] [--smooth S] [--json REPORT.json]

Each utterance is one espeak-ng voice at one speed saying the 10 keywords and 15 other words in a
seeded order, each word trimmed to where it is audible, `--gap` s of silence between words; every
utterance is scored clean and with white noise at `--snr` dB (against the speech's RMS). One
stream per utterance, from a zero state, with 1 s of silence after it, through the events of
`edgernn stream --events` (edgernn.runtime.events, with --threshold/--smooth over its defaults).
A keyword is **on time** when an event of its label fires between the word's onset and 0.3 s
after its end (each event counts once); every other event is **false**. `t - end` is the event's
time after the end of its word. The default voices are make_kws_data's eight espeak-ng accents,
so this measures the event rule on voices of the training engine, in running speech, not the
model on unheard voices (tools/eval_kws.py does that).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_kws import Scorer  # noqa: E402
from make_kws_data import KEYWORDS, VOICES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgernn.audio.wav import read_wav  # noqa: E402
from edgernn.core.wording import plural  # noqa: E402

OTHERS = ("house", "happy", "tree", "bird", "dog", "hello", "seven", "marvin", "sheila", "bed", "cat", "wow",
          "zero", "four", "music")  # fmt: skip
ON_TIME_AFTER = 0.3  # s after the word's end an event may fire and still be on time (as tests/test_mic.py)


def speak(word: str, voice: str, speed: int, rate: int) -> np.ndarray:
    """One word from espeak-ng at `rate`, trimmed to where it is audible (2 % of its peak RMS), peak 0.5."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", f"{d}/w.wav", word], check=True,
                       capture_output=True)
        x, _ = read_wav(f"{d}/w.wav", sample_rate=rate)
    rms = np.sqrt(np.convolve(x.astype(np.float64) ** 2, np.ones(rate // 100) / (rate // 100), "same"))
    loud = np.flatnonzero(rms > 0.02 * rms.max())
    x = x[loud[0]:loud[-1] + 1].astype(np.float64)
    return 0.5 * x / np.abs(x).max()


def utterance(words, voice: str, speed: int, rate: int, gap: float) -> tuple[np.ndarray, list]:
    """(samples, [(word, onset s, end s)]): the words in a row, `gap` s of silence before each."""
    pieces, spans, t = [], [], 0.0
    for w in words:
        x = speak(w, voice, speed, rate)
        pieces += [np.zeros(round(gap * rate)), x]
        t += gap
        spans.append((w, t, t + len(x) / rate))
        t += len(x) / rate
    return np.concatenate(pieces), spans


def match(events, spans) -> tuple[list, int]:
    """(on-time keywords as (word, t - end), false events): each keyword takes the first unused
    event of its label between its onset and ON_TIME_AFTER s after its end."""
    used, hits = set(), []
    for word, onset, end in spans:
        if word not in KEYWORDS:
            continue
        for i, e in enumerate(events):
            if i not in used and e.label == word and onset <= e.t <= end + ON_TIME_AFTER:
                used.add(i)
                hits.append((word, round(e.t - end, 3)))
                break
    return hits, len(events) - len(used)


def evaluate(model: str, *, voices=VOICES, speeds=(130, 180), gap: float = 0.8, snr: float = 20.0, seed: int = 0,
             events: dict | None = None) -> dict:
    scorer = Scorer(model, events=events)
    rate = scorer.fe.sample_rate
    rng = np.random.default_rng(seed)
    rows = []
    for voice in voices:
        for speed in speeds:
            words = [str(w) for w in rng.permutation(list(KEYWORDS) + list(OTHERS))]
            clean, spans = utterance(words, voice, speed, rate, gap)
            noise = rng.standard_normal(len(clean)) * np.sqrt(np.mean(clean[clean != 0] ** 2)) * 10 ** (-snr / 20)
            for condition, x in (("clean", clean), (f"snr{snr:g}", clean + noise)):
                _, fired = scorer.run(np.concatenate([x, np.zeros(rate)]))
                hits, false = match(fired, spans)
                rows.append({"voice": voice, "speed": speed, "condition": condition, "keywords": len(KEYWORDS),
                             "on_time": len(hits), "false": false, "late_s": [d for _, d in hits],
                             "missed": sorted(set(KEYWORDS) - {w for w, _ in hits}),
                             "events": [e.to_dict() for e in fired]})
    late = [d for r in rows for d in r["late_s"]]
    return {"model": str(model), "gap_s": gap, "snr_db": snr, "utterances": len(rows),
            "keywords": sum(r["keywords"] for r in rows), "other_words": len(OTHERS) * len(rows),
            "on_time": sum(r["on_time"] for r in rows), "false": sum(r["false"] for r in rows),
            "t_minus_end_s": {"min": min(late), "median": float(np.median(late)), "max": max(late)} if late else None,
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eval_events.py", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="the exported keyword model (.onnx)")
    add("--gap", type=float, default=0.8, help="seconds of silence before each word (default 0.8)")
    add("--voices", type=lambda t: [v for v in t.split(",") if v], default=list(VOICES),
        help="espeak-ng voices, comma-separated (default: make_kws_data's eight English accents)")
    add("--speeds", type=lambda t: [int(v) for v in t.split(",") if v], default=[130, 180],
        help="espeak-ng -s words per minute, comma-separated (default 130,180)")
    add("--snr", type=float, default=20.0, help="dB of white noise in the noisy copy (default 20)")
    add("--seed", type=int, default=0)
    add("--threshold", type=float, help="event threshold (default: the detector's)")
    add("--smooth", type=float, help="event smoothing in seconds (default: the detector's)")
    add("--json", metavar="FILE", help="write the report (every utterance's events) here")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("eval_events.py: error: espeak-ng not found; expected it on PATH (apt-get install espeak-ng)",
              file=sys.stderr)
        return 2
    if args.gap < 0 or not args.voices or not args.speeds:
        parser.error(f"--gap {args.gap} --voices {args.voices} --speeds {args.speeds}; expected a gap >= 0 and "
                     "at least one voice and speed")
    report = evaluate(args.model, voices=args.voices, speeds=args.speeds, gap=args.gap, snr=args.snr, seed=args.seed,
                      events={k: v for k, v in (("threshold", args.threshold), ("smooth", args.smooth))
                              if v is not None})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    t = report["t_minus_end_s"]
    timing = f"; t - end {t['min']:+.2f} to {t['max']:+.2f} s (median {t['median']:+.2f})" if t else ""
    print(f"{report['on_time']} of {report['keywords']} keywords on time, {plural(report['false'], 'false event')} over "
          f"{report['other_words']} other words and the pauses ({report['utterances']} utterances, gap "
          f"{args.gap:g} s){timing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
