"""Score a keyword-spotting model on held-out speakers, per engine, through the torch-free runtime.

    python tools/eval_kws.py --model models/kws.onnx --data DIR [--split test|validation|all]
                             [--trailing 1.0] [--json REPORT.json] [--plot CONFUSION.png] [--seed S]
                             [--threshold T] [--smooth S] [--sweep T,T,...] [--phases K]

DIR is a data set from tools/make_kws_data.py (any Speech Commands layout works; the engine is
read from the speaker id: `fest-` festival, `hts-` festival-hts, `flite-` flite, `intl-`
festival-intl, `rec-` recorded, `rhv-` rhvoice, else espeak).
--split test scores the clips in testing_list.txt (speakers never used to train or choose).

Per clip, one stream from a zero state over the clip followed by --trailing seconds of digital
silence (exact zeros), the way `edgernn stream --input FILE.wav --events` runs it:
- clip label: the label on top at the clip's last frame (`label_at_end`), and after the
  trailing silence (`label_after_silence`: the headline: a label must hold to the end);
- events: the events `edgernn.runtime.events.EventDetector` fires with its defaults over the
  whole stream; "exactly the keyword" means one event, the clip's keyword, for a keyword clip,
  and no event for a `_silence_` or `_unknown_` clip.
False events per hour: every non-keyword clip of the split (other words and noise), in a seeded
order, laid end to end in ONE stream that is never reset; every event in it is false.
--sweep 0.5,0.7,0.9 prints, per event threshold, events exactly right and false events per
10 min (choose the operating point on --split validation; report it once on test).
--phases K adds the framing report: each keyword clip is also run started k/K of a hop late
(k = 1 .. K-1, zeros before it), as a microphone stream frames a word anywhere; it gives the
share of clips exactly right at every framing, at each framing, and how far the event moves
(its time minus the delay) between framings: late firing that phase 0 alone hides.
Speed: the model's ONNX size, parameters, and microseconds per 10 ms frame (model step alone,
and front end + model) on one thread, in one call per 100 frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgernn.audio.frontend import LogMel  # noqa: E402
from edgernn.audio.wav import read_wav  # noqa: E402
from edgernn.runtime import Runtime  # noqa: E402
from edgernn.runtime.events import IGNORED, EventDetector, EventOptions, frame_loudness  # noqa: E402

PREFIXES = (("fest-", "festival"), ("hts-", "festival-hts"), ("flite-", "flite"), ("intl-", "festival-intl"), ("rec-", "recorded"), ("rhv-", "rhvoice"))
TARGETS = {"clip_label": 0.95, "events_exact": 0.90, "false_per_10min": 2.0}


def engine_of(relpath: str) -> str:
    speaker = Path(relpath).name.split("_nohash_")[0]
    return next((engine for prefix, engine in PREFIXES if speaker.startswith(prefix)), "espeak")


def voice_of(relpath: str) -> str:
    """The engine's voice: the speaker id without its variant (flite-rms, hts-slt, en-us)."""
    speaker = Path(relpath).name.split("_nohash_")[0]
    return speaker.split("_", 1)[0]


def clips_of(root: Path, split: str) -> list[str]:
    if split == "all":
        return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.wav") if not p.parent.name.startswith("."))
    name = {"test": "testing_list.txt", "validation": "validation_list.txt"}[split]
    return [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]


