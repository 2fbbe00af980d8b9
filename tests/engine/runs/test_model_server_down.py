"""A round in which every request failed, on a durable run with a model sampler: a local
(OpenAI-compatible) server is waited for through its /health and the run goes on; a cloud
client has no server of ours to wait for (the Anthropic API has no /health), so the run
fails at once, resumably. Both clients are fakes, answering here: no network."""

from __future__ import annotations

import json
import sqlite3

import pytest

from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.errors import ServerUnavailable
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage
from nanobot_tui.engine.runs import session
from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from tests.fakes import FakeSamplerClient

DOWN = "fake: connection lost mid-stream"


def wordcase_spec(words: int, workers: int = 1) -> RunSpec:
    """Word case with k = 1: one request a step."""
    return RunSpec(
        domain="wordcase",
        params={"words": words, "seed": 2},
        sampler="local:rlm",
        vote=VoteConfig(k=1),
        concurrency=workers,
        label=f"wordcase{words}",
    )


def answer(request: ChatRequest) -> ChatResult:
    """The right answer to a word-case request: its word (the last one asked), upper case."""
    word = str(request.messages[-1]["content"]).split()[-1]
    choice = Choice(f"answer = {word.upper()}", finish_reason="stop")
    return ChatResult([choice], Usage(completion_tokens=4), None, 0.0, "fake", {})


class FakeCloudClient(FakeSamplerClient):
    """A FAKE cloud client: the `ChatClient` protocol and nothing more (no /health, as
    the Anthropic API has none). It fails the requests numbered in `failing` as a
    provider's outage does once the transport's own retries are spent."""

    model = "fake-cloud-model"
    base_url = "https://fake-cloud.invalid"

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.requests = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        if self.requests in self.failing:
            raise ServerUnavailable(DOWN)
        return answer(request)


class FakeLocalServerClient(LLMClient):
    """A FAKE local server's client (chat and /health answered here, never sent): its
    server dies at request `dies_at` and answers /health again from the second probe on
    (the ServerManager has restarted it)."""

    def __init__(self, dies_at: int) -> None:
        super().__init__("http://127.0.0.1:9", model="fake-local-model")
        self.dies_at = dies_at
        self.requests = 0
        self.probes = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        if self.requests == self.dies_at or (self.requests > self.dies_at and self.probes < 2):
            raise ServerUnavailable(DOWN)
        return answer(request)

    async def health(self) -> str:
        self.probes += 1
        return "ok" if self.probes >= 2 else "unreachable"


def sampler(client: ChatClient, spec: RunSpec) -> LLMSampler:
    return LLMSampler(client, spec.build_domain(), name="local rlm: fake", batch=False)


def server_waits(run_id: str) -> int:
    conn = sqlite3.connect(store_mod.db_path(run_id))
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'server_waits'").fetchone()
    finally:
        conn.close()
    return int(json.loads(row[0]))


async def test_a_dead_local_server_is_waited_for_through_its_health() -> None:
    spec = wordcase_spec(12)
    rid = await start_run(spec)
    fake = FakeLocalServerClient(dies_at=5)
    st = await execute(rid, sampler=sampler(fake, spec))
    assert st.status == "completed" and st.reason == "solved", st.reason
    assert st.steps_done == 12 and st.failed == 0 and st.errors == 0
    assert fake.probes == 2 and server_waits(rid) == 1  # its step voted again once it was back


@pytest.mark.parametrize("workers", [1, 3])
async def test_a_cloud_client_without_health_fails_the_run_resumably(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A runner that waited for a server the client cannot probe would give up after
    # SERVER_WAIT_S with another reason; shortened, that shows here at once.
    monkeypatch.setattr(session, "SERVER_WAIT_S", 1.0)
    spec = wordcase_spec(12, workers)
    rid = await start_run(spec)
    fake = FakeCloudClient(failing={5})
    assert isinstance(fake, ChatClient) and not hasattr(fake, "health")
    st = await execute(rid, sampler=sampler(fake, spec))
    assert st.status == "failed"
    assert st.reason == f"the model server failed ({DOWN}) and there is no way to check it"
    # Every step whose request was answered is in the store; the workers that were voting
    # then finished their steps, and none began another.
    assert st.steps_done == fake.requests - 1 and 5 <= fake.requests <= 5 + workers - 1
    st = await execute(rid, sampler=sampler(FakeCloudClient(failing=set()), spec))
    assert st.status == "completed" and st.reason == "solved" and st.steps_done == 12
