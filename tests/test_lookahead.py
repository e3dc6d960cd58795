"""Bidirectional streaming with bounded lookahead: the runtime equals the PyTorch rule, cell x layers
x chunk x lookahead, fed in uneven pieces; offline when the lookahead covers the input; bounded cost."""

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgernn.train import chunked  # noqa: E402
from edgernn.export import companion  # noqa: E402
from edgernn.train import checkpoint# noqa: E402
from edgernn.export import graph as export_mod# noqa: E402
from edgernn.core.errors import InputError, ModelFileError  # noqa: E402
from edgernn.runtime.lookahead import Companion, LookaheadStream, companion_path, lookahead_offline, parse_lookahead  # noqa: E402
from edgernn.runtime.lookahead_bench import sweep  # noqa: E402
from edgernn.train.models import RNNModel  # noqa: E402
from edgernn.runtime import Runtime  # noqa: E402
from edgernn.core.spec import ModelSpec  # noqa: E402

from conftest import run_torch_free  # noqa: E402

CELLS = ["rnn_tanh", "lstm", "gru"]
GRID = list(itertools.product([1, 4], [0, 5, None]))  # (chunk, lookahead)
TOL = 1e-5


def _export(tmp_path, name="m", seed=0, verify=False, normalize=False, **kw):
    """Model -> NAME.onnx + NAME.lookahead.onnx, wired as `edgernn export` does."""
    torch.manual_seed(seed)
    spec = {"cell": "lstm", "features": 3, "hidden": 8, "outputs": 2, "bidirectional": True, **kw}
    model = RNNModel(ModelSpec(**spec)).eval()
    if normalize:
        model.set_normalization(in_mean=[1.0, -2.0, 0.5], in_std=[2.0, 0.5, 3.0], out_mean=[10.0, -1.0],
                                out_std=[4.0, 0.25])
    checkpoint.save(tmp_path / f"{name}.pt", model)
    loaded = checkpoint.load(tmp_path / f"{name}.pt")
    meta = export_mod.metadata_for(loaded, opset=17)
    path = tmp_path / f"{name}.onnx"
    if model.spec.bidirectional:
        meta.update(companion.write_companion(loaded.model, meta, path, verify=verify))
    path.write_bytes(export_mod.build(loaded.model, meta).SerializeToString())
    return model, path


def _brute(model, x, chunk, lookahead):
    """The rule read literally, with one bidirectional torch module per layer: per window, each layer
    runs over the window from (carried, zeros), and again over the chunk alone for the carried state."""
    spec = model.spec
    sd = model.rnn.state_dict()
    mods = []
    for layer in range(spec.layers):
        kw = {"nonlinearity": "relu" if spec.cell == "rnn_relu" else "tanh"} if spec.cell.startswith("rnn") else {}
        m = type(model.rnn)(sd[f"weight_ih_l{layer}"].shape[1], spec.hidden, batch_first=True, bidirectional=True, **kw)
        m.load_state_dict({k.replace(f"_l{layer}", "_l0"): v for k, v in sd.items() if f"_l{layer}" in k})
        mods.append(m)
    u0 = chunked._front(model, x)
    n, length = u0.shape[:2]
    r = length if lookahead is None else lookahead
    zero = torch.zeros(1, n, spec.hidden)
    carried = [[zero, zero] for _ in mods]
    ys = []
    for t0 in range(0, length, chunk):
        c = min(chunk, length - t0)
        u = u0[:, t0:min(t0 + chunk + r, length)]
        for layer, m in enumerate(mods):
            h0 = torch.cat([carried[layer][0], zero])
            c0 = torch.cat([carried[layer][1], zero])
            init = (h0, c0) if spec.cell == "lstm" else h0
            out, _ = m(u, init)
            _, st = m(u[:, :c], init)
            carried[layer] = [st[0][:1], st[1][:1]] if spec.cell == "lstm" else [st[:1], zero]
            u = out
        ys.append(u[:, :c])
    y = model.head(torch.cat(ys, 1))
    return y * model.out_std + model.out_mean


