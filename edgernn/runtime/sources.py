"""Where frames come from: CSV, .npy, and stdin (one frame per line). Torch-free.

Files are read and checked whole before the first frame is emitted, so a bad row stops the run
before any output; stdin is read line by line, so a pipe is streamed live.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from edgernn.core.errors import InputError
from edgernn.core.wording import plural

_SPLIT = re.compile(r"[,\s;]+")


def _parse_row(fields: list[str], where: str, width: int | None, dtype) -> np.ndarray:
    if width is not None and len(fields) != width:
        raise InputError(f"{where}: {plural(len(fields), 'value')}; expected {width} (one per model feature)")
    try:
        return np.array([float(f) for f in fields], dtype=dtype)
    except ValueError:
        bad = next(f for f in fields if not _is_number(f))
        raise InputError(f"{where}: {bad[:40]!r} is not a number; expected {plural(width, 'number') if width else 'numbers only'} per row") from None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_csv(path, *, width: int | None = None, columns: list[str] | None = None, dtype=np.float32,
             sep: str | None = ",") -> np.ndarray:
    """(T, width) frames from a CSV file (sep None: tabs or spaces); a first row that is not numeric is a header."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected a CSV with one frame per row") from None
    except (UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path}: cannot be read as text ({type(e).__name__}); expected a CSV file") from e
    rows = [(i + 1, [f.strip().strip('"') for f in line.split(sep)]) for i, line in enumerate(lines) if line.strip()]
    if not rows:
        raise InputError(f"{path}: empty; expected a CSV with one frame per row")
    header = None
    if not all(_is_number(f) for f in rows[0][1]):
        header, rows = rows[0][1], rows[1:]
    pick = None
    if columns:
        if header is None:
            raise InputError(f"{path}: --column {columns[0]!r} given but the file has no header row; expected a header")
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r}; the header has {header}")
        pick = [header.index(c) for c in columns]
    elif header is not None and width is not None and len(header) != width:
        names = ", ".join(header)
        raise InputError(f"{path}: columns {names}, but the model takes {plural(width, 'value')} "
                         f"a frame; expected --column NAME to pick {'it' if width == 1 else 'them'} "
                         f"(e.g. --column {header[-1]})")
    out = []
    for lineno, fields in rows:
        if pick is not None:
            if len(fields) != len(header):
                raise InputError(f"{path}:{lineno}: {plural(len(fields), 'value')}; expected {len(header)} like the header")
            fields = [fields[i] for i in pick]
        out.append(_parse_row(fields, f"{path}:{lineno}", width, dtype))
    if not out:
        raise InputError(f"{path}: a header but no rows; expected at least one frame")
    return np.stack(out)


def read_npy(path, *, width: int | None = None, dtype=np.float32) -> np.ndarray:
    """(T, width) frames from a .npy file holding (T, F) or (T,) numbers; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a .npy array of frames")
    try:
        a = _load_npy(path)
    except (ValueError, OSError, EOFError, SyntaxError, MemoryError) as e:
        raise InputError(f"{path}: not a readable .npy array ({str(e).splitlines()[0][:120]}); expected numbers saved "
                         "with numpy.save") from e
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{path}: holds {a.dtype}; expected a numeric array")
    if a.ndim == 1 and width in (None, 1):
        a = a[:, None]
    if a.ndim != 2 or (width is not None and a.shape[1] != width):
        raise InputError(f"{path}: array of shape {a.shape}; expected (T, {width if width is not None else 'F'})")
    return a.astype(dtype)


def _load_npy(path) -> np.ndarray:
    """np.load without pickles, refusing a declared size the file cannot hold before allocating it."""
    import tokenize

    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
        except tokenize.TokenError as e:
            raise ValueError(f"its header does not parse ({e.args[0]})") from None
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        have = Path(path).stat().st_size - f.tell()
        if need > have:
            raise ValueError(f"its header declares {need} bytes of data but the file holds {have}")
    return np.load(path, allow_pickle=False)


def iter_lines(stream=None, *, width: int | None = None, dtype=np.float32) -> Iterator[np.ndarray]:
    """Frames from text lines as they arrive: comma- or space-separated numbers, one frame a line."""
    stream = stream or sys.stdin
    for lineno, line in enumerate(stream, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        yield _parse_row([f for f in _SPLIT.split(line.strip()) if f], f"<stdin>:{lineno}", width, dtype)


def read_file(path, *, width: int | None = None, columns=None, dtype=np.float32) -> np.ndarray:
    """Dispatch on the extension: .csv, .npy (others are refused with what is supported)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return read_csv(path, width=width, columns=columns, dtype=dtype, sep="," if suffix == ".csv" else None)
    if suffix == ".npy":
        return read_npy(path, width=width, dtype=dtype)
    raise InputError(f"{path}: unsupported input type {suffix or '(none)'!r}; expected .csv, .npy, .wav, mic or -")
