"""Pick models/samples: one test-speaker clip per keyword, the engines in turn, through the runtime.

    python tools/pick_kws_samples.py --data DIR --model models/kws.onnx --out models/samples [--json PICKED.json]

DIR is a data set from tools/make_kws_data.py. Keyword by keyword, the engines take turns
(ENGINES, skipping those without test clips of the keyword); numpy.random.default_rng(0)
shuffles that engine's test clips of the keyword (testing_list.txt: speakers never used to train
or to choose the checkpoint) and the first clip whose label after 1 s of digital silence and
whose events are both the keyword is copied to OUT/<keyword>.wav; if a keyword has none in
MAX_DRAWS draws, nothing is written and the exit status is 1. Every rejected draw is listed
(stdout and --json), so the samples show the model working without hiding how often it does not.
A markdown table of the picks is printed for models/samples/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_kws import Scorer, clips_of, engine_of  # noqa: E402

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ENGINES = ("recorded", "espeak", "festival", "festival-intl", "flite", "festival-hts", "rhvoice")
MAX_DRAWS = 20


def pick(data: Path, model: str, *, keywords=KEYWORDS, engines=ENGINES) -> list[dict]:
    test = clips_of(data, "test")
    scorer = Scorer(model)
    rows, turn = [], 0
    for kw in keywords:
        mine = {e: sorted(r for r in test if r.startswith(kw + "/") and engine_of(r) == e) for e in engines}
        if not any(mine.values()):
            raise SystemExit(f"pick_kws_samples: error: no test clip of {kw!r} in {data}/testing_list.txt")
        while not mine[engines[turn % len(engines)]]:
            turn += 1
        engine = engines[turn % len(engines)]
        turn += 1
        tries = []
        for rel in np.random.default_rng(0).permutation(mine[engine])[:MAX_DRAWS]:
            p, events = scorer.run(np.concatenate([scorer.audio(data / rel), np.zeros(scorer.fe.sample_rate)]))
            tries.append({"clip": str(rel), "label": scorer.labels[int(p[-1].argmax())], "events": [e.label for e in events]})
            if tries[-1]["label"] == kw and tries[-1]["events"] == [kw]:
                break
        rows.append({"keyword": kw, "engine": engine, **tries[-1], "draws": len(tries), "rejected": tries[:-1],
                     "ok": tries[-1]["label"] == kw and tries[-1]["events"] == [kw]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pick_kws_samples.py", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="a data set folder (tools/make_kws_data.py)")
    parser.add_argument("--model", required=True, help="the exported model (.onnx)")
    parser.add_argument("--out", required=True, type=Path, help="folder for <keyword>.wav")
    parser.add_argument("--json", type=Path, help="write every draw here")
    args = parser.parse_args(argv)
    if not (args.data / "testing_list.txt").is_file():
        print(f"pick_kws_samples: error: {args.data}/testing_list.txt not found; expected a tools/make_kws_data.py "
              "data set", file=sys.stderr)
        return 2
    rows = pick(args.data, args.model)
    bad = [r["keyword"] for r in rows if not r["ok"]]
    if not bad:  # all or nothing: a failed pick leaves the samples folder as it was
        args.out.mkdir(parents=True, exist_ok=True)
        for r in rows:
            shutil.copy(args.data / r["clip"], args.out / f"{r['keyword']}.wav")
    for r in rows:
        for t in r["rejected"]:
            print(f"- `{r['keyword']}`: {t['clip']} was labelled `{t['label']}` with events {t['events']}; drawn again")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print("| file | source clip (in the data set) | engine | speaker |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['keyword']}.wav | {r['clip']} | {r['engine']} | {Path(r['clip']).name.split('_nohash_')[0]} |")
    if bad:
        print(f"pick_kws_samples: error: no clip of {', '.join(bad)} in {MAX_DRAWS} draws was right; {args.out} "
              "was left as it was (every draw is listed above)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
