"""`edgernn stream`: frames in, one line out per step, live. Torch-free."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def _wav_frames(rt, path, framer):
    """A WAV file as the model's frames: through its front end, or framed raw samples."""
    from edgernn import audio
    from edgernn.errors import InputError
    from edgernn.frontend import LogMel

    fe = (rt.meta or {}).get("frontend")
    if fe:
        fe = LogMel.from_meta(fe)
        samples, _ = audio.read_wav(path, sample_rate=fe.sample_rate)
        return fe.compute(samples)
    samples, _ = audio.read_wav(path)
    if framer is not None:
        return framer.frame_all(samples)
    if rt.signature.frame_shape == (1,):
        return samples[:, None]
    raise InputError(f"{path}: a WAV input needs a model with an audio front end in its metadata, or --window N "
                     f"--hop M to frame raw samples; this model takes frames of {rt.signature.frame_shape}")


def _frames(rt, input_, framer, columns):
    """An ndarray (files: checked whole first) or an iterator of frames (stdin: live)."""
    from edgernn import sources

    sig = rt.signature
    width = 1 if framer is not None else (sig.frame_shape[0] if sig.frame_shape else 1)
    dtype = np.float32 if framer is not None else sig.dtype
    if input_ == "-":
        lines = sources.iter_lines(sys.stdin, width=width, dtype=dtype)
        if framer is None:
            return lines
        return (w for v in lines for w in framer.push(v))
    if Path(input_).suffix.lower() == ".wav":
        return _wav_frames(rt, input_, framer)
    frames = sources.read_file(input_, width=width, columns=list(columns) or None, dtype=dtype)
    return framer.frame_all(frames[:, 0]) if framer is not None else frames


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False), help="The .onnx model.")
@click.option("--input", "input_", required=True, help="FILE.wav, FILE.csv, FILE.npy, or - for stdin (one frame per line).")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True, help="Execution provider.")
@click.option("--strict-provider", is_flag=True, help="Refuse to run if the provider is missing, instead of falling back to CPU.")
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--chunk", type=int, default=1, show_default=True, help="Frames per session call (output is the same).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "text"]), default="jsonl", show_default=True, help="Output lines.")
@click.option("--column", "columns", multiple=True, help="CSV input: use these named columns as the frame (repeatable).")
@click.option("--state", "states", multiple=True, help="Third-party model: a state pair IN=OUT (repeatable).")
@click.option("--const", "consts", multiple=True, help="Third-party model: a constant input NAME=VALUE (repeatable).")
@click.option("--window", type=int, help="Raw-sample models: samples per window (with --hop).")
@click.option("--hop", type=int, help="Raw-sample models: new samples per step; each window keeps the previous window-hop.")
@click.option("--state-file", type=click.Path(dir_okay=False), help="Resume from this state file if it exists; save the state to it at the end.")
@click.option("--nan-policy", type=click.Choice(["raise", "skip", "reset"]), default="raise", show_default=True, help="A frame with NaN/Inf: refuse, skip it, or reset the stream.")
def stream(model_path, input_, provider, strict_provider, threads, chunk, fmt, columns, states, consts, window, hop,
           state_file, nan_policy):
    """Stream frames through a model one step (or --chunk K steps) at a time, printing each output."""
    from edgernn.errors import InputError
    from edgernn.framing import Framer
    from edgernn.output import Writer
    from edgernn.runtime import Runtime

    if chunk < 1:
        raise InputError(f"--chunk {chunk}; expected a positive integer")
    if (window is None) != (hop is None):
        raise InputError("--window and --hop go together; expected both or neither")
    rt = Runtime(model_path, provider=provider, threads=threads, states=_pairs(states, "--state") or None,
                 constants=_constants(consts) or None, strict=strict_provider)
    framer = Framer(window, hop) if window is not None else None
    if framer is not None and rt.signature.frame_shape != (window,):
        raise InputError(f"--window {window}; this model takes frames of {rt.signature.frame_shape}")
    meta = rt.meta or {}
    writer = Writer(fmt, labels=rt.labels, classify=(meta.get("model") or {}).get("task") == "classify")
    frames = _frames(rt, input_, framer, columns)
    if rt.bidirectional:
        x = frames if isinstance(frames, np.ndarray) else np.stack(list(frames))
        writer.write_all(0, rt.offline(x))
        return
    s = rt.stream(nan_policy=nan_policy)
    if state_file and Path(state_file).exists():
        s.load_state(state_file)
    try:
        _run(s, frames, chunk, writer)
    finally:
        if state_file:
            s.save_state(state_file)


def _run(s, frames, chunk: int, writer) -> None:
    if isinstance(frames, np.ndarray):
        for start in range(0, len(frames), chunk):
            t0 = s.steps
            writer.write_all(t0, s.feed(frames[start:start + chunk]))
        return
    buf = []
    for frame in frames:  # live: a pipe sees each result as soon as its chunk is complete
        buf.append(frame)
        if len(buf) == chunk:
            t0 = s.steps
            writer.write_all(t0, s.feed(np.stack(buf)))
            buf = []
    if buf:
        t0 = s.steps
        writer.write_all(t0, s.feed(np.stack(buf)))
