"""FAKE chat clients for tests that need a model's replies to be exactly what they script
(no model answers on demand like that): each is named a fake wherever it is used."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Self

from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import (
    ChatResult,
    Choice,
    StreamDone,
    StreamEvent,
    TextDelta,
    Usage,
)


class FakeSamplerClient:
    """The base of FAKE chat clients handed to a voting sampler: a subclass says what
    `chat` answers; a sampler never streams, and the client needs no closing."""

    model = "fake"
    base_url = "http://fake"

    async def chat(self, request: ChatRequest) -> ChatResult:
        raise NotImplementedError

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        raise AssertionError("a sampler never streams")
        yield  # an async generator, as the protocol says

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class ScriptedClient:
    """A FAKE chat client (no server, no streaming): replies with the scripted texts in
    turn and records every request."""

    model = "fake"
    base_url = "http://fake"

    def __init__(self, replies: list[str], usage: Usage | None = None) -> None:
        self.replies = replies
        self.usage = usage or Usage(10, 20, 30)
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        text = self.replies.pop(0)
        return ChatResult([Choice(text, finish_reason="stop")], self.usage, None, 0.01, "fake", {})

    def stream_chat(self, request: ChatRequest) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class ScriptedModel:
    """A FAKE model (a streaming ChatClient, as the agent uses one): one scripted reply
    per request, each request kept."""

    model = "fake"
    base_url = "fake://scripted"

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.requests: list[ChatRequest] = []

    async def __aenter__(self) -> ScriptedModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def close(self) -> None:
        pass

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.requests.append(request)
        reply = self.replies.pop(0)
        yield TextDelta(reply)
        yield StreamDone(
            ChatResult(
                choices=[Choice(content=reply, finish_reason="stop")],
                usage=Usage(prompt_tokens=100, completion_tokens=5, total_tokens=105),
                timings=None,
                latency_s=0.001,
                model="fake",
                raw={},
            )
        )

    async def chat(self, request: ChatRequest) -> ChatResult:
        async for event in self.stream_chat(request):
            if isinstance(event, StreamDone):
                return event.result
        raise AssertionError("unreachable")

    def system_texts(self) -> list[str]:
        """Each request's system message."""
        return [str(r.messages[0]["content"]) for r in self.requests]
