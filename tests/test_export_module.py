"""export_module: ordinary PyTorch models exported, verified and streamed through Runtime.step.

The models are in tests/data/user_models.py, written as a new user would. Each streamable one must
equal PyTorch over the whole sequence within 1e-5 when stepped one frame at a time through the
torch-free runtime; each that is not must be refused with the offending layer's path.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
from torch import nn  # noqa: E402

from edgernn.core.errors import InputError, ParityError  # noqa: E402
from edgernn.export import export_module  # noqa: E402
from edgernn.export.refuse import NotStreamable  # noqa: E402
from edgernn.runtime import Runtime  # noqa: E402

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import user_models as um  # noqa: E402

USER_FILE = DATA / "user_models.py"
TOL = 1e-5

# model -> its state inputs, named after each layer's path
STREAMABLE = {
    "CharGRU": ["rnn.h0"],
    "MLPLSTM": ["lstm.h0", "lstm.c0"],
    "NormGRU": ["gru.h0"],
    "TwoRNNs": ["encoder.rnn.h0", "decoder.h0", "decoder.c0"],
    "CRNN": ["conv1.conv.buf0", "conv2.buf0", "lstm.h0", "lstm.c0"],
    "ProjLSTM": ["lstm.h0", "lstm.c0"],
    "TimeMajor": ["lstm.h0", "lstm.c0"],
    "ReluRNN": ["rnn.h0"],
    "LastStep": ["gru.h0"],
}


def _frames(rt: Runtime, name: str, t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if rt.meta["input"]["dtype"] == "int64":
        return rng.integers(0, rt.meta["input"]["vocab"], size=(t,), dtype=np.int64)
    return rng.standard_normal((t, rt.signature.frame_shape[0])).astype(np.float32)


def _torch_whole(model: nn.Module, frames: np.ndarray) -> np.ndarray:
    """The user's module over the whole sequence, in its own layout; (T, outputs) or (outputs,)."""
    x = torch.from_numpy(frames)[None]
    with torch.no_grad():
        if isinstance(model, um.TimeMajor):
            return model(x.transpose(0, 1)).transpose(0, 1)[0].numpy()
        return model(x)[0].numpy()


def _close(ref: np.ndarray, got: np.ndarray) -> float:
    assert ref.shape == got.shape, (ref.shape, got.shape)
    return float(np.max(np.abs(ref - got)) / max(1.0, float(np.max(np.abs(ref)))))


@pytest.mark.parametrize("name", list(STREAMABLE))
def test_export_verify_and_stream(tmp_path, name):
    model = um.make(name).eval()
    r = export_module(model, tmp_path / f"{name}.onnx")
    assert r.max_error is not None and r.max_error <= TOL
    rep = r.reports["model"]
    assert rep["lengths"] == [1, 7, 300] and rep["batches"] == [1, 3] and rep["steps"] == 500
    assert rep["step_max_abs_err"] <= TOL
    assert [s["input"] for s in r.meta["states"]] == STREAMABLE[name]
    assert [s["output"] for s in r.meta["states"]] == [s[:-1] + "n" for s in STREAMABLE[name]]

    rt = Runtime(r.path)
    assert rt.signature.pairing == "metadata" and [s.input for s in rt.signature.states] == STREAMABLE[name]
    frames = _frames(rt, name, 80)
    ref = _torch_whole(model, frames)
    s = rt.stream()
    ys = np.stack([s.step(f) for f in frames])
    got = ys if r.meta["output"]["readout"] == "every" else ys[-1]
    assert _close(ref, got) <= TOL
    chunked = rt.stream()  # chunks of any length continue the same sequence
    parts = [chunked.feed(frames[a:b]) for a, b in ((0, 1), (1, 30), (30, 80))]
    if r.meta["output"]["readout"] == "every":
        assert _close(ref, np.concatenate(parts)) <= TOL


