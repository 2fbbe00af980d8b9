"""A runner killed with SIGKILL leaves committed steps in run.db-wal. A user who deletes
that file gets a store opened at its last checkpoint: `status` and `resume` say in one
line that committed steps are missing, how many, from which file, and that a resume
redoes them. A normal crash (the WAL kept) and a clean run say nothing. Real runner
processes, real SQLite files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.control import run_status
from nanobot_tui.engine.runs.durable import start_run
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.runs.store.status import committed_mark
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from tests.engine.runs.runner_hold import held_when


def killed_run(min_steps: int) -> tuple[str, int]:
    """A detached runner SIGKILLed part way, with commits only in its WAL: a read
    transaction held from early on keeps checkpoints from copying them into run.db.
    Returns (run id, steps the runner had committed)."""
    spec = RunSpec(
        domain="hanoi",
        params={"disks": 17},
        sampler="simulated:0.99",
        vote=VoteConfig(k=3),
        label="hanoi17",
    )
    rid = asyncio.run(start_run(spec))
    path = store_mod.db_path(rid)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanobot_tui.engine.runs.worker", rid],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        with held_when(rid, lambda st: st.steps_done > 0):
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM meta").fetchone()  # the snapshot held
        while True:
            with held_when(rid, lambda st: st.steps_done >= min_steps) as seen:
                # The writer rewrites the marker just after each commit: a runner held
                # between the two is let go on for a moment and held again.
                if committed_mark(rid) == run_status(rid).steps_done:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
    finally:
        proc.kill()
        proc.wait()
        reader.close()  # read-only: no checkpoint on close
    mark = int(store_mod.marker_path(rid).read_text().split()[0])
    assert mark >= seen.steps_done
    return rid, mark


def test_deleting_the_wal_after_a_kill_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    rid, mark = killed_run(2000)
    path = store_mod.db_path(rid)
    # A normal crash: the WAL is there, nothing is lost, nothing is said.
    assert cli.main(["status", rid]) == 0
    assert capsys.readouterr().err == ""
    wal = path.with_name("run.db-wal")
    assert wal.stat().st_size > 0
    wal.unlink()
    assert cli.main(["status", rid, "--json"]) == 0
    out = capsys.readouterr()
    held = json.loads(out.out)["steps_done"]
    assert held < mark
    want = (
        f"nanobot: run {rid}: {mark - held:,} committed step(s) are missing from {path} "
        f"(its write-ahead log run.db-wal is gone): it holds {held:,} steps, its runner "
        f"had committed {mark:,}"
    )
    assert out.err.startswith(want) and out.err.count("\n") == 1, out.err
    assert out.err.rstrip().endswith(f"`nanobot resume {rid}` redoes them")
    # resume says so too, then redoes them: the run completes and the note is gone.
    assert cli.main(["resume", rid]) == 0
    assert capsys.readouterr().err.startswith(want)
    assert cli.main(["status", rid]) == 0
    out = capsys.readouterr()
    assert out.err == "" and f"run {rid}: completed" in out.out


def test_a_clean_run_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "hanoi", "--disks", "8", "--sampler", "simulated:0.99"]) == 0
    rid = capsys.readouterr().out.split()[-1]
    assert cli.main(["status", rid]) == 0
    assert capsys.readouterr().err == ""
