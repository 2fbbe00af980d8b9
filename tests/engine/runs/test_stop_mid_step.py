"""A run on a real model stops when asked, in the middle of a step: a pause, cancel or
stop request, a signal and the time budget each cancel the votes in flight (their
requests with them) and leave the step pending, so that a resume votes it again; and a
step whose samples are all red-flagged ends after a bounded number of rounds, saying so.

The slow server is a FAKE (`BlockingClient`: every request waits until it is
cancelled, as a server decoding a long answer does), except in the last test, where the
real embedded server decodes answers of a token cap's length."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Callable

import pytest

from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage
from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.control import Control
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.session import RED_ROUNDS
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import RunStatus
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from tests.engine.runs.runner_hold import HANG_GUARD_S
from tests.engine.runs.test_model_server_down import answer, wordcase_spec


class BlockingClient(LLMClient):
    """A FAKE slow local server (never contacted): each request waits until it is
    cancelled; `started` is set by the first, `cancelled` counts those cancelled. With
    `answers` set, it answers at once instead (a server back to normal)."""

    def __init__(self, answers: bool = False) -> None:
        super().__init__("http://127.0.0.1:9", model="fake-slow-model")
        self.answers = answers
        self.started = asyncio.Event()
        self.cancelled = 0
        self.requests = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        if self.answers:
            return answer(request)
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")

    async def health(self) -> str:
        return "ok"


def sampler(client: LLMClient, spec: RunSpec, **kw: object) -> LLMSampler:
    return LLMSampler(client, spec.build_domain(), name="local rlm: fake", batch=False, **kw)  # type: ignore[arg-type]


def stored_steps(run_id: str) -> int:
    conn = sqlite3.connect(store_mod.db_path(run_id))
    try:
        return int(conn.execute("SELECT count(*) FROM steps").fetchone()[0])
    finally:
        conn.close()


async def run_until_blocked(
    spec: RunSpec, ask: Callable[[Control], None], *, signals: bool = False
) -> tuple[str, RunStatus, BlockingClient]:
    """Start a run on the blocking fake, `ask` once its requests are in flight."""
    rid = await start_run(spec)
    fake = BlockingClient()
    control = Control()
    task = asyncio.create_task(
        execute(rid, sampler=sampler(fake, spec), control=control, install_signals=signals)
    )
    await asyncio.wait_for(fake.started.wait(), HANG_GUARD_S)
    ask(control)
    st = await asyncio.wait_for(task, HANG_GUARD_S)
    return rid, st, fake


@pytest.mark.parametrize(
    ("ask", "status", "reason"),
    [
        (lambda c: c.stop("stopped by the test"), "stopped", "stopped by the test"),
        (lambda c: c.pause(), "paused", "paused"),
        (lambda c: c.cancel(), "cancelled", "cancelled"),
    ],
)
@pytest.mark.parametrize("workers", [1, 3])
async def test_a_request_stops_a_step_in_flight(
    ask: Callable[[Control], None], status: str, reason: str, workers: int
) -> None:
    spec = wordcase_spec(6, workers)
    rid, st, fake = await run_until_blocked(spec, ask)
    assert (st.status, st.reason) == (status, reason)
    assert st.steps_done == 0 and stored_steps(rid) == 0  # the steps stay pending
    assert fake.cancelled == fake.requests  # every request in flight was cancelled


@pytest.mark.parametrize(
    ("sig", "reason"),
    [
        (signal.SIGTERM, "stopped by SIGTERM; resumable"),
        (signal.SIGINT, "interrupted (SIGINT); resumable"),
    ],
)
async def test_a_signal_stops_a_step_in_flight_and_a_resume_redoes_it(
    sig: signal.Signals, reason: str
) -> None:
    spec = wordcase_spec(4)
    rid, st, fake = await run_until_blocked(spec, lambda _: os.kill(os.getpid(), sig), signals=True)
    assert (st.status, st.reason, st.steps_done) == ("stopped", reason, 0)
    assert fake.cancelled == 1
    back = BlockingClient(answers=True)
    st = await asyncio.wait_for(execute(rid, sampler=sampler(back, spec)), HANG_GUARD_S)
    assert (st.status, st.reason, st.steps_done) == ("completed", "solved", 4)
    assert back.requests == 4  # the interrupted step was voted again, once


@pytest.mark.parametrize("workers", [1, 3])
async def test_the_time_budget_stops_a_step_in_flight(workers: int) -> None:
    spec = wordcase_spec(6, workers)
    rid = await start_run(spec)
    fake = BlockingClient()
    st = await asyncio.wait_for(
        execute(rid, sampler=sampler(fake, spec), budgets=Budgets(seconds=0.3)), HANG_GUARD_S
    )
    assert (st.status, st.reason) == ("stopped", "budget: 0.3 s of wall time used in this session")
    assert st.steps_done == 0 and stored_steps(rid) == 0
    assert fake.requests >= 1 and fake.cancelled == fake.requests


class GarbageClient(BlockingClient):
    """A FAKE server whose model never answers in the domain's format."""

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        choice = Choice("I am not sure what you mean.", finish_reason="stop")
        return ChatResult([choice], Usage(completion_tokens=8), None, 0.0, "fake", {})


async def test_a_step_with_only_red_flagged_samples_ends_after_bounded_rounds() -> None:
    spec = wordcase_spec(3)
    rid = await start_run(spec)
    fake = GarbageClient()
    st = await asyncio.wait_for(execute(rid, sampler=sampler(fake, spec)), HANG_GUARD_S)
    assert st.status == "failed"
    assert st.errors_by_reason == {"red_flagged": 1}
    # Three attempts (two retries), RED_ROUNDS rounds each; the third asks k + 1 = 2
    # samples a round.
    assert fake.requests == RED_ROUNDS * (1 + 1 + 2)
    assert st.reason == (
        "step 1: red_flagged: all 10 samples of 5 rounds were red-flagged (parse 10) "
        "(after 3 attempts)"
    )


def hanoi_spec() -> RunSpec:
    return RunSpec(
        domain="hanoi",
        params={"disks": 2},
        sampler="local:rlm",
        vote=VoteConfig(k=1),
        label="hanoi2",
    )


class Watched(LLMClient):
    """The real embedded server's client, telling when its first request went out."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.started = asyncio.Event()

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.started.set()
        return await super().chat(request)


async def test_a_real_model_run_stops_mid_step(llama_server: str) -> None:
    # ignore_eos: every answer decodes the whole token cap (750 + 1 tokens), seconds of
    # work on a CPU, and is red-flagged too_long, so no step can end by itself soon.
    spec = hanoi_spec()
    rid = await start_run(spec)
    async with Watched(llama_server) as client:
        smp = sampler(client, spec, extra={"ignore_eos": True})
        control = Control()
        task = asyncio.create_task(execute(rid, sampler=smp, control=control))
        await asyncio.wait_for(client.started.wait(), HANG_GUARD_S)
        control.stop("stopped by the test")
        st = await asyncio.wait_for(task, HANG_GUARD_S)
    assert (st.status, st.reason, st.steps_done) == ("stopped", "stopped by the test", 0)
    assert stored_steps(rid) == 0
