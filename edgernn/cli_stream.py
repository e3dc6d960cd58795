"""`edgernn stream`: frames in, one line out per step, live. Torch-free."""

from __future__ import annotations

import json
import sys

import click
import numpy as np


def _pairs(values, what: str) -> dict:
    from edgernn.errors import InputError

    out = {}
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            raise InputError(f"{what} {v!r}; expected NAME=VALUE")
        out[name] = rest
    return out


def _constants(values) -> dict:
    from edgernn.errors import InputError

    out = {}
    for name, text in _pairs(values, "--const").items():
        try:
            out[name] = np.asarray(json.loads(text))
        except ValueError:
            raise InputError(f"--const {name}={text!r}: not a number or JSON list; expected e.g. {name}=16000") from None
    return out


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False), help="The .onnx model.")
@click.option("--input", "input_", required=True, help="FILE.csv, FILE.npy, or - for stdin (one frame per line).")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True, help="Execution provider.")
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--chunk", type=int, default=1, show_default=True, help="Frames per session call (output is the same).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "text"]), default="jsonl", show_default=True, help="Output lines.")
@click.option("--column", "columns", multiple=True, help="CSV input: use these named columns as the frame (repeatable).")
@click.option("--state", "states", multiple=True, help="Third-party model: a state pair IN=OUT (repeatable).")
@click.option("--const", "consts", multiple=True, help="Third-party model: a constant input NAME=VALUE (repeatable).")
def stream(model_path, input_, provider, threads, chunk, fmt, columns, states, consts):
    """Stream frames through a model one step (or --chunk K steps) at a time, printing each output."""
    from edgernn import sources
    from edgernn.errors import InputError
    from edgernn.output import Writer
    from edgernn.runtime import Runtime

    if chunk < 1:
        raise InputError(f"--chunk {chunk}; expected a positive integer")
    rt = Runtime(model_path, provider=provider, threads=threads, states=_pairs(states, "--state") or None,
                 constants=_constants(consts) or None)
    sig = rt.signature
    width = sig.frame_shape[0] if sig.frame_shape else 1
    meta = rt.meta or {}
    writer = Writer(fmt, labels=rt.labels, classify=(meta.get("model") or {}).get("task") == "classify")
    if input_ == "-":
        frames = sources.iter_lines(sys.stdin, width=width, dtype=sig.dtype)
    else:
        frames = sources.read_file(input_, width=width, columns=list(columns) or None, dtype=sig.dtype)
    if rt.bidirectional:
        x = np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames
        writer.write_all(0, rt.offline(x))
        return
    _run(rt, frames, chunk, writer)


def _run(rt, frames, chunk: int, writer) -> None:
    s = rt.stream()
    if isinstance(frames, np.ndarray):
        for start in range(0, len(frames), chunk):
            writer.write_all(start, s.feed(frames[start:start + chunk]))
        return
    buf = []
    for frame in frames:  # live: a pipe sees each result as soon as its chunk is complete
        buf.append(frame)
        if len(buf) == chunk:
            writer.write_all(s.steps, s.feed(np.stack(buf)))
            buf = []
    if buf:
        writer.write_all(s.steps, s.feed(np.stack(buf)))
