"""The microphone side of the CLI: `edgernn devices` and `stream --input mic`. Torch-free;
sounddevice is imported only here, and only when used."""

from __future__ import annotations

import json
import time
import warnings

import click
import numpy as np


def _open_mic(front, o):
    from edgernn.audio import mic
    from edgernn.core.errors import InputError

    sd = mic.load_backend()
    device = mic.find_device(o["device"], sd)
    try:
        rate, channels = mic.negotiate(device, o["sample_rate"] or front.rate, sd)
    except InputError:
        if o["sample_rate"]:
            raise
        rate, channels = mic.negotiate(device, None, sd)
        warnings.warn(f"input device {device.name!r} refuses {front.rate} Hz; capturing at {rate} Hz and "
                      f"resampling to the model's {front.rate} Hz", RuntimeWarning, stacklevel=2)
    hop = front.hop * rate / front.rate  # device samples per model hop
    block = max(1, round(hop * max(1, np.ceil(0.005 * rate / hop))))  # whole hops, >= 5 ms
    return mic.Microphone(device=device, sample_rate=rate, block=block, channels=channels,
                          max_lag=o["max_lag"], backend=sd)


def run_mic(rt, framer, drive, history, o):
    """Capture until --duration (or Ctrl-C); the callback only enqueues, this thread infers.
    drive: the edgernn.runtime.drive.Driver of the stream; history: the plot's, or None."""
    from edgernn.audio import mic
    from edgernn.audio.frontend import ModelFrontend

    front = ModelFrontend(rt, framer, o["sample_rate"], "--input mic")
    m = _open_mic(front, o)

    def on_audio(samples, frames):
        if history is not None:
            history.add_samples(samples)
        drive.push(frames)

    def on_gap(frames, samples):
        drive.skip(frames)
        if history is not None:
            history.skip_samples(samples)

    live = mic.LiveAudio(front, rate=front.rate, hop=front.hop, in_rate=m.sample_rate, on_audio=on_audio,
                         on_gap=on_gap)
    reported, last = m.snapshot(), 0.0
    with m:
        click.echo(f"listening: {m.device.name!r} at {m.sample_rate} Hz, {m.block}-sample blocks"
                   + (f", for {o['duration']:g} s" if o["duration"] is not None else ", Ctrl-C to stop"), err=True)
        try:
            for b in m.blocks(duration=o["duration"]):
                live.block(b.start, b.samples)
                now = time.monotonic()
                if now - last >= 1.0:  # at most one report a second: a slow model would flood stderr
                    st = m.snapshot()
                    for line in st.losses_since(reported, st.received_samples / m.sample_rate):
                        click.echo(f"warning: {line}", err=True)
                    reported, last = st, now
        except KeyboardInterrupt:
            pass
    live.end()
    drive.flush()
    st = m.snapshot()
    covered = max(live.next_in, min(st.received_samples, m.end if m.end is not None else live.next_in))
    for line in st.losses_since(reported, covered / m.sample_rate):
        click.echo(f"warning: {line}", err=True)
    return m, covered / m.sample_rate  # audio time covered, lost audio included


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device.")
def devices(as_json):
    """List the audio input devices that `edgernn stream --input mic --device` can use (* = default)."""
    from edgernn.audio import mic

    for d in mic.input_devices():
        if as_json:
            click.echo(json.dumps(d.to_dict()))
        else:
            click.echo(f"{'*' if d.is_default else ' '} {d.index:>3}  {d.name}  ({d.channels} in, "
                       f"{d.default_rate} Hz, {d.hostapi})")
