"""The LoRA adapters nanobot trained: the `adapters` table of NANOBOT_HOME/stats.db.

One row per adapter file: the base model it was trained for (its GGUF path, as the
server spec names it), the slot and step type, the file and its size, the training and
held-out example counts, its status and its last A/B test (a JSON object: p_base,
p_adapter, their 95 % intervals, the difference's interval, n and the verdict, as
engine/learning/distill/ab_test.py writes it), and what live runs saw of it.

Statuses: `candidate` (trained; not yet tested, or its A/B test did not say better),
`promoted` (applied at scale 1 to its step type's requests), `off` (turned off by the
user, or replaced by a newer promoted adapter of the same model and step type) and
`demoted` (a promoted adapter that later did worse than the base). Only promoted
adapters are loaded into a model's server (`served_adapters`), in id order: a server's
adapter ids are their positions there.

The table is sqlite3 directly, in WAL mode beside the calibrations (calibration_store.py
keeps its own tables and schema version; this one only ever creates its own table), and
every write is one short immediate transaction. The rules that decide a status from an
A/B test or from live runs live in the learning layer (ab_test.py); this module stores.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from nanobot_tui import paths
from nanobot_tui.errors import NanobotError, UsageError
from nanobot_tui.sqlite_wal import WalDatabase, connect_wal

__all__ = [
    "STATUSES",
    "AdapterRecord",
    "AdapterRegistry",
    "AdapterRegistryError",
    "Status",
    "UnknownAdapter",
    "registry_path",
    "served_adapters",
]

log = logging.getLogger(__name__)

Status = Literal["candidate", "promoted", "off", "demoted"]
STATUSES: tuple[Status, ...] = ("candidate", "promoted", "off", "demoted")
_BUSY_TIMEOUT_MS = 10_000

_SCHEMA = f"""CREATE TABLE IF NOT EXISTS adapters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    model          TEXT NOT NULL,
    slot           TEXT NOT NULL,
    step_type      TEXT NOT NULL,
    path           TEXT NOT NULL,
    bytes          INTEGER NOT NULL,
    train_examples INTEGER NOT NULL,
    heldout        INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    ab             TEXT,
    created        REAL NOT NULL,
    trained_s      REAL NOT NULL,
    note           TEXT NOT NULL DEFAULT '',
    live_right     INTEGER NOT NULL DEFAULT 0,
    live_n         INTEGER NOT NULL DEFAULT 0
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS adapters_by_model ON adapters (model, step_type, status)"
_COLUMNS = (
    "id, model, slot, step_type, path, bytes, train_examples, heldout, status, ab, created, "
    "trained_s, note, live_right, live_n"
)


class AdapterRegistryError(NanobotError):
    """stats.db cannot hold the adapters table; the message says which file and why."""


class UnknownAdapter(UsageError):
    """An adapter id the registry does not have."""


def registry_path() -> Path:
    return paths.home() / "stats.db"


@dataclass(frozen=True, slots=True)
class AdapterRecord:
    id: int
    model: str  # the base model's GGUF path
    slot: str
    step_type: str
    path: Path
    bytes: int
    train_examples: int
    heldout: int
    status: Status
    ab: dict[str, Any] | None
    created: float
    trained_s: float
    note: str
    live_right: int = 0  # voted steps decided right while it was applied
    live_n: int = 0  # voted steps judged while it was applied

    @property
    def verdict(self) -> str | None:
        """Its last A/B test's verdict ("better", "not better", "worse"), None untested."""
        return None if self.ab is None else str(self.ab.get("verdict") or "") or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "slot": self.slot,
            "step_type": self.step_type,
            "path": str(self.path),
            "bytes": self.bytes,
            "train_examples": self.train_examples,
            "heldout": self.heldout,
            "status": self.status,
            "ab": self.ab,
            "created": self.created,
            "trained_s": self.trained_s,
            "note": self.note,
            "live": {"right": self.live_right, "n": self.live_n},
        }


def _record(row: tuple[Any, ...]) -> AdapterRecord:
    ab = json.loads(row[9]) if row[9] else None
    return AdapterRecord(
        id=int(row[0]), model=str(row[1]), slot=str(row[2]), step_type=str(row[3]),
        path=Path(row[4]), bytes=int(row[5]), train_examples=int(row[6]), heldout=int(row[7]),
        status=cast(Status, row[8]), ab=ab if isinstance(ab, dict) else None,
        created=float(row[10]), trained_s=float(row[11]), note=str(row[12]),
        live_right=int(row[13]), live_n=int(row[14]),
    )  # fmt: skip


