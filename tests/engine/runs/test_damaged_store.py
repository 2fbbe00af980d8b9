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
from pathlib import Path

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from tests.engine.runs.test_lost_wal import killed_run


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


# --- recovering what a damaged store still holds -----------------------------------------

STEP_COLUMNS = (
    "step, node, status, input, answer, votes, rounds, samples, valid, red_flags, "
    "completion_tokens, attempts, correct, error"
)


def rows_of(path: os.PathLike[str] | str, where: str = "1") -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f"SELECT {STEP_COLUMNS} FROM steps WHERE {where} ORDER BY step"
        ).fetchall()
    finally:
        conn.close()


def recover_spec() -> RunSpec:
    return RunSpec(
        domain="hanoi",
        params={"disks": 12},
        sampler="simulated:0.75",  # wrong winners, votes not unanimous: rows of every kind
        vote=VoteConfig(k=2),
        label="hanoi12",
    )


@pytest.mark.parametrize("share", [0.8, 0.5, 0.3])
def test_a_truncated_store_is_recovered_and_resumes_to_the_same_end(
    share: float, capsys: pytest.CaptureFixture[str]
) -> None:
    async def runs() -> tuple[str, str]:
        straight = await start_run(recover_spec())
        await execute(straight)
        cut = await start_run(recover_spec())
        await execute(cut, budgets=Budgets(steps=3000))  # stopped, its runner gone
        return straight, cut

    straight, rid = asyncio.run(runs())
    path = store_mod.db_path(rid)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in run.db, then cut
    conn.close()
    os.truncate(path, int(path.stat().st_size * share))
    damaged = path.read_bytes()
    assert cli.main(["status", rid]) == 2
    assert f"`nanobot runs recover {rid}` rebuilds it" in capsys.readouterr().err

    assert cli.main(["runs", "recover", rid, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    n = got["recovered"]
    assert n > 0  # the rows on pages that are left
    assert 0 <= n <= 3000 and got["held"] == 3000 and got["to_run"] == 4095 - n
    assert got["problem"].startswith("is truncated")
    kept = got["kept_as"]
    assert Path(kept).read_bytes() == damaged  # kept as it was
    # The new store reads whole: its rows are the undamaged run's first n, its totals and
    # tree count them, its trace holds their lines, and the old trace is kept.
    assert rows_of(path) == rows_of(store_mod.db_path(straight), f"step < {n}")
    assert cli.main(["status", rid, "--json"]) == 0
    out = capsys.readouterr()
    st = json.loads(out.out)
    assert out.err == "" and st["status"] == "stopped" and st["steps_done"] == n
    with store_mod.RunStore.open(rid) as store:
        assert store.root().completed_children + store.root().failed_children >= 0
        assert sum(1 for _ in store.conn.execute("SELECT 1 FROM steps")) == n
    lines = store_mod.trace_path(rid).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(n))
    assert any(p.name.startswith("trace.jsonl.damaged-") for p in path.parent.iterdir())
    # A resume runs the rest: the same rows, errors and votes as the undamaged run.
    assert cli.main(["resume", rid]) in (0, 1)
    capsys.readouterr()
    assert rows_of(path) == rows_of(store_mod.db_path(straight))
    with store_mod.RunStore.open(straight) as a, store_mod.RunStore.open(rid) as b:
        sa, sb = a.status(), b.status()
        assert sb.status == "completed" and sb.reason == sa.reason
        assert (sa.errors, sa.samples, sa.votes, sa.errors_by_reason) == (
            sb.errors, sb.samples, sb.votes, sb.errors_by_reason,
        )  # fmt: skip
        assert a.root().errors == b.root().errors
    lines = store_mod.trace_path(rid).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(4095))
    # Nothing more to recover: one line, exit 2.
    assert cli.main(["runs", "recover", rid]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to recover" in err


def test_a_store_cut_before_its_description_is_unrecoverable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rid = asyncio.run(a_run())
    path = store_mod.db_path(rid)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.truncate(path, 50)
    assert cli.main(["runs", "recover", rid]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing can be recovered" in err and "Traceback" not in err
    assert path.stat().st_size == 50  # left as it was


def test_a_killed_runners_truncated_store_is_recovered_through_its_wal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # SIGKILLed with its commits in run.db-wal (and a stale run.db-shm), then run.db cut:
    # what the WAL holds is recovered too, the damaged file and its WAL are kept aside.
    rid, mark = killed_run(2000)
    path = store_mod.db_path(rid)
    os.truncate(path, path.stat().st_size // 2)
    assert cli.main(["runs", "recover", rid, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["recovered"] == got["held"] == mark and got["path"] == str(path)
    assert got["to_run"] == 131_071 - mark
    assert Path(got["kept_as"] + "-wal").stat().st_size > 0
    assert cli.main(["runs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "stopped" and row["steps_done"] == mark
    assert cli.main(["resume", rid]) == 0
    assert capsys.readouterr().err == ""  # nothing said lost: the marker was rewritten
    with store_mod.RunStore.open(rid) as store:
        st = store.status()
        assert (st.status, st.reason, st.steps_done, st.errors) == (
            "completed",
            "solved",
            131_071,
            0,
        )


def test_independent_steps_are_recovered_around_the_holes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Steps that do not depend on each other keep every readable row, holes and all; the
    # rows of the page cut in the middle read back with zeros and are left out, not
    # copied. The resumed run ends as the undamaged one.
    def run(*extra: str) -> str:
        args = ["run", "wordcase", "--words", "6000", "--sampler", "simulated:0.8"]
        assert cli.main([*args, "--k", "2", *extra]) in (0, 1)
        return capsys.readouterr().out.split()[-1]

    straight, rid = run(), run("--max-steps", "5000")
    path = store_mod.db_path(rid)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    leaves = conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'steps' AND pagetype = 'leaf' ORDER BY pageno"
    ).fetchall()
    conn.close()
    # Cut 100 bytes into a leaf page's end, where its first cells are: they read as zeros.
    page = leaves[len(leaves) // 2][0]
    os.truncate(path, page * size - 100)
    assert cli.main(["runs", "recover", rid, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert 0 < got["recovered"] < 5000
    steps = [r[0] for r in rows_of(path)]
    assert len(steps) == got["recovered"] and steps[-1] >= len(steps)  # holes kept
    assert rows_of(path) == rows_of(store_mod.db_path(straight), f"step IN {tuple(steps)}")
    assert cli.main(["resume", rid]) in (0, 1)
    capsys.readouterr()
    assert rows_of(path) == rows_of(store_mod.db_path(straight))
    lines = store_mod.trace_path(rid).read_text().splitlines()
    assert sorted(json.loads(x)["step"] for x in lines) == list(range(6000))
