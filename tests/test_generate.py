"""Text generation through the torch-free runtime: char-LM sampling (one-to-many)."""

import pytest

torch = pytest.importorskip("torch")

from edgernn.train import checkpoint
from edgernn.train import tasks# noqa: E402
from edgernn.export import graph as export_mod# noqa: E402
from edgernn.runtime import generate as gen# noqa: E402
from edgernn.train import loop as train_mod# noqa: E402
from edgernn.core.errors import InputError  # noqa: E402
from edgernn.core.spec import ModelSpec  # noqa: E402

from conftest import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def charlm(tmp_path_factory):
    d = tmp_path_factory.mktemp("charlm")
    (d / "t.txt").write_text("abcabcabd " * 300)
    task = tasks.CharLMTask(d / "t.txt", tbptt=20)
    spec = ModelSpec(cell="lstm", hidden=24, embed=8, **task.spec_args)
    model, result = train_mod.train(task, spec, train_mod.TrainConfig(steps=150, eval_every=50, batch_size=8))
    train_mod.save(d / "lm.pt", model, task, result)
    loaded = checkpoint.load(d / "lm.pt")
    meta = export_mod.metadata_for(loaded, opset=17)
    (d / "lm.onnx").write_bytes(export_mod.build(loaded.model, meta).SerializeToString())
    return d / "lm.onnx", result["metrics"]


def test_same_seed_same_text_and_learned_pattern(charlm):
    path, m = charlm
    assert m["value"] < m["baseline"] - 1.0
    a = gen.sample_text(path, "abc", 60, seed=1)
    assert a == gen.sample_text(path, "abc", 60, seed=1) and len(a) == 60
    assert set(a) <= set("abcd ")
    greedy = gen.sample_text(path, "abd ", 12, temperature=0)
    assert greedy.startswith("abcab")  # the text's own pattern, through ONNX


def test_generate_cli_torch_free(charlm):
    path, _ = charlm
    r1 = run_cli("generate", path, "--prompt", "ab", "--length", "30", "--seed", "5", torch_free=True)
    r2 = run_cli("generate", path, "--prompt", "ab", "--length", "30", "--seed", "5", torch_free=True)
    assert r1.returncode == 0, r1.stderr
    assert r1.stdout == r2.stdout and r1.stdout.startswith("ab") and len(r1.stdout.strip()) == 32
    r = run_cli("generate", path, "--prompt", "xyz", torch_free=True)
    assert r.returncode == 2 and "never saw: 'xyz'" in r.stderr


def test_bad_generation_arguments(charlm):
    path, _ = charlm
    with pytest.raises(InputError, match="empty"):
        gen.sample_text(path, "", 5)
    with pytest.raises(InputError, match="temperature"):
        gen.sample_text(path, "a", 5, temperature=-1)
