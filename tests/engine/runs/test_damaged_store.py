"""A run whose database file was cut short (a runner killed, a full disk, a copy cut
short) is named as damaged by `runs`, and `status`, `resume` and `export` say in one line
which file is damaged and how, instead of SQLite's "database disk image is malformed"
traceback. The store is real: a real run's run.db, truncated as a crash leaves it, with a
connection still holding its write-ahead log (the runner's, before it was killed)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig


async def a_run() -> str:
    """A real run, stopped by its budget part way."""
    spec = RunSpec(
        domain="hanoi",
        params={"disks": 14},
        sampler="simulated:0.9",
        vote=VoteConfig(k=2),
        label="hanoi14",
    )
    rid = await start_run(spec)
    await execute(rid, budgets=Budgets(steps=9000))
    return rid


@pytest.fixture
def truncated_run() -> Iterator[str]:
    rid = asyncio.run(a_run())
    path = store_mod.db_path(rid)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("UPDATE meta SET value = value")  # the meta pages now live in the WAL too
    os.truncate(path, path.stat().st_size // 2)
    try:
        yield rid
    finally:
        conn.close()


def test_a_truncated_run_db_is_named_in_one_line(
    truncated_run: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = truncated_run
    path = store_mod.db_path(rid)
    assert cli.main(["runs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "damaged"
    size = path.stat().st_size
    want = f"run {rid}: its database {path} is truncated: {size:,} of its {2 * size:,} bytes"
    assert row["reason"].startswith(want)
    for args in (["status", rid], ["resume", rid], ["export", rid, str(path.parent / "x.json")]):
        code = cli.main(args)
        err = capsys.readouterr().err
        assert code != 0 and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        assert err.startswith(f"nanobot: {want}"), err


def test_a_short_file_whose_pages_are_all_in_the_wal_is_not_damaged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As a runner killed in the middle of a checkpoint leaves it: the main file shorter
    # than its header says, every page still in the write-ahead log (here by VACUUM, held
    # there by an open connection). SQLite reads it whole: it is not called damaged.
    rid = asyncio.run(a_run())
    path = store_mod.db_path(rid)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("VACUUM")
    os.truncate(path, path.stat().st_size // 2)
    try:
        assert cli.main(["status", rid]) == 0, capsys.readouterr().err
        assert f"run {rid}: stopped" in capsys.readouterr().out
    finally:
        conn.close()
