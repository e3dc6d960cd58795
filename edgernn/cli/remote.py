"""`edgernn stream --model grpc://HOST:PORT/NAME`: the same lines as local streaming, the model on Triton."""

from __future__ import annotations

import sys

from edgernn.cli.output import Printer, Writer
from edgernn.runtime.drive import Driver

_LOCAL_ONLY = ("lookahead", "state_file", "events", "plot", "window", "states", "consts", "layout", "frame_size")


def run_remote(o: dict) -> None:
    """Frames from a CSV/.npy file or stdin to one sequence on the server; one output line per step."""
    from edgernn.core.errors import InputError
    from edgernn.runtime import sources
    from edgernn.serve.client import Remote

    used = [k for k in _LOCAL_ONLY if o.get(k)]
    if used or o["input_"] == "mic":
        what = ", ".join("--" + k.replace("_size", "").replace("_", "-") for k in used) or o["input_"]
        raise InputError(f"a grpc:// model streams frames from a CSV or .npy file, stdin, or a .wav file through "
                         f"the model's front end; {what} needs the model file: stream the .onnx locally for that")
    if o["chunk"] < 1:
        raise InputError(f"--chunk {o['chunk']}; expected a positive integer")
    remote = Remote.from_url(o["model_path"])
    s = remote.stream()
    try:
        classify = ((remote.meta or {}).get("model") or {}).get("task") == "classify"
        writer = Writer(o["fmt"], labels=remote.labels, classify=classify)
        drive = Driver(s, chunk=o["chunk"], consumers=[Printer(None, writer=writer, detector=None, history=None)])
        width = remote.frame_shape[0] if remote.frame_shape else 1
        if o["input_"].lower().endswith(".wav"):
            drive.array(_wav_frames(remote, o))
        elif o["input_"] == "-":
            drive.push(sources.iter_lines(sys.stdin, width=width, dtype=remote.dtype))
            drive.flush()
        else:
            drive.array(sources.read_file(o["input_"], width=width, columns=list(o["columns"]) or None,
                                          dtype=remote.dtype))
    finally:
        try:
            s.close()  # END: the server frees this sequence's state now, not after the idle timeout
        finally:
            remote.close()


def _wav_frames(remote, o):
    """A WAV file through the front end in the served model's metadata, as local streaming does."""
    from edgernn.audio import wav as audio
    from edgernn.audio.frontend import ModelFrontend
    from edgernn.core.errors import InputError

    fe = (remote.meta or {}).get("frontend")
    if not fe:
        raise InputError(f"{o['input_']}: the served model has no audio front end in its metadata; expected frames "
                         "(.csv, .npy or -) for it")
    samples, rate = audio.read_wav(o["input_"], sample_rate=int(fe["sample_rate"]))
    if o["duration"] is not None:
        samples = samples[:round(o["duration"] * rate)]
    return ModelFrontend(remote, None, rate, o["input_"]).offline(samples)
