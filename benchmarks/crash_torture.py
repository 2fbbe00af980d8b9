"""Crash torture: a durable simulated Hanoi run, SIGKILLed at random moments and resumed.

Run: python -m benchmarks.crash_torture [--disks 16] [--kills 120] [--commit-interval 0.05]
                                        [--seed 0] [--json]

The run (simulated sampler, p = 0.99, k by MAKER's formula) is executed by the detached
worker (`python -m nanobot_tui.engine.runs.worker RUN_ID`, its own session), exactly
as `nanobot run --detach` / `nanobot resume --detach` start it, with a step budget of its
share of what is left (so the run cannot end before all the kills). Each session is
killed with SIGKILL once it has committed a random part of its share, after a further
random delay of up to one commit interval (so kills land anywhere in the group-commit
cycle: mid-batch, mid-commit, mid-trace-write), and a new worker resumes the run. After
every kill the harness checks, before resuming:

- zero lost completed nodes: every step the runner reported committed (its `committed`
  marker, rewritten after each commit) is in the store, and the store is an exact prefix
  0..M (no gaps);
- a digest of those rows, which must still be the same at the end (nothing committed is
  re-executed or changed).

At the end: status completed and solved, every step present exactly once (count = N,
steps 0..N-1; the primary key forbids duplicates) with attempts = 1, the final state on
peg 2, a trace file with one line per step, and (with --compare) the rows identical to
an uninterrupted run with the same seed. Reports the kills survived.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.control import spawn_worker, wait_started
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import RunStore, create_run
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.maths import k_min

ROWS = "step, status, votes, rounds, samples, valid, correct, answer, attempts"


def marker(run_id: str) -> tuple[int, int]:
    """(steps committed, highest step committed) as the runner last reported them."""
    try:
        parts = store_mod.marker_path(run_id).read_text().split()
        return int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        return 0, -1


def digest(conn: sqlite3.Connection, upto: int) -> str:
    h = hashlib.sha256()
    for row in conn.execute(f"SELECT {ROWS} FROM steps WHERE step <= ? ORDER BY step", (upto,)):
        h.update(repr(row).encode())
    return h.hexdigest()


def torture(
    disks: int = 14,
    kills: int = 20,
    *,
    commit_interval: float = 0.05,
    seed: int = 0,
    rng_seed: int = 1,
    compare: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Kill a detached runner `kills` times and resume it each time; verify; report."""
    say = log or (lambda *_: None)
    total = (1 << disks) - 1
    spec = RunSpec(
        domain="hanoi",
        params={"disks": disks},
        sampler="simulated:0.99",
        vote=VoteConfig(k=k_min(0.99, total, 0.95)),
        seed=seed,
        commit_interval=commit_interval,
        label=f"torture{disks}",
    )
    rid = create_run(spec)
    rng = random.Random(rng_seed)
    snapshots: list[tuple[int, str]] = []
    killed = sessions = 0
    lost = 0
    started = time.perf_counter()
    env = os.environ.copy()
    while True:
        with RunStore.open(rid) as store:
            if store.status().status == "completed":
                break
        done, _ = marker(rid)
        left = total - done
        budget = None
        if killed < kills:
            # Each session may do at most its share of what is left (a step budget: it
            # stops itself there), so the run cannot end before every kill is made.
            budget = Budgets(steps=max(1, left // (kills - killed + 1)))
        proc = spawn_worker(rid, budget, env=env)
        sessions += 1
        problem = wait_started(rid, proc)
        if problem is not None:
            raise RuntimeError(f"session {sessions}: the runner did not start: {problem}")
        if budget is None:
            proc.wait()
            continue
        # Kill once a random part of its share is committed, then after a random delay
        # of up to one commit interval: anywhere in the group-commit cycle.
        assert budget.steps is not None
        target = done + rng.randint(1, max(1, budget.steps * 2 // 3))
        while marker(rid)[0] < target and proc.poll() is None:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.0, commit_interval))
        if proc.poll() is not None:
            continue  # it used up its share first: not a kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed += 1
        reported, top = marker(rid)
        conn = sqlite3.connect(store_mod.db_path(rid))
        try:
            count, low, high = conn.execute(
                "SELECT count(*), min(step), max(step) FROM steps"
            ).fetchone()
            high = -1 if high is None else high
            if count < reported or high < top or (count and (low != 0 or high != count - 1)):
                lost += 1
            snapshots.append((top, digest(conn, top)))
        finally:
            conn.close()
        say(f"kill {killed:3d}: runner reported {reported:,} steps committed, store has {count:,}")
    seconds = time.perf_counter() - started
    conn = sqlite3.connect(store_mod.db_path(rid))
    try:
        count, low, high, once = conn.execute(
            "SELECT count(*), min(step), max(step), sum(attempts = 1) FROM steps"
        ).fetchone()
        changed = sum(digest(conn, top) != d for top, d in snapshots)
        rows = conn.execute(f"SELECT {ROWS} FROM steps ORDER BY step").fetchall()
    finally:
        conn.close()
    with RunStore.open(rid) as store:
        st = store.status()
        last = store.step(total - 1)
    final_state = tuple(tuple(p) for p in last.answer["next_state"])
    lines = store_mod.trace_path(rid).read_text().splitlines()
    traced = [json.loads(line)["step"] for line in lines]
    same = None
    if compare:
        from nanobot_tui.engine.runs.durable import execute

        straight = create_run(spec)
        asyncio.run(execute(straight))
        conn = sqlite3.connect(store_mod.db_path(straight))
        try:
            same = rows == conn.execute(f"SELECT {ROWS} FROM steps ORDER BY step").fetchall()
        finally:
            conn.close()
    return {
        "run_id": rid,
        "disks": disks,
        "steps": total,
        "kills_survived": killed,
        "sessions": sessions,
        "commit_interval_s": commit_interval,
        "seconds": seconds,
        "status": st.status,
        "solved": st.reason == "solved",
        "errors": st.errors,
        "rows": count,
        "first_step": low,
        "last_step": high,
        "executed_once": once == total,
        "final_state_is_goal": final_state == Hanoi(disks).goal,
        "lost_after_kills": lost,
        "changed_after_kills": changed,
        "trace_lines": len(lines),
        "trace_steps_once": traced == list(range(total)),
        "same_as_uninterrupted": same,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disks", type=int, default=16)
    parser.add_argument("--kills", type=int, default=120)
    parser.add_argument("--commit-interval", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nanobot-torture-") as home:
        os.environ["NANOBOT_HOME"] = str(Path(home))
        report = torture(
            args.disks,
            args.kills,
            commit_interval=args.commit_interval,
            seed=args.seed,
            compare=not args.no_compare,
            log=None if args.json else print,
        )
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>22}: {value}")
    ok = (
        report["status"] == "completed"
        and report["executed_once"]
        and report["lost_after_kills"] == 0
        and report["changed_after_kills"] == 0
        and report["trace_steps_once"]
        and report["final_state_is_goal"]
        and report["same_as_uninterrupted"] is not False
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
