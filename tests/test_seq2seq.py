"""Encoder–decoder: the date data, training, the exported pair, and torch-free greedy decoding."""

import json
import re
import shutil
from datetime import date, datetime

import numpy as np
import pytest

from conftest import run_torch_free
from edgernn.train import dates
from edgernn.core.errors import InputError, ModelFileError

# An independent reader of the sources: strptime patterns, after dropping ordinals and fillers.
_PATTERNS = ["%d %b %Y", "%d %B %Y", "%B %d, %Y", "%b %d %Y", "%b %d, %Y", "%d/%m/%Y", "%d/%m/%y", "%d.%m.%Y",
             "%Y.%m.%d", "%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%A, %d %B %Y", "%A, %B %d, %Y", "%a %d %b %Y",
             "%a, %d.%m.%Y", "%d-%b-%y", "%d %b %y", "%d of %B, %Y", "%A %d of %B %Y"]
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _parse(source: str) -> date:
    """Every pattern that reads `source` must agree on one date (strptime's %y is the POSIX window)."""
    s = source.lower()
    s = re.sub(r"^the ", "", s).replace(" the ", " ")
    s = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", s)
    s = s.replace("'", "").replace(". ", " ")
    found = set()
    for p in _PATTERNS:
        try:
            found.add(datetime.strptime(s, p).date())
        except ValueError:
            pass
    assert len(found) == 1, (source, s, found)
    return found.pop()


def _check(source: str, target: str) -> None:
    d = _parse(source)
    assert target == d.isoformat(), (source, target)
    named = [w for w in _WEEKDAYS if re.search(rf"\b({w}|{w[:3]})\b", source.lower())]
    assert named in ([], [_WEEKDAYS[d.weekday()]]), (source, named)


@pytest.mark.parametrize("d", [date(1900, 1, 1), date(1969, 1, 1), date(2000, 2, 29), date(2026, 11, 30),
                               date(2068, 12, 31), date(2099, 12, 31), date(1911, 9, 22)])
def test_every_format_and_case_names_the_date(d):
    for fmt in dates.FORMATS:
        if "{yy}" in fmt and not dates.two_digit_ok(d):
            with pytest.raises(InputError, match="two-digit"):
                dates.render(d, fmt)
            continue
        for case in dates.CASES:
            _check(dates.render(d, fmt, case), d.isoformat())


def test_random_samples_parse_back_with_correct_weekdays():
    rng = np.random.default_rng(1)
    pairs = [dates.sample(rng) for _ in range(3000)]
    for source, target in pairs:
        _check(source, target)
        assert dates.FIRST.isoformat() <= target <= dates.LAST.isoformat()
    assert len({s for s, _ in pairs}) > 2900  # varied
    assert dates.render(date(2026, 11, 30), "{weekday}, {d} {month} {yyyy}") == "Monday, 30 November 2026"
    assert dates.render(date(2026, 11, 30), "{dd}-{mon}-{yy}", "lower") == "30-nov-26"
    assert dates.render(date(1970, 1, 2), "{dd}/{mm}/{yy}") == "02/01/70"


def test_held_out_dates_never_appear_in_training():
    split = dates.make_split(0, val_size=500)
    held = set(split.val_dates.tolist())
    assert not held & set(split.train_dates.tolist())
    assert len(held) + len(split.train_dates) == dates.LAST.toordinal() - dates.FIRST.toordinal() + 1
    assert 0.04 < len(held) / (len(held) + len(split.train_dates)) < 0.06
    rng = np.random.default_rng(0)
    trained = {date.fromisoformat(t).toordinal() for _, t in split.batch(rng, 20000)}
    assert not trained & held
    val_targets = [date.fromisoformat(t).toordinal() for _, t in split.val]
    assert len(set(val_targets)) == 500 and set(val_targets) <= held
    assert np.array_equal(dates.make_split(7, val_size=10).val_dates, split.val_dates)  # fixed across seeds


