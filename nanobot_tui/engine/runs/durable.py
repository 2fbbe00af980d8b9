"""The durable runner: a voted run persisted as it goes, resumable from any crash.

`start_run(spec)` creates the run's store and returns its id; `execute(run_id)` takes the
run's lock, resumes from the last durable step and votes the rest, step by step, with the
same rules as runner.run_domain (a simulated sampler's error is counted and the run goes
on from the truth; a real sampler's winner is handed on), writing every finished step
through the store's group-committing writer, and ends with status completed, failed,
stopped (a budget ran out, SIGTERM, SIGINT), paused or cancelled.

Scheduling. A domain whose steps hand state on (Hanoi) runs in order, one step at a
time. A domain whose steps are independent (`independent_steps = True`, word case) runs
`spec.workers` steps at once (default: the CPU cores), so a model server's parallel slots
stay busy.

Self-healing. An undecided step (or, for a real model, one whose winner hands on an
invalid state) is voted again up to `retries` times with a changed strategy (paraphrased
prompts, then a larger k), then skipped (only where the next input does not depend on
it) or escalated (the run fails with the reason), as the spec says. A real model's
server that dies shows up as a round of samples all red-flagged `error`: the runner waits
until the server answers /health again (the ServerManager restarts it) and votes the step
again, without counting an attempt.

Speed. The loop for simulated steps is runner.run_domain's plus a few comparisons: a
step that needs no row of its own (see store.py) extends a run of such steps kept in
four local integers, and the batch goes to the writer thread every ~50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any

import psutil

from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.control import Control, RunLock, clear_request
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import (
    AttemptOut,
    Batch,
    RunStatus,
    RunStore,
    StepOut,
    StoreError,
    StoreWriter,
    canonical_step,
    describe,
    dump_answer,
    dump_step,
    load_answer,
    load_step,
    to_json,
)
from nanobot_tui.engine.voting.ahead_by_k import StepRecord, VoteConfig, vote
from nanobot_tui.engine.voting.domains import Step
from nanobot_tui.engine.voting.runner import VoteMonitor
from nanobot_tui.engine.voting.samplers.seeded import SeededSimulatedSampler, StreamSimulatedSampler
from nanobot_tui.engine.voting.samples import RED_ERROR, Sample

HEARTBEAT_S = 2.0
SERVER_WAIT_S = 300.0  # how long a run waits for a dead model server to come back
MAX_LAG = 8  # batches the writer may fall behind before the runner waits for it
SWITCH_INTERVAL_S = 0.001  # the GIL switch interval while a session runs

Health = Callable[[], Awaitable[bool]]


class RunError(Exception):
    """A run that cannot be executed (cancelled, locked, unreadable); one line."""


class ServerDown(Exception):
    """A whole round of samples failed: the model server is gone."""


class _Failed(Exception):
    """The run must end as failed, with this reason."""


class _Stopped(Exception):
    """A pause, cancel or stop arrived while the runner waited (for a model server)."""


# --- starting --------------------------------------------------------------------------


async def start_run(spec: RunSpec, run_id: str | None = None) -> str:
    """Create a durable run (its store, its tree, status "stopped: not started yet") and
    return its id; `execute(id)` runs it."""
    return await asyncio.to_thread(store_mod.create_run, spec, run_id)


# --- samplers ----------------------------------------------------------------------------


class _Watch:
    """Wraps a sampler for one worker: raises ServerDown when a whole round failed (real
    models) and keeps every sample drawn for the step (when samples are kept)."""

    def __init__(self, inner: Any, *, guard: bool, keep: bool) -> None:
        self.inner = inner
        self.name = inner.name
        self.simulated = bool(getattr(inner, "simulated", False))
        self.guard = guard
        self.keep = keep
        self.drawn: list[Sample] = []

    async def sample(
        self, step: Step, temperatures: list[float], paraphrase: int = 0
    ) -> list[Sample]:
        out = await self.inner.sample(step, temperatures, paraphrase)
        if self.guard and out and all(s.red_flag == RED_ERROR for s in out):
            raise ServerDown(out[0].text or "every sample of the round failed")
        if self.keep:
            self.drawn.extend(out)
        return out


def _cfg_for(cfg: VoteConfig, attempt: int) -> VoteConfig:
    """The changed strategy of a retry: paraphrased prompts from the first round on, and
    from the third attempt a larger margin."""
    if attempt <= 1:
        return cfg
    k = cfg.k + max(attempt - 2, 0)
    return replace(cfg, k=k, paraphrase_after_rounds=0)


# --- the session ---------------------------------------------------------------------------


@dataclass
class _Result:
    """One step's outcome after all its attempts."""

    out: StepOut
    record: StepRecord
    correct: bool | None
    matched: int
    next_step: Step | None  # what follows (sequential runs)
    failed: str | None = None  # set: the run must fail with this reason
    answer: Any = None  # the answer handed on


