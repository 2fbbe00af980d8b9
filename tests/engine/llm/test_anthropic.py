"""AnthropicClient: OpenAI-shaped requests translated to the Messages API and back,
streaming, tool calls, errors and retries, against FakeAnthropicServer (the real API is
out of reach from tests)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nanobot_tui.engine.llm.anthropic import (
    AnthropicClient,
    to_anthropic_messages,
    to_anthropic_tool_choice,
    to_anthropic_tools,
)
from nanobot_tui.engine.llm.errors import LLMError, RequestError, ServerError, ServerUnavailable
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import StreamDone, TextDelta, ToolCallDelta
from nanobot_tui.engine.voting.samplers.model import _N_FIELD
from tests.conftest import free_port
from tests.fake_cloud import (
    PLAIN_ANSWER,
    QUESTION,
    TOOL_INPUT,
    TOOL_RESULT,
    WEATHER,
    FakeAnthropicServer,
    after_tool_call,
)

KEY = "sk-ant-test-secret-0123456789"
MODEL = "claude-fake-1"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.fixture
def fake() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(api_key=KEY, model=MODEL) as server:
        yield server


def client_for(fake: FakeAnthropicServer, **kwargs: Any) -> AnthropicClient:
    return AnthropicClient(KEY, MODEL, base_url=fake.base_url, **kwargs)


# --- translation --------------------------------------------------------------------------


def test_messages_translate_to_the_messages_api_shape() -> None:
    messages = [
        {"role": "system", "content": "Rule one."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "c2", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks."}]},
        {"role": "system", "content": "Rule two."},
    ]  # fmt: skip
    system, turns = to_anthropic_messages(messages)
    assert system == "Rule one.\n\nRule two."
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "c2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [  # both results in one turn, ahead of the text that followed them
                {"type": "tool_result", "tool_use_id": "c1", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "noon"},
                {"type": "text", "text": "Thanks."},
            ],
        },
    ]


def test_tool_results_lead_their_turn_even_after_a_user_note() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
        {"role": "user", "content": "(the user pressed stop)"},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    _, turns = to_anthropic_messages(messages)
    assert [b["type"] for b in turns[2]["content"]] == ["tool_result", "text"]


def test_broken_arguments_from_another_model_still_give_an_object() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{oops"}}],
        },
    ]
    _, turns = to_anthropic_messages(messages)
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"unparsed_arguments": "{oops"}}
    ]


def test_tools_and_tool_choice_translate() -> None:
    assert to_anthropic_tools([WEATHER]) == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    bare = {"type": "function", "function": {"name": "now"}}
    assert to_anthropic_tools([bare]) == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert to_anthropic_tool_choice("auto") == {"type": "auto"}
    assert to_anthropic_tool_choice("required") == {"type": "any"}
    assert to_anthropic_tool_choice("none") == {"type": "none"}
    assert to_anthropic_tool_choice({"type": "function", "function": {"name": "now"}}) == {
        "type": "tool",
        "name": "now",
    }


# --- chat and stream round trips ---------------------------------------------------------


async def test_chat_tool_call_round_trip(fake: FakeAnthropicServer) -> None:
    async with client_for(fake) as claude:
        first = await claude.chat(
            ChatRequest(QUESTION, tools=[WEATHER], tool_choice="auto", temperature=0.2)
        )
        assert first.finish_reason == "tool_calls"
        assert first.content == "Let me check."
        [call] = first.tool_calls
        assert call.name == "get_weather"
        assert call.parsed_arguments() == TOOL_INPUT
        assert first.model == MODEL
        assert first.usage.prompt_tokens > 0
        assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

        second = await claude.chat(
            ChatRequest(after_tool_call(call, first.content), tools=[WEATHER])
        )
    assert second.finish_reason == "stop"
    assert second.content == f"The tool said: {TOOL_RESULT}"
    assert second.tool_calls == []

    sent = fake.received[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body["model"] == MODEL
    assert sent.body["system"] == "You are terse."
    assert sent.body["max_tokens"] == 1024  # required there; the default fills it in
    assert sent.body["temperature"] == 0.2
    assert sent.body["tool_choice"] == {"type": "auto"}
    assert sent.body["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
    assert all(m["role"] in ("user", "assistant") for m in sent.body["messages"])

    turns = fake.received[1].body["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": TOOL_INPUT},
        ],
    }
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": TOOL_RESULT}],
    }


async def test_stream_tool_call_round_trip(fake: FakeAnthropicServer) -> None:
    events = []
    async with client_for(fake) as claude:
        async for event in claude.stream_chat(
            ChatRequest(QUESTION, tools=[WEATHER], max_tokens=200)
        ):
            events.append(event)
        done = events[-1]
        assert isinstance(done, StreamDone)
        result = done.result
        texts = [e.text for e in events if isinstance(e, TextDelta)]
        assert len(texts) > 1 and "".join(texts) == result.content == "Let me check."
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert deltas[0].name == "get_weather" and deltas[0].id
        assert len(deltas) > 2  # the arguments arrive in pieces
        assert "".join(d.arguments for d in deltas) == result.tool_calls[0].arguments
        assert result.finish_reason == "tool_calls"
        [call] = result.tool_calls
        assert call.parsed_arguments() == TOOL_INPUT
        assert result.usage.completion_tokens > 1  # message_delta's count, not the start's
        assert result.usage.prompt_tokens > 0
        assert result.ttft_s is not None and result.ttft_s <= result.latency_s
        assert result.raw == {"type": "message_stop"}

        answer = ""
        async for event in claude.stream_chat(ChatRequest(after_tool_call(call), tools=[WEATHER])):
            if isinstance(event, StreamDone):
                assert event.result.finish_reason == "stop"
                assert event.result.content == answer
            elif isinstance(event, TextDelta):
                answer += event.text
    assert answer == f"The tool said: {TOOL_RESULT}"
    assert fake.received[0].body["stream"] is True
    assert fake.received[0].body["max_tokens"] == 200


async def test_plain_chat_stop_sequences_and_temperature_range(fake: FakeAnthropicServer) -> None:
    async with client_for(fake) as claude:
        result = await claude.chat(
            ChatRequest(
                [{"role": "user", "content": "hi"}], temperature=1.6, stop="END", max_tokens=64
            )
        )
    assert result.content == PLAIN_ANSWER
    assert result.finish_reason == "stop"
    body = fake.received[0].body
    assert "system" not in body and "tools" not in body
    assert body["temperature"] == 1.0  # Anthropic's range ends at 1
    assert body["stop_sequences"] == ["END"]


async def test_n_above_one_is_refused_in_words_the_sampler_understands(
    fake: FakeAnthropicServer,
) -> None:
    async with client_for(fake) as claude:
        with pytest.raises(RequestError) as info:
            await claude.chat(ChatRequest(QUESTION, n=4))
    assert info.value.status == 400
    assert _N_FIELD.search(info.value.server_message)  # LLMSampler falls back to n = 1
    assert fake.received == []  # refused before sending


async def test_a_response_format_is_refused_not_ignored(fake: FakeAnthropicServer) -> None:
    schema = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    async with client_for(fake) as claude:
        with pytest.raises(RequestError, match="response_format") as info:
            await claude.chat(ChatRequest(QUESTION, response_format=schema))
        with pytest.raises(RequestError, match="response_format"):
            async for _ in claude.stream_chat(ChatRequest(QUESTION, response_format=schema)):
                pass
    assert info.value.status == 400
    assert fake.received == []


# --- errors -------------------------------------------------------------------------------


async def test_bad_key_is_a_request_error_with_the_server_message(
    fake: FakeAnthropicServer,
) -> None:
    async with AnthropicClient("sk-ant-wrong", MODEL, base_url=fake.base_url) as claude:
        with pytest.raises(RequestError) as info:
            await claude.chat(ChatRequest(QUESTION))
        with pytest.raises(RequestError) as stream_info:
            async for _ in claude.stream_chat(ChatRequest(QUESTION)):
                pass
    for exc in (info.value, stream_info.value):
        assert exc.status == 401
        assert exc.error_type == "authentication_error"
        assert str(exc) == f"{fake.base_url}/v1/messages: HTTP 401: invalid x-api-key"
    assert len(fake.received) == 2  # 4xx is not retried


async def test_overloaded_529_is_retried_then_a_server_error(fake: FakeAnthropicServer) -> None:
    fake.fail_next(529, OVERLOADED, times=3)
    async with client_for(fake, retries=2) as claude:
        started = time.perf_counter()
        with pytest.raises(ServerError) as info:
            await claude.chat(ChatRequest(QUESTION))
        waited = time.perf_counter() - started
    assert len(fake.received) == 3
    assert waited >= 0.7  # backoff 0.25 s, then 0.5 s
    assert info.value.status == 529
    assert info.value.error_type == "overloaded_error"
    assert str(info.value).endswith("HTTP 529: Overloaded (after 3 attempts)")

    fake.received.clear()
    fake.fail_next(529, OVERLOADED, times=1, **{"retry-after": "0"})
    async with client_for(fake, retries=2) as claude:
        result = await claude.chat(ChatRequest(QUESTION))
    assert result.content == PLAIN_ANSWER
    assert len(fake.received) == 2


async def test_unreachable_server_is_server_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AnthropicClient(KEY, MODEL, base_url=url, retries=1) as claude:
        with pytest.raises(ServerUnavailable, match="cannot connect after 2 attempt"):
            await claude.chat(ChatRequest(QUESTION))


async def test_unknown_model_is_a_request_error(fake: FakeAnthropicServer) -> None:
    async with AnthropicClient(KEY, "claude-nope", base_url=fake.base_url) as claude:
        with pytest.raises(RequestError, match="HTTP 404: model: claude-nope"):
            await claude.chat(ChatRequest(QUESTION))


async def test_broken_streams_raise_llm_errors(fake: FakeAnthropicServer) -> None:
    async with client_for(fake) as claude:
        fake.break_stream = "error"
        with pytest.raises(ServerError, match=r"error mid-stream \(overloaded_error\): Overloaded"):
            async for _ in claude.stream_chat(ChatRequest(QUESTION)):
                pass
        fake.break_stream = "cut"
        got: list[Any] = []
        with pytest.raises(ServerUnavailable):
            async for event in claude.stream_chat(ChatRequest(QUESTION)):
                got.append(event)
        assert not any(isinstance(e, StreamDone) for e in got)


async def test_the_key_never_shows_in_errors_reprs_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every failure path, against a careless server that repeats the key it got."""
    caplog.set_level(logging.DEBUG)
    errors: list[LLMError] = []
    with FakeAnthropicServer(api_key="another-key", echo_key_in_errors=True) as fake:
        async with AnthropicClient(KEY, MODEL, base_url=fake.base_url, retries=1) as claude:
            assert KEY not in repr(claude) and "***" in repr(claude)
            assert KEY not in repr(vars(claude))
            with pytest.raises(RequestError) as info:
                await claude.chat(ChatRequest(QUESTION))
            errors.append(info.value)
            with pytest.raises(RequestError) as info:
                async for _ in claude.stream_chat(ChatRequest(QUESTION)):
                    pass
            errors.append(info.value)
            fake.fail_next(529, {"type": "error", "error": {"message": f"busy for {KEY}"}}, 2)
            with pytest.raises(ServerError) as server_info:
                await claude.chat(ChatRequest(QUESTION))
            errors.append(server_info.value)
    unreachable = AnthropicClient(KEY, MODEL, base_url=f"http://127.0.0.1:{free_port()}")
    async with unreachable:
        with pytest.raises(ServerUnavailable) as gone:
            await unreachable.chat(ChatRequest(QUESTION))
        errors.append(gone.value)
    assert "invalid x-api-key: ***" in str(errors[0])  # the server did send it back
    assert "busy for ***" in str(errors[2])
    for exc in errors:
        for text in (str(exc), repr(exc), repr(vars(exc)), str(exc.__cause__), repr(exc.__cause__)):
            assert KEY not in text
    assert caplog.records  # the retries were logged ...
    assert KEY not in caplog.text  # ... without the key
