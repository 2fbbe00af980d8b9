"""learned.db: created on first use with its schema version, in WAL mode; a damaged or
newer file is refused with one line and left as it was; writers in several processes
(a runner and the app) all land."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nanobot_tui.engine.learning.store import (
    SCHEMA_VERSION,
    LearningStore,
    LearningStoreError,
    learned_path,
)


def test_first_use_creates_the_tables_and_the_schema_version_in_wal_mode(
    nanobot_home: Path,
) -> None:
    assert LearningStore.open_existing() is None
    assert not learned_path().exists()  # asking created nothing
    with LearningStore() as store:
        tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
        version = store.query("SELECT value FROM meta WHERE key = 'schema_version'")
        mode = store.query("PRAGMA journal_mode")
    assert {"meta", "step_results", "reuse_counters", "task_history", "anomalies"} <= tables
    assert version == [(str(SCHEMA_VERSION),)]
    assert mode == [("wal",)]
    assert learned_path() == nanobot_home / "learned.db"
    reopened = LearningStore.open_existing()
    assert reopened is not None
    reopened.close()


def test_a_file_that_is_not_sqlite_is_refused_in_one_line_and_left_untouched(
    nanobot_home: Path,
) -> None:
    nanobot_home.mkdir(parents=True)
    path = nanobot_home / "learned.db"
    junk = b"this is not a database\n" * 100
    path.write_bytes(junk)
    with pytest.raises(LearningStoreError) as caught:
        LearningStore()
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "not a readable SQLite database" in message
    assert path.read_bytes() == junk


def test_a_store_from_a_newer_nanobot_is_refused_and_left_untouched(nanobot_home: Path) -> None:
    LearningStore().close()
    path = learned_path()
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    conn.commit()
    conn.close()
    with pytest.raises(LearningStoreError, match="newer nanobot"):
        LearningStore()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION + 1),)]
    conn.close()


def test_a_failed_write_is_rolled_back(nanobot_home: Path) -> None:
    with LearningStore() as store:
        with pytest.raises(RuntimeError), store.write() as conn:
            conn.execute("INSERT INTO reuse_counters VALUES ('wordcase', 1, 0)")
            raise RuntimeError("the caller failed half-way")
        assert store.query("SELECT COUNT(*) FROM reuse_counters") == [(0,)]
        # A write the database refuses comes back as the store's one-line error.
        with pytest.raises(LearningStoreError, match="learning database error"), store.write() as c:
            c.execute("INSERT INTO no_such_table VALUES (1)")


WRITER = """
import sys
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.learning.reuse import ResultCache
from nanobot_tui.engine.learning.history import TaskHistory
writer, count = int(sys.argv[1]), int(sys.argv[2])
with LearningStore() as store:
    cache, history = ResultCache(store), TaskHistory(store)
    for i in range(count):
        cache.put("wordcase", f"w{writer}-{i}", "X", fingerprint="fp", model="m",
                  verified_by="truth")
        assert cache.get("wordcase", f"w{writer}-{i}", fingerprint="fp", model="m")
        history.record("domain:wordcase", kind="domain", steps=10, tokens=100, seconds=1.0,
                       samples_per_step=3.0, p=0.9, success=True)
"""


def test_writers_in_several_processes_all_land(nanobot_home: Path) -> None:
    """Four processes write at once (each its own connection, as a runner and the app
    do): every result, lookup and history record is there afterwards."""
    LearningStore().close()  # the schema first, so the writers race on rows, not on it
    writers, count = 4, 40
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(count)], stderr=subprocess.PIPE)
        for w in range(writers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    with LearningStore() as store:
        assert store.query("SELECT COUNT(*) FROM step_results") == [(writers * count,)]
        assert store.query("SELECT lookups, hits FROM reuse_counters") == [
            (writers * count, writers * count)
        ]
        assert store.query("SELECT COUNT(*) FROM task_history") == [(writers * count,)]
