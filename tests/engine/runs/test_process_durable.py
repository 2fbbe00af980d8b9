"""The durable runner: exact resumes, budgets, pause/cancel/stop, retries with skip and
escalate, the lock, and independent steps run concurrently."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.control import Control, RunError, RunLocked
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets, RetryPolicy, RunSpec
from nanobot_tui.engine.runs.store import RunStore
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig, vote
from nanobot_tui.engine.voting.domains import Step
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.maths import p_vote
from nanobot_tui.engine.voting.runner import VoteMonitor
from nanobot_tui.engine.voting.samplers.seeded import (
    BLOCK,
    WIDTH,
    SeededSimulatedSampler,
    StreamSimulatedSampler,
    uniform,
    uniform_table,
)
from nanobot_tui.engine.voting.samples import Sample
from tests.engine.runs.runner_hold import HANG_GUARD_S, held_when

STEP_COLUMNS = (
    "step, node, status, input, answer, votes, rounds, samples, valid, red_flags, "
    "completion_tokens, attempts, correct, error"
)


def hanoi_spec(disks: int, p: float = 0.99, k: int = 3, **kw: Any) -> RunSpec:
    return RunSpec(
        domain="hanoi",
        params={"disks": disks},
        sampler=kw.pop("sampler", f"simulated:{p}"),
        vote=kw.pop("vote", VoteConfig(k=k)),
        label=f"hanoi{disks}",
        **kw,
    )


def step_rows(run_id: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(store_mod.db_path(run_id))
    try:
        return conn.execute(f"SELECT {STEP_COLUMNS} FROM steps ORDER BY step").fetchall()
    finally:
        conn.close()


class Scripted:
    """A FAKE sampler (not a model, not the simulated one): every sample is the step's
    truth, except at chosen steps, where on the chosen attempts its samples alternate
    between the truth and a wrong answer, so no answer ever gets k ahead. `before[i]` is
    awaited once, before step i's first sample: a test acts at a known step (pauses the
    run, holds it, outlasts a budget), never after a guessed time."""

    def __init__(
        self,
        domain: Any,
        *,
        simulated: bool,
        undecided: dict[int, set[int] | None] | None = None,
        tokens: int = 0,
        before: dict[int, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        self.domain = domain
        self.simulated = simulated
        self.name = "fake scripted sampler"
        self.undecided = undecided or {}
        self.tokens = tokens
        self.before = dict(before or {})
        self.attempt = 1
        self.calls: list[tuple[int, int, int]] = []  # (step, attempt, paraphrase)

    def begin_attempt(self, step: Step | None, attempt: int) -> None:
        self.attempt = attempt

    async def sample(self, step: Step, temperatures: list[float], paraphrase: int = 0):
        hook = self.before.pop(step.index, None)
        if hook is not None:
            await hook()
        self.calls.append((step.index, self.attempt, paraphrase))
        truth = self.domain.truth(step)
        attempts = self.undecided.get(step.index, set())
        stuck = step.index in self.undecided and (attempts is None or self.attempt in attempts)
        wrong = self.domain.wrong_answers(step, 1)[0]
        out = []
        for i, _ in enumerate(temperatures):
            answer = wrong if stuck and i % 2 else truth
            out.append(Sample(answer, self.domain.key(answer), completion_tokens=self.tokens))
        return out


# --- the seeded sampler ------------------------------------------------------------------


def test_seeded_draws_are_a_function_of_seed_step_attempt_and_draw() -> None:
    table = uniform_table(7, 3 * BLOCK, BLOCK)
    for s in (0, 1, 777, BLOCK - 1):
        for i in range(WIDTH):
            assert table[s * WIDTH + i] == uniform(7, 3 * BLOCK + s, 1, i)
    assert uniform_table(7, 10, 4, attempt=2)[9] == uniform(7, 11, 2, 1)
    assert len({uniform(1, s, 1, 0) for s in range(1000)}) == 1000
    u = [uniform(3, s, 1, i) for s in range(20_000) for i in range(3)]
    assert abs(sum(u) / len(u) - 0.5) < 0.01
    assert abs(sum(x < 0.01 for x in u) / len(u) - 0.01) < 0.003


async def test_seeded_sampler_keeps_the_voting_law() -> None:
    h = Hanoi(11)
    p, k = 0.75, 2
    # One wrong answer: the two-candidate race p_vote describes exactly.
    rid = await start_run(hanoi_spec(11, p=p, k=k, wrong_choices=1))
    st = await execute(rid)
    assert st.status == "completed" and st.steps_done == 2047 and st.reason != "solved"
    assert abs(st.errors / st.steps_done - (1 - p_vote(p, k))) < 0.03
    # Same seed, same votes, whichever sampler instance draws them.
    a = SeededSimulatedSampler(h, p, seed=5)
    b = SeededSimulatedSampler(h, p, seed=5)
    step = h.step_at(1234)
    assert [s.key for s in await a.sample(step, [0.0] * 12)] == [
        s.key for s in await b.sample(h.step_at(1234), [0.0] * 12)
    ]


async def test_stream_sampler_replays_a_segment_to_resume_mid_way() -> None:
    h = Hanoi(13)
    cfg = VoteConfig(k=2)

    async def votes(sampler: StreamSimulatedSampler, first: int, last: int) -> list[Any]:
        out = []
        for i in range(first, last):
            record = await vote(sampler, h.step_at(i), cfg)
            out.append((record.votes, record.rounds, record.samples))
        return out

    straight = await votes(StreamSimulatedSampler(h, 0.7, seed=4), 0, 5000)
    resumed = StreamSimulatedSampler(h, 0.7, seed=4)
    with pytest.raises(RuntimeError, match="middle of a segment"):
        await vote(resumed, h.step_at(4500), cfg)
    await resumed.replay(4500, h.step_at, lambda s, step: vote(s, step, cfg))
    assert await votes(resumed, 4500, 5000) == straight[4500:]
    # A retry draws from its own stream and leaves the segment's alone.
    again = StreamSimulatedSampler(h, 0.7, seed=4)
    await again.replay(4500, h.step_at, lambda s, step: vote(s, step, cfg))
    step = h.step_at(4500)
    first = await vote(again, step, cfg)
    again.begin_attempt(step, 2)
    await vote(again, step, cfg)
    again.begin_attempt(None, 1)
    assert (first.votes, first.rounds) == straight[4500][:2]
    assert await votes(again, 4501, 5000) == straight[4501:]


# --- exact resumes -----------------------------------------------------------------------


async def test_resumed_run_equals_an_uninterrupted_one() -> None:
    """Stopped by a step budget every 300 steps and resumed: the same rows (votes, rounds,
    answers, errors) as one run straight through, and a trace line per step."""
    spec = hanoi_spec(11, p=0.75, k=2)  # wrong winners, non-unanimous votes
    straight = await start_run(spec)
    await execute(straight)
    pieces = await start_run(spec)
    sessions = 0
    while True:
        st = await execute(pieces, budgets=Budgets(steps=300))
        sessions += 1
        if st.status == "completed":
            break
        assert st.status == "stopped" and st.reason and "budget" in st.reason
        assert st.steps_done == 300 * sessions
    assert sessions == 7
    assert step_rows(pieces) == step_rows(straight)
    with RunStore.open(straight) as a, RunStore.open(pieces) as b:
        sa, sb = a.status(), b.status()
        assert (sa.errors, sa.samples, sa.votes) == (sb.errors, sb.samples, sb.votes)
        assert a.root().errors == b.root().errors == sa.errors > 0
    lines = store_mod.trace_path(pieces).read_text().splitlines()
    assert len(lines) == 2047 == len(set(lines))


async def test_monitor_counts_the_whole_run_across_sessions() -> None:
    rid = await start_run(hanoi_spec(9))
    await execute(rid, budgets=Budgets(steps=100))
    monitor = VoteMonitor()
    st = await execute(rid, monitor=monitor)
    snap = monitor.snapshot()
    assert st.status == "completed"
    assert snap.steps_done == snap.steps_total == 511 and snap.finished and snap.solved


# --- budgets -----------------------------------------------------------------------------


async def test_token_budget_stops_cleanly_and_resume_goes_on() -> None:
    h = Hanoi(6)
    rid = await start_run(hanoi_spec(6, sampler="local:rlm"))
    fake = Scripted(h, simulated=False, tokens=5)
    st = await execute(rid, sampler=fake, budgets=Budgets(tokens=200))
    # 3 samples of 5 tokens a step: the budget runs out after step 14 (210 tokens).
    assert st.status == "stopped" and "tokens" in (st.reason or "")
    assert st.steps_done == 14 and st.tokens == 210
    st = await execute(rid, sampler=Scripted(h, simulated=False, tokens=5))
    assert st.status == "completed" and st.reason == "solved" and st.steps_done == 63


async def test_wall_clock_budget() -> None:
    """The session stops after the step that used up its seconds (step 3 outlasts the
    budget here; on a slow machine an earlier one may), never later, and records the
    time it ran."""
    h = Hanoi(8)
    rid = await start_run(hanoi_spec(8, budgets=Budgets(seconds=0.3)))
    fake = Scripted(h, simulated=True, before={3: lambda: asyncio.sleep(0.4)})
    st = await execute(rid, sampler=fake)
    assert st.status == "stopped"
    assert st.reason == "budget: 0.3 s of wall time used in this session"
    assert 1 <= st.steps_done <= 4  # 255 if the budget did not stop it
    assert max(call[0] for call in fake.calls) == st.steps_done - 1  # no step after it
    assert st.elapsed_s >= 0.3
    st = await execute(rid, budgets=Budgets(steps=10_000))
    assert st.status == "completed" and st.steps_done == 255


# --- pause, cancel, stop -----------------------------------------------------------------


class PausingStream(StreamSimulatedSampler):
    """The runner's simulated sampler, asking `control` for a pause while it draws for
    step `at` (as `nanobot pause` would, mid-step)."""

    def __init__(self, domain: Hanoi, p: float, *, control: Control, at: int) -> None:
        super().__init__(domain, p, seed=0)
        self.control, self.at = control, at

    async def sample(self, step, temperatures, paraphrase=0):  # type: ignore[no-untyped-def]
        if step.index == self.at:
            self.control.pause()
        return await super().sample(step, temperatures, paraphrase)


async def test_pause_then_resume_continues_exactly() -> None:
    h = Hanoi(9)
    spec = hanoi_spec(9, p=0.8, k=2)
    straight = await start_run(spec)
    await execute(straight)
    rid = await start_run(spec)
    control = Control()
    pausing = PausingStream(h, 0.8, control=control, at=200)
    st = await execute(rid, control=control, sampler=pausing)
    assert st.status == "paused" and st.steps_done == 201  # the step in hand, no more
    st = await execute(rid)
    assert st.status == "completed" and st.steps_done == 511
    assert step_rows(rid) == step_rows(straight)  # as if it had never paused


async def test_cancel_is_final_and_stop_is_resumable() -> None:
    h = Hanoi(9)
    rid = await start_run(hanoi_spec(9))
    control = Control()

    async def cancel() -> None:
        control.cancel()

    st = await execute(
        rid, control=control, sampler=Scripted(h, simulated=True, before={50: cancel})
    )
    assert st.status == "cancelled" and st.steps_done == 51  # the step in hand, no more
    with pytest.raises(RunError, match="cancelled"):
        await execute(rid)

    other = await start_run(hanoi_spec(9))
    stop = asyncio.Event()

    async def set_stop() -> None:
        stop.set()

    st = await execute(other, stop=stop, sampler=Scripted(h, simulated=True, before={50: set_stop}))
    # `stop` is seen when the runner next yields to the event loop: after step 50, and
    # long before the run's end.
    assert st.status == "stopped" and st.reason == "stopped" and 50 < st.steps_done < 511
    assert (await execute(other)).status == "completed"


# --- self-healing ------------------------------------------------------------------------


async def test_an_undecided_step_is_retried_with_a_changed_strategy() -> None:
    h = Hanoi(6)
    rid = await start_run(hanoi_spec(6, vote=VoteConfig(k=2, max_rounds=4)))
    fake = Scripted(h, simulated=True, undecided={5: {1}})
    st = await execute(rid, sampler=fake)
    assert st.status == "completed" and st.reason == "solved" and st.errors == 0
    assert st.retried == 1
    with RunStore.open(rid) as store:
        row = store.step(5)
        assert row.attempts == 2 and row.status == "completed" and row.correct
        lines = store.trace_lines(5, 10)
    assert [(ln["step"], ln["attempt"], ln["status"]) for ln in lines] == [
        (5, 1, "failed"),
        (5, 2, "completed"),
    ]
    assert "undecided" in lines[0]["error"]
    # Attempt 1 voted plainly; attempt 2 with paraphrased prompts from its first round.
    assert {c[2] for c in fake.calls if c[:2] == (5, 1)} == {0}
    assert min(c[2] for c in fake.calls if c[:2] == (5, 2)) >= 1


async def test_skip_where_the_next_step_does_not_depend_on_it() -> None:
    h = Hanoi(6)
    spec = hanoi_spec(
        6, vote=VoteConfig(k=2, max_rounds=3), retry=RetryPolicy(retries=2, on_fail="skip")
    )
    rid = await start_run(spec)
    st = await execute(rid, sampler=Scripted(h, simulated=True, undecided={7: None}))
    # Simulated: the run goes on from the truth, so the step can be skipped.
    assert st.status == "completed" and st.steps_done == 63
    assert st.skipped == 1 and st.errors == 1 and st.errors_by_reason == {"undecided": 1}
    assert st.reason != "solved"
    with RunStore.open(rid) as store:
        row = store.step(7)
        assert row.status == "skipped" and row.attempts == 3 and "undecided" in row.error
        leaf = store.node(store.children(store.root().id)[0].id)
        assert leaf.status == "completed" and leaf.errors == 1 and leaf.failed_children == 1
        assert store.root().errors == 1


async def test_escalate_fails_the_run_and_resume_votes_the_step_again() -> None:
    h = Hanoi(6)
    spec = hanoi_spec(6, vote=VoteConfig(k=2, max_rounds=3), retry=RetryPolicy(retries=1))
    rid = await start_run(spec)
    st = await execute(rid, sampler=Scripted(h, simulated=True, undecided={20: None}))
    assert st.status == "failed" and "step 21" in (st.reason or "") and st.steps_done == 21
    assert st.failed == 1 and st.errors_by_reason == {"undecided": 1}
    with RunStore.open(rid) as store:
        root = store.root()
        assert root.status == "failed" and "undecided" in (root.error or "")
        chain = [store.node(i) for i in store.layout.ancestors(20)]
        assert all(n.status == "failed" for n in chain)
        assert store.step(20).status == "failed"
    st = await execute(rid)  # the seeded simulated sampler decides step 21
    assert st.status == "completed" and st.steps_done == 63 and st.failed == 0
    assert st.errors == 0 and st.reason == "solved"
    with RunStore.open(rid) as store:
        assert store.root().status == "completed" and store.step(20).attempts == 1


async def test_skip_is_impossible_where_the_next_step_depends_on_it() -> None:
    """A real model's Hanoi step hands its state on: it cannot be skipped."""
    h = Hanoi(5)
    spec = hanoi_spec(
        5,
        sampler="local:rlm",
        vote=VoteConfig(k=2, max_rounds=3),
        retry=RetryPolicy(retries=0, on_fail="skip"),
    )
    rid = await start_run(spec)
    st = await execute(rid, sampler=Scripted(h, simulated=False, undecided={3: None}))
    assert st.status == "failed" and "cannot be skipped" in (st.reason or "")
    with RunStore.open(rid) as store:
        row = store.step(2)
        assert row.input is not None and row.answer is not None  # real: stored explicitly
        assert len(store.samples(2)) == row.samples  # real: samples kept


