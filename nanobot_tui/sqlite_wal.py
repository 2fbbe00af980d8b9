"""One way to open nanobot's own SQLite files (learned.db, stats.db's adapters table):
WAL mode, a busy timeout, one connection shared by threads, and SQLite's errors turned
into one line of the caller's error type that names the file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from nanobot_tui import paths
from nanobot_tui.errors import NanobotError


def connect_wal(
    path: Path,
    error: Callable[[str], NanobotError],
    what: str,
    busy_ms: int = 10_000,
    prepare: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """An autocommit connection to `path` (created with its folder if missing) in WAL
    mode, after `prepare(conn)` (its schema) ran; `error(line)` is raised for a file
    SQLite cannot use, `what` names it in the line ("the learning database"). A damaged
    file is left untouched."""
    paths.ensure(path.parent)
    try:
        conn = sqlite3.connect(
            path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise error(f"{path}: cannot open {what}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise error(f"{path}: cannot switch {what} to WAL mode")
        conn.execute("PRAGMA synchronous = NORMAL")
        if prepare is not None:
            prepare(conn)
    except sqlite3.OperationalError as exc:
        # Locked past the busy timeout, a read-only file or folder: the file may be fine.
        conn.close()
        raise error(f"{path}: cannot use {what}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise error(
            f"{path}: not a readable SQLite database ({exc}); left untouched: "
            "move it aside and nanobot starts a new one"
        ) from None
    except BaseException:
        conn.close()
        raise
    return conn


class WalDatabase:
    """An open connection (`_conn`, from `connect_wal`) shared by threads under `_lock`:
    closed by `close()` or at the end of a `with` block."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
