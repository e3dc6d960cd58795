"""State that lasts: saved in one process, loaded in another, continues exactly; wrong states refused."""

import json

import numpy as np
import pytest

from edgernn.core.errors import InputError, ModelFileError
from edgernn.runtime import Runtime

from conftest import run_cli, run_torch_free


def test_state_continues_across_processes(tiny_export, tmp_path):
    _, _, path = tiny_export(cell="lstm", layers=2)
    xs = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    np.save(tmp_path / "xs.npy", xs)
    code = ("import numpy as np\nfrom edgernn.runtime import Runtime\n"
            f"rt = Runtime({str(path)!r}); s = rt.stream(); xs = np.load({str(tmp_path / 'xs.npy')!r})\n")
    r = run_torch_free(code + f"s.feed(xs[:60]); s.save_state({str(tmp_path / 'st.npz')!r})\n")
    assert r.returncode == 0, r.stderr
    r = run_torch_free(code + f"s.load_state({str(tmp_path / 'st.npz')!r}); assert s.steps == 60\n"
                       f"np.save({str(tmp_path / 'rest.npy')!r}, s.feed(xs[60:]))\n")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "rest.npy"), Runtime(path).offline(xs)[60:]) or \
        np.max(np.abs(np.load(tmp_path / "rest.npy") - Runtime(path).offline(xs)[60:])) <= 1e-6


def test_state_from_another_model_or_shape_is_refused(tiny_export, tmp_path):
    _, _, a = tiny_export(name="a", cell="lstm")
    _, _, b = tiny_export(name="b", cell="lstm", seed=1)
    _, _, c = tiny_export(name="c", cell="gru")
    s = Runtime(a).stream()
    s.step(np.ones(3))
    s.save_state(tmp_path / "a.npz")
    with pytest.raises(InputError, match="belongs to another model"):
        Runtime(b).stream().load_state(tmp_path / "a.npz")
    with pytest.raises(InputError, match="belongs to another model"):
        Runtime(c).stream().load_state(tmp_path / "a.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match="not a readable edgernn state file"):
        s.load_state(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="no such state file"):
        s.load_state(tmp_path / "nope.npz")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_cli_state_file_resumes_where_it_stopped(tiny_export, tmp_path):
    _, _, path = tiny_export(cell="gru")
    xs = np.random.default_rng(1).standard_normal((30, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", xs[:12])
    np.save(tmp_path / "b.npy", xs[12:])
    out = []
    for part in ("a", "b"):
        r = run_cli("stream", "--model", path, "--input", tmp_path / f"{part}.npy", "--state-file", tmp_path / "s.npz",
                    torch_free=True)
        assert r.returncode == 0, r.stderr
        out += [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["t"] for d in out] == list(range(30))  # t continues from the saved step count
    got = np.array([d["y"] for d in out], np.float32)
    assert np.max(np.abs(got - Runtime(path).offline(xs))) <= 1e-5
