"""Many streams in one call: streams join and leave at random, and each equals itself run alone."""

import threading

import numpy as np
import pytest

from edgernn.core.errors import InputError
from edgernn.runtime import Runtime


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_64_streams_join_and_leave_equal_alone(tiny_export, cell):
    _, _, path = tiny_export(cell=cell, layers=2)
    rt = Runtime(path)
    rng = np.random.default_rng(0)
    b = rt.batch()
    inputs, outputs, alive = {}, {}, []
    for step in range(1500):
        if len(alive) < 64 and rng.random() < 0.3:
            sid = b.open()
            alive.append(sid)
            inputs[sid], outputs[sid] = [], []
        if alive and rng.random() < 0.02:
            b.close(alive.pop(int(rng.integers(len(alive)))))
        stepping = [i for i in alive if rng.random() < 0.8]  # not every stream has a frame every step
        frames = {i: rng.standard_normal(3).astype(np.float32) for i in stepping}
        for i, y in b.step(frames).items():
            inputs[i].append(frames[i])
            outputs[i].append(y)
    assert len(inputs) > 64  # streams really came and went
    worst = 0.0
    for sid, xs in inputs.items():
        if xs:
            alone = rt.offline(np.stack(xs))
            worst = max(worst, float(np.max(np.abs(np.stack(outputs[sid]) - alone))))
    assert worst <= 1e-5


def test_feed_groups_uneven_lengths_and_matches_stream(tiny_export):
    _, _, path = tiny_export(cell="lstm")
    rt = Runtime(path)
    b = rt.batch()
    ids = [b.open() for _ in range(4)]
    rng = np.random.default_rng(1)
    xs = {i: rng.standard_normal((n, 3)).astype(np.float32) for i, n in zip(ids, (5, 9, 5, 1))}
    out = b.feed(xs)
    for i in ids:
        assert np.allclose(out[i], rt.offline(xs[i]), atol=1e-5)
    s = rt.stream()
    s.feed(xs[ids[1]])
    assert all(np.allclose(s.get_state()[k], b.get_state(ids[1])[k], atol=1e-6) for k in ("h0", "c0"))


def test_bad_frames_refused_without_touching_any_state(tiny_export):
    _, _, path = tiny_export(cell="gru")
    b = Runtime(path).batch()
    a, c = b.open(), b.open()
    b.step({a: np.ones(3), c: np.ones(3)})
    before = (b.get_state(a)["h0"].copy(), b.get_state(c)["h0"].copy())
    with pytest.raises(InputError, match=r"stream \d+: frame of shape \(4,\); expected \(3,\)"):
        b.step({a: np.ones(3), c: np.ones(4)})
    with pytest.raises(InputError, match="NaN"):
        b.step({a: np.ones(3), c: np.array([np.nan, 0, 0])})
    with pytest.raises(InputError, match="not open"):
        b.step({99: np.ones(3)})
    assert np.array_equal(b.get_state(a)["h0"], before[0]) and np.array_equal(b.get_state(c)["h0"], before[1])


def test_nan_skip_and_reset_policies(tiny_export):
    _, _, path = tiny_export(cell="gru")
    rt = Runtime(path)
    b = rt.batch(nan_policy="skip")
    a, c = b.open(), b.open()
    out = b.step({a: np.ones(3), c: np.array([np.nan, 0, 0])})
    assert set(out) == {a}
    r = rt.batch(nan_policy="reset")
    a = r.open()
    r.step({a: np.ones(3)})
    r.step({a: np.array([np.inf, 0, 0])})
    assert not r.get_state(a)["h0"].any()


def test_closed_streams_release_storage(tiny_export):
    _, _, path = tiny_export(cell="lstm")
    b = Runtime(path).batch()
    ids = [b.open() for _ in range(1000)]
    big = b.state_nbytes
    for i in ids[:-3]:
        b.close(i)
    assert len(b) == 3 and b.state_nbytes < big / 10


def test_one_runtime_shared_by_threads(tiny_export):
    _, _, path = tiny_export(cell="lstm", layers=2)
    rt = Runtime(path)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((300, 3)).astype(np.float32) for _ in range(6)]
    results = [None] * 6

    def work(k):
        s = rt.stream()  # each thread its own streams; the runtime is shared
        results[k] = np.stack([s.step(f) for f in xs[k]])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(6):
        assert np.allclose(results[k], rt.offline(xs[k]), atol=1e-5)
