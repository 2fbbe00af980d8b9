"""Files replaced whole: a reader, or a crash, sees the old file or the new one, never half.

One way for the config, MEMORY.md, the agent's file edits and finished downloads: write a
temporary file in the same folder (with its final mode from the start, so a secret is never
readable by others), fsync it, rename it over the target; fsync the folder too where the
rename itself must survive a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes | str, *, mode: int = 0o600, sync_dir: bool = False
) -> Path:
    """Replace `path` with `data` (str is written as UTF-8). The folder must exist."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path
