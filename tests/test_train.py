"""Training: losses fall, seeds repeat, checkpoints load safely and carry what export needs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgernn.train import checkpoint
from edgernn.train import tasks# noqa: E402
from edgernn.train import loop as train_mod# noqa: E402
from edgernn.core.errors import InputError  # noqa: E402
from edgernn.core.spec import ModelSpec  # noqa: E402


def _fit(task, cell="lstm", steps=60, seed=0, **kw):
    spec = ModelSpec(cell=cell, hidden=16, **task.spec_args)
    cfg = train_mod.TrainConfig(steps=steps, eval_every=20, batch_size=16, seed=seed, **kw)
    return train_mod.train(task, spec, cfg)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_adding_loss_falls(cell):
    _, result = _fit(tasks.AddingTask(10), cell=cell, steps=150)
    h = result["history"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert result["metrics"]["value"] < result["metrics"]["baseline"]


def test_adding_baseline_is_the_constant_predictor():
    x, y = tasks.AddingTask(20).val
    assert x.shape == (2000, 20, 2) and (x[:, :, 1].sum(axis=1) == 2).all()
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.02


def test_forecast_beats_persistence_and_stores_normalisation(tmp_path):
    task = tasks.ForecastTask(tasks.bundled("sunspots.csv"), "SUNACTIVITY")
    model, result = _fit(task, steps=300)
    m = result["metrics"]
    assert m["metric"] == "rmse" and m["value"] < m["baseline"]
    train_mod.save(tmp_path / "f.pt", model, task, result)
    raw = torch.load(tmp_path / "f.pt", weights_only=True)  # loads with no unpickling of objects
    assert raw["metrics"]["value"] == m["value"] and raw["task"]["horizon"] == 1
    loaded = checkpoint.load(tmp_path / "f.pt")
    assert float(loaded.model.in_mean) == pytest.approx(task.mean)


def test_same_seed_same_run():
    a = _fit(tasks.AddingTask(8), steps=40, seed=3)[1]["metrics"]["value"]
    b = _fit(tasks.AddingTask(8), steps=40, seed=3)[1]["metrics"]["value"]
    c = _fit(tasks.AddingTask(8), steps=40, seed=4)[1]["metrics"]["value"]
    assert a == b and a != c


def test_clipping_is_applied():
    _, result = _fit(tasks.AddingTask(10), steps=40, clip=1e-6)
    assert result["metrics"]["clip_rate"] == 1.0


def test_forecast_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="horizon"):
        tasks.ForecastTask(tasks.bundled("sunspots.csv"), "SUNACTIVITY", horizon=0)
    with pytest.raises(InputError, match="expected one series"):
        tasks.ForecastTask(tasks.bundled("sunspots.csv"))
    short = tmp_path / "short.csv"
    short.write_text("v\n1\n2\n3\n")
    with pytest.raises(InputError, match="too few"):
        tasks.ForecastTask(short)


def _text(tmp_path, n=3000):
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "mat. "]
    p = tmp_path / "t.txt"
    p.write_text("".join(words[i] for i in rng.integers(0, len(words), n // 3)))
    return p


def test_charlm_tbptt_carries_state_and_learns(tmp_path):
    task = tasks.CharLMTask(_text(tmp_path), tbptt=20)
    segs = task.segments(np.random.default_rng(0), 4)
    x0, y0, fresh0 = next(segs)
    x1, _, fresh1 = next(segs)
    assert fresh0 and not fresh1 and x0.shape == (4, 20) and x0.dtype == np.int64
    assert (y0[:, :-1] == x0[:, 1:]).all() and (x1[:, 0] == y0[:, -1]).all()  # consecutive segments
    spec = ModelSpec(cell="gru", hidden=32, embed=8, **task.spec_args)
    model, result = train_mod.train(task, spec, train_mod.TrainConfig(steps=120, eval_every=40, batch_size=8))
    m = result["metrics"]
    assert m["metric"] == "bits_per_char" and m["value"] < m["baseline"] - 0.5
    h = result["history"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]


def test_charlm_bad_inputs(tmp_path):
    short = tmp_path / "s.txt"
    short.write_text("too short")
    with pytest.raises(InputError, match="shorter than two segments"):
        tasks.CharLMTask(short, tbptt=100)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00" * 100)
    with pytest.raises(InputError, match="not UTF-8"):
        tasks.CharLMTask(binary)


def test_early_stopping_keeps_the_best():
    task = tasks.AddingTask(8)
    _, result = _fit(task, steps=400, patience=1, lr=1e-9)  # cannot improve: stops after one flat validation
    m = result["metrics"]
    assert m.get("stopped_early") and m["steps"] < 400


def test_resume_equals_uninterrupted(tmp_path):
    """Stop after 60 of 100 steps, resume from the checkpoint, and land on the same weights."""
    task = tasks.AddingTask(8)
    spec = ModelSpec(cell="gru", hidden=8, **task.spec_args)
    cfg = train_mod.TrainConfig(steps=100, eval_every=20, batch_size=8)
    full, _ = train_mod.train(task, spec, cfg)
    saved = {}

    class Interrupt(Exception):
        pass

    def on_eval(model, state, best):
        train_mod.save(tmp_path / "r.pt", model, task, {}, resume_state=state, best_state=best)
        if state["run"]["step"] == 60:
            saved["ok"] = True
            raise Interrupt

    with pytest.raises(Interrupt):
        train_mod.train(task, spec, cfg, on_eval=on_eval)
    ckpt = checkpoint.read(tmp_path / "r.pt")
    resumed, _ = train_mod.train(task, spec, cfg, resume=ckpt)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_tasks_by_name_build_the_task_and_its_spec(tmp_path):
    adding = tasks.make("adding", seq_len=12, seed=3)
    assert isinstance(adding, tasks.AddingTask) and adding.seq_len == 12
    assert tasks.model_spec("adding", adding) == ModelSpec(cell="lstm", hidden=64, **adding.spec_args)
    assert tasks.model_spec("adding", adding, cell="gru", hidden=8, layers=2).to_dict()["hidden"] == 8
    charlm = tasks.make("charlm", text=_text(tmp_path), tbptt=20)
    assert tasks.model_spec("charlm", charlm).embed == 32  # a vocabulary gets the task's embedding
    assert isinstance(tasks.make("forecast"), tasks.ForecastTask)  # the bundled sunspots
    assert set(tasks.NAMES) == set(tasks.DEFAULTS) | {"seq2seq"}


@pytest.mark.parametrize("name, kw, match", [
    ("forecast", {"bidirectional": True}, "would read the very values it predicts"),
    ("charlm", {"bidirectional": True}, "would read the next character"),
    ("classify", {}, "needs --data DIR"),
    ("nope", {}, "expected one of adding, forecast, charlm, classify"),
])
def test_tasks_by_name_refuse_what_cannot_work(name, kw, match):
    with pytest.raises(InputError, match=match):
        tasks.make(name, **kw)


def test_cli_task_choice_is_the_registry():
    from edgernn.cli.train import train

    opt = next(p for p in train.params if p.name == "task")
    assert tuple(opt.type.choices) == tasks.NAMES


def test_init_starts_from_the_given_weights_and_normalisation():
    """Fine-tuning: --init's weights and input normalisation replace the fresh ones, so a run of
    no learning (lr ~ 0) ends where it started; without init the same run does not."""
    task = tasks.AddingTask(8)
    spec = ModelSpec(cell="gru", hidden=8, **task.spec_args)
    start, _ = train_mod.train(task, spec, train_mod.TrainConfig(steps=40, eval_every=20, batch_size=8))
    init = {k: v.clone() for k, v in start.state_dict().items()}
    init["in_mean"] = torch.full_like(init["in_mean"], 0.25)  # not what the task would set
    still, _ = train_mod.train(task, spec, train_mod.TrainConfig(steps=2, eval_every=2, batch_size=8, lr=1e-12),
                               init=init)
    for k, v in init.items():
        assert torch.allclose(v, still.state_dict()[k], atol=1e-7), k
    fresh, _ = train_mod.train(task, spec, train_mod.TrainConfig(steps=2, eval_every=2, batch_size=8, lr=1e-12))
    assert not torch.allclose(fresh.state_dict()["in_mean"], init["in_mean"])


def test_init_refuses_weights_of_another_model(tmp_path):
    from click.testing import CliRunner

    from edgernn.cli import main

    def run(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    base = ["train", "--task", "adding", "--seq-len", "8", "--cell", "gru", "--batch-size", "8", "--steps", "4",
            "--eval-every", "2"]
    assert run(*base, "--hidden", "8", "-o", tmp_path / "a.pt").exit_code == 0
    assert run(*base, "--hidden", "8", "--init", tmp_path / "a.pt", "-o", tmp_path / "b.pt").exit_code == 0
    for extra, match in ((["--hidden", "16"], "differs from this command's"),
                         (["--hidden", "8", "--resume", tmp_path / "a.pt"], "--resume and --init both given"),
                         (["--hidden", "8", "--init", tmp_path / "none.pt"], "no such file")):
        init = [] if "--init" in extra else ["--init", tmp_path / "a.pt"]
        r = run(*base, *extra, *init, "-o", tmp_path / "c.pt")
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and match in r.output, (extra, r.output)
        assert not (tmp_path / "c.pt").exists()


def test_init_and_resume_refuse_other_labels(tmp_path):
    from test_classify import make_set, task_of

    from edgernn.cli.train import _load_init, _load_resume

    task = task_of(make_set(tmp_path / "a"))
    spec = ModelSpec(cell="gru", hidden=8, **task.spec_args)
    model, result = train_mod.train(task, spec, train_mod.TrainConfig(steps=2, eval_every=2, batch_size=4))
    train_mod.save(tmp_path / "a.pt", model, task, result)
    assert set(_load_init(tmp_path / "a.pt", spec, task.labels)) == set(model.state_dict())
    with pytest.raises(InputError, match="labels .* differ from the data's"):
        _load_init(tmp_path / "a.pt", spec, list(reversed(task.labels)))
    train_mod.save(tmp_path / "r.pt", model, task, result, resume_state={"run": {}})  # resume checks the same
    assert _load_resume(tmp_path / "r.pt", spec, task.labels)["resume"] == {"run": {}}
    with pytest.raises(InputError, match="labels .* differ from the data's"):
        _load_resume(tmp_path / "r.pt", spec, list(reversed(task.labels)))