def _pieces(s, x, rng):
    """Feed x in uneven pieces (empty ones too); check the outputs arrive exactly when the rule says."""
    c, r = s.chunk, s.lookahead
    out, i = [], 0
    while i < len(x):
        k = int(rng.integers(0, 7))
        y = s.feed(x[i:i + k])
        i = min(len(x), i + k)
        assert y.ndim == 2 and y.shape[0] == s.emitted - sum(len(o) for o in out)
        want = 0 if math.isinf(r) else c * max(0, (i - r) // c)  # chunks whose window has arrived
        assert s.emitted == want and s.steps == i
        assert s.pending == i - s.emitted and (math.isinf(r) or s.pending < c + r)
        out.append(y)
    out.append(s.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("cell,layers", list(itertools.product(CELLS, [1, 2, 3])))
def test_runtime_equals_rule(tmp_path, cell, layers):
    model, path = _export(tmp_path, cell=cell, layers=layers, seed=layers, normalize=layers == 2)
    rt = Runtime(path)
    comp = Companion.for_runtime(rt)
    rng = np.random.default_rng(layers)
    x = (rng.standard_normal((23, 3)) * 2).astype(np.float32)
    xt = torch.from_numpy(x)[None]
    for chunk, r in GRID:
        with torch.no_grad():
            ref = chunked.chunked_forward(model, xt, chunk=chunk, lookahead=r)[0].numpy()
            literal = _brute(model, xt, chunk, r)[0].numpy()
            batched = chunked.chunked_forward(model, xt.expand(2, -1, -1), chunk=chunk, lookahead=r, batched=True)
        got = _pieces(LookaheadStream(rt, comp, lookahead=r, chunk=chunk), x, rng)
        scale = max(1.0, float(np.abs(ref).max()))
        assert got.shape == (23, 2)  # every frame exactly one output
        assert np.abs(ref - literal).max() / scale <= TOL, (chunk, r)
        assert np.abs(ref - batched.numpy()).max() / scale <= TOL, (chunk, r)
        assert np.abs(got - ref).max() / scale <= TOL, (chunk, r)
    assert np.abs(_pieces(LookaheadStream(rt, comp, lookahead=0), x, rng) - rt.offline(x)).max() > 1e-3


@pytest.mark.parametrize("cell", CELLS)
def test_offline_when_lookahead_covers_the_input(tmp_path, cell):
    model, path = _export(tmp_path, cell=cell, layers=2)
    rt = Runtime(path)
    x = np.random.default_rng(5).standard_normal((17, 3)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None])[0][0].numpy()
    assert np.abs(rt.offline(x) - ref).max() <= TOL
    for chunk, r in [(1, 16), (1, 17), (4, 13), (4, 40), (3, None), (17, 0), (40, 0)]:
        got = lookahead_offline(rt, x, lookahead=r, chunk=chunk)
        assert np.abs(got - ref).max() <= TOL, (chunk, r)
    with torch.no_grad():  # and the reference agrees: R >= L is the offline model
        assert torch.allclose(chunked.chunked_forward(model, torch.from_numpy(x)[None], chunk=2, lookahead=16)[0],
                              torch.from_numpy(ref), atol=TOL)


def test_cost_per_frame_is_bounded(tmp_path):
    _, path = _export(tmp_path, cell="gru", layers=2)
    rt = Runtime(path)
    x = np.random.default_rng(6).standard_normal((400, 3)).astype(np.float32)
    for chunk, r in [(1, 0), (1, 5), (4, 5), (4, 20), (1, 20)]:
        s = LookaheadStream(rt, lookahead=r, chunk=chunk)
        n = sum(len(s.feed(f[None])) for f in x) + len(s.flush())
        assert n == s.emitted == 400
        assert s.window_frames / 400 <= (chunk + r) / chunk + 1, (chunk, r, s.window_frames)
        assert s.calls <= 400 / chunk + 1
    rows = sweep(rt, (0, 5, None), chunk=4, steps=40, rounds=1)
    assert [(r["lookahead"], r["latency_frames"]) for r in rows] == [(0, 3), (5, 8), (None, None)]
    assert rows[1]["window_frames_per_frame"] <= 9 / 4 + 1 and rows[2]["calls"] == 1


def test_unidirectional_ignores_lookahead(tmp_path):
    _, path = _export(tmp_path, cell="lstm", bidirectional=False)
    rt = Runtime(path)
    x = np.random.default_rng(7).standard_normal((20, 3)).astype(np.float32)
    s = LookaheadStream(rt, lookahead=5, chunk=4)
    y = np.concatenate([s.feed(x[:7]), s.feed(x[7:])])
    assert y.shape == (20, 2) and len(s.flush()) == 0 and s.latency_frames == 0
    assert np.abs(y - rt.offline(x)).max() <= TOL


def test_token_model_and_training_gradients(tmp_path):
    model, path = _export(tmp_path, cell="gru", vocab=7, embed=4, layers=2, outputs=7, task="lm", verify=True)
    rt = Runtime(path)
    assert rt.meta["lookahead"]["parity"]["max_abs_err"] <= TOL
    ids = np.random.default_rng(8).integers(0, 7, 19)
    with torch.no_grad():
        ref = chunked.chunked_forward(model, torch.from_numpy(ids)[None], chunk=4, lookahead=2)[0].numpy()
    assert np.abs(lookahead_offline(rt, ids, lookahead=2, chunk=4) - ref).max() <= TOL
    train = RNNModel(ModelSpec(cell="lstm", features=3, hidden=8, layers=2, bidirectional=True, dropout=0.2)).train()
    chunked.chunked_forward(train, torch.randn(2, 9, 3), chunk=2, lookahead=3, normalized=True).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in train.rnn.parameters())


