"""How a session goes through a run's steps, and where a resumed run picks up.

A domain whose steps hand state on (Hanoi) runs in order, one step at a time
(`run_in_order`); a domain whose steps are independent (word case) runs `spec.workers`
steps at once (`run_concurrently`; default: the CPU cores), so a model server's parallel
slots stay busy.

Speed. The loop for simulated steps is runner.run_domain's plus a few comparisons: a
step that needs no row of its own (see store/rows.py) extends a run of such steps kept in
four local integers, and the batch goes to the writer thread every ~50 ms.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from time import perf_counter

from nanobot_tui.engine.runs.control import RunError
from nanobot_tui.engine.runs.session import (
    Failed,
    MixedStep,
    PlainRun,
    Session,
    StepResult,
    Stopped,
    Watch,
)
from nanobot_tui.engine.runs.store import RunStore, StepOut, describe, to_json
from nanobot_tui.engine.voting.ahead_by_k import StepRecord, vote
from nanobot_tui.engine.voting.domains import Domain, Step
from nanobot_tui.engine.voting.samplers.simulated import SimulatedSampler
from nanobot_tui.engine.voting.samples import Retrying, Sampler

# --- in order: steps that hand state on ----------------------------------------------------


async def run_in_order(s: Session, step: Step | None) -> None:
    """Vote from `step` to the end, in order, then set the session's ending."""
    sampler = s.sampler
    if s.simulated and s.canonical and s.truth_answers and not isinstance(sampler, Watch):
        step = await _simulated_in_order(s, sampler, step)
    else:
        step = await _settled_in_order(s, step)
    if step is None and s.ending is None:
        s.ending = ("completed", "")


async def _settled_in_order(s: Session, step: Step | None) -> Step | None:
    """Every step through `settle`, its row handed to the writer at once; returns the
    step it stopped before (None: the end)."""
    done = 0
    while step is not None and not _halted(s, done):
        s.inflight = {step.index}
        result = await s.settle(s.sampler, step, None)
        s.monitor.observe(result.record, result.correct, result.matched)
        done += 1
        s.steps = done
        if result.failed is not None:
            s.ending = ("failed", result.failed)
            s.inflight = set()
            s.handoff([], [result.out], inflight=[])
            return None
        step = result.next_step
        await _hand_over(s, step, [], [result.out], [])
        reason = s.over_budget()
        if reason is not None and step is not None:
            s.ending = ("stopped", reason)
            break
    s.inflight = set()
    s.handoff([], [], inflight=[])
    return step


def _halted(s: Session, done: int) -> bool:
    """Whether a pause, cancel or stop was asked for, or `done` steps use up the session's
    step budget (then the session's ending says so)."""
    if s.control.request is not None:
        return True
    if done == s.budgets.steps:
        s.ending = ("stopped", s.over_budget() or "budget")
        return True
    return False


