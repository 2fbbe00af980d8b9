"""A turn's limits: a message too long for the window (against the real embedded server,
whose slots are smaller than the window the agent is told about, so the estimate is wrong
the way it was in use), a server that keeps refusing (a scripted FAKE), and what a cancel
or a failure leaves in the conversation."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nanobot_tui.engine.agent.loop import (
    CANCELLED,
    FAILED,
    AnswerDelta,
    MessageStored,
    ToolCalls,
    context_overflow,
)
from nanobot_tui.engine.agent.sessions import SessionStore
from nanobot_tui.engine.agent.tool_protocol import ConstrainedTools
from nanobot_tui.engine.llm.errors import RequestError, ServerUnavailable, StatusError
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, StreamDone, TextDelta, Usage
from tests.conftest import until
from tests.engine.agent.test_agent_loop import agent_on, collect, done_of, echo_registry

WORDS = "dragon castle river wander silver ancient forest whisper lantern harbor".split()


def long_message(words: int = 3000) -> str:
    rng = random.Random(12)
    return " ".join(rng.choice(WORDS) + ("." if i % 12 == 11 else "") for i in range(words))


@pytest.mark.timeout(400)  # three model turns: slow only when other jobs share the cores
async def test_a_message_too_long_for_the_window_never_breaks_the_session(
    llama_server: str,
) -> None:
    # The fixture's server has 4 slots of 2048 tokens; the agent is told 8192, so its
    # estimate says the long message fits and the server refuses it, as in use.
    text = long_message()
    async with LLMClient(llama_server) as client:
        agent = agent_on(
            client, echo_registry(), context_size=8192, summarizer=client, summary_tokens=48
        )
        agent.max_tokens = 16
        long_events = await collect(agent, text)
        long_turn = done_of(long_events)
        assert long_turn.stopped is None and long_turn.answer
        # Too long for the window: the model reads it as a volume (test_agent_long_message).
        assert any(isinstance(e, MessageStored) for e in long_events)
        assert long_turn.last_prompt_tokens + agent.max_tokens <= 2048
        after = done_of(await collect(agent, "hi"))
        assert after.stopped is None and after.answer
        # A new agent on the same session (a later `nanobot agent --session`) knows
        # nothing of the window, and still gets answers.
        agent.session.close()
        again = agent_on(
            client,
            echo_registry(),
            name="test2",
            context_size=8192,
            summarizer=client,
            summary_tokens=48,
        )
        again.session = SessionStore().open("test")
        again.max_tokens = 16
        assert done_of(await collect(again, "hi again")).stopped is None
    # The whole message is kept in the session file.
    assert any(m["content"] == text for m in again.session.all_messages())


class RefusingModel:
    """FAKE server that refuses every request as too long for its window."""

    def __init__(self) -> None:
        self.requests = 0

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Any]:
        self.requests += 1
        raise RequestError.answered(
            "http://fake",
            400,
            "request (9265 tokens) exceeds the available context size (8192 tokens)",
            "exceed_context_size_error",
        )
        yield  # pragma: no cover

    async def chat(self, request: ChatRequest) -> Any:
        async for _ in self.stream_chat(request):
            pass


async def test_a_server_that_keeps_refusing_gets_a_bounded_number_of_tries_and_one_line() -> None:
    model = RefusingModel()
    agent = agent_on(model, echo_registry(), context_size=8192)
    done = done_of(await collect(agent, "hi"))
    assert done.stopped == "context" and model.requests <= 5
    assert done.answer.startswith("(Cannot ask the model:") and "\n" not in done.answer


def test_context_refusals_are_read_from_llama_cpp_and_openai_wording() -> None:
    def err(message: str, status: int = 400) -> StatusError:
        return RequestError.answered("http://x", status, message, "")

    assert context_overflow(
        err("request (9265 tokens) exceeds the available context size (8192 tokens)")
    ) == (9265, 8192)
    assert context_overflow(
        err(
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9265 tokens."
        )
    ) == (9265, 8192)
    assert context_overflow(err("the request exceeds the available context size")) == (
        None,
        None,
    )
    assert context_overflow(err("model not found", 404)) is None


class PartialModel:
    """FAKE model: streams `shown`, then waits forever (for a cancel) or, with `fail`,
    drops the connection; later requests answer "ok". Records each request's messages."""

    def __init__(self, shown: str, *, fail: bool = False) -> None:
        self.shown = shown
        self.fail = fail
        self.requests: list[list[dict[str, Any]]] = []
        self.streaming = asyncio.Event()

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Any]:
        self.requests.append([dict(m) for m in request.messages])
        if len(self.requests) > 1:
            yield TextDelta("ok")
            yield StreamDone(
                ChatResult(
                    choices=[Choice(content="ok", finish_reason="stop")],
                    usage=Usage(prompt_tokens=10, completion_tokens=1, total_tokens=11),
                    timings=None,
                    latency_s=0.0,
                    model="fake",
                    raw={},
                )
            )
            return
        yield TextDelta(self.shown)
        self.streaming.set()
        if self.fail:
            raise ServerUnavailable("http://fake: connection lost (httpx.ReadError)")
        await asyncio.sleep(60)


