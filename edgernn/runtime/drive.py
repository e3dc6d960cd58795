"""Drive a stream: frames in by chunks of C, every result handed on as (t, x, y). Torch-free.

    d = Driver(rt.stream(), chunk=4, consumers=[printer])
    d.array(frames)        # frames (T, F) known whole: one session call per C frames
    d.push(live_frames)    # frames as they arrive: a call as soon as C are waiting
    d.skip(3)              # 3 frames lost with their audio: the clock moves on, the state stays
    d.flush()              # end of input: the frames still waiting

A consumer has `consume(t, x, y)` (x (k, F) the frames, y (k, outputs) their outputs, t the index
of the first) and `skip(n)`. The driver never prints; the CLI's consumer does (edgernn.cli.output).
"""

from __future__ import annotations

import numpy as np


class Driver:
    """Frames to one stream in chunks, outputs to the consumers in order.

    t: index of the next output (a resumed stream starts at its own step count); frames: outputs
    produced in this run (skipped frames not counted).
    """

    def __init__(self, stream, *, chunk: int = 1, consumers=()):
        """stream: anything with feed(frames) -> outputs and steps, or None when outputs come from
        elsewhere (an offline run hands them to emit)."""
        self.stream, self.chunk = stream, int(chunk)
        self.consumers = list(consumers)
        self.t = stream.steps if stream is not None else 0
        self.frames = 0
        self._buf: list = []

    def array(self, frames: np.ndarray) -> None:
        """Frames checked whole (files): one session call per chunk."""
        for start in range(0, len(frames), self.chunk):
            x = frames[start:start + self.chunk]
            self.emit(x, self.stream.feed(x))

    def push(self, frames) -> None:
        """Live frames, one by one: each chunk's outputs go out as soon as the chunk is complete."""
        for f in frames:
            self._buf.append(f)
            if len(self._buf) == self.chunk:
                self.flush()

    def flush(self) -> None:
        """Run the frames pushed but not yet a whole chunk."""
        if self._buf:
            x = np.stack(self._buf)
            self._buf = []
            self.emit(x, self.stream.feed(x))

    def skip(self, n: int) -> None:
        """`n` frames were lost: what is waiting runs first, then the clock moves on by n."""
        self.flush()
        self.t += n
        for c in self.consumers:
            c.skip(n)

    def emit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Hand frames x (k, F) and their outputs y (k, outputs) on, numbered from t."""
        for c in self.consumers:
            c.consume(self.t, x, y)
        self.t += len(y)
        self.frames += len(y)