def test_companion_metadata_and_errors(tmp_path):
    model, path = _export(tmp_path, cell="lstm", layers=2, verify=True)
    rt = Runtime(path)
    la = rt.meta["lookahead"]
    assert la["file"] == "m.lookahead.onnx" == companion_path(path).name and la["parity"]["max_abs_err"] <= TOL
    comp = Companion.for_runtime(rt)
    assert [s[0] for s in comp.states] == ["h0", "c0"] and comp.zero_state(3)["c0"].shape == (2, 3, 8)
    for bad in ({"lookahead": -1}, {"lookahead": 2.5}, {"chunk": 0}, {"lookahead": "5"}):
        with pytest.raises(InputError, match="expected"):
            LookaheadStream(rt, **bad)
    with pytest.raises(InputError, match="NaN"):
        LookaheadStream(rt, lookahead=1).feed(np.full((2, 3), np.nan, np.float32))
    with pytest.raises(InputError, match="bidirectional"):
        LookaheadStream(rt, lookahead=1).step(np.zeros(3, np.float32))
    with pytest.raises(ModelFileError, match="lookahead role"):
        Companion(path)  # the main file is not a companion
    with pytest.raises(InputError, match="unidirectional"):
        companion.build_companion(RNNModel(ModelSpec(features=3, hidden=8)), {})
    companion_path(path).unlink()
    rt = Runtime(path)  # a runtime loads its companion once; a fresh one finds it gone
    with pytest.raises(ModelFileError, match="re-export"):
        LookaheadStream(rt, lookahead=3)
    x = np.random.default_rng(9).standard_normal((10, 3)).astype(np.float32)
    assert np.abs(lookahead_offline(rt, x) - rt.offline(x)).max() == 0  # unbounded falls back to the main graph


def test_lookahead_stream_is_torch_free(tmp_path):
    model, path = _export(tmp_path, cell="lstm", layers=2)
    x = np.random.default_rng(10).standard_normal((30, 3)).astype(np.float32)
    with torch.no_grad():
        ref = chunked.chunked_forward(model, torch.from_numpy(x)[None], chunk=4, lookahead=5)[0].numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", ref)
    r = run_torch_free(
        "import numpy as np\n"
        "from edgernn.runtime import Runtime\n"
        "from edgernn.runtime.lookahead import LookaheadStream\n"
        f"rt = Runtime({str(path)!r}); x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "s = LookaheadStream(rt, lookahead=5, chunk=4)\n"
        "y = np.concatenate([s.feed(x[:3]), s.feed(x[3:20]), s.feed(x[20:]), s.flush()])\n"
        f"print(float(np.abs(y - np.load({str(tmp_path / 'ref.npy')!r})).max()))\n")
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip()) <= TOL


def test_cli_export_stream_verify_bench_with_lookahead(tiny_export, tmp_path):
    """The wiring: export writes the companion, stream --lookahead labels each line with its frame."""
    import json

    from conftest import run_cli
    from edgernn.runtime import Runtime

    model, pt, _ = tiny_export(cell="gru", bidirectional=True, layers=2)
    r = run_cli("export", pt, "-o", tmp_path / "bi.onnx")
    assert r.returncode == 0 and "lookahead companion bi.lookahead.onnx" in r.stdout, r.stderr
    x = np.random.default_rng(0).standard_normal((23, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = run_cli("stream", "--model", tmp_path / "bi.onnx", "--input", tmp_path / "x.npy", "--lookahead", "4",
                "--chunk", "2", torch_free=True)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["t"] for d in lines] == list(range(23))
    ref = chunked.chunked_forward(model, torch.from_numpy(x)[None], chunk=2, lookahead=4)[0].detach().numpy()
    assert np.max(np.abs(np.array([d["y"] for d in lines], np.float32) - ref)) <= 1e-5
    s = Runtime(tmp_path / "bi.onnx").stream(lookahead=float("inf"))
    full = np.concatenate([s.feed(x), s.flush()])
    assert np.allclose(full, Runtime(tmp_path / "bi.onnx").offline(x), atol=1e-5)
    assert run_cli("verify", pt, tmp_path / "bi.onnx").returncode == 0
    r = run_cli("bench", "--model", tmp_path / "bi.onnx", "--lookahead", "0", "--lookahead", "inf", "--steps", "20",
                "--rounds", "1", torch_free=True)
    assert r.returncode == 0 and "inf" in r.stdout, r.stderr
    r = run_cli("stream", "--model", tmp_path / "bi.onnx", "--input", tmp_path / "x.npy", "--lookahead", "-2")
    assert r.returncode == 2 and "--lookahead" in r.stderr


def test_parse_lookahead():
    assert parse_lookahead("0") == 0 and parse_lookahead("12") == 12
    assert all(math.isinf(parse_lookahead(t)) for t in ("inf", " Infinity ", "∞"))
    for bad in ("-1", "2.5", "x", ""):
        with pytest.raises(InputError, match="expected a number of frames >= 0, or inf"):
            parse_lookahead(bad)