async def test_a_cancelled_answer_is_kept_for_display_but_not_given_back_to_the_model() -> None:
    model = PartialModel("Once upon a time, a dragon named Ember")
    agent = agent_on(model, echo_registry())
    task = asyncio.create_task(collect(agent, "tell me a story"))
    await until(model.streaming.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert agent.session.records()[-1]["partial"] == "Once upon a time, a dragon named Ember"
    await collect(agent, "go on")
    sent = " ".join(str(m.get("content")) for m in model.requests[-1])
    assert "dragon named Ember" not in sent and CANCELLED in sent
    roles = [m["role"] for m in agent.session.messages()]
    assert roles == ["user", "assistant", "user", "assistant"]


async def test_an_answer_cut_by_a_failure_leaves_the_turns_alternating() -> None:
    model = PartialModel("Half an answer", fail=True)
    agent = agent_on(model, echo_registry())
    with pytest.raises(ServerUnavailable):
        await collect(agent, "question")
    assert agent.session.messages()[-1] == {"role": "assistant", "content": FAILED}
    assert agent.session.records()[-1]["partial"] == "Half an answer"


# --- streaming: what a user can read is shown as it comes ---------------------------------


class ChunkedModel:
    """FAKE model: streams `chunks` one by one; `left` counts those not yet sent."""

    def __init__(self, chunks: list[str]) -> None:
        self.chunks = chunks
        self.left = len(chunks)

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Any]:
        for chunk in self.chunks:
            self.left -= 1
            yield TextDelta(chunk)
        content = "".join(self.chunks)
        yield StreamDone(
            ChatResult(
                choices=[Choice(content=content, finish_reason="stop")],
                usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
                timings=None,
                latency_s=0.0,
                model="fake",
                raw={},
            )
        )


async def first_delta_and_answer(agent: Any, model: ChunkedModel) -> tuple[int, str]:
    """How many chunks were still unsent when the first answer delta came, and the
    text all the deltas showed."""
    left_at_first: int | None = None
    parts: list[str] = []
    async for event in agent.turn("write"):
        if isinstance(event, AnswerDelta):
            left_at_first = model.left if left_at_first is None else left_at_first
            parts.append(event.text)
    assert left_at_first is not None
    return left_at_first, "".join(parts)


@pytest.mark.parametrize(
    "chunks",
    [
        ["[dragon", "_name] was", " a small dragon", " who lived", " in a cave."],
        ["```python\n", "def f():\n", "    return 1\n", "```\n", "That is f."],
        ['{"title": ', '"Ember", ', '"pages": 3}', "\n", "A story as JSON."],
    ],
)
async def test_answers_that_start_like_json_or_a_fence_stream_from_the_start(
    chunks: list[str],
) -> None:
    model = ChunkedModel(chunks)
    agent = agent_on(model, echo_registry())
    left, shown = await first_delta_and_answer(agent, model)
    assert left >= len(chunks) - 2, "the answer was held back"
    assert shown == "".join(chunks)


async def test_a_prompted_call_is_still_held_back_and_run() -> None:
    model = ChunkedModel(['[{"name": "echo", ', '"arguments": {"text": "hi"}}]'])
    agent = agent_on(model, echo_registry())
    events = [e async for e in agent.turn("call it")]
    first_calls = next(i for i, e in enumerate(events) if isinstance(e, ToolCalls))
    assert not any(isinstance(e, AnswerDelta) for e in events[:first_calls])


async def test_a_constrained_answer_streams_its_text() -> None:
    reply = json.dumps({"answer": 'Once upon a time,\n"Ember" flew. \u00e9\U0001f600'})
    model = ChunkedModel([reply[i : i + 5] for i in range(0, len(reply), 5)])
    agent = agent_on(model, echo_registry(), protocol=ConstrainedTools())
    left, shown = await first_delta_and_answer(agent, model)
    assert left > len(model.chunks) // 2
    assert shown == json.loads(reply)["answer"]
