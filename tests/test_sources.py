"""Frame sources: CSV with or without header, .npy, stdin lines; bad rows named precisely."""

import io

import numpy as np
import pytest

from edgernn.runtime import sources
from edgernn.core.errors import InputError


def test_csv_header_columns_and_plain(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('"YEAR","A","B"\n1700,1.5,2\n1701,3,4\n')
    assert sources.read_csv(p, columns=["B", "A"]).tolist() == [[2, 1.5], [4, 3]]
    assert sources.read_csv(p, width=3).shape == (2, 3)
    q = tmp_path / "b.csv"
    q.write_text("1,2\n\n3,4\n")
    assert sources.read_csv(q, width=2).tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("text,kw,match", [
    ("1,2\n3\n", {"width": 2}, r"b.csv:2: 1 value; expected 2"),
    ("1,2\n3,x\n", {"width": 2}, r"b.csv:2: 'x' is not a number"),
    ("", {}, "empty"),
    ("A,B\n", {}, "a header but no rows"),
    ("A,B\n1,2\n", {"columns": ["C"]}, "no column 'C'"),
    ("1,2\n", {"columns": ["C"]}, "no header row"),
])
def test_csv_errors(tmp_path, text, kw, match):
    p = tmp_path / "b.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        sources.read_csv(p, **kw)


def test_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6).reshape(3, 2))
    assert sources.read_npy(tmp_path / "a.npy", width=2).dtype == np.float32
    np.save(tmp_path / "c.npy", np.arange(4.0))
    assert sources.read_npy(tmp_path / "c.npy", width=1).shape == (4, 1)
    with pytest.raises(InputError, match=r"expected \(T, 3\)"):
        sources.read_npy(tmp_path / "a.npy", width=3)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="not a readable .npy"):
        sources.read_npy(tmp_path / "o.npy")


def test_stdin_lines():
    frames = list(sources.iter_lines(io.StringIO("1 2\n# comment\n3,4\n\n5;6\n"), width=2))
    assert np.array(frames).tolist() == [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(InputError, match=r"<stdin>:2: 'nan\?' is not a number"):
        list(sources.iter_lines(io.StringIO("1 2\nnan? 1\n"), width=2))


def test_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="unsupported input type '.xyz'"):
        sources.read_file(tmp_path / "a.xyz")
