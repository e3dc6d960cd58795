"""`edgernn stream` and `edgernn devices`: frames or audio in, one line out per step, live. Torch-free.

Inputs: a microphone (`mic`), a WAV file, CSV, .npy, or stdin (`-`, one frame per line).
Audio goes through the model's own front end (edgernn.frontend, metadata `frontend`): a WAV file
all at once, the microphone hop by hop as samples arrive (the two give the same frames).
Classifiers can also turn their per-frame posteriors into events (edgernn.events, --events).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click
import numpy as np

from edgernn.core.wording import plural
from edgernn.runtime.events import EventOptions
from edgernn.audio.frontend import ModelFrontend
from edgernn.cli.output import Printer
from edgernn.runtime.drive import Driver

_EVENTS = EventOptions()  # the defaults of --smooth, --threshold, ... (tuned on models/kws.onnx)


def _pairs(values, what: str) -> dict:
    from edgernn.core.errors import InputError

    out = {}
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            raise InputError(f"{what} {v!r}; expected NAME=VALUE")
        out[name] = rest
    return out


def _constants(values) -> dict:
    from edgernn.core.errors import InputError

    out = {}
    for name, text in _pairs(values, "--const").items():
        try:  # the numbers themselves are checked against the model's input (signature._constant)
            out[name] = json.loads(text)
        except (ValueError, RecursionError):
            raise InputError(f"--const {name}={text[:40]!r}: not a number or JSON list of numbers; expected e.g. "
                             f"{name}=16000") from None
    return out


def _model_rate(rt) -> int | None:
    fe = (rt.meta or {}).get("frontend")
    return int(fe["sample_rate"]) if fe else None


def _loudness(rt, framer):
    """frames -> dB per frame, where the frames say how loud the audio was (for --events); else None."""
    from edgernn.runtime.events import frame_loudness

    if (rt.meta or {}).get("frontend") or framer is not None:
        log_energies = bool((rt.meta or {}).get("frontend"))
        return lambda x: frame_loudness(x, log_energies=log_energies)
    return None


def _frames(rt, input_, framer, columns):
    """An ndarray (files: checked whole first) or an iterator of frames (stdin: live)."""
    from edgernn.runtime import sources

    sig = rt.signature
    width = 1 if framer is not None else (sig.frame_shape[0] if sig.frame_shape else 1)
    dtype = np.float32 if framer is not None else sig.dtype
    if input_ == "-":
        lines = sources.iter_lines(sys.stdin, width=width, dtype=dtype)
        if framer is None:
            return lines
        return (w for v in lines for w in framer.push(v))
    frames = sources.read_file(input_, width=width, columns=list(columns) or None, dtype=dtype)
    return framer.frame_all(frames[:, 0]) if framer is not None else frames


def _read_wav(rt, o) -> tuple[np.ndarray, int]:
    """The WAV file at the model's rate (or --sample-rate, or its own), cut to --duration."""
    from edgernn.audio import wav as audio

    samples, rate = audio.read_wav(o["input_"], sample_rate=_model_rate(rt) or o["sample_rate"])
    if o["duration"] is not None:
        samples = samples[:round(o["duration"] * rate)]
    return samples, rate


def _run_wav(rt, framer, drive, history, o) -> float:
    """A WAV file through the model's front end, all at once; returns its seconds."""
    samples, rate = o["wav"]
    front = ModelFrontend(rt, framer, rate, o["input_"])
    if history is not None:
        history.add_samples(samples)
    drive.array(front.offline(samples))
    return len(samples) / rate


def _history(rt, o, live: bool, step_seconds):
    from edgernn.cli import streamplot

    if not o["plot"]:
        return None
    streamplot.require()
    seconds = o["plot_seconds"] if o["plot_seconds"] is not None else (30.0 if live else None)
    return streamplot.History(seconds=seconds, sample_rate=_model_rate(rt) or o["sample_rate"] or 16000,
                              step_seconds=step_seconds)


def _step_seconds(rt, framer, o) -> float | None:
    """Seconds per model step where the input has a clock: front end hop, or --hop at the rate."""
    fe = (rt.meta or {}).get("frontend")
    if fe:
        return fe["hop"] / fe["sample_rate"]
    if framer is not None:
        return framer.hop / (o["sample_rate"] or 16000)
    return None


def _detector(rt, classify: bool, step_seconds, o):
    from edgernn.core.errors import InputError
    from edgernn.runtime.events import EventDetector

    if not o["events"]:
        return None
    if not classify:
        raise InputError("--events needs a classifier (metadata model.task 'classify' with output labels); "
                         "this model is not one; drop --events")
    given = {k: o[k] for k in ("smooth", "threshold", "hysteresis", "refractory", "delay", "endpoint", "endpoint_wait")
             if o[k] is not None}
    opts = EventOptions.for_readout(((rt.meta or {}).get("output") or {}).get("readout"), ignore=tuple(o["ignore"]),
                                    **given)
    labels = rt.labels or [str(i) for i in range(rt.out_size or 0)]
    return EventDetector(labels, step_seconds=step_seconds or 1.0, options=opts)