def test_what_each_layer_is_read_from_the_module(tmp_path):
    proj = export_module(um.make("ProjLSTM"), tmp_path / "p.onnx").meta
    assert [s["shape"] for s in proj["states"]] == [[2, "batch", 6], [2, "batch", 16]]
    assert proj["model"]["stateful"][0]["proj_size"] == 6
    tm = export_module(um.make("TimeMajor"), tmp_path / "t.onnx").meta
    assert tm["model"]["layout"] == "tbf" and tm["model"]["stateful"][0]["batch_first"] is False
    import onnx

    dims = [d.dim_param or d.dim_value for d in onnx.load(tmp_path / "t.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time", 4]
    relu = export_module(um.make("ReluRNN"), tmp_path / "r.onnx").meta
    assert relu["model"]["cell"] == "rnn_relu"
    crnn = export_module(um.make("CRNN"), tmp_path / "c.onnx").meta
    assert [(c["path"], c["mode"], c["context"]) for c in crnn["model"]["stateful"] if c["layer"] == "Conv1d"] == \
        [("conv1.conv", "trim", 2), ("conv2", "prepadded", 2)]
    assert export_module(um.make("LastStep"), tmp_path / "l.onnx").meta["output"]["readout"] == "last"


def test_a_dilated_causal_conv_keeps_its_frames(tmp_path):
    class Dilated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = um.CausalConv(3, 5, kernel=3, dilation=4)
            self.gru = nn.GRU(5, 8, batch_first=True)

        def forward(self, x):
            return self.gru(self.conv(x.transpose(1, 2)).transpose(1, 2))[0]

    torch.manual_seed(0)
    r = export_module(Dilated(), tmp_path / "d.onnx")
    assert r.meta["states"][0] == {"input": "conv.conv.buf0", "output": "conv.conv.bufn", "batch_axis": 0,
                                   "shape": ["batch", 3, 8]}
    assert r.max_error <= TOL


def test_bidirectional_offline_and_lookahead(tmp_path):
    model = um.make("BiGRU").eval()
    r = export_module(model, tmp_path / "bi.onnx")
    assert r.companion == "bi.lookahead.onnx" and r.files[1].is_file() and r.max_error <= TOL
    rt = Runtime(r.path)
    frames = _frames(rt, "BiGRU", 40)
    ref = _torch_whole(model, frames)
    assert _close(ref, rt.offline(frames)) <= TOL
    with pytest.raises(InputError, match="bidirectional"):
        rt.stream().step(frames[0])
    s = rt.stream(lookahead=math.inf)
    got = np.concatenate([s.feed(frames[:25]).reshape(-1, 3), s.feed(frames[25:]).reshape(-1, 3),
                          s.flush().reshape(-1, 3)])
    assert _close(ref, got) <= TOL
    bounded = rt.stream(lookahead=4)
    out = [bounded.feed(f[None]).reshape(-1, 3) for f in frames] + [bounded.flush().reshape(-1, 3)]
    assert np.concatenate(out).shape == ref.shape  # every frame answered, at most 4 frames late


def test_bidirectional_inside_a_larger_model_is_offline_only(tmp_path):
    model = um.make("ConvBiLSTM").eval()
    with pytest.raises(NotStreamable, match="lstm: bidirectional LSTM reads the future") as e:
        export_module(model, tmp_path / "cb.onnx")
    assert [p for p, _ in e.value.reasons] == ["lstm"] and not (tmp_path / "cb.onnx").exists()
    r = export_module(model, tmp_path / "cb.onnx", offline=True)
    assert r.offline[0]["path"] == "lstm" and r.max_error <= TOL and "steps" not in r.reports["model"]
    rt = Runtime(r.path)
    frames = _frames(rt, "ConvBiLSTM", 30)
    assert _close(_torch_whole(model, frames), rt.offline(frames)) <= TOL
    with pytest.raises(InputError):
        rt.stream().step(frames[0])


class _Padless(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 3, 3)  # padding=0, its input padded on both sides: it reads a frame ahead
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x):
        u = torch.nn.functional.pad(x.transpose(1, 2), (1, 1))
        return self.gru(self.conv(u).transpose(1, 2))[0]


class _Centered(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(3, 3, 5, padding=2))
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.body(x.transpose(1, 2)).transpose(1, 2))


class _BatchStats(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(3, track_running_stats=False)
        self.rnn = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x):
        return self.rnn(self.norm(x.transpose(1, 2)).transpose(1, 2))[0]


class _CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(3, 4)

    def forward(self, x):
        h, ys = torch.zeros(x.shape[0], 4), []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            ys.append(h)
        return torch.stack(ys, 1)


class _OwnInitialState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.h0 = nn.Parameter(torch.ones(1, 1, 4))

    def forward(self, x):
        return self.rnn(x, self.h0.expand(1, x.shape[0], 4).contiguous())[0]


class _Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)

    def forward(self, x):
        lengths = torch.full((x.shape[0],), x.shape[1])
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
        return nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)[0]


class _MeanOverTime(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)

    def forward(self, x):
        y = self.rnn(x)[0]
        return y - y.mean(dim=1, keepdim=True)


@pytest.mark.parametrize("model,path,match", [
    (lambda: um.make("SameConvGRU"), "front.conv", "padding='same'"),
    (lambda: um.make("FlipGRU"), "", "torch.flip"),
    (lambda: um.make("AttnGRU"), "attn", "attention over time"),
    (_Centered, "body.0", "reads 2 frames ahead"),
    (_Padless, "conv", "does not start with the 2 zero frames"),
    (_BatchStats, "norm", "statistics of the batch"),
    (_CellLoop, "cell", "stepped by Python code"),
    (_OwnInitialState, "rnn", "given an initial state by the model"),
    (_MeanOverTime, "", "mixes time"),
    (_Packed, "rnn", "PackedSequence"),
])
def test_a_layer_that_cannot_stream_is_named(tmp_path, model, path, match):
    torch.manual_seed(0)
    with pytest.raises(NotStreamable, match=match) as e:
        export_module(model(), tmp_path / "m.onnx")
    assert path in [p for p, _ in e.value.reasons], e.value.reasons
    assert isinstance(e.value, InputError) and "--offline" in str(e.value)
    assert not (tmp_path / "m.onnx").exists()


