"""Gradient report: ‖∂L/∂h_k‖ matches an independent autograd reference and finite differences;
the PNG writers write whole PNG files and nothing else."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from types import SimpleNamespace  # noqa: E402

from edgernn.train import diagnostics# noqa: E402
from edgernn.train import loop as train_mod# noqa: E402
from edgernn.core.errors import InputError  # noqa: E402
from edgernn.train.models import RNNModel  # noqa: E402
from edgernn.core.spec import ModelSpec  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
N, L, F = 3, 7, 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: extra threads only add spin-waiting, 100x slower on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(cell="rnn_tanh", layers=1, readout="every", outputs=2, seed=0, **kw):
    torch.manual_seed(seed)
    spec = ModelSpec(cell=cell, features=F, hidden=8, layers=layers, outputs=outputs, readout=readout, **kw)
    return RNNModel(spec).eval()


def _data(readout, outputs=2, seed=1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, L, F)).astype(dtype)
    y = rng.normal(size=(N, L, outputs) if readout == "every" else (N, outputs)).astype(dtype)
    return x, y


def _loss_of_h(model, x, y, k):
    """Another route to the loss as a function of h_k (the state after frame k): run x[:, :k+1]
    in one call, cut the graph there, re-read y_k from h_k, continue on x[:, k+1:] in one call."""
    xt = torch.from_numpy(x)
    loss_fn = _mse(model)
    zero = tuple(s.to(xt.dtype) for s in model.zero_state(xt.shape[0]))
    with torch.no_grad():
        prefix, state = model.normalized(xt[:, : k + 1], zero)
    # nn.RNN's last output IS the last layer's final h: the head reads h_k.
    torch.testing.assert_close(prefix[:, -1], model.head(state[0][-1]))

    def f(h):
        y_k = model.head(h[-1])[:, None]
        parts = [prefix[:, :k], y_k]
        if k + 1 < xt.shape[1]:
            parts.append(model.normalized(xt[:, k + 1:], (h,) + state[1:])[0])
        return loss_fn(torch.cat(parts, dim=1), y)
    return f, state[0].detach().clone()


def _mse(model):
    return train_mod.criterion(SimpleNamespace(loss="mse"), model)  # the training loss, numpy targets


def _norm(g):
    """The documented reduction: per sequence over layers × units, summed over the batch."""
    return float(torch.linalg.vector_norm(g, dim=(0, 2)).sum())


@pytest.mark.parametrize("readout", ["every", "last"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_matches_autograd_reference(cell, layers, readout):
    model = _model(cell, layers, readout)
    x, y = _data(readout)
    got = diagnostics.hidden_grad_norms(model, x, y, _mse(model))
    want = []
    for k in range(L):
        f, h = _loss_of_h(model, x, y, k)
        h.requires_grad_()
        (g,) = torch.autograd.grad(f(h), h)
        want.append(_norm(g))
    assert got.shape == (L,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-9)
    assert (got > 0).all()


@pytest.mark.parametrize("k", [0, 3, L - 1])
def test_matches_finite_differences(k):
    model = _model("rnn_tanh", readout="last", outputs=1).double()
    x, y = _data("last", outputs=1, dtype=np.float64)
    got = diagnostics.hidden_grad_norms(model, x, y, _mse(model))[k]
    f, h = _loss_of_h(model, x, y, k)
    g, eps = torch.zeros_like(h), 1e-6
    with torch.no_grad():
        for i in np.ndindex(*h.shape):
            d = torch.zeros_like(h)
            d[i] = eps
            g[i] = (f(h + d) - f(h - d)) / (2 * eps)
    assert got == pytest.approx(_norm(g), rel=1e-6)


def test_vanishing_toward_the_past():
    model = _model("rnn_tanh", readout="last", outputs=1)
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(0.2)  # contracting recurrence: ‖∂h_k+1/∂h_k‖ < 1
    x, y = _data("last", outputs=1)
    norms = diagnostics.hidden_grad_norms(model, x, y, _mse(model))
    assert (np.diff(norms) > 0).all(), norms
    assert norms[0] < 1e-3 * norms[-1]


def test_leaves_the_model_as_it_was():
    model = _model("lstm", layers=2, dropout=0.5).train()
    x, y = _data("every")
    rng = torch.get_rng_state()
    a = diagnostics.hidden_grad_norms(model, x, y, _mse(model))
    b = diagnostics.hidden_grad_norms(model, x, y, _mse(model))
    np.testing.assert_array_equal(a, b)  # eval mode inside: no dropout noise
    assert model.training and all(p.grad is None for p in model.parameters())
    assert not model.rnn._forward_hooks
    assert torch.equal(torch.get_rng_state(), rng)  # a start-of-training snapshot does not change the run


def test_cross_entropy_and_tokens():
    model = _model("gru", vocab=5, embed=4, outputs=5, task="lm")
    x = torch.randint(0, 5, (N, L))
    y = np.random.default_rng(0).integers(0, 5, (N, L))
    norms = diagnostics.hidden_grad_norms(model, x, y, train_mod.criterion(SimpleNamespace(loss="ce"), model))
    assert norms.shape == (L,) and np.isfinite(norms).all() and (norms > 0).all()


def test_refusals():
    x, y = _data("every")
    bi = _model(bidirectional=True)
    with pytest.raises(InputError, match="unidirectional"):
        diagnostics.hidden_grad_norms(bi, x, y, _mse(bi))
    model = _model()
    with pytest.raises(InputError, match="scalar"):
        diagnostics.hidden_grad_norms(model, x, y, lambda pred, target: pred ** 2)
    with pytest.raises(InputError, match=r"\(batch, length, features\)"):
        diagnostics.hidden_grad_norms(model, x[0], y, _mse(model))


# ---- plots -------------------------------------------------------------------------------------

HISTORY = [{"step": s, "train_loss": 0.2 / s, "val": 0.15 / s, "baseline": 0.167, "clip_rate": 0.1,
            "seconds": s / 10} for s in (10, 20, 30)]


def _only_png(folder, name):
    assert sorted(p.name for p in folder.iterdir()) == [name]  # no temp file left behind
    data = (folder / name).read_bytes()
    assert data[:8] == PNG and len(data) > 2000


@pytest.mark.parametrize("write", ["report", "report_end_only", "curves", "curves_val_loss", "comparison"])
def test_png_writers(tmp_path, write):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    v = np.geomspace(1e-9, 1.0, 50)
    out = tmp_path / "plots" / "p.png"  # the folder is made
    if write == "report":
        diagnostics.plot_grad_report(out, v * 3, v, title="rnn_tanh, adding T=50", clip_rate=0.25, clip=1.0)
    elif write == "report_end_only":  # zeros and overflow cannot sit on a log axis: gaps, not a crash
        diagnostics.plot_grad_report(out, None, np.r_[0.0, np.inf, v], title="t", clip_rate=None, clip=0.0)
    elif write == "curves":
        diagnostics.plot_curves(out, HISTORY, metric="mse")
    elif write == "curves_val_loss":
        diagnostics.plot_curves(out, [{**r, "val_loss": r["val"]} for r in HISTORY], metric="accuracy", title="t",
                                greater_is_better=True)
    else:
        diagnostics.plot_grad_comparison(out, {"rnn_tanh": v, "lstm": v[::-1][:40] + 1e-3}, title="T=50")
    _only_png(out.parent, "p.png")


def test_plot_refusals(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    with pytest.raises(InputError, match="at least one history row"):
        diagnostics.plot_curves(tmp_path / "c.png", [], metric="mse")
    with pytest.raises(InputError, match="lacks"):
        diagnostics.plot_curves(tmp_path / "c.png", [{"step": 1}], metric="mse")
    with pytest.raises(InputError, match=r"expected \(L,\)"):
        diagnostics.plot_grad_comparison(tmp_path / "g.png", {"a": np.ones((2, 2))}, title="t")
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    with pytest.raises(InputError, match=r"pip install 'edgernn\[train\]'"):
        diagnostics.plot_curves(tmp_path / "c.png", HISTORY, metric="mse")
    assert list(tmp_path.iterdir()) == []