def test_encode_decode_round_trip():
    text = "".join(dates.CHARS)
    ids = dates.encode(text)
    assert ids.dtype == np.int64 and (ids > dates.UNK).all()
    assert dates.decode(ids) == text
    assert dates.decode(dates.encode("30 Nov ☃")) == "30 Nov " + dates.UNK_CHAR
    assert dates.decode([dates.BOS, *dates.encode("ab"), dates.EOS, *dates.encode("cd")]) == "ab"
    assert dates.TOKENS[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and dates.PAD == 0
    ids, lengths = dates.encode_batch(["ab", "abc"], eos=True)
    assert ids.shape == (2, 4) and lengths.tolist() == [3, 4] and ids[0, 3] == dates.PAD


# ---- the model (torch) ----------------------------------------------------------------------

PROMPTS = ["30 Nov 2026", "the 1st of January, 1900", "MONDAY, 30 NOVEMBER 2026", "30/11/26", "x☃y"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from edgernn.train import seq2seq
    from edgernn.export import seq2seq as export_seq2seq
    from edgernn.train import seq2seq_io

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend, badly so on a busy machine
    try:
        enc, dec, result = seq2seq.train_seq2seq(cell="gru", hidden=16, embed=8, steps=60, batch_size=32,
                                                 eval_every=20, val_size=100, seed=0)
    finally:
        torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("s2s")
    seq2seq_io.save(folder / "d.pt", enc, dec, result)
    enc_path, dec_path, reports = export_seq2seq.export_pair(folder / "d.pt", folder / "d")
    return {"enc": enc, "dec": dec, "result": result, "folder": folder, "pt": folder / "d.pt",
            "enc_path": enc_path, "dec_path": dec_path, "reports": reports}


def test_training_loss_falls_and_metric_is_reported(trained):
    h = trained["result"]["history"]
    assert len(h) == 3 and h[-1]["train_loss"] < h[0]["train_loss"] - 0.5
    m = trained["result"]["metrics"]
    assert m["metric"] == "exact_match" and m["baseline_kind"] == "copy the source"
    assert 0.0 < m["baseline"] < 0.15  # the ISO-already formats
    assert m["value"] == max(r["val"] for r in h)  # best weights kept


def test_progress_reports_the_train_keys():
    pytest.importorskip("torch")
    from edgernn.train import seq2seq

    rows = []
    seq2seq.train_seq2seq(hidden=8, embed=4, steps=4, batch_size=4, eval_every=2, val_size=10, progress=rows.append)
    assert [r["step"] for r in rows] == [2, 4]
    assert {"step", "total", "train_loss", "val", "baseline", "metric", "seconds"} <= set(rows[0])


@pytest.mark.parametrize("cell", ["lstm", "rnn_tanh"])
def test_checkpoint_round_trip(tmp_path, cell):
    torch = pytest.importorskip("torch")
    from edgernn.train import seq2seq
    from edgernn.export import seq2seq as export_seq2seq
    from edgernn.train import seq2seq_io
    from edgernn.train.models import RNNModel

    torch.manual_seed(0)
    enc_spec, dec_spec = seq2seq.make_specs(cell=cell, hidden=8, layers=2, embed=4)
    enc, dec = RNNModel(enc_spec), RNNModel(dec_spec)
    seq2seq_io.save(tmp_path / "p.pt", enc, dec, {"metrics": {"value": 0.5}})
    raw = torch.load(tmp_path / "p.pt", weights_only=True)
    assert seq2seq_io.is_seq2seq_checkpoint(raw) and not seq2seq_io.is_seq2seq_checkpoint({"format": "x"})
    assert raw["tokens"] == dates.TOKENS and raw["bos"] == dates.BOS and raw["eos"] == dates.EOS
    pair = seq2seq_io.load(tmp_path / "p.pt")
    assert pair.encoder.spec == enc_spec and pair.decoder.spec == dec_spec and pair.metrics == {"value": 0.5}
    assert pair.greedy(PROMPTS) == seq2seq.greedy(enc, dec, PROMPTS)
    _, dec_path, reports = export_seq2seq.export_pair(tmp_path / "p.pt", tmp_path / "p.onnx")
    assert dec_path.name == "p.decoder.onnx" and reports["encoder"]["ok"] and reports["decoder"]["ok"]


def _meta(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return json.loads(sess.get_modelmeta().custom_metadata_map["edgernn"])


def test_export_pair_links_the_two_files_and_passes_parity(trained):
    enc_path, dec_path = trained["enc_path"], trained["dec_path"]
    assert (enc_path.name, dec_path.name) == ("d.encoder.onnx", "d.decoder.onnx")
    for role in ("encoder", "decoder"):
        r = trained["reports"][role]
        assert r["ok"] and r["max_abs_err"] <= 1e-5 and r["step_max_abs_err"] <= 1e-5
    enc, dec = _meta(enc_path), _meta(dec_path)
    assert enc["seq2seq"]["role"] == "encoder" and enc["seq2seq"]["decoder"] == "d.decoder.onnx"
    assert dec["seq2seq"]["role"] == "decoder" and dec["seq2seq"]["encoder"] == "d.encoder.onnx"
    assert enc["seq2seq"]["tokens"] == dec["seq2seq"]["tokens"] == dates.TOKENS
    assert (enc["seq2seq"]["pad"], enc["seq2seq"]["bos"], enc["seq2seq"]["eos"], enc["seq2seq"]["unk"]) == (0, 1, 2, 3)
    assert dec["seq2seq"]["max_length"] == dates.MAX_LENGTH
    assert enc["input"]["dtype"] == "int64" and enc["output"]["size"] == 16 and dec["output"]["size"] == dates.VOCAB
    assert dec["model"]["task"] == "lm" and dec["export"]["parity"]["max_abs_err"] <= 1e-5
    assert enc["states"] == dec["states"]


def test_greedy_decode_torch_free_matches_pytorch(trained, tmp_path):
    from edgernn.train import seq2seq

    moved = tmp_path / "elsewhere"  # relative links: the pair moves together
    moved.mkdir()
    for p in (trained["enc_path"], trained["dec_path"]):
        shutil.copy(p, moved / p.name)
    split = dates.make_split(0, val_size=100)
    prompts = PROMPTS + [s for s, _ in split.val[:15]]
    want = seq2seq.greedy(trained["enc"], trained["dec"], prompts)
    code = ("import json, sys\nimport edgernn.train.dates\nfrom edgernn.runtime.generate import EncoderDecoder, greedy_decode\n"
            f"prompts = {prompts!r}\nm = EncoderDecoder({str(moved / 'd.decoder.onnx')!r})\n"
            "out = [m.greedy(p) for p in prompts]\n"
            f"assert out[0] == greedy_decode({str(moved / 'd.decoder.onnx')!r}, prompts[0])\n"
            "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
            "print(json.dumps(out))\n")
    res = run_torch_free(code)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == want
    assert any(want)  # decoded something


def test_max_length_caps_the_output(trained):
    from edgernn.runtime.generate import greedy_decode

    out = greedy_decode(trained["dec_path"], "30 Nov 2026", max_length=3)
    assert len(out) <= 3
    with pytest.raises(InputError, match="max_length"):
        greedy_decode(trained["dec_path"], "30 Nov 2026", max_length=0)


def test_bad_prompts_and_wrong_files(trained, tmp_path, tiny_export):
    from edgernn.train import seq2seq_io
    from edgernn.runtime.generate import greedy_decode

    with pytest.raises(InputError, match="non-empty"):
        greedy_decode(trained["dec_path"], "")
    with pytest.raises(ModelFileError, match="d.decoder.onnx instead"):
        greedy_decode(trained["enc_path"], "30 Nov 2026")
    _, pt, onnx_path = tiny_export()
    with pytest.raises(ModelFileError, match="not part of an encoder"):
        greedy_decode(onnx_path, "30 Nov 2026")
    with pytest.raises(ModelFileError, match="not a seq2seq checkpoint"):
        seq2seq_io.load(pt)
    with pytest.raises(InputError, match="no such"):
        greedy_decode(tmp_path / "missing.decoder.onnx", "30 Nov 2026")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(trained["dec_path"], lonely / "d.decoder.onnx")
    with pytest.raises(ModelFileError, match="encoder 'd.encoder.onnx' is not beside it"):
        greedy_decode(lonely / "d.decoder.onnx", "30 Nov 2026")