async def _simulated_in_order(s: Session, sampler: Sampler, step: Step | None) -> Step | None:
    """The hot path: simulated steps whose winner is the truth need no input or answer
    of their own, and unanimous ones with the same rounds and samples go to the writer
    as one run (ra..rb, rounds rr, samples rs); any other step goes through `settle`."""
    cfg, domain, observe = s.cfg, s.domain, s.monitor.observe
    truth_of, key_of, next_of = domain.truth, domain.key, domain.next_step
    budget_steps = s.budgets.steps if s.budgets.steps is not None else -1
    interval = s.spec.commit_interval
    runs: list[PlainRun] = []
    mixed: list[MixedStep] = []
    rows: list[StepOut] = []
    ra = rb = -2  # the open run of plain steps [ra, rb], with rounds rr, samples rs
    rr = rs = done = 0
    last = s.last_answer
    while step is not None:
        # _halted(s, done), inlined: this loop runs 150,000 times a second.
        if s.control.request is not None:
            break
        if done == budget_steps:
            s.ending = ("stopped", s.over_budget() or "budget")
            break
        record = await vote(sampler, step, cfg)
        try:
            truth = truth_of(step) if record.decided else None
        except ValueError:
            truth = None
        truth_won = truth is not None and record.winner_key == key_of(truth)
        if truth_won and not record.completion_tokens:
            matched = record.votes[record.winner_key]
            observe(record, True, matched)
            index = step.index
            if matched != record.samples:  # not unanimous: its votes are kept
                mixed.append(mixed_row(s, sampler, index, record))
            elif index == rb + 1 and record.rounds == rr and matched == rs:
                rb = index
            else:
                if ra >= 0:
                    runs.append((ra, rb, rr, rs))
                ra = rb = index
                rr, rs = record.rounds, matched
            last = truth
            step = next_of(step, truth)
            done += 1
            # Check the clock, commit and yield every 256 quick steps, or after any step
            # that took time (vote() measured it anyway).
            if done & 255 and record.wall_s < 0.0005:
                continue
            quick = True
        else:
            result = await _settle_first_attempt(s, sampler, step, record)
            rows.append(result.out)
            done += 1
            if result.failed is not None:
                s.ending = ("failed", result.failed)
                step = None
                break
            if result.out.status == "completed":
                last = result.answer
            step = result.next_step
            quick = False
        s.steps = done
        if perf_counter() - s.last_handoff >= interval:
            if ra >= 0:
                runs.append((ra, rb, rr, rs))
                ra = rb = -2
            await _hand_over(s, step, runs, rows, mixed)
            runs, rows, mixed = [], [], []
        reason = s.over_budget()
        if reason is not None and step is not None:
            s.ending = ("stopped", reason)
            break
        if quick:
            await asyncio.sleep(0)
    s.steps = done
    s.last_answer = last
    if ra >= 0:
        runs.append((ra, rb, rr, rs))
    s.inflight = set()
    s.handoff(runs, rows, inflight=[], mixed=mixed)
    return step


async def _hand_over(
    s: Session, step: Step | None, runs: list[PlainRun], rows: list[StepOut], mixed: list[MixedStep]
) -> None:
    """A commit point of the in-order loop: the steps done go to the writer, and the
    loop waits while the writer is far behind."""
    s.inflight = set() if step is None else {step.index}
    s.handoff(runs, rows, mixed=mixed)
    await s.backpressure()


async def _settle_first_attempt(
    s: Session, sampler: Sampler, step: Step, record: StepRecord
) -> StepResult:
    """A step off the hot path: settled (retried where undecided), observed, and the
    sampler set back to the first attempt's draws."""
    result = await s.settle(sampler, step, record)
    if isinstance(sampler, Retrying):
        sampler.begin_attempt(None, 1)
    s.monitor.observe(result.record, result.correct, result.matched)
    return result


def mixed_row(s: Session, sampler: Sampler, index: int, record: StepRecord) -> MixedStep:
    """A simulated step whose winner is the truth but whose votes were not unanimous
    (or had red flags): its input and answer stay implicit, its votes are kept, by
    the simulated sampler's own names for its answers ("=" the truth, "#i" its i-th
    wrong answer, `domain.wrong_answers(step, n)[i]`), which the read API turns back
    into display keys: describing Hanoi states here would cost more than the step."""
    flags = to_json(record.red_flags) if record.red_flags else None
    wrong = (
        sampler.wrong_samples()
        if isinstance(sampler, SimulatedSampler) and sampler.wrong_choices == s.spec.wrong_choices
        else []
    )
    winner = record.winner_key
    parts = []
    for key, n in record.votes.items():
        if key == winner:
            parts.append(f'"=":{n}')
            continue
        for i, w in enumerate(wrong):
            if w.key == key:
                parts.append(f'"#{i}":{n}')
                break
        else:  # not one of the sampler's own answers: describe it
            votes = to_json({describe(s.domain, k): v for k, v in record.votes.items()})
            return (index, record.rounds, record.samples, record.valid, votes, flags)
    votes = "{" + ",".join(parts) + "}"
    return (index, record.rounds, record.samples, record.valid, votes, flags)


# --- concurrently: independent steps ---------------------------------------------------------