class _Session:
    """One runner session of one run (execute() builds it with the lock held)."""

    def __init__(
        self,
        run_id: str,
        spec: RunSpec,
        domain: Any,
        sampler: Any,
        writer: StoreWriter,
        reader: RunStore,
        monitor: VoteMonitor,
        control: Control,
        budgets: Budgets,
        health: Health | None,
        meta: dict[str, Any],
    ) -> None:
        self.run_id = run_id
        self.spec = spec
        self.domain = domain
        self.sampler = sampler
        self.writer = writer
        self.reader = reader
        self.monitor = monitor
        self.control = control
        self.budgets = budgets
        self.health = health
        self.cfg = spec.vote
        self.simulated = bool(getattr(sampler, "simulated", False))
        storage = meta.get("storage") or {}
        self.canonical = bool(storage.get("canonical_inputs"))
        self.truth_answers = bool(storage.get("truth_answers"))
        self.keep = spec.keeps_samples
        self.independent = bool(getattr(domain, "independent_steps", False))
        self.total = domain.total_steps()
        self.t0 = perf_counter()
        self.elapsed_before = float(meta.get("elapsed_s") or 0.0)
        self.steps = 0  # steps finished in this session
        self.tokens = 0  # completion tokens in this session
        self.inflight: set[int] = set()
        self.rows: list[StepOut] = []  # for the concurrent scheduler
        self.last_handoff = perf_counter()
        self.ending: tuple[str, str] | None = None  # (status, reason) decided by the run
        self.last_answer: Any = None
        self.server_waits = 0

    # --- bookkeeping -----------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + (perf_counter() - self.t0)

    def handoff(
        self,
        runs: list[tuple[int, int, int, int]],
        rows: list[StepOut],
        inflight: list[int] | None = None,
        mixed: list[tuple[int, int, int, int, str, str | None]] | None = None,
    ) -> None:
        self.writer.submit(
            Batch(
                runs=runs,
                mixed=mixed or [],
                rows=rows,
                inflight=sorted(self.inflight) if inflight is None else inflight,
                elapsed=self.elapsed(),
            )
        )
        self.last_handoff = perf_counter()

    async def backpressure(self) -> None:
        while self.writer.lag() > MAX_LAG:
            await asyncio.sleep(0.005)

    def over_budget(self, steps: bool = True) -> str | None:
        b = self.budgets
        if steps and b.steps is not None and self.steps >= b.steps:
            return f"budget: {b.steps:,} steps done in this session"
        if b.tokens is not None and self.tokens >= b.tokens:
            return f"budget: {self.tokens:,} of {b.tokens:,} tokens used in this session"
        if b.seconds is not None and perf_counter() - self.t0 >= b.seconds:
            return f"budget: {b.seconds:g} s of wall time used in this session"
        return None

    async def heartbeat(self) -> None:
        """Prove the runner alive (and show what it is on) while steps are slow."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if perf_counter() - self.last_handoff >= HEARTBEAT_S:
                self.handoff([], [])

    # --- one step, all attempts ----------------------------------------------------------

    async def vote_once(self, sampler: Any, step: Step, attempt: int) -> StepRecord:
        """One attempt's vote; a dead server is waited for, and the attempt re-voted
        without counting."""
        cfg = _cfg_for(self.cfg, attempt)
        inner = getattr(sampler, "inner", sampler)
        if hasattr(inner, "begin_attempt"):
            inner.begin_attempt(step, attempt)
        elif hasattr(inner, "attempt"):
            inner.attempt = attempt
        while True:
            if isinstance(sampler, _Watch):
                sampler.drawn.clear()
            try:
                return await vote(sampler, step, cfg)
            except ServerDown as exc:
                self.server_waits += 1
                await self.wait_for_server(str(exc))

    async def wait_for_server(self, why: str) -> None:
        if self.health is None:
            raise _Failed(f"the model server failed ({why}) and there is no way to check it")
        deadline = perf_counter() + SERVER_WAIT_S
        await asyncio.sleep(0.25)
        while perf_counter() < deadline:
            if self.control.request is not None:
                raise _Stopped
            try:
                if await self.health():
                    return
            except Exception:
                pass
            await asyncio.sleep(0.25)
        raise _Failed(f"the model server did not come back within {SERVER_WAIT_S:.0f} s ({why})")

    def judge(self, step: Step, record: StepRecord) -> tuple[Any, bool | None, int]:
        """(truth or None, correct, matched) as run_domain judges a step."""
        try:
            truth = self.domain.truth(step)
        except ValueError:  # no answer by the procedure from a state we were handed
            truth = None
        if truth is not None:
            tkey = self.domain.key(truth)
            correct: bool | None = record.decided and record.winner_key == tkey
            matched = record.votes.get(tkey, 0)
        else:
            correct = None if record.decided else False
            matched = record.votes[record.winner_key] if record.decided else 0
        return truth, correct, matched

    def hand_on(self, step: Step, record: StepRecord, truth: Any) -> tuple[Any, str | None]:
        """(answer to go on from, problem): the truth for a simulated sampler, else the
        winner, which must hand on a valid state. problem: "reason: message"."""
        if not record.decided:
            return None, (
                f"undecided: no answer {self.cfg.k} votes ahead after {record.rounds} rounds"
            )
        if self.simulated and truth is not None:
            return truth, None
        answer = record.winner_answer
        if not self.independent:
            try:
                self.domain.next_step(step, answer)
            except ValueError as exc:
                return None, f"invalid_state: the winner hands on an invalid state: {exc}"
        return answer, None

    async def settle(self, sampler: Any, step: Step, record: StepRecord | None) -> _Result:
        """Every attempt of `step` (record: attempt 1, if voted already) and its row."""
        started = perf_counter()
        retries = self.spec.retry.retries
        earlier: list[AttemptOut] = []
        sample_rows: list[tuple[Any, ...]] = []
        attempt = 1
        while True:
            if record is None:
                record = await self.vote_once(sampler, step, attempt)
            if isinstance(sampler, _Watch) and sampler.keep:
                sample_rows += self.sample_rows(step.index, attempt, sampler.drawn)
            truth, correct, matched = self.judge(step, record)
            answer, problem = self.hand_on(step, record, truth)
            if problem is None or attempt > retries:
                break
            earlier.append(self.attempt_out(attempt, record, problem))
            attempt += 1
            record = None
        wall_ms = (perf_counter() - started) * 1000.0
        status, error, reason, failed = "completed", None, None, None
        next_step: Step | None = None
        if problem is None:
            self.last_answer = answer
            if not self.independent:
                next_step = self.domain.next_step(step, answer)
            if correct is False:
                reason = "wrong"
        else:
            reason = problem.split(":", 1)[0]
            error = f"{problem} (after {attempt} attempt{'s' if attempt > 1 else ''})"
            skippable = self.independent or (self.simulated and truth is not None)
            if self.spec.retry.on_fail == "skip" and skippable:
                status = "skipped"
                if not self.independent:
                    next_step = self.domain.next_step(step, truth)
            else:
                status = "failed"
                why = "" if self.spec.retry.on_fail == "escalate" else (
                    "; it cannot be skipped: the next step depends on it"
                )  # fmt: skip
                failed = f"step {step.index + 1:,}: {error}{why}"
                error = error + why
        out = self.step_out(step, record, status, correct, error, reason, attempt, wall_ms)
        out.earlier = earlier
        out.sample_rows = sample_rows
        self.tokens += record.completion_tokens + sum(a.tokens for a in earlier)
        return _Result(out, record, correct, matched, next_step, failed, answer)

    def step_out(
        self,
        step: Step,
        record: StepRecord,
        status: str,
        correct: bool | None,
        error: str | None,
        reason: str | None,
        attempts: int,
        wall_ms: float,
    ) -> StepOut:
        domain = self.domain
        stored_input = None if self.canonical else to_json(dump_step(domain, step))
        answer = None
        if record.winner_answer is not None and not (self.truth_answers and correct):
            answer = to_json(dump_answer(domain, record.winner_answer))
        votes = to_json({describe(domain, k): n for k, n in record.votes.items()})
        return StepOut(
            step=step.index,
            status=status,
            input=stored_input,
            answer=answer,
            votes=votes,
            rounds=record.rounds,
            samples=record.samples,
            valid=record.valid,
            red_flags=dict(record.red_flags) or None,
            tokens=record.completion_tokens,
            latency_ms=record.latency_s * 1000.0 if not self.simulated else None,
            wall_ms=wall_ms,
            attempts=attempts,
            correct=None if correct is None else int(correct),
            error=error,
            reason=reason,
        )

    def attempt_out(self, attempt: int, record: StepRecord, problem: str) -> AttemptOut:
        domain = self.domain
        answer = (
            to_json(dump_answer(domain, record.winner_answer))
            if record.winner_answer is not None
            else None
        )
        return AttemptOut(
            attempt=attempt,
            status="failed",
            answer=answer,
            votes=to_json({describe(domain, k): n for k, n in record.votes.items()}),
            rounds=record.rounds,
            samples=record.samples,
            valid=record.valid,
            red_flags=to_json(record.red_flags) if record.red_flags else None,
            tokens=record.completion_tokens,
            latency_ms=record.latency_s * 1000.0,
            wall_ms=record.wall_s * 1000.0,
            error=problem,
        )

    def sample_rows(self, step: int, attempt: int, drawn: list[Sample]) -> list[tuple[Any, ...]]:
        domain = self.domain
        return [
            (step, attempt, i, None if s.key is None else describe(domain, s.key), s.red_flag,
             s.temperature, s.completion_tokens, s.latency_s * 1000.0,
             (s.text or "")[:store_mod.SAMPLE_TEXT_MAX])
            for i, s in enumerate(drawn)
        ]  # fmt: skip

    # --- sequential: steps that hand state on --------------------------------------------

    async def sequential(self, step: Step | None) -> None:
        """Vote from `step` to the end, in order. The hot path is for simulated steps
        whose winner is the truth (they need no input or answer of their own; see
        store.py); everything else goes through settle()."""
        sampler = self.sampler
        cfg = self.cfg
        domain = self.domain
        truth_of = domain.truth
        key_of = domain.key
        next_of = domain.next_step
        observe = self.monitor.observe
        control = self.control
        plain = sampler if not isinstance(sampler, _Watch) else None
        plain_ok = self.simulated and self.canonical and self.truth_answers and plain is not None
        restart = getattr(plain, "begin_attempt", None)
        budget_steps = self.budgets.steps if self.budgets.steps is not None else -1
        interval = self.spec.commit_interval
        runs: list[tuple[int, int, int, int]] = []
        mixed: list[tuple[int, int, int, int, str, str | None]] = []
        rows: list[StepOut] = []
        ra = rb = -2  # the open run of plain steps [ra, rb], with rounds rr, samples rs
        rr = rs = 0
        done = 0
        last = self.last_answer
        while step is not None:
            if control.request is not None:
                break
            if done == budget_steps:
                self.ending = ("stopped", self.over_budget() or "budget")
                break
            periodic = False
            if plain_ok:
                record = await vote(plain, step, cfg)  # type: ignore[arg-type]
                truth = None
                if record.decided:
                    try:
                        truth = truth_of(step)
                    except ValueError:
                        truth = None
                if (
                    truth is not None
                    and record.winner_key == key_of(truth)
                    and not record.completion_tokens
                ):
                    matched = record.votes[record.winner_key]
                    observe(record, True, matched)
                    index = step.index
                    if matched == record.samples:  # every sample a vote for the truth
                        if index == rb + 1 and record.rounds == rr and matched == rs:
                            rb = index
                        else:
                            if ra >= 0:
                                runs.append((ra, rb, rr, rs))
                            ra = rb = index
                            rr, rs = record.rounds, matched
                    else:
                        mixed.append(self.mixed_row(index, record))
                    last = truth
                    step = next_of(step, truth)
                    done += 1
                    # Check the clock, commit and yield every 256 quick steps, or after
                    # any step that took time (vote() measured it anyway).
                    if done & 255 and record.wall_s < 0.0005:
                        continue
                    periodic = True
                else:
                    result = await self.settle(sampler, step, record)
                    if restart is not None:
                        restart(None, 1)  # back to the first attempt's draws
                    elif hasattr(plain, "attempt"):
                        plain.attempt = 1  # type: ignore[union-attr]
            else:
                self.inflight = {step.index}
                result = await self.settle(sampler, step, None)
            if not periodic:
                observe(result.record, result.correct, result.matched)
                rows.append(result.out)
                done += 1
                if result.failed is not None:
                    self.ending = ("failed", result.failed)
                    step = None
                    break
                if result.out.status == "completed":
                    last = result.answer
                step = result.next_step
            self.steps = done
            if perf_counter() - self.last_handoff >= interval or not plain_ok:
                if ra >= 0:
                    runs.append((ra, rb, rr, rs))
                    ra = rb = -2
                self.inflight = set() if step is None else {step.index}
                self.handoff(runs, rows, mixed=mixed)
                runs, rows, mixed = [], [], []
                await self.backpressure()
            reason = self.over_budget()
            if reason is not None and step is not None:
                self.ending = ("stopped", reason)
                break
            if periodic:
                await asyncio.sleep(0)
        self.steps = done
        self.last_answer = last
        if ra >= 0:
            runs.append((ra, rb, rr, rs))
        self.inflight = set()
        self.handoff(runs, rows, inflight=[], mixed=mixed)
        if step is None and self.ending is None:
            self.ending = ("completed", "")

    def mixed_row(
        self, index: int, record: StepRecord
    ) -> tuple[int, int, int, int, str, str | None]:
        """A simulated step whose winner is the truth but whose votes were not unanimous
        (or had red flags): its input and answer stay implicit, its votes are kept, by
        the simulated sampler's own names for its answers ("=" the truth, "#i" its i-th
        wrong answer, `domain.wrong_answers(step, n)[i]`), which the read API turns back
        into display keys: describing Hanoi states here would cost more than the step."""
        flags = to_json(record.red_flags) if record.red_flags else None
        sampler = self.sampler
        same = getattr(sampler, "wrong_choices", None) == self.spec.wrong_choices
        wrong = (getattr(sampler, "_wrong", None) or ()) if same else ()
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
                votes = to_json({describe(self.domain, k): v for k, v in record.votes.items()})
                return (index, record.rounds, record.samples, record.valid, votes, flags)
        votes = "{" + ",".join(parts) + "}"
        return (index, record.rounds, record.samples, record.valid, votes, flags)

    # --- concurrent: independent steps ---------------------------------------------------

    async def concurrent(self, remaining: Iterator[Step]) -> None:
        """Vote the remaining steps, `spec.workers` at a time, in blocks of the tree's
        order (workers take the next step as they free up)."""
        control = self.control
        observe = self.monitor.observe
        budget = self.budgets.steps
        started = 0
        exhausted = False

        async def worker(sampler: Any) -> None:
            nonlocal started, exhausted
            while control.request is None and self.ending is None:
                step = next(remaining, None)
                if step is None:
                    exhausted = True
                    return
                if budget is not None and started >= budget:
                    self.ending = ("stopped", f"budget: {budget:,} steps done in this session")
                    return
                reason = self.over_budget(steps=False)
                if reason is not None:
                    self.ending = ("stopped", reason)
                    return
                started += 1
                self.inflight.add(step.index)
                try:
                    result = await self.settle(sampler, step, None)
                finally:
                    self.inflight.discard(step.index)
                observe(result.record, result.correct, result.matched)
                self.rows.append(result.out)
                self.steps += 1
                if result.failed is not None and self.ending is None:
                    self.ending = ("failed", result.failed)
                if perf_counter() - self.last_handoff >= self.spec.commit_interval:
                    rows, self.rows = self.rows, []
                    self.handoff([], rows)
                    await self.backpressure()
                if self.simulated:
                    await asyncio.sleep(0)

        workers = [worker(self.worker_sampler()) for _ in range(self.spec.workers)]
        await asyncio.gather(*workers)
        rows, self.rows = self.rows, []
        self.handoff([], rows, inflight=[])
        if exhausted and self.ending is None and control.request is None and not self.inflight:
            self.ending = ("completed", "")

    def worker_sampler(self) -> Any:
        base = self.sampler.inner if isinstance(self.sampler, _Watch) else self.sampler
        fork = getattr(base, "fork", None)
        inner = fork() if callable(fork) else base
        return _Watch(inner, guard=not self.simulated, keep=self.keep)


# --- resume points -------------------------------------------------------------------------


def _resume_sequential(session: _Session, reader: RunStore) -> Step | None:
    """The first step not in the store, rebuilt from the last one: its stored (or
    canonical) input, and its answer (the truth for a simulated run, else the stored
    winner), handed on by the domain."""
    domain = session.domain
    conn = reader.conn
    top, count = conn.execute("SELECT max(step), count(*) FROM steps").fetchone()
    if top is None:
        return next(iter(domain.steps()), None)
    if count != top + 1:
        raise RunError(
            f"run {session.run_id}: the store holds {count:,} steps up to step {top + 1:,}: "
            "a sequential run must be a prefix"
        )
    inp, ans, status, correct = conn.execute(
        "SELECT input, answer, status, correct FROM steps WHERE step = ?", (top,)
    ).fetchone()
    last = (
        load_step(domain, top, json.loads(inp)) if inp is not None else canonical_step(domain, top)
    )
    if session.simulated or status == "skipped" or (ans is None and correct == 1):
        answer = domain.truth(last)
    else:
        answer = load_answer(domain, json.loads(ans))
    session.last_answer = answer
    return domain.next_step(last, answer)


def _remaining(domain: Any, reader: RunStore) -> Iterator[Step]:
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
            for (s,) in chunk:
                yield s
            after = chunk[-1][0]

    done = done_steps()
    nxt = next(done, None)
    for step in domain.steps():
        while nxt is not None and nxt < step.index:
            nxt = next(done, None)
        if nxt == step.index:
            continue
        yield step


# --- execute ---------------------------------------------------------------------------------


def _runner_record(started: float) -> dict[str, Any]:
    me = psutil.Process()
    return {"pid": os.getpid(), "created": me.create_time(), "started": started}


async def _local_sampler(stack: AsyncExitStack, spec: RunSpec, domain: Any) -> tuple[Any, Health]:
    """Start the slot's model server (as `nanobot run` does) and sample from it."""
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    slot = spec.slot
    workbench = Workbench(load_config()[0], only_slots=(slot,))  # type: ignore[arg-type]
    await stack.enter_async_context(workbench)
    client = workbench.client(slot)  # type: ignore[arg-type]
    model = workbench.slots[slot].display_name  # type: ignore[index]
    sampler = LLMSampler(
        client, domain, name=f"local {slot}: {model}", token_cap=spec.vote.token_cap,
        seed=spec.seed,
    )  # fmt: skip
    return sampler, client_health(client)


