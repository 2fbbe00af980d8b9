"""NANOBOT_HOME/learned.db: what the learning loops keep (verified step results, few-shot
examples, task history, anomalies).

SQLite in WAL mode, like stats.db (engine/voting/calibration_store.py): a runner process
and the app write to it at the same time, so every write is one short `BEGIN IMMEDIATE`
transaction (it takes the write lock up front and waits up to the busy timeout for it,
instead of failing on a lock upgrade), and readers never wait for writers. The schema is
versioned in a `meta` table and created on first use. A file that is not a readable
SQLite database (or was written by a newer nanobot) raises `LearningStoreError` with one
clear line; it is never deleted or rewritten.

The connection is synchronous (sqlite3): a lookup is a fraction of a millisecond, and the
app calls the store from workers, never from its event loop.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.errors import NanobotError
from nanobot_tui.sqlite_wal import WalDatabase, connect_wal

__all__ = ["SCHEMA_VERSION", "LearningStore", "LearningStoreError", "learned_path"]

# 2: the `examples` table (L1). Every statement is CREATE ... IF NOT EXISTS, so a version 1
# file is migrated by running the schema again: it gains the table and keeps its rows.
SCHEMA_VERSION = 2
_BUSY_TIMEOUT_MS = 10_000

# One statement each: they run inside the schema's transaction (executescript would commit).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # L0: one verified result per canonical key (see reuse.py for the key).
    """CREATE TABLE IF NOT EXISTS step_results (
        key                TEXT PRIMARY KEY,
        step_type          TEXT NOT NULL,
        model              TEXT NOT NULL,
        prompt_fingerprint TEXT NOT NULL,
        input_json         TEXT NOT NULL,
        output_json        TEXT NOT NULL,
        verified_by        TEXT NOT NULL CHECK (verified_by IN ('truth', 'voted+checked')),
        created            REAL NOT NULL,
        hits               INTEGER NOT NULL DEFAULT 0,
        last_hit           REAL
    )""",
    "CREATE INDEX IF NOT EXISTS step_results_by_type ON step_results (step_type, model)",
    # Every L0 lookup of a step type, hit or miss: the cache's hit rate.
    """CREATE TABLE IF NOT EXISTS reuse_counters (
        step_type TEXT PRIMARY KEY,
        lookups   INTEGER NOT NULL,
        hits      INTEGER NOT NULL
    )""",
    # One row per finished task of a task type (kind: recipe, domain or skill).
    """CREATE TABLE IF NOT EXISTS task_history (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        task_type        TEXT NOT NULL,
        kind             TEXT NOT NULL,
        finished         REAL NOT NULL,
        steps            INTEGER NOT NULL,
        tokens           INTEGER NOT NULL,
        seconds          REAL NOT NULL,
        samples_per_step REAL NOT NULL,
        p                REAL,
        success          INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS task_history_by_type ON task_history (task_type, id)",
    # A task that cost far more than its history: exceeded_json says on what, by how much.
    """CREATE TABLE IF NOT EXISTS anomalies (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        task_type     TEXT NOT NULL,
        history_id    INTEGER,
        at            REAL NOT NULL,
        exceeded_json TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS anomalies_by_type ON anomalies (task_type, id)",
    # L1: verified few-shot examples with the steps they helped and hurt (see examples.py).
    """CREATE TABLE IF NOT EXISTS examples (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        step_type   TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        input_text  TEXT NOT NULL,
        answer_text TEXT NOT NULL,
        verified_by TEXT NOT NULL CHECK (verified_by IN ('truth', 'voted+checked')),
        model       TEXT NOT NULL,
        created     REAL NOT NULL,
        helped      INTEGER NOT NULL DEFAULT 0,
        hurt        INTEGER NOT NULL DEFAULT 0,
        retired     REAL,
        UNIQUE (step_type, fingerprint, input_text)
    )""",
    "CREATE INDEX IF NOT EXISTS examples_by_type ON examples (step_type, fingerprint, id)",
)


class LearningStoreError(NanobotError):
    """learned.db cannot be used; the message says which file and why, in one line."""


def learned_path() -> Path:
    return paths.home() / "learned.db"


class LearningStore(WalDatabase):
    """An open learned.db. Use as a context manager, or call `close()`.

    `query` reads; `write()` is one immediate transaction. Both turn SQLite's errors into
    LearningStoreError. One connection may be shared by threads (a lock serialises them).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or learned_path()
        self._lock = threading.RLock()

        def prepare(conn: sqlite3.Connection) -> None:
            self._conn = conn
            self._ensure_schema()

        self._conn = connect_wal(
            self.path, LearningStoreError, "the learning database", _BUSY_TIMEOUT_MS, prepare
        )

    @classmethod
    def open_existing(cls, path: Path | None = None) -> LearningStore | None:
        """The store if its file exists, else None (a listing creates nothing)."""
        path = path or learned_path()
        return cls(path) if path.exists() else None

    def _ensure_schema(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            version: int | None = None
            if has_meta:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = int(row[0]) if row and str(row[0]).isdigit() else None
            if version is not None and version > SCHEMA_VERSION:
                raise LearningStoreError(
                    f"{self.path}: schema version {version} was written by a newer nanobot "
                    f"(this one knows up to {SCHEMA_VERSION}); left untouched"
                )
            if version != SCHEMA_VERSION:
                # First use (or a meta table without a version): every table, then the version.
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row `sql` selects."""
        with self._lock, self._errors():
            return self._conn.execute(sql, args).fetchall()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction: committed when the block ends, rolled back when it
        raises."""
        with self._lock, self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            # "database is locked" after the busy timeout, a full disk, a read-only file.
            raise LearningStoreError(f"{self.path}: learning database error: {exc}") from None
