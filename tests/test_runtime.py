"""The torch-free runtime: stepping equals offline, chunks equal steps, state is the stream's own."""

import numpy as np
import pytest

from edgernn.core.errors import InputError
from edgernn.runtime import Runtime

from conftest import run_torch_free


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_2000_steps_equal_offline(tiny_export, cell):
    _, _, path = tiny_export(cell=cell, layers=2)
    rt = Runtime(path)
    x = np.random.default_rng(0).standard_normal((2000, 3)).astype(np.float32)
    offline = rt.offline(x)
    s = rt.stream()
    stepped = np.stack([s.step(f) for f in x])
    assert stepped.shape == (2000, 2)
    assert np.max(np.abs(stepped - offline)) <= 1e-5
    for k in (1, 7, 64):
        s = rt.stream()
        chunked = np.concatenate([s.feed(x[i:i + k]) for i in range(0, len(x), k)])
        assert np.max(np.abs(chunked - offline)) <= 1e-5, k


def test_state_get_set_reset_and_independence(tiny_export):
    _, _, path = tiny_export(cell="lstm")
    rt = Runtime(path)
    x = np.random.default_rng(1).standard_normal((50, 3)).astype(np.float32)
    a, b = rt.stream(), rt.stream()
    a.feed(x[:20])
    saved = a.get_state()
    assert set(saved) == {"h0", "c0"} and saved["h0"].shape == (1, 1, 8)
    rest = a.feed(x[20:])
    b.set_state(saved)  # b continues a's stream exactly
    assert np.allclose(b.feed(x[20:]), rest, atol=1e-6)
    a.reset()
    assert np.allclose(a.feed(x), rt.offline(x), atol=1e-6)
    with pytest.raises(InputError, match="expected"):
        b.set_state({"h0": np.zeros((1, 1, 8), np.float32)})


def test_bad_frames_are_refused_and_state_kept(tiny_export):
    _, _, path = tiny_export()
    s = Runtime(path).stream()
    s.step(np.ones(3))
    before = s.get_state()
    with pytest.raises(InputError, match=r"expected \(3,\)"):
        s.step(np.ones(4))
    with pytest.raises(InputError, match="NaN"):
        s.step(np.array([1.0, np.nan, 0.0]))
    with pytest.raises(InputError, match="expected"):
        s.feed(np.ones((5, 2)))
    with pytest.raises(InputError, match="expected numbers"):
        s.step(["a", "b", "c"])
    after = s.get_state()
    assert all(np.array_equal(before[k], after[k]) for k in before) and s.steps == 1


def test_bidirectional_refuses_step_but_runs_offline(tiny_export):
    model, _, path = tiny_export(cell="gru", bidirectional=True)
    import torch

    rt = Runtime(path)
    x = np.random.default_rng(2).standard_normal((30, 3)).astype(np.float32)
    with pytest.raises(InputError, match="bidirectional"):
        rt.stream().step(x[0])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None])[0][0].numpy()
    assert np.allclose(rt.offline(x), ref, atol=1e-5)


def test_runtime_is_torch_free(tiny_export, tmp_path):
    _, _, path = tiny_export(cell="lstm")
    r = run_torch_free(
        "import numpy as np\n"
        "from edgernn.runtime import Runtime\n"
        f"rt = Runtime({str(path)!r})\n"
        "s = rt.stream(); y = s.feed(np.ones((5, 3), np.float32)); s.step(np.ones(3))\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(rt.providers, y.shape)\n")
    assert r.returncode == 0, r.stderr
    assert "CPUExecutionProvider" in r.stdout and "(5, 2)" in r.stdout


def test_missing_and_garbage_model_files(tmp_path):
    from edgernn.core.errors import ModelFileError

    with pytest.raises(InputError, match="no such model file"):
        Runtime(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="onnxruntime cannot load it"):
        Runtime(bad)


def test_token_ids_outside_the_vocabulary_are_refused(tiny_export):
    _, _, path = tiny_export(cell="gru", vocab=10, embed=4, outputs=10, task="lm", features=1)
    rt = Runtime(path)
    s = rt.stream()
    s.step(3)
    before = s.get_state()
    with pytest.raises(InputError, match="outside this model's vocabulary"):
        s.step(12)
    with pytest.raises(InputError, match="outside this model's vocabulary"):
        s.feed([1, 2, -1])
    b = rt.batch()
    i = b.open()
    with pytest.raises(InputError, match="outside"):
        b.step({i: 10})
    assert np.array_equal(before["h0"], s.get_state()["h0"])


@pytest.mark.parametrize("policy", ["raise", "skip", "reset"])
def test_feeding_one_frame_at_a_time_keeps_the_chunk_promise_on_bad_frames(tiny_export, policy):
    """feed of one frame goes the step path: a NaN frame there gets the same refusal, NaN row and
    state as inside a chunk."""
    _, _, path = tiny_export(cell="gru")
    rt = Runtime(path)
    x = np.random.default_rng(3).standard_normal((9, 3)).astype(np.float32)
    x[4, 1] = np.nan
    one, chunk = rt.stream(nan_policy=policy), rt.stream(nan_policy=policy)
    if policy == "raise":
        one.feed(x[:4])
        before = one.get_state()
        with pytest.raises(InputError) as a:
            one.feed(x[4:5])
        with pytest.raises(InputError) as b:
            chunk.feed(x)
        assert str(a.value) == str(b.value) and "frame 4" in str(a.value)
        assert all(np.array_equal(v, before[k]) for k, v in one.get_state().items())
        return
    rows = np.concatenate([one.feed(x[i:i + 1]) for i in range(len(x))])
    want = chunk.feed(x)
    assert rows.shape == want.shape and np.isnan(rows[4]).all() and np.isnan(want[4]).all()
    np.testing.assert_allclose(np.delete(rows, 4, 0), np.delete(want, 4, 0), atol=1e-6)
    assert all(np.allclose(v, chunk.get_state()[k], atol=1e-6) for k, v in one.get_state().items())