def simulated_sampler(spec: RunSpec, domain: Any, meta: dict[str, Any]) -> Any:
    """The resumable simulated sampler for a run: one stream per segment where steps go
    in order over canonical inputs (the cheapest), else counter-based draws."""
    in_order = not getattr(domain, "independent_steps", False)
    canonical = bool((meta.get("storage") or {}).get("canonical_inputs"))
    cls = StreamSimulatedSampler if in_order and canonical else SeededSimulatedSampler
    return cls(domain, spec.p, spec.wrong_choices, spec.seed, red_flag_rate=spec.red_flag_rate)


def client_health(client: Any) -> Health:
    async def ready() -> bool:
        return await client.health() == "ok"

    return ready


async def execute(
    run_id: str,
    *,
    monitor: VoteMonitor | None = None,
    stop: asyncio.Event | None = None,
    control: Control | None = None,
    sampler: Any = None,
    health: Health | None = None,
    budgets: Budgets | None = None,
    install_signals: bool = False,
) -> RunStatus:
    """Run (or resume) `run_id` to its end or until stopped; return its status.

    `monitor` is fed every step (the vote counter pane); `stop` (or `control.stop()`)
    ends the run cleanly after the current step with status "stopped", `control.pause()`
    / `control.cancel()` with "paused" / "cancelled". `sampler` replaces the spec's real
    sampler (its `health()` tells when a dead server is back); `budgets` replace the
    spec's for this session. RunLocked if another runner has the run, RunError if it
    cannot run (cancelled, unreadable)."""
    rid = store_mod.resolve_run_id(run_id)
    lock = RunLock(rid)
    lock.acquire()
    try:
        return await _execute_locked(
            rid, lock, monitor, stop, control, sampler, health, budgets, install_signals
        )
    finally:
        lock.release()