def _frame_words(rt) -> str:
    shape = rt.signature.frame_shape
    if not shape:
        return "one token id a step"
    return f"{plural(int(np.prod(shape)), 'value')} a step"


def _check_options(o, is_mic: bool, is_wav: bool) -> None:
    from edgernn.core.errors import InputError

    if o["chunk"] < 1:
        raise InputError(f"--chunk {o['chunk']}; expected a positive integer")
    src = o["input_"]
    if src not in ("mic", "-") and Path(src).is_dir():
        raise InputError(f"--input {src}: a folder; expected a file (.csv, .npy, .wav), mic or - "
                         f"(one file at a time: e.g. --input {Path(src) / 'NAME.wav'})")
    if o["columns"] and (is_mic or is_wav or src == "-" or Path(src).suffix.lower() == ".npy"):
        raise InputError(f"--column picks CSV columns by name; {src!r} has no columns; drop --column")
    if (o["window"] is None) != (o["hop"] is None):
        raise InputError("--window and --hop go together; expected both or neither")
    if o["duration"] is not None and not (is_mic or is_wav):
        raise InputError(f"--duration applies to audio input (mic or a .wav file), not {o['input_']!r}; drop it")
    if o["duration"] is not None and not o["duration"] > 0:
        raise InputError(f"--duration {o['duration']}; expected a positive number of seconds")
    if o["sample_rate"] is not None and o["sample_rate"] < 1:
        raise InputError(f"--sample-rate {o['sample_rate']}; expected a positive rate in Hz, e.g. 16000")
    if o["frames"] and o["events"] and o["fmt"] == "csv":
        raise InputError("--frames with --events cannot share stdout in csv; use --format jsonl or text")


