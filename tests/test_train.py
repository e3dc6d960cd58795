"""Training: losses fall, seeds repeat, checkpoints load safely and carry what export needs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgernn import checkpoint, tasks  # noqa: E402
from edgernn import train as train_mod  # noqa: E402
from edgernn.errors import InputError  # noqa: E402
from edgernn.spec import ModelSpec  # noqa: E402


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