async def _execute_locked(
    rid: str,
    lock: RunLock,
    monitor: VoteMonitor | None,
    stop: asyncio.Event | None,
    control: Control | None,
    sampler: Any,
    health: Health | None,
    budgets: Budgets | None,
    install_signals: bool,
) -> RunStatus:
    reader = RunStore.open(rid, readonly=True)
    try:
        meta = reader.meta()
        spec = reader.spec
        state = meta.get("status")
        if state == "completed":
            return reader.status()
        if state == "cancelled":
            raise RunError(f"run {rid} was cancelled; it cannot be resumed")
        clear_request(rid)
        domain = spec.build_domain()
        control = control or Control(rid)
        control.run_id = rid
        loop = asyncio.get_running_loop()
        if install_signals:
            control.install(loop)
        watchers: list[asyncio.Task[Any]] = []
        if stop is not None:

            async def watch_stop() -> None:
                await stop.wait()
                control.stop("stopped")

            watchers.append(asyncio.create_task(watch_stop()))
        writer = StoreWriter(rid)
        try:
            async with AsyncExitStack() as stack:
                if sampler is None:
                    if spec.simulated:
                        sampler = simulated_sampler(spec, domain, meta)
                    else:
                        sampler, health = await _local_sampler(stack, spec, domain)
                if not getattr(sampler, "simulated", False) and health is None:
                    client = getattr(sampler, "client", None)
                    if client is not None:
                        health = client_health(client)
                return await _run_session(
                    rid, spec, domain, sampler, writer, reader, meta, monitor, control,
                    budgets or spec.budgets, health,
                )  # fmt: skip
        finally:
            for task in watchers:
                task.cancel()
            if install_signals:
                control.uninstall(loop)
            writer.close()
    finally:
        reader.close()