# --- the lock ----------------------------------------------------------------------------


async def test_a_second_runner_is_refused() -> None:
    h = Hanoi(8)
    rid = await start_run(hanoi_spec(8))
    voting, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:  # the first runner, lock taken, waits in its first step
        voting.set()
        await release.wait()

    fake = Scripted(h, simulated=True, before={0: hold})
    first = asyncio.create_task(execute(rid, sampler=fake))
    await asyncio.wait_for(voting.wait(), HANG_GUARD_S)
    with pytest.raises(RunLocked, match=f"already being run by pid {os.getpid()}"):
        await execute(rid)
    release.set()
    assert (await first).status == "completed"


def test_a_killed_runners_lock_is_taken_over() -> None:
    """SIGKILL a detached runner mid-run: its lock dies with it, a new runner takes the
    run over and finishes it from where the store says."""
    rid = asyncio.run(start_run(hanoi_spec(17)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanobot_tui.engine.runs.worker", rid],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed where it is held, a few thousand steps in (runner_hold.py): mid-run,
        # whatever the machine's speed.
        with held_when(rid, lambda st: st.steps_done >= 2000) as seen:
            assert seen.pid == proc.pid
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    with RunStore.open(rid) as store:
        st = store.status()
    assert st.status == "stopped" and st.pid is None  # the dead runner's "running"
    st = asyncio.run(execute(rid))
    assert st.status == "completed" and st.reason == "solved"
    rows = step_rows(rid)
    assert len(rows) == 131_071 and rows[-1][0] == 131_070


# --- independent steps ----------------------------------------------------------------------


async def test_independent_steps_run_concurrently_and_resume() -> None:
    spec = RunSpec(
        domain="wordcase",
        params={"words": 400, "seed": 1},
        sampler="simulated:0.9",
        vote=VoteConfig(k=2),
        concurrency=4,
        label="wordcase400",
    )
    rid = await start_run(spec)
    in_flight: list[int] = []

    class Counting(SeededSimulatedSampler):
        live = 0

        async def sample(self, step, temperatures, paraphrase=0):  # type: ignore[no-untyped-def]
            Counting.live += 1
            in_flight.append(Counting.live)
            await asyncio.sleep(0.0005)
            Counting.live -= 1
            return await super().sample(step, temperatures, paraphrase)

    domain = spec.build_domain()
    st = await execute(rid, sampler=Counting(domain, 0.9, seed=0), budgets=Budgets(steps=150))
    assert st.status == "stopped" and st.steps_done == 150
    assert max(in_flight) == 4  # four workers at once
    st = await execute(rid, sampler=Counting(domain, 0.9, seed=0))
    assert st.status == "completed" and st.steps_done == 400
    rows = step_rows(rid)
    assert [r[0] for r in rows] == list(range(400))
    assert all(r[3] is not None for r in rows)  # word-case inputs are stored
    assert abs(st.errors / 400 - (1 - p_vote(0.9, 2))) < 0.04
