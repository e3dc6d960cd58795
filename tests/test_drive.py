"""Driver: frames in by chunks, (t, x, y) out to the consumers, the clock kept across skips."""

import sys

import numpy as np
import pytest

from edgernn.runtime.drive import Driver


class FakeStream:
    """feed doubles the frames; calls records each call's length."""

    def __init__(self, steps=0):
        self.steps, self.calls = steps, []

    def feed(self, x):
        self.calls.append(len(x))
        self.steps += len(x)
        return 2 * np.asarray(x, np.float32)


class Record:
    def __init__(self):
        self.seen, self.skipped = [], []

    def consume(self, t, x, y):
        self.seen.append((t, np.asarray(x).tolist(), np.asarray(y).tolist()))

    def skip(self, n):
        self.skipped.append(n)


@pytest.mark.parametrize("chunk", [1, 3, 10])
def test_array_calls_once_per_chunk(chunk):
    s, rec = FakeStream(), Record()
    d = Driver(s, chunk=chunk, consumers=[rec])
    x = np.arange(7, dtype=np.float32)[:, None]
    d.array(x)
    assert s.calls == [min(chunk, 7 - i) for i in range(0, 7, chunk)]
    assert [t for t, _, _ in rec.seen] == list(range(0, 7, chunk))
    assert sum((y for _, _, y in rec.seen), []) == (2 * x).tolist()
    assert d.t == d.frames == 7


def test_push_waits_for_a_whole_chunk_and_flush_runs_the_rest():
    s, rec = FakeStream(), Record()
    d = Driver(s, chunk=3, consumers=[rec])
    d.push(np.ones((2, 1), np.float32))
    assert s.calls == [] and rec.seen == []
    d.push(np.ones((2, 1), np.float32))
    assert s.calls == [3] and rec.seen[0][0] == 0
    d.flush()
    d.flush()  # nothing left: no call
    assert s.calls == [3, 1] and [t for t, _, _ in rec.seen] == [0, 3]


def test_skip_flushes_then_moves_the_clock():
    s, a, b = FakeStream(steps=5), Record(), Record()
    d = Driver(s, chunk=4, consumers=[a, b])
    assert d.t == 5  # a resumed stream numbers on from its own steps
    d.push(np.zeros((2, 1), np.float32))
    d.skip(10)
    d.push(np.zeros((4, 1), np.float32))
    assert s.calls == [2, 4] and a.skipped == b.skipped == [10]
    assert [t for t, _, _ in a.seen] == [5, 17] and a.seen == b.seen
    assert d.t == 21 and d.frames == 6


def test_emit_without_a_stream():
    rec = Record()
    d = Driver(None, consumers=[rec])
    d.emit(np.zeros((3, 2)), np.ones((3, 1)))
    assert rec.seen[0][0] == 0 and d.t == d.frames == 3


def test_torch_free(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    import importlib

    import edgernn.runtime.drive as drive

    importlib.reload(drive)
