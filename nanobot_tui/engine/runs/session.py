"""One runner session of one run: what it works with, what it has done so far, and how
it settles a step (every attempt, judged, its row written out).

`execute` (durable.py) builds a `Session` with the run's lock held; the schedulers
(scheduling.py) drive it step by step.

Self-healing. An undecided step (or, for a real model, one whose winner hands on an
invalid state) is voted again up to `retries` times with a changed strategy (paraphrased
prompts, then a larger k), then skipped (only where the next input does not depend on
it) or escalated (the run fails with the reason), as the spec says. A real model's
server that dies shows up as a round of samples all red-flagged `error`: the runner waits
until the server answers /health again (the ServerManager restarts it) and votes the step
again, without counting an attempt.

Stopping mid-step. A real model's vote can take minutes (every sample up to a token
cap's worth of decoding): it is awaited through `interruptible`, which cancels it (and
so its requests in flight) as soon as a pause, cancel or stop is asked for or the
session's time budget runs out; the step is then not written, so a resume votes it
again. A real model's vote also ends after `RED_ROUNDS` rounds in a row in which every
sample was red-flagged, and the step's error says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any

from nanobot_tui.engine.runs.control import Control
from nanobot_tui.engine.runs.learning_seam import Outcome, StepMemory
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import (
    SAMPLE_TEXT_MAX,
    AttemptOut,
    Batch,
    RunStore,
    StepOut,
    StoreWriter,
    describe,
    to_json,
)
from nanobot_tui.engine.voting.ahead_by_k import StepRecord, VoteConfig, vote
from nanobot_tui.engine.voting.domains import Domain, Step
from nanobot_tui.engine.voting.runner import VoteMonitor, judge
from nanobot_tui.engine.voting.samples import RED_ERROR, Forking, Retrying, Sample, Sampler

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
SERVER_WAIT_S = 300.0  # how long a run waits for a dead model server to come back
MAX_LAG = 8  # batches the writer may fall behind before the runner waits for it
STOP_POLL_S = 0.1  # how often a real model's vote in flight checks for a stop
CANCEL_WAIT_S = 5.0  # how long a cancelled vote is given to let go of its requests
RED_ROUNDS = 5  # a real model's vote ends after this many rounds with no valid sample

Health = Callable[[], Awaitable[bool]]
PlainRun = tuple[int, int, int, int]  # first step, last step, rounds, samples
MixedStep = tuple[int, int, int, int, str, str | None]  # see Batch.mixed


class ServerDown(Exception):
    """A whole round of samples failed: the model server is gone."""


class Failed(Exception):
    """The run must end as failed, with this reason."""


class Stopped(Exception):
    """A pause, cancel or stop arrived while the runner waited (for a model server)."""


class Watch:
    """Wraps a sampler for one worker: raises ServerDown when a whole round failed (real
    models) and keeps every sample drawn for the step (when samples are kept)."""

    def __init__(self, inner: Sampler, *, guard: bool, keep: bool) -> None:
        self.inner = inner
        self.name = inner.name
        self.simulated = inner.simulated
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


def unwrapped(sampler: Sampler) -> Sampler:
    return sampler.inner if isinstance(sampler, Watch) else sampler


def winner_text(sampler: Sampler, record: StepRecord) -> str | None:
    """The winning reply as the model wrote it (a sample kept by the Watch), if kept."""
    if not isinstance(sampler, Watch):
        return None
    for sample in sampler.drawn:
        if sample.red_flag is None and sample.key == record.winner_key and sample.text:
            return sample.text.strip()
    return None


def red_flagged(record: StepRecord) -> str:
    """The problem of a vote that ended because its samples were all red-flagged."""
    flags = ", ".join(f"{why} {n:,}" for why, n in sorted(record.red_flags.items()))
    if record.valid == 0:
        what = f"all {record.samples:,} samples of {record.rounds:,} rounds were red-flagged"
    else:
        what = f"the last {record.red_rounds:,} rounds drew only red-flagged samples"
    return f"red_flagged: {what} ({flags})"


def cfg_for(cfg: VoteConfig, attempt: int) -> VoteConfig:
    """The changed strategy of a retry: paraphrased prompts from the first round on, and
    from the third attempt a larger margin."""
    if attempt <= 1:
        return cfg
    k = cfg.k + max(attempt - 2, 0)
    return replace(cfg, k=k, paraphrase_after_rounds=0)


@dataclass
class StepResult:
    """One step's outcome after all its attempts."""

    out: StepOut
    record: StepRecord
    correct: bool | None
    matched: int
    next_step: Step | None  # what follows (sequential runs)
    failed: str | None = None  # set: the run must fail with this reason
    answer: Any = None  # the answer handed on


