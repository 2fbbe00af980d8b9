"""Giving disk space back: `nanobot runs rm` and `nanobot runs prune` on real run stores
made by the engine (folders and trace files), never a run a runner holds, and what the
data folders cost in `nanobot doctor`."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui import paths
from nanobot_tui.cli import main as cli
from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.control import RunLock, cancel_run, run_status, start_detached
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.prune import PRUNABLE, run_size, select_prune
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store.places import all_run_ids, run_dir, trace_path
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from tests.engine.runs.runner_hold import HANG_GUARD_S, held_when

DAY = 86400.0


def make_run(disks: int, steps: int | None = None) -> str:
    """A real run: completed (no `steps`) or stopped after `steps` steps; no runner."""

    async def go() -> str:
        spec = RunSpec(
            domain="hanoi",
            params={"disks": disks},
            sampler="simulated:0.99",
            vote=VoteConfig(k=3),
            label=f"hanoi{disks}",
        )
        rid = await start_run(spec)
        await execute(rid, budgets=Budgets(steps=steps) if steps else None)
        return rid

    return asyncio.run(go())


def age(run_id: str, days: float) -> None:
    """Record in the run's store that it was last updated `days` ago."""
    conn = store_mod.connect(store_mod.db_path(run_id))
    try:
        conn.execute("BEGIN IMMEDIATE")
        store_mod.meta_set(conn, {"updated": time.time() - days * DAY})
        conn.execute("COMMIT")
    finally:
        conn.close()


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert cli.main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_rm_frees_a_finished_runs_folder_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    rid, other = make_run(6), make_run(5)
    assert run_status(rid).status == "completed"
    folder, trace = run_dir(rid), trace_path(rid)
    assert folder.is_dir() and trace.stat().st_size > 0
    size = run_size(rid)
    assert cli.main(["runs", "rm", rid[:-1]]) == 0  # a prefix
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"removed {rid} (completed, ")
    assert out[-1].startswith("1 run(s); freed ")
    assert not folder.exists() and not trace.exists()
    assert all_run_ids() == [other] and trace_path(other).exists()
    assert not any((paths.runs_dir() / ".trash").iterdir())

    result = cli_json(capsys, "runs", "rm", other, "--json")
    assert [r["id"] for r in result["runs"]] == [other] and result["bytes"] > 0
    assert all_run_ids() == [] and size > 0


