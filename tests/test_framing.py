"""Causal framing of raw samples: streaming pushes equal offline framing."""

import numpy as np
import pytest

from edgernn.core.errors import InputError
from edgernn.runtime.framing import Framer


def test_windows_hold_previous_context_and_zeros_first():
    f = Framer(5, 2)
    w = f.frame_all(np.arange(1, 8, dtype=np.float32))
    assert w.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [2, 3, 4, 5, 6]]


@pytest.mark.parametrize("window,hop", [(400, 160), (4, 4), (7, 3)])
def test_streaming_equals_offline(window, hop):
    x = np.random.default_rng(0).standard_normal(3001).astype(np.float32)
    offline = Framer(window, hop).frame_all(x)
    f = Framer(window, hop)
    rng = np.random.default_rng(1)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(0, 500))
        parts.append(f.push(x[i:i + n]))
        i += n
    assert np.array_equal(np.concatenate(parts), offline) and len(offline) == len(x) // hop


def test_bad_window():
    with pytest.raises(InputError, match="0 < hop <= window"):
        Framer(3, 5)