async def run_concurrently(s: Session, remaining: Iterator[Step]) -> None:
    """Vote the remaining steps, `spec.workers` at a time, in the tree's order (workers
    take the next step as they free up), then set the session's ending. A worker whose
    model server is gone for good (Failed), or that was asked to stop while it waited for
    one (Stopped), ends the session as the other workers finish their steps; every
    finished step is handed to the writer, however the session ends."""
    exhausted = False
    started = 0

    async def worker(sampler: Sampler) -> None:
        nonlocal started, exhausted
        while s.control.request is None and s.ending is None:
            step = next(remaining, None)
            if step is None:
                exhausted = True
                return
            reason = _concurrent_budget(s, started)
            if reason is not None:
                s.ending = ("stopped", reason)
                return
            started += 1
            try:
                await _one_of_many(s, sampler, step)
            except Failed as exc:
                if s.ending is None:
                    s.ending = ("failed", str(exc))
                return
            except Stopped:  # control.request is set: the session ends with it
                return

    workers = [asyncio.create_task(worker(s.worker_sampler())) for _ in range(s.spec.workers)]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:  # after an unexpected error, no worker outlives the session
            task.cancel()
        rows, s.rows = s.rows, []
        s.handoff([], rows, inflight=[])
    if exhausted and s.ending is None and s.control.request is None and not s.inflight:
        s.ending = ("completed", "")


def _concurrent_budget(s: Session, started: int) -> str | None:
    """Why no further step may start (steps count as they start, here), or None."""
    budget = s.budgets.steps
    if budget is not None and started >= budget:
        return f"budget: {budget:,} steps done in this session"
    return s.over_budget(steps=False)


async def _one_of_many(s: Session, sampler: Sampler, step: Step) -> None:
    """One worker's step: settled, observed, its row handed over with the others'."""
    s.inflight.add(step.index)
    try:
        result = await s.settle(sampler, step, None)
    finally:
        s.inflight.discard(step.index)
    s.monitor.observe(result.record, result.correct, result.matched)
    s.rows.append(result.out)
    s.steps += 1
    if result.failed is not None and s.ending is None:
        s.ending = ("failed", result.failed)
    if perf_counter() - s.last_handoff >= s.spec.commit_interval:
        rows, s.rows = s.rows, []
        s.handoff([], rows)
        await s.backpressure()
    if s.simulated:
        await asyncio.sleep(0)


# --- where a resumed run picks up ---------------------------------------------------------


def resume_in_order(s: Session) -> Step | None:
    """The first step not in the store, rebuilt from the last one: its stored (or
    canonical) input, and its answer (the truth for a simulated run, else the stored
    winner), handed on by the domain."""
    domain = s.domain
    conn = s.reader.conn
    top, count = conn.execute("SELECT max(step), count(*) FROM steps").fetchone()
    if top is None:
        return next(iter(domain.steps()), None)
    if count != top + 1:
        raise RunError(
            f"run {s.run_id}: the store holds {count:,} steps up to step {top + 1:,}: "
            "a sequential run must be a prefix"
        )
    inp, ans, status, correct = conn.execute(
        "SELECT input, answer, status, correct FROM steps WHERE step = ?", (top,)
    ).fetchone()
    last = domain.load_step(top, json.loads(inp)) if inp is not None else domain.step_at(top)
    if s.simulated or status == "skipped" or (ans is None and correct == 1):
        answer = domain.truth(last)
    else:
        answer = domain.load_answer(json.loads(ans))
    s.last_answer = answer
    return domain.next_step(last, answer)


def remaining(domain: Domain, reader: RunStore) -> Iterator[Step]:
    """The steps not in the store, in order: a merge of the domain's steps with the step
    numbers in the store, read a chunk at a time (short reads: a cursor left open for the
    whole run would keep the WAL from being checkpointed)."""
    conn = reader.conn

    def done_steps() -> Iterator[int]:
        after = -1
        while True:
            chunk = conn.execute(
                "SELECT step FROM steps WHERE step > ? ORDER BY step LIMIT 4096", (after,)
            ).fetchall()
            if not chunk:
                return
            for (step,) in chunk:
                yield step
            after = chunk[-1][0]

    done = done_steps()
    nxt = next(done, None)
    for step in domain.steps():
        while nxt is not None and nxt < step.index:
            nxt = next(done, None)
        if nxt == step.index:
            continue
        yield step
