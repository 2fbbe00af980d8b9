"""A run's database: its tables, how it is opened, its meta rows, and the error of a
store that cannot be read.

Tables
------
meta(key, value JSON)  spec, created, status, status_reason, runner {pid, created},
                       heartbeat, totals (counts kept by the writer in the same
                       transaction as the rows they count), layout, storage, trace.
nodes                  the root and every block (see tree.py), created up front;
                       counters, status and timings are recomputed by SQL from the rows
                       below them at each commit, for the blocks that commit touched.
steps                  one row per step (step = PRIMARY KEY: never twice), written when
                       the step is done (completed, skipped or failed).
attempts               earlier, undecided attempts of a retried step.
samples                every sample of a step (real models; off for simulated runs).
step_groups            a grouped run's level-1 blocks (a code run's files): first step,
                       index and label; the meta row "layout" has only their number.
                       Only grouped runs have this table.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from nanobot_tui.engine.runs.tree import Layout
from nanobot_tui.errors import NanobotError, UsageError

DB_NAME = "run.db"
NODE_STATUSES = ("pending", "running", "completed", "failed", "skipped")
SUMMARY_MIN_STEPS = 1000  # blocks this big (and the root) get their summary stored
SAMPLE_TEXT_MAX = 4096

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    parent INTEGER,
    kind TEXT NOT NULL,
    level INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    children INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    completed_children INTEGER NOT NULL DEFAULT 0,
    failed_children INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    summary TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS nodes_by_parent ON nodes (parent, ordinal);
CREATE TABLE IF NOT EXISTS steps (
    step INTEGER PRIMARY KEY,
    node INTEGER NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    answer TEXT,
    votes TEXT,
    rounds INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    valid INTEGER NOT NULL DEFAULT 0,
    red_flags TEXT,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    wall_ms REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    correct INTEGER,
    error TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    step INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    answer TEXT,
    votes TEXT,
    rounds INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    valid INTEGER NOT NULL DEFAULT 0,
    red_flags TEXT,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    wall_ms REAL,
    error TEXT,
    PRIMARY KEY (step, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
    step INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    i INTEGER NOT NULL,
    key TEXT,
    red_flag TEXT,
    temperature REAL,
    tokens INTEGER,
    latency_ms REAL,
    text TEXT,
    PRIMARY KEY (step, attempt, i)
) WITHOUT ROWID;
"""
# Only in a grouped run's store: a run laid out in blocks of `fanout` steps (every run
# from before grouped layouts) has no such table, and its file is as it always was.
GROUPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS step_groups (
    first_step INTEGER PRIMARY KEY,
    ordinal INTEGER NOT NULL,
    label TEXT NOT NULL
)
"""


NODE_COLS = (
    "id, parent, kind, ordinal, first_step, last_step, status, attempts, started, finished, "
    "completed_children, failed_children, samples, tokens, errors, summary, error, level, "
    "children"
)
STEP_COLS = (
    "step, node, status, input, answer, votes, rounds, samples, valid, red_flags, "
    "completion_tokens, latency_ms, wall_ms, attempts, correct, error"
)


class StoreError(NanobotError):
    """A run store that cannot be read or written; str() is one line."""


class RunNotFound(StoreError, UsageError):
    """No run has this id (or a prefix names several): bad input, exit 2."""


class StoreDamaged(StoreError):
    """A run's database file is damaged (truncated, overwritten); str() is one line
    naming the file and what is wrong with it."""


_HEADER = b"SQLite format 3\x00"


def damage(path: Path) -> str | None:
    """What is wrong with a run's database file, from its 100-byte header and its size
    (no page is read): None when nothing shows. A file shorter than the pages its header
    counts was truncated (a crash, a full disk, a copy cut short); SQLite itself only
    notices when a query reaches a missing page ("database disk image is malformed")."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if len(head) < 100 or not head.startswith(_HEADER):
        return "is not a SQLite database (overwritten or cut short)"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    # The header's page count is valid when its change counter matches version-valid-for.
    if head[24:28] == head[92:96] and pages and size < pages * page:
        return f"is truncated: {size:,} of its {pages * page:,} bytes are left"
    return None


def runner_holds(folder: Path) -> bool:
    """Whether a runner holds the lock of the run in `folder` (a probe: takes and drops a
    shared lock)."""
    from nanobot_tui.pidlock import holder

    return holder(folder / "lock") is not None


def check_intact(run_id: str, path: Path, *, locked: bool = False) -> None:
    """StoreDamaged when the run's database file is damaged. Skipped while another
    process holds the run (`locked`: this one does): a runner's checkpoint may grow the
    file after its header."""
    if not locked and runner_holds(path.parent):
        return
    problem = damage(path)
    if problem is not None and not _wal_covers(path):
        raise StoreDamaged(
            f"run {run_id}: its database {path} {problem}; the run cannot be read or "
            f"resumed: `nanobot runs recover {run_id}` rebuilds it from what it still holds"
        )


def _wal_covers(path: Path) -> bool:
    """Whether SQLite reads the whole store through its write-ahead log anyway: a runner
    killed in the middle of a checkpoint leaves the main file shorter than its header
    says, with every page still in the WAL. Checked (PRAGMA quick_check) only then."""
    wal = path.with_name(path.name + "-wal")
    try:
        if wal.stat().st_size == 0:
            return False
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            row = conn.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return False
    return bool(row) and row[0] == "ok"


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10.0
        )
    else:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def meta_set(conn: sqlite3.Connection, items: dict[str, Any]) -> None:
    """Upsert meta keys, in one statement."""
    if not items:
        return
    conn.execute(
        "INSERT INTO meta(key, value) VALUES "
        + ", ".join("(?, ?)" for _ in items)
        + " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [x for k, v in items.items() for x in (k, to_json(v))],
    )


def read_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    """Every meta key, JSON-decoded (a value that is not JSON comes back as it is)."""
    out: dict[str, Any] = {}
    for key, value in conn.execute("SELECT key, value FROM meta"):
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


# --- the layout ------------------------------------------------------------------------


def save_groups(conn: sqlite3.Connection, layout: Layout) -> None:
    """Write a grouped layout's groups to step_groups: the meta row "layout" keeps only
    their number (`layout.to_dict(groups=False)`), as their labels could be thousands of
    paths that every status read would parse again."""
    if layout.is_grouped:
        conn.execute(GROUPS_SCHEMA)
        conn.executemany(
            "INSERT INTO step_groups(first_step, ordinal, label) VALUES (?, ?, ?)",
            layout.group_rows(),
        )


def load_layout(conn: sqlite3.Connection, data: dict[str, Any]) -> Layout:
    """The run's layout from its meta row "layout" (with a grouped run's groups read from
    step_groups); the meta rows of runs from before grouped layouts load as they were."""
    groups = data.get("groups")
    if not isinstance(groups, int):
        return Layout.from_dict(data)
    try:
        rows = conn.execute(
            "SELECT first_step, label FROM step_groups ORDER BY first_step"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"its groups (the tree's files) cannot be read: {exc}") from None
    if len(rows) != groups:
        raise StoreError(f"the run's tree has {groups:,} groups, its store {len(rows):,}")
    ends = [first for first, _ in rows[1:]] + [int(data["steps"])]
    listed = [[label, end - first] for (first, label), end in zip(rows, ends, strict=True)]
    try:
        return Layout.from_dict({**data, "groups": listed})
    except ValueError as exc:
        raise StoreError(f"the run's groups do not fit its tree: {exc}") from None