async def _run_session(
    rid: str,
    spec: RunSpec,
    domain: Any,
    sampler: Any,
    writer: StoreWriter,
    reader: RunStore,
    meta: dict[str, Any],
    monitor: VoteMonitor | None,
    control: Control,
    budgets: Budgets,
    health: Health | None,
) -> RunStatus:
    simulated = bool(getattr(sampler, "simulated", False))
    keep = spec.keeps_samples
    if not simulated or keep:
        sampler = _Watch(sampler, guard=not simulated, keep=keep)
    mon = monitor if monitor is not None else VoteMonitor()
    session = _Session(
        rid, spec, domain, sampler, writer, reader, mon, control, budgets, health, meta
    )
    # A failed step (an escalated run) is voted again: its row goes first.
    failed = [r[0] for r in reader.conn.execute("SELECT step FROM steps WHERE status = 'failed'")]
    started = time.time()
    sessions = int(meta.get("sessions") or 0) + 1
    writer.submit(Batch(deletes=failed))
    await asyncio.to_thread(
        writer.flush,
        status="running",
        status_reason=f"session {sessions}" + (" (resumed)" if sessions > 1 else ""),
        runner=_runner_record(started),
        sessions=sessions,
        sampler_name=sampler.name,
    )
    totals = writer.totals
    mon.begin(
        domain.name, sampler.name, simulated, spec.vote.k, session.total,
        getattr(domain, "describe", None),
    )  # fmt: skip
    mon.steps_done = int(totals["steps_done"])
    mon.errors = int(totals["errors"])
    mon.started -= session.elapsed_before  # rate and ETA over the run's whole active time
    beat = asyncio.create_task(session.heartbeat())
    status, reason = "failed", "the runner stopped unexpectedly"
    # The store writer gives the GIL back for every SQLite call and must win it back
    # from this loop each time: at the default 5 ms switch interval it falls behind
    # (measured, 18 disks: 1.32x the in-memory run's time, against 1.20x at 1 ms).
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
    try:
        if session.independent:
            await session.concurrent(_remaining(domain, reader))
        else:
            first = _resume_sequential(session, reader)
            replay = getattr(getattr(sampler, "inner", sampler), "replay", None)
            if first is not None and replay is not None:
                cfg = spec.vote
                await replay(
                    first.index,
                    lambda i: canonical_step(domain, i),
                    lambda s, step: vote(s, step, cfg),
                )
            await session.sequential(first)
        if session.ending is not None:
            status, reason = session.ending
        elif control.request is not None:
            status = {"pause": "paused", "cancel": "cancelled"}.get(control.request, "stopped")
            reason = control.reason or status
        else:
            status, reason = "stopped", "stopped"
    except _Failed as exc:
        status, reason = "failed", str(exc)
    except _Stopped:
        status = {"pause": "paused", "cancel": "cancelled"}.get(control.request or "", "stopped")
        reason = control.reason or status
    except asyncio.CancelledError:
        status = {"pause": "paused", "cancel": "cancelled"}.get(control.request or "", "stopped")
        reason = control.reason or "the runner's task was cancelled; resumable"
        raise
    except StoreError as exc:
        status, reason = "failed", str(exc)
        raise
    except Exception as exc:
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        sys.setswitchinterval(switch)
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        solved = None
        if status == "completed":
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(writer.flush, 60.0)  # the totals count every step
            errors = int(writer.totals["errors"])
            if session.independent:
                solved = errors == 0
            else:
                solved = bool(domain.is_solved(None, session.last_answer))
                if simulated:
                    solved = solved and errors == 0
            reason = "solved" if solved else f"finished with {errors:,} errors"
        mon.finish(bool(solved), None if status == "completed" else reason)
        with contextlib.suppress(StoreError):
            await asyncio.to_thread(
                writer.flush,
                60.0,
                status=status,
                status_reason=reason,
                solved=solved,
                server_waits=int(meta.get("server_waits") or 0) + session.server_waits,
                inflight=[],
                elapsed_s=session.elapsed(),
                runner={**_runner_record(started), "ended": time.time()},
            )
    return reader.status()