def test_offline_writes_what_cannot_stream_and_says_why(tmp_path):
    model = um.make("SameConvGRU").eval()
    r = export_module(model, tmp_path / "s.onnx", offline=True)
    assert r.offline == [{"path": "front.conv", "reason": r.offline[0]["reason"]}] and "same" in r.offline[0]["reason"]
    rt = Runtime(r.path)
    assert rt.meta["offline"]["reasons"][0]["path"] == "front.conv"
    frames = _frames(rt, "SameConvGRU", 50)
    assert _close(_torch_whole(model, frames), rt.offline(frames)) <= TOL
    with pytest.raises(InputError):
        rt.stream().step(frames[0])


def test_a_wrong_file_fails_parity(tmp_path):
    from edgernn.export.module import verify_file

    export_module(um.make("MLPLSTM", seed=1), tmp_path / "other.onnx")
    with pytest.raises(ParityError, match="parity FAILED"):
        verify_file(um.make("MLPLSTM", seed=0), str(tmp_path / "other.onnx"))


def test_the_module_keeps_its_mode_and_forward(tmp_path):
    model = um.make("CRNN").train()
    export_module(model, tmp_path / "c.onnx", verify=False)
    assert all(m.training for m in model.modules()) and "forward" not in vars(model.lstm) and "_conv_forward" not in vars(model.conv2)
    assert Runtime(tmp_path / "c.onnx").meta["export"]["parity"] is None


def _cli(*args):
    from click.testing import CliRunner

    from edgernn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_export_and_verify_with_module(tmp_path):
    torch.save(um.make("CRNN").state_dict(), tmp_path / "crnn.pt")
    r = _cli("export", tmp_path / "crnn.pt", "--module", f"{USER_FILE}:CRNN", "-o", tmp_path / "crnn.onnx")
    assert r.exit_code == 0, r.output
    assert "parity max error" in r.stdout and "conv1.conv.buf0 -> conv1.conv.bufn" in r.stdout
    r = _cli("verify", tmp_path / "crnn.pt", tmp_path / "crnn.onnx", "--module", f"{USER_FILE}:CRNN")
    assert r.exit_code == 0 and "parity ok" in r.stdout and "500 carried steps" in r.stdout, r.output
    torch.save(um.make("TwoRNNs").state_dict(), tmp_path / "two.pt")
    r = _cli("export", tmp_path / "two.pt", "--module", f"{USER_FILE}:make", "--kwargs", '{"name": "TwoRNNs"}',
             "-o", tmp_path / "two.onnx")
    assert r.exit_code == 0 and "encoder.rnn.h0 -> encoder.rnn.hn" in r.stdout, r.output
    torch.save(um.make("MLPLSTM", seed=1).state_dict(), tmp_path / "m1.pt")
    torch.save(um.make("MLPLSTM", seed=2).state_dict(), tmp_path / "m2.pt")
    assert _cli("export", tmp_path / "m1.pt", "--module", f"{USER_FILE}:MLPLSTM").exit_code == 0
    r = _cli("verify", tmp_path / "m2.pt", tmp_path / "m1.onnx", "--module", f"{USER_FILE}:MLPLSTM")
    assert r.exit_code == 1 and "parity FAILED" in r.stderr


