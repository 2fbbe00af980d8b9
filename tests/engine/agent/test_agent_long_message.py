"""A user message too long for the window becomes a volume that the model reads with the
ctx_* tools: the volume holds the whole text, the model is given a short note that names
it, the session keeps the message, and later turns go on. Against the real embedded server
(4 slots of 2048 tokens), and a recording FAKE model for what exactly is sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nanobot_tui.engine.agent.long_message import (
    MessageStored,
    source_path,
    store_message,
    volume_name,
)
from nanobot_tui.engine.agent.sessions import SessionError, SessionStore
from nanobot_tui.engine.context.storage import list_volumes, valid_name
from nanobot_tui.engine.context.volume import Volume
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, StreamDone, TextDelta, Usage
from tests.engine.agent.test_agent_loop import agent_on, collect, done_of, echo_registry
from tests.engine.agent.test_agent_turn_limits import long_message

READERS = {"ctx_slice", "ctx_grep", "ctx_search"}


def sent_text(request: ChatRequest) -> str:
    return json.dumps(request.messages, ensure_ascii=False)


class Recording:
    """The real client, with every request it is given kept (a spy, not a fake)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.requests: list[ChatRequest] = []

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Any]:
        self.requests.append(request)
        async for event in self.client.stream_chat(request):
            yield event

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await self.client.chat(request)


class OkModel:
    """FAKE model: answers "ok" to everything, and keeps each request."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Any]:
        self.requests.append(request)
        yield TextDelta("ok")
        yield StreamDone(
            ChatResult(
                choices=[Choice(content="ok", finish_reason="stop")],
                usage=Usage(prompt_tokens=50, completion_tokens=1, total_tokens=51),
                timings=None,
                latency_s=0.0,
                model="fake",
                raw={},
            )
        )


async def test_the_volume_holds_exactly_the_message(nanobot_home: object) -> None:
    text = "first line: café ☕\n\n  indented\tand tabbed\nlast line, no newline"
    with SessionStore().create("s1") as session:
        index = session.append_message({"role": "user", "content": text})
        stored = await store_message(session, index, text, 1234)
        assert stored == MessageStored(index, "message-s1-0", 1234, 4)
        with Volume.open(stored.volume) as volume:
            assert volume.text(1, volume.n_lines) == text
        assert source_path(session, index).read_text(encoding="utf-8") == text
        # The model is given the note; the session keeps the message.
        (given,) = session.messages()
        assert "about 1,234 tokens in 4 lines" in given["content"]
        assert 'volume "message-s1-0"' in given["content"] and "ctx_grep" in given["content"]
        assert given["content"].endswith(f"It begins:]\n{text}")  # short: shown whole
        assert session.all_messages() == [{"role": "user", "content": text}]
    reopened = SessionStore().open("s1")
    assert reopened.messages() == [given] and reopened.volumes() == ["message-s1-0"]


def test_volume_names_are_valid_for_any_session_name() -> None:
    assert volume_name("2026-11-25-1432-ab12", 7) == "message-2026-11-25-1432-ab12-7"
    long = volume_name("x" * 64, 123456)
    assert len(long) == 64 and valid_name(long) == long and long.endswith("-123456")


async def test_a_message_far_over_the_window_is_sent_as_a_note_with_the_reading_tools(
    nanobot_home: object,
) -> None:
    model = OkModel()
    agent = agent_on(model, echo_registry(), context_size=2048)
    assert not READERS & set(agent.tools.names())  # built without the context tools
    text = long_message(3000)
    events = await collect(agent, text)
    stored = next(e for e in events if isinstance(e, MessageStored))
    assert done_of(events).answer == "ok" and len(model.requests) == 1
    sent = sent_text(model.requests[0])
    assert text[:400] not in sent  # the note (its head 300 characters), not the message
    assert stored.volume in sent and text[:100] in sent  # it names the volume, shows the start
    assert set(agent.tools.names()) >= READERS
    assert {s["function"]["name"] for s in agent.tools.specs()} >= READERS
    assert any(v["name"] == stored.volume for v in list_volumes())
    # A later agent on the same session (a new `nanobot agent --session`) gets the tools too.
    agent.session.close()
    again = agent_on(OkModel(), echo_registry(), name="other", context_size=2048)
    again.session = SessionStore().open("test")
    assert done_of(await collect(again, "hi")).answer == "ok"
    assert set(again.tools.names()) >= READERS


async def test_a_message_that_fits_is_sent_as_it_is(nanobot_home: object) -> None:
    model = OkModel()
    agent = agent_on(model, echo_registry(), context_size=8192)
    text = long_message(300)
    events = await collect(agent, text)
    assert not any(isinstance(e, MessageStored) for e in events)
    assert text in model.requests[0].messages[-1]["content"]
    assert not list_volumes() and not READERS & set(agent.tools.names())


@pytest.mark.timeout(400)  # model calls: slow only when other jobs share the cores
async def test_a_long_message_on_the_real_server_is_read_as_a_volume(llama_server: str) -> None:
    """Far over the window: the agent decides from its estimate before anything is sent."""
    text = long_message(6000)
    async with LLMClient(llama_server) as client:
        spy = Recording(client)
        agent = agent_on(spy, echo_registry(), context_size=2048, summarizer=client)
        agent.max_tokens = 8
        agent.max_rounds = 2
        events = await collect(agent, text)
        done = done_of(events)
        assert done.stopped in (None, "rounds") and done.answer
        stored = next(e for e in events if isinstance(e, MessageStored))
        with Volume.open(stored.volume) as volume:
            assert volume.text(1, volume.n_lines) == text
        assert all(text[:400] not in sent_text(r) for r in spy.requests)
        assert stored.volume in sent_text(spy.requests[0])
        after = done_of(await collect(agent, "hi"))
        assert after.stopped in (None, "rounds") and after.answer
    assert agent.session.all_messages()[0]["content"] == text


@pytest.mark.timeout(400)  # model calls: slow only when other jobs share the cores
async def test_a_message_the_server_refuses_becomes_a_volume(llama_server: str) -> None:
    """The agent is told 8192 tokens; the server's slots hold 2048. The estimate says the
    message fits, the server refuses it, and the refusal teaches the window: the message
    is then stored, and the turn completes without the refusal reaching the user."""
    text = long_message(2100)  # about 5,600 tokens by the estimate, 2,300 by the server's
    async with LLMClient(llama_server) as client:
        spy = Recording(client)
        agent = agent_on(spy, echo_registry(), context_size=8192, summarizer=client)
        agent.max_tokens = 8
        agent.max_rounds = 2
        events = await collect(agent, text)
        done = done_of(events)
        assert done.stopped in (None, "rounds") and done.answer
        assert text in sent_text(spy.requests[0])  # sent whole first: it looked as if it fit
        stored = next(e for e in events if isinstance(e, MessageStored))
        assert text not in sent_text(spy.requests[-1])
        assert stored.volume in sent_text(spy.requests[-1])
        assert agent.context_size == 2048
        assert done_of(await collect(agent, "hi")).answer


def test_a_broken_volume_record_is_skipped_with_a_warning(nanobot_home: object) -> None:
    with SessionStore().create("s2") as session:
        session.append_message({"role": "user", "content": "hello"})
        with pytest.raises(SessionError, match="does not fit"):
            session.append({"type": "volume", "index": 5, "volume": "v", "content": "note"})
        path = session.path
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"type":"volume","index":0,"volume":"v"}\n')
    reopened = SessionStore().open("s2")
    assert reopened.messages() == [{"role": "user", "content": "hello"}]
    assert any("volume record" in w for w in reopened.warnings)
