"""NANOBOT_HOME/stats.db: calibrations (and later budgets), kept per model, domain and date.

SQLite through aiosqlite, in WAL mode so a watcher can read while a run writes. The schema
is versioned in a `meta` table and created on first use. A file that is not a readable
SQLite database (or was written by a newer nanobot) raises `StatsError` with one clear
line; it is never deleted or rewritten.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from nanobot_tui import paths
from nanobot_tui.engine.voting.calibration import Calibration
from nanobot_tui.errors import NanobotError

__all__ = [
    "SCHEMA_VERSION",
    "StatsError",
    "latest_calibration",
    "list_calibrations",
    "record_calibration",
    "stats_path",
]

SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calibrations (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    model              TEXT NOT NULL,
    domain             TEXT NOT NULL,
    date               TEXT NOT NULL,
    samples            INTEGER NOT NULL,
    correct            INTEGER NOT NULL,
    p                  REAL NOT NULL,
    ci_low             REAL NOT NULL,
    ci_high            REAL NOT NULL,
    p_valid            REAL,
    red_flag_rate      REAL NOT NULL,
    red_flags_json     TEXT NOT NULL,
    tokens_per_sample  REAL NOT NULL,
    seconds_per_sample REAL NOT NULL,
    samples_per_second REAL NOT NULL,
    token_cap          INTEGER NOT NULL,
    temperature        REAL NOT NULL,
    concurrency        INTEGER NOT NULL,
    simulated          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calibrations_by_model_domain
    ON calibrations (model, domain, date);
"""

_COLUMNS = (
    "model", "domain", "date", "samples", "correct", "p", "ci_low", "ci_high", "p_valid",
    "red_flag_rate", "red_flags_json", "tokens_per_sample", "seconds_per_sample",
    "samples_per_second", "token_cap", "temperature", "concurrency", "simulated",
)  # fmt: skip


class StatsError(NanobotError):
    """stats.db cannot be used; the message says which file and why, in one line."""


def stats_path() -> Path:
    return paths.home() / "stats.db"


@asynccontextmanager
async def _open(path: Path | None) -> AsyncIterator[aiosqlite.Connection]:
    """A connection to stats.db with the schema in place, WAL on; StatsError otherwise."""
    db_path = path or stats_path()
    paths.ensure(db_path.parent)
    try:
        db = await aiosqlite.connect(db_path)
    except sqlite3.Error as exc:
        raise StatsError(f"{db_path}: cannot open the stats database: {exc}") from None
    try:
        try:
            await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = await (await db.execute("PRAGMA journal_mode = WAL")).fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StatsError(f"{db_path}: cannot switch the stats database to WAL mode")
            await _ensure_schema(db, db_path)
        except sqlite3.DatabaseError as exc:
            raise StatsError(
                f"{db_path}: not a readable SQLite database ({exc}); left untouched: "
                "move it aside and nanobot starts a new one"
            ) from None
        try:
            yield db
        except sqlite3.DatabaseError as exc:
            raise StatsError(f"{db_path}: stats database error: {exc}") from None
    finally:
        await db.close()


async def _ensure_schema(db: aiosqlite.Connection, db_path: Path) -> None:
    has_meta = await (
        await db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    ).fetchone()
    if has_meta:
        row = await (
            await db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        ).fetchone()
        version = int(row[0]) if row and str(row[0]).isdigit() else None
        if version is not None and version > SCHEMA_VERSION:
            raise StatsError(
                f"{db_path}: schema version {version} was written by a newer nanobot "
                f"(this one knows up to {SCHEMA_VERSION}); left untouched"
            )
        if version == SCHEMA_VERSION:
            return
    # First use (or a meta table without a version): create everything, then the version.
    await db.executescript(_SCHEMA)
    await db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    await db.commit()


def _row_values(cal: Calibration) -> tuple[Any, ...]:
    return (
        cal.model,
        cal.domain,
        cal.date,
        cal.samples,
        cal.correct,
        cal.p,
        cal.ci_low,
        cal.ci_high,
        cal.p_valid,
        cal.red_flag_rate,
        json.dumps(cal.red_flags, sort_keys=True),
        cal.tokens_per_sample,
        cal.seconds_per_sample,
        cal.samples_per_second,
        cal.token_cap,
        cal.temperature,
        cal.concurrency,
        int(cal.simulated),
    )


def _from_row(row: sqlite3.Row | tuple[Any, ...]) -> Calibration:
    d = dict(zip(_COLUMNS, row, strict=True))
    flags = json.loads(d.pop("red_flags_json") or "{}")
    d["simulated"] = bool(d["simulated"])
    return Calibration(red_flags={str(k): int(v) for k, v in flags.items()}, **d)


async def record_calibration(cal: Calibration, *, path: Path | None = None) -> int:
    """Store a calibration; returns its row id."""
    async with _open(path) as db:
        cursor = await db.execute(
            f"INSERT INTO calibrations ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_COLUMNS))})",
            _row_values(cal),
        )
        await db.commit()
        return int(cursor.lastrowid or 0)


async def latest_calibration(
    model: str, domain: str, *, path: Path | None = None
) -> Calibration | None:
    """The newest calibration of `model` on `domain`, or None."""
    if not (path or stats_path()).exists():
        return None
    async with _open(path) as db:
        row = await (
            await db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM calibrations WHERE model = ? AND domain = ? "
                "ORDER BY date DESC, id DESC LIMIT 1",
                (model, domain),
            )
        ).fetchone()
    return _from_row(row) if row is not None else None


async def list_calibrations(
    *, model: str | None = None, domain: str | None = None, path: Path | None = None
) -> list[Calibration]:
    """Every calibration (optionally of one model and/or domain), oldest first."""
    if not (path or stats_path()).exists():
        return []
    where, args = [], []
    if model is not None:
        where.append("model = ?")
        args.append(model)
    if domain is not None:
        where.append("domain = ?")
        args.append(domain)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM calibrations"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY date, id"
    async with _open(path) as db:
        rows = await (await db.execute(sql, args)).fetchall()
    return [_from_row(r) for r in rows]