def _one_line_2(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def test_cli_refusals_are_one_line(tmp_path):
    torch.save(um.make("SameConvGRU").state_dict(), tmp_path / "s.pt")
    line = _one_line_2(_cli("export", tmp_path / "s.pt", "--module", f"{USER_FILE}:SameConvGRU"))
    assert "front.conv" in line and "--offline" in line and not (tmp_path / "s.onnx").exists()
    r = _cli("export", tmp_path / "s.pt", "--module", f"{USER_FILE}:SameConvGRU", "--offline")
    assert r.exit_code == 0 and "offline only" in r.stdout, r.output
    assert "do not fit TwoRNNs" in _one_line_2(_cli("export", tmp_path / "s.pt", "--module", f"{USER_FILE}:TwoRNNs"))
    assert "not JSON" in _one_line_2(_cli("export", tmp_path / "s.pt", "--module", f"{USER_FILE}:make",
                                          "--kwargs", "{nope"))
    assert "defines no 'Nope'" in _one_line_2(_cli("export", tmp_path / "s.pt", "--module", f"{USER_FILE}:Nope"))
    assert "FILE.py:NAME" in _one_line_2(_cli("export", tmp_path / "s.pt", "--module", "user_models"))


def test_cli_help_says_it_runs_user_code():
    for command in ("export", "verify"):
        text = " ".join(_cli(command, "--help").stdout.split())
        assert "runs its code" in text and "--module FILE.py:NAME" in text


def test_pt2_needs_no_code(tmp_path):
    """A .pt2 from torch.export (shapes fixed at the example's) exports and streams like the module."""
    model = um.make("CRNN").eval()
    program = torch.export.export(model, (torch.randn(2, 7, 8),))
    torch.export.save(program, tmp_path / "crnn.pt2")
    r = _cli("export", tmp_path / "crnn.pt2", "-o", tmp_path / "crnn.onnx")
    assert r.exit_code == 0 and "lstm.h0 -> lstm.hn" in r.stdout, r.output
    rt = Runtime(tmp_path / "crnn.onnx")
    frames = _frames(rt, "CRNN", 40)
    s = rt.stream()
    assert _close(_torch_whole(model, frames), np.stack([s.step(f) for f in frames])) <= TOL
    r = _cli("verify", tmp_path / "crnn.pt2", tmp_path / "crnn.onnx")
    assert r.exit_code == 0 and "parity ok" in r.stdout, r.output


def test_pickled_module_and_relu_state_dict(tmp_path):
    from edgernn.export import pipeline

    model = um.make("ReluRNN").eval()
    torch.save(model, tmp_path / "whole.pt")
    r = pipeline.export_checkpoint(tmp_path / "whole.pt", tmp_path / "whole.onnx", unsafe_load=True)
    assert r.meta["model"]["cell"] == "rnn_relu" and r.max_error <= TOL
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.warns(UserWarning, match="assumed tanh"):
        pipeline.export_checkpoint(tmp_path / "sd.pt", tmp_path / "sd.onnx")


def test_the_worked_examples_of_the_docs(tmp_path):
    """docs/your-own-model.md's three models export with the state names the page shows."""
    sys.path.insert(0, str(DATA.parent.parent / "docs" / "examples"))
    import my_models

    torch.manual_seed(0)
    expected = {"CharModel": ["rnn.h0"], "CRNN": ["front.0.buf0", "front.2.buf0", "lstm.h0", "lstm.c0"],
                "Stacked": ["encoder.rnn.h0", "decoder.h0", "decoder.c0"]}
    for name, states in expected.items():
        r = export_module(getattr(my_models, name)(hidden=16), tmp_path / f"{name}.onnx")
        assert [s["input"] for s in r.meta["states"]] == states and r.max_error <= TOL
    with pytest.raises(NotStreamable, match="conv: Conv1d with padding='same'"):
        export_module(my_models.Centered(hidden=8), tmp_path / "c.onnx")


def test_verify_checks_a_file_written_by_hand(tmp_path):
    """Any ONNX file with the module's states, whatever their names, time-major or not."""
    import warnings

    from edgernn.export.module import verify_file

    model = um.make("MLPLSTM").eval()

    class ByHand(nn.Module):  # what a user writes today: explicit state, time-major, own names
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x, h, c):  # x (T, N, F)
            y, (h, c) = self.m.lstm(self.m.frame(x.transpose(0, 1)), (h, c))
            return self.m.head(y).transpose(0, 1), h, c

    args = (torch.randn(7, 2, 6), torch.zeros(1, 2, 16), torch.zeros(1, 2, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ByHand().eval(), args, tmp_path / "hand.onnx", dynamo=False,
                          input_names=["frames", "state", "cell"], output_names=["out", "state_out", "cell_out"],
                          dynamic_axes={"frames": {0: "time", 1: "batch"}, "out": {0: "time", 1: "batch"},
                                        **{k: {1: "batch"} for k in ("state", "cell", "state_out", "cell_out")}})
    report, _ = verify_file(model, str(tmp_path / "hand.onnx"))
    assert report["ok"] and report["steps"] == 500


def test_a_forward_that_returns_its_state_and_an_example(tmp_path):
    class Returns(nn.Module):  # time-major, returns (y, h) as many user models do
        def __init__(self):
            super().__init__()
            self.encoder = nn.GRU(4, 8, num_layers=2)
            self.classifier = nn.Linear(8, 6)

        def forward(self, x, h=None):  # x (L, N, F)
            out, h = self.encoder(x, h)
            return self.classifier(out), h

    torch.manual_seed(0)
    r = export_module(Returns(), tmp_path / "r.onnx", example=torch.randn(5, 2, 4))
    assert r.meta["model"]["layout"] == "tbf" and r.meta["input"]["features"] == 4 and r.max_error <= TOL
    assert [s["shape"] for s in r.meta["states"]] == [[2, "batch", 8]]
