"""The python-backend model's bookkeeping without Triton: states by correlation id, one batched
call per model call, START/END/idle, a bad frame refused for its sequence alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgernn.core.errors import InputError  # noqa: E402
from edgernn.runtime import Runtime  # noqa: E402
from edgernn.serve.python_model import Request, Sequences  # noqa: E402


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def seqs(tiny_export):
    _, _, path = tiny_export(cell="lstm", layers=2)
    clock = Clock()
    return Runtime(path), Sequences(Runtime(path), idle_timeout_s=5, clock=clock), clock


def test_many_sequences_equal_local_streams_in_one_call_each(seqs):
    rt, sq, _ = seqs
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 20, 3)).astype(np.float32)
    got = np.zeros((6, 20, 2), np.float32)
    for t in range(20):
        reqs = [Request(100 + i, x[i, t:t + 1], start=t == 0, end=t == 19) for i in range(6)]
        for i, y in enumerate(sq.run(reqs)):
            got[i, t] = y[0]
    want = np.stack([rt.stream().feed(x[i]) for i in range(6)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert sq.counts.calls == 20 and sq.counts.started == sq.counts.ended == 6 and len(sq) == 0
    assert sq.batch.state_nbytes == 0


def test_chunks_of_different_lengths_and_a_restart(seqs):
    rt, sq, _ = seqs
    x = np.random.default_rng(1).standard_normal((2, 9, 3)).astype(np.float32)
    a, b = sq.run([Request(1, x[0, :4], start=True), Request(2, x[1, :1], start=True)])
    assert a.shape == (4, 2) and b.shape == (1, 2)
    (c,) = sq.run([Request(1, x[0, 4:], start=True)])  # START again: from zero, not from step 4
    np.testing.assert_allclose(c, rt.stream().feed(x[0, 4:]), atol=1e-6)
    assert len(sq) == 2 and sq.counts.started == 3


def test_bad_frame_errs_for_its_sequence_alone_and_its_state_stays(seqs):
    rt, sq, _ = seqs
    x = np.random.default_rng(2).standard_normal((3, 3, 3)).astype(np.float32)
    sq.run([Request(i, x[i, :1], start=True) for i in range(3)])
    bad = x[1, 1:2].copy()
    bad[0, 0] = np.nan
    out = sq.run([Request(0, x[0, 1:2]), Request(1, bad), Request(2, np.zeros((1, 5), np.float32))])
    assert isinstance(out[1], InputError) and "sequence 1" in str(out[1]) and "NaN" in str(out[1])
    assert isinstance(out[2], InputError) and "sequence 2" in str(out[2]) and "(T, 3)" in str(out[2])
    np.testing.assert_allclose(out[0][0], rt.stream().feed(x[0, :2])[1], atol=1e-6)
    (y,) = sq.run([Request(1, x[1, 1:2])])  # the refused frame did not advance sequence 1
    np.testing.assert_allclose(y[0], rt.stream().feed(x[1, :2])[1], atol=1e-6)


def test_unknown_sequence_without_start_is_refused(seqs):
    _, sq, _ = seqs
    (out,) = sq.run([Request(7, np.zeros((1, 3), np.float32))])
    assert isinstance(out, InputError) and "sequence_start" in str(out) and len(sq) == 0


def test_idle_sequences_are_dropped_and_end_frees_at_once(seqs):
    _, sq, clock = seqs
    f = np.zeros((1, 3), np.float32)
    sq.run([Request(i, f, start=True) for i in range(4)])
    clock.t = 3.0
    sq.run([Request(0, f), Request(1, f, end=True)])
    assert len(sq) == 3 and sq.counts.ended == 1
    clock.t = 6.0  # 2 and 3 were last seen at 0: idle for 6 s > 5 s
    assert sorted(sq.evict()) == [2, 3] and len(sq) == 1 and sq.counts.evicted == 2
    clock.t = 9.0
    assert sq.evict() == [0] and len(sq) == 0 and sq.batch.state_nbytes == 0


def test_a_sequence_twice_in_one_call_runs_in_order(seqs):
    rt, sq, _ = seqs
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    a, b = sq.run([Request(5, x[:1], start=True), Request(5, x[1:])])
    np.testing.assert_allclose(np.concatenate([a, b]), rt.stream().feed(x), atol=1e-6)