def test_rm_refuses_a_run_a_runner_holds_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    held, free = make_run(5, steps=3), make_run(5)
    with RunLock(held):  # the lock a runner holds while it runs
        assert cli.main(["runs", "rm", free, held]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"run {held} is being run by pid " in err
        assert "nanobot cancel" in err
        assert sorted(all_run_ids()) == sorted([held, free])  # nothing removed
        chosen = select_prune(statuses=("stopped", "completed"))
        assert [r.run_id for r in chosen] == [free]  # a prune passes it over
        assert cli.main(["runs", "prune", "--status", "stopped,completed"]) == 0
        assert all_run_ids() == [held]
    assert trace_path(held).exists()
    assert cli.main(["runs", "rm", "no-such-run"]) == 2
    assert capsys.readouterr().err.strip() == "nanobot: no run 'no-such-run' (see `nanobot runs`)"


def test_prune_by_status_age_and_size_with_a_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    old_done, stopped, new_done, newest = make_run(5), make_run(5, 3), make_run(6), make_run(4)
    age(old_done, 10)
    age(stopped, 9)
    age(new_done, 1)
    before = sorted(all_run_ids())

    # By status (default: finished runs only), dry: nothing goes.
    dry = cli_json(capsys, "runs", "prune", "--status", "stopped", "--dry-run", "--json")
    assert dry["dry_run"] and [r["id"] for r in dry["runs"]] == [stopped]
    assert dry["bytes"] == run_size(stopped)
    # By age: the finished runs last updated more than 7 days ago.
    dry = cli_json(capsys, "runs", "prune", "--older-than", "7d", "--dry-run", "--json")
    assert [r["id"] for r in dry["runs"]] == [old_done]
    # By size: the oldest finished runs until all runs fit.
    sizes = {rid: run_size(rid) for rid in before}
    keep = sum(sizes.values()) - sizes[old_done] - 1  # one more than the oldest must go
    dry = cli_json(capsys, "runs", "prune", "--keep-size", f"{keep}B", "--dry-run", "--json")
    assert [r["id"] for r in dry["runs"]] == [old_done, new_done]  # oldest first, not stopped
    assert cli.main(["runs", "prune", "--keep-size", f"{keep}B", "--dry-run"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"would remove {old_done} (completed, ")
    assert text[-1].startswith("2 run(s); would free ")
    assert sorted(all_run_ids()) == before and all(trace_path(r).exists() for r in before)

    result = cli_json(capsys, "runs", "prune", "--keep-size", f"{keep}B", "--json")
    assert [r["id"] for r in result["runs"]] == [old_done, new_done] and not result["dry_run"]
    assert sorted(all_run_ids()) == sorted([stopped, newest])
    assert not trace_path(old_done).exists() and not trace_path(new_done).exists()
    cli_json(capsys, "runs", "prune", "--status", "stopped", "--older-than", "8d", "--json")
    assert all_run_ids() == [newest]


def test_prune_says_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["runs", "prune"]) == 2
    assert "say what to prune" in capsys.readouterr().err
    assert cli.main(["runs", "prune", "--status", "running"]) == 2
    assert capsys.readouterr().err.strip().startswith("nanobot: bad status running: one or")
    for option, value in (("--older-than", "7 years"), ("--keep-size", "2 cups")):
        with pytest.raises(SystemExit) as caught:
            cli.main(["runs", "prune", option, value])
        assert caught.value.code == 2
        assert f"bad {'age' if option == '--older-than' else 'size'} {value!r}" in (
            capsys.readouterr().err
        )


def test_doctor_shows_what_the_data_folders_cost(
    capsys: pytest.CaptureFixture[str], nanobot_home: Path
) -> None:
    rid = make_run(5)
    (paths.ensure(paths.sessions_dir()) / "s.jsonl").write_bytes(b"x" * 50_000)
    cli.main(["doctor", "--json"])  # exits 1 where this machine has problems: not ours
    report = json.loads(capsys.readouterr().out)
    usage = report["dataUsage"]
    assert set(usage) == {"runs", "traces", "volumes", "models", "sessions"}
    assert usage["runs"]["path"] == str(nanobot_home / "runs")
    assert usage["runs"]["bytes"] >= run_size(rid) - trace_path(rid).stat().st_size > 0
    assert usage["traces"]["bytes"] > 0 and usage["sessions"]["bytes"] >= 50_000
    assert usage["volumes"]["bytes"] == 0
    cli.main(["doctor"])
    text = capsys.readouterr().out
    assert "Data (nanobot runs prune gives space back)" in text
    assert any(line.split()[:1] == ["sessions"] and "kB" in line for line in text.splitlines())


def test_a_detached_runner_keeps_its_run(capsys: pytest.CaptureFixture[str]) -> None:
    """A real detached runner, held still mid-run (runner_hold.py): rm refuses its run
    naming its pid, and no prune picks it, whatever the filters."""
    rid = start_detached(
        RunSpec(domain="hanoi", params={"disks": 19}, sampler="simulated:0.99",
                vote=VoteConfig(k=3), label="hanoi19")
    )  # fmt: skip
    with held_when(rid, lambda st: st.steps_done > 0) as st:
        assert cli.main(["runs", "rm", rid]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"nanobot: run {rid} is being run by pid {st.pid}; cancel it first "
            f"(nanobot cancel {rid})"
        )
        every = ",".join(PRUNABLE)
        assert select_prune(statuses=PRUNABLE, keep_size=0) == []
        assert cli.main(["runs", "prune", "--status", every, "--keep-size", "0B"]) == 0
        assert capsys.readouterr().out.strip() == "0 run(s); freed 0 B"
        assert run_dir(rid).is_dir()
    cancel_run(rid, wait=HANG_GUARD_S)
    assert cli.main(["runs", "rm", rid]) == 0
    assert all_run_ids() == [] and not trace_path(rid).exists()
