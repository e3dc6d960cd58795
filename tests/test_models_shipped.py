"""The pretrained example models in models/ do what README says, through the torch-free runtime."""

from pathlib import Path

import pytest

from edgernn.train import dates
from edgernn.runtime.generate import EncoderDecoder

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.skipif(not (MODELS / "dates.decoder.onnx").exists(), reason="models/dates.*.onnx not shipped")
def test_dates_pair_exact_match_on_held_out_dates():
    pair = EncoderDecoder(MODELS / "dates.decoder.onnx")
    split = dates.make_split(seed=0, val_size=500)
    hits = sum(pair.greedy(src) == tgt for src, tgt in split.val)
    assert hits / len(split.val) >= 0.95
    assert pair.greedy("30 Nov 2026") == "2026-11-30"