def _options(f):
    """The stream command's options, in --help order."""
    opts = [
        click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False), help="The .onnx model, or grpc://HOST:PORT/NAME for one served by `edgernn serve` (Triton)."),
        click.option("--input", "input_", required=True, help="mic, FILE.wav, FILE.csv, FILE.npy, or - for stdin (one frame per line)."),
        click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True, help="Execution provider."),
        click.option("--strict-provider", is_flag=True, help="Refuse to run if the provider is missing, instead of falling back to CPU."),
        click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime intra-op threads."),
        click.option("--chunk", type=int, default=1, show_default=True, help="Frames per session call (output is the same); with --lookahead, the rule's chunk C."),
        click.option("--lookahead", help="Bidirectional models: stream with R frames of right context (an integer, or inf); outputs lag by at most C+R-1 frames."),
        click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "text"]), default="jsonl", show_default=True, help="Output lines."),
        click.option("--column", "columns", multiple=True, help="CSV input: use these named columns as the frame (repeatable)."),
        click.option("--state", "states", multiple=True, help="Third-party model: a state pair IN=OUT (repeatable)."),
        click.option("--const", "consts", multiple=True, help="Third-party model: a constant input NAME=VALUE (repeatable)."),
        click.option("--layout", type=click.Choice(["btf", "tbf", "bf", "tf", "bt", "tb"]), help="Third-party model: the frame input's axes (b batch, t time, f frame values), when the graph's dim names do not say it."),
        click.option("--frame", "frame_size", type=click.IntRange(min=1), help="Third-party model with a symbolic frame size: values per frame (default: --window, or the first frame's length)."),
        click.option("-v", "--verbose", is_flag=True, help="Print the state pairing and frame layout in use to stderr before streaming."),
        click.option("--window", type=int, help="Raw-sample models: samples per window (with --hop)."),
        click.option("--hop", type=int, help="Raw-sample models: new samples per step; each window keeps the previous window-hop."),
        click.option("--state-file", type=click.Path(dir_okay=False), help="Resume from this state file if it exists; save the state to it at the end."),
        click.option("--nan-policy", type=click.Choice(["raise", "skip", "reset"]), default="raise", show_default=True, help="A frame with NaN/Inf: refuse, skip it, or reset the stream."),
        click.option("--device", help="mic: input device, by index or (part of) its name (see `edgernn devices`; default: the system's)."),
        click.option("--sample-rate", type=int, help="mic: capture rate in Hz (default: the model's; other rates are resampled). Models without a front end: their rate (default 16000)."),
        click.option("--duration", type=float, help="Audio input: stop after this many seconds (mic default: until Ctrl-C)."),
        click.option("--max-lag", type=float, default=2.0, show_default=True, help="mic: seconds of audio queued for a slow model before blocks are dropped (and reported)."),
        click.option("--events", is_flag=True, help="Classifiers: print an event line when a keyword fires, e.g. {\"event\": \"yes\", \"t\": 12.34, \"p\": 0.97}."),
        click.option("--frames/--no-frames", default=None, help="Print the per-frame lines too (default: on, off with --events)."),
        click.option("--smooth", type=float, default=_EVENTS.smooth, show_default=True, help="--events: seconds of posteriors averaged."),
        click.option("--threshold", type=float, default=_EVENTS.threshold, show_default=True, help="--events: smoothed probability at which a keyword triggers a decision."),
        click.option("--delay", type=float, help=f"--events, running classifiers (readout last) without loudness: seconds from the trigger to the decision; the label on top then fires [default: {_EVENTS.delay}; 0 for per-frame classifiers]."),
        click.option("--hysteresis", type=float, default=_EVENTS.hysteresis, show_default=True, help="--events: a keyword fires again only after falling below threshold minus this."),
        click.option("--endpoint", type=float, help=f"--events, running classifiers on audio: decide once the sound has fallen this many dB below its peak (the word ended); 0: use --delay [default: {_EVENTS.endpoint:g}; 0 for per-frame classifiers]."),
        click.option("--endpoint-wait", type=float, default=_EVENTS.endpoint_wait, show_default=True, help="--events on audio: decide at the latest this many seconds after the trigger."),
        click.option("--refractory", type=float, default=_EVENTS.refractory, show_default=True, help="--events: seconds after an event during which none fires."),
        click.option("--ignore", multiple=True, help="--events: a label that never fires (repeatable; _silence_ and _unknown_ never do)."),
        click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG: waveform, features, outputs, events marked (needs matplotlib)."),
        click.option("--plot-seconds", type=float, help="--plot: draw only the last S seconds (default: all of a file, 30 s of a mic)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.command()
@_options
def stream(**o):
    """Stream frames or audio through a model one step (or --chunk K steps) at a time, printing each output."""
    from edgernn.core.errors import InputError
    from edgernn.runtime.framing import Framer
    from edgernn.cli.output import Writer
    from edgernn.runtime.engine import Runtime

    if o["model_path"].startswith("grpc://"):  # the model on a Triton server (edgernn serve)
        from edgernn.cli.remote import run_remote

        return run_remote(o)
    is_mic, is_wav = o["input_"] == "mic", Path(o["input_"]).suffix.lower() == ".wav"
    o["frames"] = (not o["events"]) if o["frames"] is None else o["frames"]
    _check_options(o, is_mic, is_wav)
    rt = Runtime(o["model_path"], provider=o["provider"], threads=o["threads"],
                 states=_pairs(o["states"], "--state") or None, constants=_constants(o["consts"]) or None,
                 strict=o["strict_provider"], layout=o["layout"], frame=o["frame_size"])
    framer = Framer(o["window"], o["hop"]) if o["window"] is not None else None
    if framer is not None and rt.signature.frame_open:
        rt.set_frame(o["window"])  # a raw-sample model with a symbolic length takes the window
    if framer is not None and rt.signature.frame_shape != (o["window"],):
        raise InputError(f"--window {o['window']}; this model takes frames of {rt.signature.frame_shape}")
    if o["verbose"]:
        from edgernn.cli import info

        click.echo(info.pairing_lines(rt), err=True)
    raw_audio = is_wav and not (rt.meta or {}).get("frontend") and framer is None  # samples straight in
    if raw_audio and rt.signature.frame_shape == (1,):
        click.echo(f"warning: {o['input_']}: this model has no audio front end; its raw samples go in one per step "
                   "(a model that takes windows of samples: --window and --hop)", err=True)
    elif raw_audio:
        raise InputError(f"{o['input_']}: audio, but this model has no audio front end (its metadata names none) "
                         f"and takes {_frame_words(rt)}; expected frames as .csv or .npy, or --window and --hop "
                         "(samples per window and per step) for a model that takes windows of raw samples")
    if is_wav:  # read first: a model without a front end runs at the file's rate
        o["wav"] = _read_wav(rt, o)
        o["sample_rate"] = o["sample_rate"] or o["wav"][1]
    classify = ((rt.meta or {}).get("model") or {}).get("task") == "classify"
    writer = Writer(o["fmt"], labels=rt.labels, classify=classify) if o["frames"] else None
    step_seconds = _step_seconds(rt, framer, o)
    detector = _detector(rt, classify, step_seconds, o)
    history = _history(rt, o, is_mic, step_seconds)
    if o["lookahead"] is not None:
        _run_lookahead(rt, framer, o, is_mic, is_wav, writer)
        return
    if rt.bidirectional:
        if is_mic:
            raise InputError("this model is bidirectional: it reads the future, so it cannot run live on a "
                             "microphone; record a .wav file and stream that")
        printer = Printer(rt, writer=writer, detector=detector, history=history, loudness=_loudness(rt, framer))
        _run_offline(rt, framer, o, is_wav, printer)
    else:
        _run_stream(rt, framer, o, is_mic, is_wav, writer, detector, history)


def _run_lookahead(rt, framer, o, is_mic, is_wav, writer) -> None:
    """Latency-controlled streaming: each line's t names the input frame it belongs to."""
    from edgernn.core.errors import InputError
    from edgernn.runtime.lookahead import parse_lookahead

    if is_mic or o["state_file"] or o["events"] or o["plot"]:
        raise InputError("--lookahead streams files and stdin, one line per frame; expected no --input mic, "
                         "--state-file, --events or --plot with it")
    s = rt.stream(lookahead=parse_lookahead(o["lookahead"]), chunk=o["chunk"], nan_policy=o["nan_policy"])
    if is_wav:
        samples, rate = o["wav"]
        frames = ModelFrontend(rt, framer, rate, o["input_"]).offline(samples)
    else:
        frames = _frames(rt, o["input_"], framer, o["columns"])
    pieces = ((frames[i:i + o["chunk"]] for i in range(0, len(frames), o["chunk"])) if isinstance(frames, np.ndarray)
              else (np.asarray(f)[None] for f in frames))
    out = writer or __import__("edgernn.cli.output", fromlist=["Writer"]).Writer(o["fmt"], labels=rt.labels)
    for piece in pieces:
        t0 = s.emitted
        out.write_all(t0, s.feed(piece))
    t0 = s.emitted
    out.write_all(t0, s.flush())


def _run_offline(rt, framer, o, is_wav, printer) -> None:
    if is_wav:
        samples, rate = o["wav"]
        x = ModelFrontend(rt, framer, rate, o["input_"]).offline(samples)
        if printer.history is not None:
            printer.history.add_samples(samples)
    else:
        frames = _frames(rt, o["input_"], framer, o["columns"])
        x = frames if isinstance(frames, np.ndarray) else np.stack(list(frames))
    drive = Driver(None, consumers=[printer])
    drive.emit(x, rt.offline(x))
    _finish(rt, o, drive, printer, seconds=None)


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so the stream stops like on Ctrl-C."""


def _raise_terminated(signum, frame):
    raise _Terminated


def _run_stream(rt, framer, o, is_mic, is_wav, writer, detector, history) -> None:
    s = rt.stream(nan_policy=o["nan_policy"])
    if o["state_file"] and Path(o["state_file"]).exists():
        s.load_state(o["state_file"])
    printer = Printer(rt, writer=writer, detector=detector, history=history, loudness=_loudness(rt, framer))
    drive = Driver(s, chunk=o["chunk"], consumers=[printer])
    seconds, mic, code = None, None, 0
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if threading.current_thread() is threading.main_thread() else None
    try:
        if is_mic:
            from edgernn.cli.mic import run_mic

            mic, seconds = run_mic(rt, framer, drive, history, o)
        elif is_wav:
            seconds = _run_wav(rt, framer, drive, history, o)
        else:
            frames = _frames(rt, o["input_"], framer, o["columns"])
            if isinstance(frames, np.ndarray):
                drive.array(frames)
            else:
                drive.push(frames)
                drive.flush()
    except KeyboardInterrupt:  # Ctrl-C: what was read is run and printed, the state saved, exit like a shell
        code = 130
    except _Terminated:
        code = 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if code:
            drive.flush()
        if o["state_file"]:
            s.save_state(o["state_file"])
    _finish(rt, o, drive, printer, seconds=seconds, mic=mic)
    if code:
        sys.exit(code)


def _finish(rt, o, drive, printer, *, seconds, mic=None) -> None:
    """The plot, and the summary line on stderr (always for a microphone: what was lost)."""
    from edgernn.cli import streamplot

    if printer.history is not None:
        streamplot.save(o["plot"], printer.history, labels=rt.labels, classify=printer.detector is not None
                        or ((rt.meta or {}).get("model") or {}).get("task") == "classify", title=o["input_"])
    if mic is None and not (o["events"] or o["plot"]):
        return
    parts = [f"summary: {o['input_'] if mic is None else 'mic ' + repr(mic.device.name)}"]
    if seconds is not None:
        parts.append(f"{seconds:.2f} s of audio" + (f" at {mic.sample_rate} Hz" if mic else ""))
    parts.append(plural(drive.frames, "frame"))
    if printer.detector is not None:
        parts.append(plural(printer.events, "event"))
    if mic is not None:
        parts.append(mic.snapshot().summary())
    click.echo(", ".join(parts), err=True)