def softmax(y: np.ndarray) -> np.ndarray:
    z = np.exp(y - y.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Scorer:
    def __init__(self, model: str, *, threads: int = 1, events: dict | None = None):
        self.rt = Runtime(model, threads=threads)
        self.events = dict(events or {})  # EventOptions fields to change, e.g. {"threshold": 0.95}
        self.fe = LogMel.from_meta(self.rt.meta["frontend"])
        self.labels = list(self.rt.labels)
        self.readout = ((self.rt.meta or {}).get("output") or {}).get("readout")

    def posteriors(self, samples: np.ndarray):
        """(posteriors (T, C), loudness (T,)) of one stream over `samples` from a zero state."""
        x = self.fe.compute(samples.astype(np.float32))
        return softmax(np.asarray(self.rt.stream().feed(x), np.float64)), frame_loudness(x, log_energies=True)

    def detect(self, p: np.ndarray, loud: np.ndarray, events: dict | None = None) -> list:
        """The events a fresh detector fires over (p, loud), with `events` over this scorer's options."""
        det = EventDetector(self.labels, step_seconds=self.fe.hop / self.fe.sample_rate,
                            options=EventOptions.for_readout(self.readout, **{**self.events, **(events or {})}))
        return det.push(p, loud)

    def run(self, samples: np.ndarray):
        """(posteriors (T, C), events) for one stream over `samples` from a zero state."""
        p, loud = self.posteriors(samples)
        return p, self.detect(p, loud)

    def audio(self, path: Path) -> np.ndarray:
        return read_wav(path, sample_rate=self.fe.sample_rate)[0].astype(np.float64)


def score_clips(scorer: Scorer, root: Path, rels: list[str], trailing: float) -> list[dict]:
    zeros = np.zeros(int(round(trailing * scorer.fe.sample_rate)))
    rows = []
    for rel in rels:
        x = scorer.audio(root / rel)
        p, events = scorer.run(np.concatenate([x, zeros]))
        end = scorer.fe.frames(len(x)) - 1
        truth = rel.split("/", 1)[0]
        fired = [e.label for e in events]
        rows.append({"clip": rel, "engine": engine_of(rel), "voice": voice_of(rel), "truth": truth,
                     "label_at_end": scorer.labels[int(p[end].argmax())],
                     "label_after_silence": scorer.labels[int(p[-1].argmax())], "events": fired,
                     "events_exact": fired == ([] if truth in IGNORED else [truth])})
    return rows


def false_events(scorer: Scorer, root: Path, rels: list[str], seed: int) -> dict:
    stream = non_keyword_stream(scorer, root, rels, seed)
    _, events = scorer.run(stream) if len(stream) else (None, [])
    hours = len(stream) / scorer.fe.sample_rate / 3600
    return {"clips": sum(r.split("/", 1)[0] in IGNORED for r in rels), "seconds": round(hours * 3600, 1), "events": len(events),
            "per_hour": round(len(events) / hours, 2) if hours else None,
            "per_10min": round(len(events) / hours / 6, 3) if hours else None,
            "labels": dict(Counter(e.label for e in events))}


def non_keyword_stream(scorer: Scorer, root: Path, rels: list[str], seed: int) -> np.ndarray:
    """The split's non-keyword clips in a seeded order, end to end: one long input."""
    others = [r for r in rels if r.split("/", 1)[0] in IGNORED]
    order = np.random.default_rng(seed).permutation(len(others))
    return np.concatenate([scorer.audio(root / others[i]) for i in order]) if others else np.zeros(0)


def sweep(model: str, data: str, thresholds: list[float], *, split: str = "validation", trailing: float = 1.0,
          seed: int = 0, threads: int = 1, events: dict | None = None) -> list[dict]:
    """Per event threshold: events exactly right (all clips, keyword clips) and false events per
    10 min, from one pass of the model (posteriors are kept, only the detector is re-run).
    Choose the operating point on --split validation, then report it once on test."""
    root = Path(data)
    scorer = Scorer(model, threads=threads, events=events)
    rels = clips_of(root, split)
    zeros = np.zeros(int(round(trailing * scorer.fe.sample_rate)))
    runs = [(rel.split("/", 1)[0], scorer.posteriors(np.concatenate([scorer.audio(root / rel), zeros]))) for rel in rels]
    stream = non_keyword_stream(scorer, root, rels, seed)
    long_run = scorer.posteriors(stream) if len(stream) else None
    minutes = len(stream) / scorer.fe.sample_rate / 60
    out = []
    for t in thresholds:
        option = {"threshold": t, "hysteresis": min(EventOptions().hysteresis, t)}
        exact = [[e.label for e in scorer.detect(p, loud, option)] == ([] if truth in IGNORED else [truth])
                 for truth, (p, loud) in runs]
        keyword = [ok for ok, (truth, _) in zip(exact, runs, strict=True) if truth not in IGNORED]
        false = len(scorer.detect(*long_run, option)) if long_run is not None else 0
        out.append({"threshold": t, "events_exact": round(float(np.mean(exact)), 4),
                    "events_exact_keywords": round(float(np.mean(keyword)), 4) if keyword else None,
                    "false_events": false, "false_per_10min": round(false / minutes * 10, 3) if minutes else None})
    return out


def phase_report(scorer: Scorer, root: Path, rels: list[str], phases: int, trailing: float) -> dict:
    """How a model's events hold up when the framing moves: every keyword clip run at `phases`
    sub-hop delays. `exact_every_phase`: share of clips exactly right at all of them;
    `exact_by_phase`: share at each delay; `onset_spread_s`: over the clips with exactly one
    event at every delay, the median and largest spread (max - min) of the event's time after
    the clip's own start; `late_clips`: how many of them move by more than 0.3 s."""
    hop, rate = scorer.fe.hop, scorer.fe.sample_rate
    if phases > hop:
        raise SystemExit(f"eval_kws.py: --phases {phases}; expected at most the hop, {hop} samples (one framing per sample)")
    delays = [round(k * hop / phases) for k in range(phases)]
    zeros = np.zeros(int(round(trailing * rate)))
    keyword = [r for r in rels if r.split("/", 1)[0] not in IGNORED]
    exact = np.zeros((len(keyword), phases), bool)
    spreads = []
    for i, rel in enumerate(keyword):
        x, truth, times = scorer.audio(root / rel), rel.split("/", 1)[0], []
        for k, d in enumerate(delays):
            _, events = scorer.run(np.concatenate([np.zeros(d), x, zeros]))
            exact[i, k] = [e.label for e in events] == [truth]
            times.append(events[0].t - d / rate if exact[i, k] else None)
        if all(t is not None for t in times):
            spreads.append(max(times) - min(times))
    return {"phases": phases, "delays_samples": delays, "keyword_clips": len(keyword),
            "exact_every_phase": round(float(exact.all(axis=1).mean()), 4) if keyword else None,
            "exact_any_phase": round(float(exact.any(axis=1).mean()), 4) if keyword else None,
            "exact_by_phase": [round(float(v), 4) for v in exact.mean(axis=0)] if keyword else [],
            "onset_spread_s": {"median": round(float(np.median(spreads)), 3) if spreads else None,
                               "max": round(float(np.max(spreads)), 3) if spreads else None},
            "late_clips": int(np.sum(np.asarray(spreads) > 0.3))}


def summarise(rows: list[dict]) -> dict:
    keyword = [r for r in rows if r["truth"] not in IGNORED]
    mean = lambda xs: round(float(np.mean(xs)), 4) if xs else None  # noqa: E731
    return {"clips": len(rows), "keyword_clips": len(keyword),
            "clip_label": mean([r["label_after_silence"] == r["truth"] for r in rows]),
            "clip_label_at_end": mean([r["label_at_end"] == r["truth"] for r in rows]),
            "events_exact": mean([r["events_exact"] for r in rows]),
            "events_exact_keywords": mean([r["events_exact"] for r in keyword]),
            "keyword_missed": mean([not r["events"] for r in keyword]),
            "events_on_non_keywords": sum(len(r["events"]) for r in rows if r["truth"] in IGNORED)}


def speed(scorer: Scorer, *, frames: int = 3000, chunk: int = 100) -> dict:
    """µs per 10 ms frame on this machine: the model alone, and front end + model, fed in chunks of
    `chunk` frames (a file) and one frame a call (a microphone: one hop of audio, one step)."""
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(frames * scorer.fe.hop).astype(np.float32) * 0.1
    feats = scorer.fe.compute(audio)
    out = {}
    for name, k in (("", chunk), ("_live", 1)):
        best_model = best_all = np.inf
        for _ in range(3):
            s = scorer.rt.stream()
            t = time.perf_counter()
            for lo in range(0, frames, k):
                s.feed(feats[lo:lo + k])
            best_model = min(best_model, time.perf_counter() - t)
            s, fe = scorer.rt.stream(), scorer.fe.stream()
            t = time.perf_counter()
            for lo in range(0, len(audio), k * scorer.fe.hop):
                s.feed(fe.push(audio[lo:lo + k * scorer.fe.hop]))
            best_all = min(best_all, time.perf_counter() - t)
        out[f"us_per_frame{name}_model"] = round(best_model / frames * 1e6, 2)
        out[f"us_per_frame{name}_with_frontend"] = round(best_all / frames * 1e6, 2)
        out[f"realtime_factor{name}"] = round(best_all / frames / (scorer.fe.hop / scorer.fe.sample_rate), 5)
    return out


def model_size(path: str) -> dict:
    import onnx

    m = onnx.load(path)
    params = int(sum(np.prod(t.dims) for t in m.graph.initializer))
    return {"onnx_bytes": Path(path).stat().st_size, "parameters": params}


def confusion(rows: list[dict], labels: list[str]) -> list[list[int]]:
    index = {label: i for i, label in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), int)
    for r in rows:
        m[index[r["truth"]], index[r["label_after_silence"]]] += 1
    return m.tolist()


