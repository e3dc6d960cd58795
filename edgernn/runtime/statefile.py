"""A stream's state on disk: written atomically, tied to the model it belongs to. Torch-free.

The file is an .npz (no pickles) holding the state arrays and a JSON header naming the model's
content hash, the state shapes, and the steps consumed, so that a state is never loaded into a
model it does not belong to.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from edgernn.core import fileio
from edgernn.core.errors import InputError, ModelFileError

FORMAT = "edgernn-state/1"


def model_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(path, state: dict, *, model_sha256: str, steps: int, extra: dict | None = None) -> None:
    header = {"format": FORMAT, "model_sha256": model_sha256, "steps": int(steps),
              "shapes": {k: list(v.shape) for k, v in state.items()}, **(extra or {})}
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8),
             **{f"state:{k}": np.ascontiguousarray(v) for k, v in state.items()})
    fileio.write_bytes(path, buf.getvalue())


_MAX_HEADER = 1 << 20


def _member_header(zf: zipfile.ZipFile, name: str):
    """(shape, dtype) of one .npy member, read from its header alone: nothing is allocated yet."""
    with zf.open(name) as f:
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(f)
    return tuple(shape), dtype


def _read(path, want: dict):
    """The header and the state arrays, each member's declared size checked before it is read."""
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "__header__.npy" not in names:
            raise KeyError("__header__")
        shape, dtype = _member_header(zf, "__header__.npy")
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > _MAX_HEADER:
            raise ValueError("header member of the wrong kind")
        with zf.open("__header__.npy") as f:
            header = json.loads(bytes(np.lib.format.read_array(f, allow_pickle=False)).decode())
        state = {}
        for name in sorted(names - {"__header__.npy"}):
            if not (name.startswith("state:") and name.endswith(".npy")):
                continue
            key = name[len("state:"):-len(".npy")]
            shape, dtype = _member_header(zf, name)
            ref = want.get(key)
            if ref is None or shape != ref.shape or dtype != ref.dtype:
                state[key] = np.zeros(shape if ref is None or np.prod(shape, dtype=object) < 1 << 20 else (0,), dtype)
                continue  # reported below, never read
            with zf.open(name) as f:
                state[key] = np.lib.format.read_array(f, allow_pickle=False)
    return header, state


def load(path, *, model_sha256: str, want: dict) -> tuple[dict, dict]:
    """Read and check a state file against the model; returns (state, header)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such state file; expected one written by save_state / --state-file")
    try:
        header, state = _read(path, want)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError, RecursionError,
            NotImplementedError, SyntaxError) as e:
        raise ModelFileError(f"{path}: not a readable edgernn state file ({type(e).__name__}); "
                             "expected a file written by save_state / --state-file") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: state format {header.get('format') if isinstance(header, dict) else header!r}; "
                             f"expected {FORMAT}")
    if header.get("model_sha256") != model_sha256:
        raise InputError(f"{path}: this state belongs to another model (sha256 {str(header.get('model_sha256'))[:12]}…, "
                         f"this one is {model_sha256[:12]}…); expected a state saved from the same .onnx file")
    steps = header.get("steps", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise InputError(f"{path}: steps {steps!r} in its header; expected a count of frames >= 0")
    if set(state) != set(want):
        raise InputError(f"{path}: holds states {sorted(state)}; expected {sorted(want)}")
    for k, ref in want.items():
        if state[k].shape != ref.shape or state[k].dtype != ref.dtype:
            raise InputError(f"{path}: state {k!r} is {state[k].dtype}{list(state[k].shape)}; "
                             f"expected {ref.dtype}{list(ref.shape)}")
        if not np.isfinite(state[k]).all():
            raise InputError(f"{path}: state {k!r} holds NaN or Inf; expected finite numbers")
    return state, header
