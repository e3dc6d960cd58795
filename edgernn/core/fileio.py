"""Atomic writes: a killed process leaves the old file or the new one, never half of either."""

from __future__ import annotations

import os
from pathlib import Path


def write_bytes(path, data: bytes, *, make_parents: bool = True) -> None:
    """Write beside the target, fsync, rename over it.

    The temporary file has one fixed name per target (`.NAME.tmp`), so a device whose writer is
    killed and restarted again and again reuses it instead of piling up leftovers; it is created
    with the usual permissions (umask), not the 0600 of a mkstemp file.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())
