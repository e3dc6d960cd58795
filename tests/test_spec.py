"""The model spec and the metadata schema: torch-free, validated, round-tripping."""

import json

import pytest

from edgernn.core import meta
from edgernn.core.errors import InputError, ModelFileError
from edgernn.core.spec import ModelSpec


def test_spec_round_trip_and_states():
    s = ModelSpec(cell="lstm", features=4, hidden=8, layers=2, bidirectional=True, outputs=3)
    assert ModelSpec.from_dict(s.to_dict()) == s
    assert s.state_shape == (4, 8) and s.state_names == (("h0", "hn"), ("c0", "cn"))
    assert ModelSpec(cell="gru").state_names == (("h0", "hn"),)


@pytest.mark.parametrize("kw,match", [
    ({"cell": "tcn"}, "cell 'tcn'"), ({"hidden": 0}, "hidden=0"), ({"vocab": 10}, "embed > 0"),
    ({"dropout": 1.0}, "dropout"), ({"readout": "first"}, "readout"),
])
def test_spec_rejects_bad_values(kw, match):
    with pytest.raises(InputError, match=match):
        ModelSpec(**kw)


def test_meta_build_parse_and_errors():
    m = meta.build(ModelSpec(cell="lstm", features=40, hidden=16, layers=2, outputs=2, task="classify"),
                   labels=["yes", "no"])
    back = meta.parse(meta.dumps(m))
    assert back["states"][1] == {"input": "c0", "output": "cn", "shape": [2, "batch", 16], "batch_axis": 1}
    assert back["output"]["labels"] == ["yes", "no"]
    with pytest.raises(ModelFileError, match="not valid JSON"):
        meta.parse("{oops")
    with pytest.raises(ModelFileError, match="lacks"):
        meta.parse(json.dumps({"format": 1}))
    with pytest.raises(ModelFileError, match="newer edgernn"):
        meta.parse(json.dumps({**m, "format": 99}))
    with pytest.raises(ModelFileError, match="2 labels for 3 outputs"):
        meta.parse(json.dumps({**m, "output": {**m["output"], "size": 3}}))