# --- the summary `nanobot run --json` prints -----------------------------------------------


def summary(status: RunStatus, monitor: VoteMonitor | None = None) -> dict[str, Any]:
    """The run as runner.RunSummary's JSON names it (steps, errors, solved, k, votes and
    red flags per step, ...), from the store's totals, plus id and status."""
    done = status.steps_done or 0
    hist = status.votes.get("histogram") or {}
    valid = sum(int(k) * v for k, v in hist.items())
    solved = status.status == "completed" and status.reason == "solved"
    out: dict[str, Any] = {
        "run_id": status.run_id,
        "status": status.status,
        "reason": status.reason,
        "domain": status.domain,
        "sampler": status.sampler,
        "simulated": status.simulated,
        "k": status.k,
        "steps": done,
        "total_steps": status.steps_total,
        "errors": status.errors,
        "undecided": status.errors_by_reason.get("undecided", 0),
        "errors_by_reason": status.errors_by_reason,
        "solved": solved,
        "samples": status.samples,
        "valid_samples": valid,
        "completion_tokens": status.tokens,
        "votes_per_step": hist,
        "rounds_histogram": status.votes.get("rounds") or {},
        "red_flags": status.red_flags,
        "mean_votes_per_step": valid / done if done else 0.0,
        "mean_samples_per_step": status.samples / done if done else 0.0,
        "mean_red_flags_per_step": {r: n / done for r, n in status.red_flags.items()}
        if done
        else {},
        "retried": status.retried,
        "seconds": status.elapsed_s,
        "steps_per_s": done / status.elapsed_s if status.elapsed_s else 0.0,
        "stopped": None if status.status == "completed" else status.reason,
    }
    if monitor is not None:
        out["p_estimate"] = monitor.p_estimate
        out["undecided_after_round"] = monitor.undecided_after_round()
    return out
