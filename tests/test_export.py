"""Export parity: every cell, uni- and bidirectional, 1-3 layers, from checkpoints and state_dicts."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from torch import nn  # noqa: E402

from edgernn.train import checkpoint
from edgernn.export import parity# noqa: E402
from edgernn.export import graph as export_mod# noqa: E402
from edgernn.core.errors import ModelFileError  # noqa: E402
from edgernn.train.models import RNNModel  # noqa: E402
from edgernn.core.spec import ModelSpec  # noqa: E402

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
GRID = list(itertools.product(CELLS, [False, True], [1, 2, 3]))


def _export_and_verify(loaded):
    meta = export_mod.metadata_for(loaded, opset=17)
    proto = export_mod.build(loaded.model, meta)
    return proto, parity.verify(loaded.model, proto.SerializeToString(), lengths=(1, 7, 300), batches=(1, 3))


@pytest.mark.parametrize("cell,bi,layers", GRID)
def test_checkpoint_export_parity(tmp_path, cell, bi, layers):
    torch.manual_seed(layers)
    model = RNNModel(ModelSpec(cell=cell, features=5, hidden=8, layers=layers, bidirectional=bi, outputs=3))
    checkpoint.save(tmp_path / "m.pt", model)
    proto, report = _export_and_verify(checkpoint.load(tmp_path / "m.pt"))
    assert report["ok"], report
    assert report["max_abs_err"] <= 1e-5
    if not bi:
        assert report["steps"] >= 500 and report["step_max_abs_err"] <= 1e-5
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    assert names_in == (["x", "h0", "c0"] if cell == "lstm" else ["x", "h0"])
    assert names_out == (["y", "hn", "cn"] if cell == "lstm" else ["y", "hn"])
    x_dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert x_dims == ["batch", "time", 5]


class UserModel(nn.Module):
    """A user's own model: attribute names edgernn has never seen, batch_first=False."""

    def __init__(self, kind, bi, layers, head=True):
        super().__init__()
        cls = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        extra = {"nonlinearity": "relu"} if kind == "rnn_relu" else {}
        self.encoder = cls(4, 8, num_layers=layers, bidirectional=bi, **extra)
        self.classifier = nn.Linear(8 * (2 if bi else 1), 6) if head else None

    def forward(self, x, h=None):  # x (L, N, F)
        out, h = self.encoder(x, h)
        return (self.classifier(out) if self.classifier is not None else out), h


@pytest.mark.parametrize("cell,bi,layers", GRID)
def test_user_state_dict_export_parity(tmp_path, cell, bi, layers):
    torch.manual_seed(10 + layers)
    user = UserModel(cell, bi, layers).eval()
    torch.save(user.state_dict(), tmp_path / "user.pt")
    loaded = checkpoint.load(tmp_path / "user.pt", nonlinearity="relu" if cell == "rnn_relu" else None)
    assert loaded.kind == "state_dict"
    assert loaded.model.spec.cell == cell and loaded.model.spec.layers == layers
    _, report = _export_and_verify(loaded)
    assert report["ok"], report
    # And the rebuilt model is the user's own model, not merely self-consistent.
    x = torch.randn(11, 2, 4)
    with torch.no_grad():
        ref, _ = user(x)
        got, _ = loaded.model(x.transpose(0, 1))
    assert torch.allclose(ref.transpose(0, 1), got, atol=1e-6)


def test_state_dict_without_head_and_bare_rnn(tmp_path):
    torch.manual_seed(0)
    gru = nn.GRU(3, 8, num_layers=2)
    torch.save(gru.state_dict(), tmp_path / "bare.pt")
    loaded = checkpoint.load(tmp_path / "bare.pt")
    assert not loaded.model.spec.head and loaded.model.spec.outputs == 8
    assert _export_and_verify(loaded)[1]["ok"]


def test_state_dict_without_bias(tmp_path):
    lstm = nn.LSTM(3, 8, bias=False)
    torch.save({"lstm." + k: v for k, v in lstm.state_dict().items()}, tmp_path / "nobias.pt")
    assert _export_and_verify(checkpoint.load(tmp_path / "nobias.pt"))[1]["ok"]


@pytest.mark.parametrize("sd,match", [
    ({"fc.weight": torch.zeros(2, 3)}, "found no recurrent modules"),
    ({**{"a." + k: v for k, v in nn.GRU(3, 4).state_dict().items()},
      **{"b." + k: v for k, v in nn.GRU(3, 4).state_dict().items()}}, "found 2 .* recurrent modules"),
    ({**{"rnn." + k: v for k, v in nn.LSTM(3, 4).state_dict().items()}, "conv.weight": torch.zeros(4, 4, 3)},
     "not a Linear head"),
    ({"rnn." + k: v for k, v in nn.LSTM(3, 4, proj_size=2).state_dict().items()}, "proj_size"),
])
def test_unexportable_state_dicts_are_refused(tmp_path, sd, match):
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match=match):
        checkpoint.load(tmp_path / "bad.pt")


def test_token_model_and_normalisation_parity(tmp_path):
    torch.manual_seed(0)
    lm = RNNModel(ModelSpec(cell="gru", vocab=30, embed=6, hidden=8, layers=2, outputs=30, task="lm"))
    assert parity.verify(lm, export_mod.build(lm, {"format": 1}).SerializeToString())["ok"]
    reg = RNNModel(ModelSpec(cell="lstm", features=2, embed=5, hidden=8, outputs=1))
    reg.set_normalization(in_mean=[3, -4], in_std=[10, 0.1], out_mean=[100], out_std=[50])
    assert parity.verify(reg, export_mod.build(reg, {"format": 1}).SerializeToString())["ok"]


def test_parity_catches_a_wrong_graph():
    """The check must fail when the file is wrong: swap GRU gate order and verify it is caught."""
    torch.manual_seed(0)
    model = RNNModel(ModelSpec(cell="gru", features=3, hidden=8, outputs=2))
    proto = export_mod.build(model, {"format": 1})
    for node in proto.graph.node:
        if node.op_type == "GRU":
            for a in node.attribute:
                if a.name == "linear_before_reset":
                    a.i = 0  # the dynamo exporter's bug
    report = parity.verify(model, proto.SerializeToString())
    assert not report["ok"] and report["max_abs_err"] > 1e-4


def test_metadata_records_exporter_and_parity(tiny_export):
    from edgernn.core import meta as meta_mod

    _, pt, onnx_path = tiny_export(cell="gru", layers=2)
    m = onnx.load(str(onnx_path))
    meta = meta_mod.parse({p.key: p.value for p in m.metadata_props}["edgernn"])
    assert meta["export"]["exporter"] == export_mod.EXPORTER
    assert meta["states"] == [{"input": "h0", "output": "hn", "shape": [2, "batch", 8], "batch_axis": 1}]
    assert meta["model"]["cell"] == "gru" and meta["output"]["size"] == 2
    assert np.isclose(meta["input"]["features"], 3)