@dataclass
class Session:
    """A runner session: the run it works on (set by `execute`) and its progress."""

    run_id: str
    spec: RunSpec
    domain: Domain
    sampler: Sampler  # a Watch around the real one where samples are kept or guarded
    writer: StoreWriter
    reader: RunStore
    meta: dict[str, Any]  # the run's meta rows as the session began
    monitor: VoteMonitor
    control: Control
    budgets: Budgets
    health: Health | None
    memory: StepMemory | None = None  # learning (see learning_seam.py); None: off
    # --- progress, in this session ---
    steps: int = 0  # steps finished
    tokens: int = 0  # completion tokens
    inflight: set[int] = field(default_factory=set)
    rows: list[StepOut] = field(default_factory=list)  # for the concurrent scheduler
    ending: tuple[str, str] | None = None  # (status, reason) decided by the run
    last_answer: Any = None
    server_waits: int = 0
    reused: int = 0  # steps answered by the memory, without a model call
    right: int = 0  # a real model's valid samples that were the truth ...
    judged: int = 0  # ... of its valid samples on steps whose truth was known
    t0: float = field(default_factory=perf_counter)
    last_handoff: float = field(default_factory=perf_counter)

    def __post_init__(self) -> None:
        storage = self.meta.get("storage") or {}
        self.cfg = self.spec.vote
        if not self.sampler.simulated and self.cfg.max_red_rounds is None:
            self.cfg = replace(self.cfg, max_red_rounds=RED_ROUNDS)
        self.simulated = self.sampler.simulated
        self.canonical = bool(storage.get("canonical_inputs"))
        self.truth_answers = bool(storage.get("truth_answers"))
        self.keep = self.spec.keeps_samples
        self.independent = self.domain.independent_steps
        self.total = self.domain.total_steps()
        self.elapsed_before = float(self.meta.get("elapsed_s") or 0.0)
        # Steps recalled and remembered (a real model's run with learning on); the
        # history is kept at the end either way.
        self.step_memory = self.memory is not None and self.memory.reuses

    # --- bookkeeping -----------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + (perf_counter() - self.t0)

    def handoff(
        self,
        runs: list[PlainRun],
        rows: list[StepOut],
        inflight: list[int] | None = None,
        mixed: list[MixedStep] | None = None,
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

    def stop_asked(self) -> bool:
        """Whether the session must stop now: a pause, cancel or stop was asked for, or
        its time budget ran out (then `ending` says so)."""
        if self.control.request is not None:
            return True
        b = self.budgets
        if b.seconds is not None and perf_counter() - self.t0 >= b.seconds:
            if self.ending is None:
                self.ending = ("stopped", self.over_budget(steps=False) or "budget")
            return True
        return False

    async def interruptible(self, work: Awaitable[StepRecord]) -> StepRecord:
        """Await a real model's vote, or cancel it (its requests in flight with it) and
        raise Stopped as soon as `stop_asked`: the step stays pending."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=STOP_POLL_S)
                if done:
                    return task.result()
                if self.stop_asked():
                    raise Stopped
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_WAIT_S)

    async def heartbeat(self) -> None:
        """Prove the runner alive (and show what it is on) while steps are slow."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if perf_counter() - self.last_handoff >= HEARTBEAT_S:
                self.handoff([], [])

    def worker_sampler(self) -> Sampler:
        """A sampler of its own for a concurrent worker (a fork where it has one)."""
        base = unwrapped(self.sampler)
        inner = base.fork() if isinstance(base, Forking) else base
        return Watch(inner, guard=not self.simulated, keep=self.keep)

    # --- one step, all attempts ----------------------------------------------------------

    async def vote_once(self, sampler: Sampler, step: Step, attempt: int) -> StepRecord:
        """One attempt's vote; a dead server is waited for, and the attempt re-voted
        without counting."""
        cfg = cfg_for(self.cfg, attempt)
        inner = unwrapped(sampler)
        if isinstance(inner, Retrying):
            inner.begin_attempt(step, attempt)
        while True:
            if isinstance(sampler, Watch):
                sampler.drawn.clear()
            try:
                if self.simulated:
                    return await vote(sampler, step, cfg)
                return await self.interruptible(vote(sampler, step, cfg))
            except ServerDown as exc:
                self.server_waits += 1
                await self.wait_for_server(str(exc))

    async def wait_for_server(self, why: str) -> None:
        if self.health is None:
            raise Failed(f"the model server failed ({why}) and there is no way to check it")
        deadline = perf_counter() + SERVER_WAIT_S
        await asyncio.sleep(0.25)
        while perf_counter() < deadline:
            if self.stop_asked():
                raise Stopped
            with contextlib.suppress(Exception):
                if await self.health():
                    return
            await asyncio.sleep(0.25)
        raise Failed(f"the model server did not come back within {SERVER_WAIT_S:.0f} s ({why})")

    def hand_on(self, step: Step, record: StepRecord, truth: Any) -> tuple[Any, str | None]:
        """(answer to go on from, problem): the truth for a simulated sampler, else the
        winner, which must hand on a valid state. problem: "reason: message"."""
        if not record.decided:
            most = self.cfg.max_red_rounds
            if most is not None and record.red_rounds >= most:
                return None, red_flagged(record)
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

    async def settle(self, sampler: Sampler, step: Step, record: StepRecord | None) -> StepResult:
        """Every attempt of `step` (record: attempt 1, if voted already) and its row; a
        step the memory knows is answered from it, without a vote."""
        started = perf_counter()
        memory = self.memory if self.step_memory else None
        if record is None and memory is not None:
            reused = await self.recalled(memory, step, started)
            if reused is not None:
                return reused
        retries = self.spec.retry.retries
        earlier: list[AttemptOut] = []
        samples: list[tuple[Any, ...]] = []
        attempt = 1
        while True:
            if record is None:
                record = await self.vote_once(sampler, step, attempt)
            if isinstance(sampler, Watch) and sampler.keep:
                samples += self.sample_rows(step.index, attempt, sampler.drawn)
            truth, correct, matched = judge(self.domain, step, record)
            answer, problem = self.hand_on(step, record, truth)
            if problem is None or attempt > retries:
                break
            earlier.append(self.attempt_out(attempt, record, problem))
            attempt += 1
            record = None
        wall_ms = (perf_counter() - started) * 1000.0
        self.tokens += record.completion_tokens + sum(a.tokens for a in earlier)
        if memory is not None and self.step_memory:
            await self.learn(memory, sampler, step, record, answer, correct, matched, problem)
        failed = None
        if problem is None:
            self.last_answer = answer
            status, error, reason = "completed", None, ("wrong" if correct is False else None)
            following = None if self.independent else self.domain.next_step(step, answer)
        else:
            reason = problem.split(":", 1)[0]
            status, error, following, failed = self.unsettled(step, truth, problem, attempt)
        out = self.step_out(step, record, status, correct, error, reason, attempt, wall_ms)
        out.earlier = earlier
        out.sample_rows = samples
        return StepResult(out, record, correct, matched, following, failed, answer)

    async def recalled(self, memory: StepMemory, step: Step, started: float) -> StepResult | None:
        """`step` answered by the memory (0 attempts, 0 samples), or None: vote it."""
        answer = await self.ask_memory(memory.recall, step)
        if answer is None:
            return None
        domain = self.domain
        key = domain.key(answer)
        record = StepRecord(step.index, True, key, answer, {key: 0}, rounds=0, samples=0)
        truth, correct, matched = judge(domain, step, record)
        answer, problem = self.hand_on(step, record, truth)
        if problem is not None:  # an answer that no longer hands on a valid state
            return None
        self.reused += 1
        self.last_answer = answer
        following = None if self.independent else domain.next_step(step, answer)
        wall_ms = (perf_counter() - started) * 1000.0
        reason = "wrong" if correct is False else None
        out = self.step_out(step, record, "completed", correct, None, reason, 0, wall_ms)
        return StepResult(out, record, correct, matched, following, None, answer)

    async def learn(
        self,
        memory: StepMemory,
        sampler: Sampler,
        step: Step,
        record: StepRecord,
        answer: Any,
        correct: bool | None,
        matched: int,
        problem: str | None,
    ) -> None:
        """What a real model's voted step teaches: p's counts where the truth is known,
        the verdict on the examples its prompt had, and (verified by the truth) its answer
        for a later run."""
        if correct is not None:
            self.right += matched
            self.judged += record.valid
        if problem is not None:
            verdict: Outcome | None = "undecided" if record.decided is False else "wrong"
        else:
            verdict = None if correct is None else ("right" if correct else "wrong")
        if problem is None and correct:
            text = winner_text(sampler, record)
            await self.ask_memory(memory.remember, step, answer, "truth", text)
        await self.ask_memory(memory.judged, step, verdict)

    async def ask_memory(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args)` of the memory in a thread (learned.db is SQLite); an error ends
        the session's recalling and remembering, never the run."""
        try:
            return await asyncio.to_thread(call, *args)
        except Exception as exc:
            if self.step_memory:
                log.warning("run %s: no learned steps for this session: %s", self.run_id, exc)
            self.step_memory = False
            return None

    def unsettled(
        self, step: Step, truth: Any, problem: str, attempts: int
    ) -> tuple[str, str, Step | None, str | None]:
        """(status, error, next step, the run's failure) of a step still undecided (or
        invalid) after its retries: skipped where the next input does not depend on it
        and the spec says skip, else failed."""
        error = f"{problem} (after {attempts} attempt{'s' if attempts > 1 else ''})"
        skippable = self.independent or (self.simulated and truth is not None)
        on_fail = self.spec.retry.on_fail
        if on_fail == "skip" and skippable:
            following = None if self.independent else self.domain.next_step(step, truth)
            return "skipped", error, following, None
        why = "" if on_fail == "escalate" else "; it cannot be skipped: the next step depends on it"
        return "failed", error + why, None, f"step {step.index + 1:,}: {error}{why}"

    # --- rows ------------------------------------------------------------------------------

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
        stored_input = None if self.canonical else to_json(domain.dump_step(step))
        answer = None
        if record.winner_answer is not None and not (self.truth_answers and correct):
            answer = to_json(domain.dump_answer(record.winner_answer))
        return StepOut(
            step=step.index,
            status=status,
            input=stored_input,
            answer=answer,
            votes=self.votes_json(record),
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
        answer = record.winner_answer
        return AttemptOut(
            attempt=attempt,
            status="failed",
            answer=None if answer is None else to_json(self.domain.dump_answer(answer)),
            votes=self.votes_json(record),
            rounds=record.rounds,
            samples=record.samples,
            valid=record.valid,
            red_flags=to_json(record.red_flags) if record.red_flags else None,
            tokens=record.completion_tokens,
            latency_ms=record.latency_s * 1000.0,
            wall_ms=record.wall_s * 1000.0,
            error=problem,
        )

    def votes_json(self, record: StepRecord) -> str:
        """A step's votes by display key, as JSON."""
        return to_json({describe(self.domain, k): n for k, n in record.votes.items()})

    def sample_rows(self, step: int, attempt: int, drawn: list[Sample]) -> list[tuple[Any, ...]]:
        domain = self.domain
        return [
            (step, attempt, i, None if s.key is None else describe(domain, s.key), s.red_flag,
             s.temperature, s.completion_tokens, s.latency_s * 1000.0,
             (s.text or "")[:SAMPLE_TEXT_MAX])
            for i, s in enumerate(drawn)
        ]  # fmt: skip
