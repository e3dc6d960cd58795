"""export_checkpoint: the whole `edgernn export` chain as one library call, without the CLI."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgernn.core.errors import InputError, ParityError  # noqa: E402
from edgernn.export import pipeline  # noqa: E402
from edgernn.runtime import Runtime  # noqa: E402


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_export_checkpoint_writes_a_verified_file(tiny_export, tmp_path, cell):
    _, pt, _ = tiny_export(cell=cell, layers=2)
    ticks = []
    r = pipeline.export_checkpoint(pt, tmp_path / "out.onnx", progress=lambda done, total: ticks.append((done, total)))
    assert r.files == (tmp_path / "out.onnx",) and r.path.is_file()
    assert r.max_error is not None and r.max_error <= 1e-5 and r.reports["model"]["ok"]
    assert Runtime(r.path).meta["export"]["parity"]["max_abs_err"] == r.max_error
    assert r.precision is None and r.companion is None and r.triton is None
    assert ticks and ticks[-1][0] == ticks[-1][1]


def test_default_output_and_no_verify(tiny_export):
    _, pt, _ = tiny_export(name="d")
    r = pipeline.export_checkpoint(pt, verify=False)
    assert r.path == pt.with_suffix(".onnx") and r.max_error is None and r.reports == {}
    assert Runtime(r.path).meta["export"]["parity"] is None


def test_bidirectional_gets_its_companion(tiny_export, tmp_path):
    _, pt, _ = tiny_export(cell="gru", bidirectional=True)
    r = pipeline.export_checkpoint(pt, tmp_path / "bi.onnx")
    assert r.companion == "bi.lookahead.onnx"
    assert r.files == (tmp_path / "bi.onnx", tmp_path / "bi.lookahead.onnx") and r.files[1].is_file()


def test_fp16_records_its_error(tiny_export, tmp_path):
    _, pt, _ = tiny_export()
    r = pipeline.export_checkpoint(pt, tmp_path / "h.onnx", precision="fp16")
    assert r.precision["weights"] == "fp16" and r.precision["max_err_vs_fp32"] <= r.precision["tolerance"]
    assert Runtime(r.path).meta["export"]["precision"] == r.precision


def test_a_variant_over_tolerance_writes_nothing(tiny_export, tmp_path, monkeypatch):
    _, pt, _ = tiny_export()
    monkeypatch.setitem(pipeline.prec.TOLERANCE, "fp16", 0.0)
    with pytest.raises(ParityError, match="no file written"):
        pipeline.export_checkpoint(pt, tmp_path / "h.onnx", precision="fp16")
    assert not (tmp_path / "h.onnx").exists()


def test_triton_repository_and_its_refusal_for_a_pair(tiny_export, tmp_path):
    _, pt, _ = tiny_export()
    r = pipeline.export_checkpoint(pt, tmp_path / "t.onnx", verify=False, triton=tmp_path / "repo",
                                   triton_options={"max_batch_size": 4})
    assert r.triton == tmp_path / "repo" / "t" and (r.triton / "config.pbtxt").is_file()

    import torch

    from edgernn.train import seq2seq, seq2seq_io
    from edgernn.train.models import RNNModel

    torch.manual_seed(0)
    enc, dec = (RNNModel(s) for s in seq2seq.make_specs(cell="gru", hidden=8, embed=4))
    seq2seq_io.save(tmp_path / "p.pt", enc, dec, {})
    with pytest.raises(InputError, match="encoder-decoder is two files"):
        pipeline.export_checkpoint(tmp_path / "p.pt", triton=tmp_path / "repo2")
    r = pipeline.export_checkpoint(tmp_path / "p.pt", tmp_path / "p.onnx")
    assert [f.name for f in r.files] == ["p.encoder.onnx", "p.decoder.onnx"] and r.meta is None
    assert set(r.reports) == {"encoder", "decoder"} and r.max_error <= 1e-5