def plot(path: str, matrix: list[list[int]], labels: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("label at the clip's end (+ trailing silence)")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(model: str, data: str, *, split: str = "test", trailing: float = 1.0, seed: int = 0,
             threads: int = 1, timing: bool = True, events: dict | None = None, phases: int = 1) -> dict:
    root = Path(data)
    scorer = Scorer(model, threads=threads, events=events)
    rels = clips_of(root, split)
    rows = score_clips(scorer, root, rels, trailing)
    engines = sorted({r["engine"] for r in rows})
    report = {"model": str(model), "data": str(root), "split": split, "trailing_silence_s": trailing,
              "labels": scorer.labels, "targets": TARGETS,
              "event_options": dataclasses.asdict(EventOptions.for_readout(scorer.readout, **scorer.events)), "overall": summarise(rows),
              "false_events": false_events(scorer, root, rels, seed), "engines": {}, "voices": {}}
    for engine in engines:
        mine = [r for r in rows if r["engine"] == engine]
        report["engines"][engine] = {**summarise(mine), "false_events": false_events(
            scorer, root, [r["clip"] for r in mine], seed)}
    for voice in sorted({r["voice"] for r in rows if r["engine"] != "espeak"}):
        report["voices"][voice] = summarise([r for r in rows if r["voice"] == voice])
    report["confusion"] = confusion(rows, scorer.labels)
    report["confusions_top"] = Counter(f"{r['truth']}->{r['label_after_silence']}" for r in rows
                                       if r["truth"] != r["label_after_silence"]).most_common(12)
    report["meets_targets"] = {e: {"clip_label": v["clip_label"] >= TARGETS["clip_label"],
                                   "events_exact": v["events_exact"] >= TARGETS["events_exact"],
                                   "false_per_10min": (v["false_events"]["per_10min"] or 0) <= TARGETS["false_per_10min"]}
                               for e, v in report["engines"].items()}
    if phases > 1:
        report["framing"] = phase_report(scorer, root, rels, phases, trailing)
    report["size"] = model_size(model)
    if timing:
        report["speed"] = speed(scorer)
    report["clips"] = rows
    return report


def table(report: dict) -> str:
    lines = [f"{'engine':14} {'clips':>5} {'label':>7} {'@1s':>7} {'events':>7} {'kw ev':>7} {'false/10min':>11}"]
    for name, v in [*report["engines"].items(), ("ALL", {**report["overall"], "false_events": report["false_events"]})]:
        lines.append(f"{name:14} {v['clips']:5d} {v['clip_label']:7.3f} {v['clip_label_at_end']:7.3f} "
                     f"{v['events_exact']:7.3f} {v['events_exact_keywords']:7.3f} {v['false_events']['per_10min']:11.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eval_kws.py", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="the exported model (.onnx)")
    add("--data", required=True, help="a data set folder (tools/make_kws_data.py)")
    add("--split", choices=("test", "validation", "all"), default="test")
    add("--trailing", type=float, default=1.0, help="seconds of digital silence after each clip (default 1.0)")
    add("--seed", type=int, default=0, help="order of the non-keyword stream (default 0)")
    add("--threads", type=int, default=1)
    add("--json", metavar="FILE", help="write the report (with every clip's result) here")
    add("--plot", metavar="PNG", help="write the confusion matrix picture here")
    add("--no-timing", action="store_true", help="skip the µs-per-frame measurement")
    add("--threshold", type=float, help="event threshold (default: the detector's; choose it on --split validation)")
    add("--smooth", type=float, help="event smoothing in seconds (default: the detector's)")
    add("--sweep", metavar="T,T,...", type=lambda text: [float(t) for t in text.split(",") if t],
        help="instead of the report: events and false events per 10 min at each event threshold")
    add("--phases", type=int, default=1, metavar="K",
        help="also run every keyword clip at K sub-hop framings and report how its events hold (default 1: off)")
    args = parser.parse_args(argv)
    if args.phases < 1:
        parser.error(f"--phases {args.phases}; expected 1 (off) or more framings, e.g. 8")
    if args.sweep:
        rows = sweep(args.model, args.data, args.sweep, split=args.split, trailing=args.trailing, seed=args.seed,
                     threads=args.threads, events={"smooth": args.smooth} if args.smooth is not None else None)
        if args.json:
            Path(args.json).write_text(json.dumps({"model": args.model, "data": args.data, "split": args.split,
                                                   "sweep": rows}, indent=1) + "\n")
        print(f"{'threshold':>9} {'events':>7} {'kw ev':>7} {'false/10min':>11}")
        for r in rows:
            print(f"{r['threshold']:9.3f} {r['events_exact']:7.3f} {r['events_exact_keywords'] or 0:7.3f} "
                  f"{r['false_per_10min'] or 0:11.2f}")
        return 0
    report = evaluate(args.model, args.data, split=args.split, trailing=args.trailing, seed=args.seed,
                      threads=args.threads, timing=not args.no_timing, phases=args.phases,
                      events={k: v for k, v in (("threshold", args.threshold), ("smooth", args.smooth)) if v is not None})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        o = report["overall"]
        plot(args.plot, report["confusion"], report["labels"],
             f"{Path(args.model).name} on {args.split} speakers of {', '.join(report['engines'])}\n"
             f"{o['clips']} clips, label {o['clip_label']:.3f} after {args.trailing:g} s of silence")
    print(table(report))
    if "framing" in report:
        f = report["framing"]
        print(f"framing: {f['phases']} sub-hop delays, {f['keyword_clips']} keyword clips: exactly right at every one "
              f"{f['exact_every_phase']:.3f}, at any {f['exact_any_phase']:.3f}; by delay "
              f"{' '.join(f'{v:.3f}' for v in f['exact_by_phase'])}; event moves median "
              f"{f['onset_spread_s']['median']} s, max {f['onset_spread_s']['max']} s, {f['late_clips']} clips > 0.3 s")
    if "speed" in report:
        s, z = report["speed"], report["size"]
        print(f"size {z['onnx_bytes'] / 1024:.0f} KiB, {z['parameters']} parameters; "
              f"{s['us_per_frame_model']} µs/frame model, {s['us_per_frame_with_frontend']} µs/frame with front end "
              f"(chunks of 100 frames); {s['us_per_frame_live_model']} and {s['us_per_frame_live_with_frontend']} "
              f"µs one frame a call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