class AdapterRegistry(WalDatabase):
    """The adapters table, open; a context manager (or call `close()`). Every method
    raises AdapterRegistryError for a file SQLite cannot use, UnknownAdapter for an id
    it does not have."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or registry_path()
        self._lock = threading.RLock()

        def prepare(conn: sqlite3.Connection) -> None:
            self._conn = conn
            with self._write() as conn:
                conn.execute(_SCHEMA)
                conn.execute(_INDEX)

        self._conn = connect_wal(
            self.path, AdapterRegistryError, "the stats database", _BUSY_TIMEOUT_MS, prepare
        )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise AdapterRegistryError(
                f"{self.path}: the adapters table cannot be used ({exc}); left untouched"
            ) from None

    def _rows(self, where: str = "", args: tuple[Any, ...] = ()) -> list[AdapterRecord]:
        sql = f"SELECT {_COLUMNS} FROM adapters {where} ORDER BY id"
        with self._lock, self._errors():
            return [_record(row) for row in self._conn.execute(sql, args).fetchall()]

    # --- reading ----------------------------------------------------------------------------

    def get(self, adapter_id: int) -> AdapterRecord:
        rows = self._rows("WHERE id = ?", (adapter_id,))
        if not rows:
            raise UnknownAdapter(f"no adapter {adapter_id} (nanobot adapters lists them)")
        return rows[0]

    def list(
        self,
        *,
        model: str | None = None,
        step_type: str | None = None,
        status: Status | None = None,
    ) -> list[AdapterRecord]:
        """The adapters, oldest first, narrowed to what is given."""
        clauses, args = [], []
        for column, value in (("model", model), ("step_type", step_type), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        return self._rows(f"WHERE {' AND '.join(clauses)}" if clauses else "", tuple(args))

    def promoted(self, model: str, step_type: str) -> AdapterRecord | None:
        """The adapter applied to `step_type`'s requests on `model`, if any."""
        found = self.list(model=model, step_type=step_type, status="promoted")
        return found[-1] if found else None

    # --- writing ----------------------------------------------------------------------------

    def add(
        self,
        *,
        model: str,
        slot: str,
        step_type: str,
        path: Path,
        size_bytes: int,
        train_examples: int,
        heldout: int,
        trained_s: float,
        note: str = "",
    ) -> AdapterRecord:
        """A new candidate adapter."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO adapters (model, slot, step_type, path, bytes, train_examples, "
                "heldout, status, ab, created, trained_s, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'candidate', NULL, ?, ?, ?)",
                (model, slot, step_type, str(path), size_bytes, train_examples, heldout,
                 time.time(), trained_s, note),
            )  # fmt: skip
            new_id = int(cursor.lastrowid or 0)
        return self.get(new_id)

    def update(
        self,
        adapter_id: int,
        *,
        status: Status | None = None,
        ab: Mapping[str, Any] | None = None,
        note: str | None = None,
    ) -> AdapterRecord:
        """Set what is given. Promoting one turns off any other promoted adapter of the
        same model and step type (one adapter per step type is applied)."""
        record = self.get(adapter_id)
        with self._write() as conn:
            if status == "promoted":
                conn.execute(
                    "UPDATE adapters SET status = 'off', note = ? WHERE model = ? AND "
                    "step_type = ? AND status = 'promoted' AND id != ?",
                    (f"replaced by adapter {adapter_id}", record.model, record.step_type,
                     adapter_id),
                )  # fmt: skip
            sets: list[str] = []
            args: list[Any] = []
            if status is not None:
                sets.append("status = ?")
                args.append(status)
            if ab is not None:
                sets.append("ab = ?")
                args.append(json.dumps(dict(ab), sort_keys=True))
            if note is not None:
                sets.append("note = ?")
                args.append(note)
            if sets:
                conn.execute(f"UPDATE adapters SET {', '.join(sets)} WHERE id = ?",
                             (*args, adapter_id))  # fmt: skip
        return self.get(adapter_id)

    def add_live(self, adapter_id: int, right: int, judged: int) -> AdapterRecord:
        """Count `judged` voted steps (`right` of them decided right) a run applied it to."""
        self.get(adapter_id)
        with self._write() as conn:
            conn.execute(
                "UPDATE adapters SET live_right = live_right + ?, live_n = live_n + ? WHERE id = ?",
                (right, judged, adapter_id),
            )
        return self.get(adapter_id)

    def remove(self, adapter_id: int) -> AdapterRecord:
        """Forget an adapter and delete its file; the record as it was."""
        record = self.get(adapter_id)
        with self._write() as conn:
            conn.execute("DELETE FROM adapters WHERE id = ?", (adapter_id,))
        record.path.unlink(missing_ok=True)
        return record


def served_adapters(model_path: Path | str, registry: Path | None = None) -> tuple[Path, ...]:
    """The adapter files a server of `model_path` loads (at scale 0): the promoted ones
    whose file is present, in id order, so an adapter's id on the server is its position
    here. Never fails a server's start: no stats.db is none (and creates none), and one
    that cannot be read is logged and taken as none."""
    db = registry or registry_path()
    if not db.is_file():
        return ()
    try:
        with AdapterRegistry(db) as opened:
            found = opened.list(model=str(model_path), status="promoted")
    except NanobotError as exc:
        log.warning("LoRA adapters left out: %s", exc)
        return ()
    return tuple(record.path for record in found if record.path.is_file())
