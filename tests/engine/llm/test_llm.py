"""LLMClient against a real embedded llama.cpp server (SmolLM2-135M).

Only the error paths that a real server cannot produce on demand (a 401 echoing the key,
503 twice then 200, a timeout, a broken body, streamed tool-call fragments) use
`httpx.MockTransport` fakes, and each such test says so in its name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from nanobot_tui.engine.llm.errors import (
    LLMTimeout,
    RequestError,
    ResponseFormatError,
    ServerError,
    ServerUnavailable,
    ToolCallError,
)
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import (
    ChatResult,
    StreamDone,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from tests.conftest import free_port

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
async def llm(llama_server: str) -> AsyncIterator[LLMClient]:
    async with LLMClient(llama_server) as client:
        yield client


# --------------------------------------------------------------------------- chat


async def test_chat_returns_content_usage_and_timings(llm: LLMClient) -> None:
    result = await llm.chat(ChatRequest(HELLO, max_tokens=24, temperature=0, seed=1))
    assert isinstance(result, ChatResult)
    assert result.content.strip()
    assert result.finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 0
    assert 0 < result.usage.completion_tokens <= 24
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.timings is not None
    assert result.timings.predicted_n == result.usage.completion_tokens
    assert result.timings.predicted_ms > 0
    assert result.timings.predicted_per_second > 0
    assert result.timings.prompt_n + result.timings.cache_n == result.usage.prompt_tokens
    assert result.latency_s > 0
    assert result.model
    assert result.raw["choices"][0]["message"]["content"] == result.content


async def test_max_tokens_is_honoured(llm: LLMClient) -> None:
    result = await llm.chat(
        ChatRequest(
            [{"role": "user", "content": "Write a long essay about the sea."}],
            max_tokens=5,
            temperature=0,
        )
    )
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 5


async def test_seed_and_temperature_zero_are_deterministic(llm: LLMClient) -> None:
    prompt = [{"role": "user", "content": "Tell me a short story about a cat."}]
    a = await llm.chat(ChatRequest(prompt, max_tokens=30, temperature=0, seed=123))
    b = await llm.chat(ChatRequest(prompt, max_tokens=30, temperature=0, seed=123))
    assert a.content == b.content
    # The seed alone fixes sampling too (sequential requests, same server).
    c = await llm.chat(ChatRequest(prompt, max_tokens=30, temperature=0.9, seed=7))
    d = await llm.chat(ChatRequest(prompt, max_tokens=30, temperature=0.9, seed=7))
    assert c.content == d.content


async def test_n_gives_several_choices(llm: LLMClient) -> None:
    # This llama.cpp build honours `n`: one choice per sample, indexed 0..n-1. Its usage
    # and timings then describe one choice only (documented in the module).
    result = await llm.chat(ChatRequest(HELLO, n=2, max_tokens=12, temperature=1.0, seed=3))
    assert [c.index for c in result.choices] == [0, 1]
    assert all(c.content and c.finish_reason for c in result.choices)
    assert result.content == result.choices[0].content
    assert result.usage.completion_tokens <= 12


async def test_json_schema_response_format(llm: LLMClient) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    result = await llm.chat(
        ChatRequest(
            [{"role": "user", "content": "Describe a person named Bob, aged 30, as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
            max_tokens=80,
            temperature=0,
            seed=1,
        )
    )
    assert result.finish_reason == "stop"
    value = json.loads(result.content)
    assert set(value) == {"name", "age"}
    assert isinstance(value["name"], str)
    assert isinstance(value["age"], int) and not isinstance(value["age"], bool)


async def test_tools_are_accepted_and_any_tool_calls_parse(llm: LLMClient) -> None:
    result = await llm.chat(
        ChatRequest(
            [{"role": "user", "content": "What is the weather in Paris? Use the tool."}],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            max_tokens=40,
            temperature=0,
        )
    )
    # The 135M model may or may not call the tool; whatever it returns must be well formed.
    assert result.finish_reason in ("stop", "length", "tool_calls")
    for call in result.tool_calls:
        assert call.name
        try:
            assert isinstance(call.parsed_arguments(), dict)
        except ToolCallError as exc:
            assert call.name in str(exc)


def test_tool_call_bad_json_gives_a_precise_message() -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris" "x": 1}')
    with pytest.raises(ToolCallError) as info:
        call.parsed_arguments()
    message = str(info.value)
    assert "'get_weather'" in message
    assert "not valid JSON" in message
    assert "Expecting ',' delimiter" in message
    assert "line 1 column 18" in message
    assert '{"city": "Paris" "x": 1}' in message
    assert info.value.call is call
    assert "\n" not in message

    with pytest.raises(ToolCallError, match="must be a JSON object, got an array"):
        ToolCall(id="c", name="f", arguments="[1, 2]").parsed_arguments()
    with pytest.raises(ToolCallError, match="not valid JSON"):
        ToolCall(id="c", name="f", arguments='{"city": "Par').parsed_arguments()
    assert ToolCall(id="c", name="f", arguments="").parsed_arguments() == {}
    assert ToolCall(id="c", name="f", arguments='{"a": [1]}').parsed_arguments() == {"a": [1]}


# --------------------------------------------------------------------------- streaming


async def test_stream_deltas_concatenate_to_the_final_content(llm: LLMClient) -> None:
    deltas: list[str] = []
    done: list[StreamDone] = []
    async for event in llm.stream_chat(ChatRequest(HELLO, max_tokens=24, temperature=0, seed=1)):
        if isinstance(event, TextDelta):
            assert not done, "no text after StreamDone"
            deltas.append(event.text)
        elif isinstance(event, StreamDone):
            done.append(event)
    assert len(done) == 1
    result = done[0].result
    assert len(deltas) > 1
    assert "".join(deltas) == result.content
    assert result.finish_reason in ("stop", "length")
    assert result.usage.completion_tokens > 0
    assert result.usage.prompt_tokens > 0
    assert result.timings is not None
    assert result.timings.predicted_n == result.usage.completion_tokens
    assert result.ttft_s is not None and 0 < result.ttft_s <= result.latency_s
    # The stream gives the same text as the non-streamed call with the same settings.
    plain = await llm.chat(ChatRequest(HELLO, max_tokens=24, temperature=0, seed=1))
    assert plain.content == result.content


async def test_stream_with_n_keeps_choices_apart(llm: LLMClient) -> None:
    texts: dict[int, list[str]] = {0: [], 1: []}
    result = None
    async for event in llm.stream_chat(
        ChatRequest(HELLO, n=2, max_tokens=8, temperature=1.0, seed=5, extra={"ignore_eos": True})
    ):
        if isinstance(event, TextDelta):
            texts[event.index].append(event.text)
        elif isinstance(event, StreamDone):
            result = event.result
    assert result is not None
    assert [c.index for c in result.choices] == [0, 1]
    for choice in result.choices:
        assert "".join(texts[choice.index]) == choice.content
    # One usage chunk per choice arrives; their completion tokens are added up.
    assert result.usage.completion_tokens == 16


# ignore_eos: the answer runs to all its tokens unless the server stops generating it.
LONG_TOKENS = 1500
LONG = ChatRequest(
    [{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
    max_tokens=LONG_TOKENS,
    extra={"ignore_eos": True},
)


async def _processing_slots(client: httpx.AsyncClient, base: str) -> int:
    slots = (await client.get(f"{base}/slots")).json()
    return sum(1 for slot in slots if slot["is_processing"])


async def _predicted(client: LLMClient) -> float:
    """Tokens the server has generated so far, cancelled requests' included."""
    return (await client.metrics())["llamacpp:tokens_predicted_total"]


async def _generated_until_idle(client: LLMClient, probe: httpx.AsyncClient, since: float) -> float:
    """Wait until no slot is processing; the tokens generated since `since`. A server
    that went on with the cancelled request goes idle only after all its LONG_TOKENS."""
    while await _processing_slots(probe, client.base_url):
        await asyncio.sleep(0.02)
    return await _predicted(client) - since


async def test_cancelling_a_stream_stops_the_server(llama_server: str, llm: LLMClient) -> None:
    got_text = asyncio.Event()
    texts: list[str] = []

    async def consume() -> None:
        async for event in llm.stream_chat(LONG):
            if isinstance(event, TextDelta):
                texts.append(event.text)
                if len(texts) >= 6:
                    got_text.set()

    async with httpx.AsyncClient(timeout=10) as probe:
        before = await _predicted(llm)
        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_text.wait(), timeout=60)
        assert await _processing_slots(probe, llama_server) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        generated = await _generated_until_idle(llm, probe, before)
    assert len(texts) <= generated < LONG_TOKENS  # stopped, not run to the end

    after = await llm.chat(ChatRequest(HELLO, max_tokens=4, temperature=0))
    assert after.content  # and the server serves the next request


async def test_breaking_out_with_aclosing_stops_the_server(llama_server: str) -> None:
    texts: list[str] = []
    async with LLMClient(llama_server) as client, httpx.AsyncClient(timeout=10) as probe:
        before = await _predicted(client)
        async with contextlib.aclosing(client.stream_chat(LONG)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    texts.append(event.text)
                    if len(texts) >= 6:
                        break
        generated = await _generated_until_idle(client, probe, before)
    assert len(texts) <= generated < LONG_TOKENS


# --------------------------------------------------------------------------- embeddings


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def test_embeddings(embedding_server: str) -> None:
    async with LLMClient(embedding_server) as client:
        result = await client.embeddings(["hello world", "a second, longer sentence", "x"])
        assert len(result.vectors) == 3
        sizes = {len(v) for v in result.vectors}
        assert len(sizes) == 1 and sizes.pop() > 0
        assert all(isinstance(x, float) for x in result.vectors[0])
        assert result.vectors[0] != result.vectors[1]
        assert result.usage.prompt_tokens > 0
        assert result.latency_s > 0
        # Order is kept: a text embedded alone is closest to its own slot in the batch.
        # (Not equal: llama.cpp's batched pooling differs a little, cosine ~0.97.)
        alone = (await client.embeddings(["a second, longer sentence"])).vectors[0]
        similarity = [_cosine(alone, v) for v in result.vectors]
        assert max(similarity) == similarity[1] > 0.9


async def test_embeddings_on_a_chat_server_is_a_request_error(llm: LLMClient) -> None:
    with pytest.raises(RequestError) as info:
        await llm.embeddings(["x"])
    assert info.value.status == 501
    assert "--embeddings" in str(info.value)


# --------------------------------------------------------------------------- health, metrics


async def test_health_models_metrics_slots(llm: LLMClient) -> None:
    assert await llm.health() == "ok"
    models = await llm.models()
    assert len(models) == 1 and models[0].endswith(".gguf")
    await llm.chat(ChatRequest(HELLO, max_tokens=2))
    metrics = await llm.metrics()
    assert metrics["llamacpp:tokens_predicted_total"] >= 2
    assert "llamacpp:prompt_tokens_total" in metrics
    slots = await llm.slots()
    assert len(slots) == 4


async def test_base_url_may_end_in_v1(llama_server: str) -> None:
    async with LLMClient(llama_server + "/v1/") as client:
        assert await client.health() == "ok"
        assert (await client.chat(ChatRequest(HELLO, max_tokens=2))).usage.completion_tokens == 2


async def test_health_on_a_closed_port_is_unreachable() -> None:
    async with LLMClient(f"http://127.0.0.1:{free_port()}") as client:
        assert await client.health() == "unreachable"


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real transport that counts the requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await super().handle_async_request(request)


async def test_closed_port_raises_server_unavailable_after_retries() -> None:
    counting = CountingTransport()
    url = f"http://127.0.0.1:{free_port()}"
    async with LLMClient(url, retries=1, transport=counting) as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.chat(ChatRequest(HELLO))
    assert counting.attempts == 2
    message = str(info.value)
    assert "cannot connect after 2 attempt(s)" in message
    assert "\n" not in message


async def test_bad_request_raises_request_error_without_retry(llama_server: str) -> None:
    counting = CountingTransport()
    async with LLMClient(llama_server, retries=3, transport=counting) as client:
        with pytest.raises(RequestError) as info:
            await client.chat(ChatRequest("not a list"))  # type: ignore[arg-type]
        assert counting.attempts == 1
        assert info.value.status == 400
        assert info.value.server_message == "Expected 'messages' to be an array"
        assert "HTTP 400: Expected 'messages' to be an array" in str(info.value)

        with pytest.raises(RequestError, match="Expected 'messages' to be an array"):
            async for _ in client.stream_chat(ChatRequest("not a list")):  # type: ignore[arg-type]
                pass
        assert counting.attempts == 2  # one more, not retried either


# --------------------------------------------------------------------------- fakes


def _fake_chat_body(content: str = "hi") -> dict[str, Any]:
    return {
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


async def test_api_key_never_leaks_with_a_fake_401_server() -> None:
    key = "sk-secret-test-key-1234567890"
    seen: list[str] = []

    def fake_server(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        seen.append(auth)
        return httpx.Response(
            401, json={"error": {"message": f"invalid key: {auth}", "type": "auth_error"}}
        )

    client = LLMClient(
        "https://fake.example/v1", api_key=key, transport=httpx.MockTransport(fake_server)
    )
    async with client:
        assert key not in repr(client)
        assert "***" in repr(client)
        assert key not in repr(vars(client))
        with pytest.raises(RequestError) as info:
            await client.chat(ChatRequest(HELLO))
        with pytest.raises(RequestError) as stream_info:
            async for _ in client.stream_chat(ChatRequest(HELLO)):
                pass
    assert seen == [f"Bearer {key}", f"Bearer {key}"]  # sent, once each: 4xx is not retried
    for exc in (info.value, stream_info.value):
        assert exc.status == 401
        assert key not in str(exc)
        assert key not in repr(exc)
        assert key not in exc.server_message
        assert "invalid key: Bearer ***" in str(exc)


async def test_fake_server_gets_only_the_fields_a_request_sets() -> None:
    bodies: list[dict[str, Any]] = []

    def fake_server(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=_fake_chat_body())

    request = ChatRequest(HELLO, temperature=0.5, seed=3, extra={"ignore_eos": True})
    transport = httpx.MockTransport(fake_server)
    async with LLMClient("http://fake", model="m", transport=transport) as client:
        await client.chat(request)
        await client.chat(ChatRequest(HELLO))
    assert list(bodies[0].items()) == [
        ("messages", HELLO),
        ("model", "m"),
        ("temperature", 0.5),
        ("seed", 3),
        ("ignore_eos", True),
    ]
    assert bodies[1] == {"messages": HELLO, "model": "m"}


async def test_fake_server_503_twice_then_200_is_retried() -> None:
    calls: list[float] = []

    def fake_server(request: httpx.Request) -> httpx.Response:
        calls.append(time.perf_counter())
        if len(calls) <= 2:
            return httpx.Response(503, json={"error": {"message": "Loading model", "code": 503}})
        return httpx.Response(200, json=_fake_chat_body("ready"))

    async with LLMClient("http://fake", retries=2, transport=httpx.MockTransport(fake_server)) as c:
        result = await c.chat(ChatRequest(HELLO))
    assert result.content == "ready"
    assert result.timings is None  # not llama.cpp: no timings
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.24  # backoff 0.25 s, then 0.5 s
    assert calls[2] - calls[1] >= 0.49

    calls.clear()
    async with LLMClient("http://fake", retries=1, transport=httpx.MockTransport(fake_server)) as c:
        with pytest.raises(ServerUnavailable, match=r"503: Loading model\) after 2 attempt"):
            await c.chat(ChatRequest(HELLO))
    assert len(calls) == 2


async def test_fake_server_loading_health_and_malformed_json() -> None:
    def fake_server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(503, json={"error": {"message": "Loading model"}})
        return httpx.Response(200, content=b'{"choices": [')

    async with LLMClient("http://fake", transport=httpx.MockTransport(fake_server)) as client:
        assert await client.health() == "loading"
        with pytest.raises(ResponseFormatError, match="malformed JSON"):
            await client.chat(ChatRequest(HELLO))


async def test_fake_server_timeout_is_one_clear_line() -> None:
    def fake_server(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with LLMClient(
        "http://fake", timeout=7, transport=httpx.MockTransport(fake_server)
    ) as client:
        with pytest.raises(LLMTimeout) as info:
            await client.chat(ChatRequest(HELLO))
    assert str(info.value) == "http://fake/v1/chat/completions: no answer within 7 s (ReadTimeout)"


async def test_fake_server_streamed_tool_call_fragments_are_assembled() -> None:
    # The OpenAI / llama.cpp delta format: id and name with a call's first fragment, then
    # argument pieces keyed by the call's index; two calls interleaved.
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
        {"choices": [{"index": 0, "delta": {"content": "Checking."}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '{"city": '}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '"Paris"}'}}]}}]},
        {"choices": [{"index": 0, "finish_reason": "tool_calls", "delta": {}}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 12,
                                  "total_tokens": 21}},
    ]  # fmt: skip
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    def fake_server(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        assert sent["stream"] is True
        assert sent["stream_options"] == {"include_usage": True}
        assert sent["tools"] == [WEATHER_TOOL]
        return httpx.Response(
            200, content=body.encode(), headers={"content-type": "text/event-stream"}
        )

    events = []
    async with LLMClient("http://fake", transport=httpx.MockTransport(fake_server)) as client:
        async for event in client.stream_chat(ChatRequest(HELLO, tools=[WEATHER_TOOL])):
            events.append(event)
    assert sum(isinstance(e, ToolCallDelta) for e in events) == 4
    done = events[-1]
    assert isinstance(done, StreamDone)
    result = done.result
    assert result.content == "Checking."
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_b", name="get_time", arguments="{}"),
    ]
    assert result.tool_calls[0].parsed_arguments() == {"city": "Paris"}
    assert result.usage.total_tokens == 21
    assert result.timings is None


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        ('data: {"error": {"message": "context full"}}\n\n', ServerError, "context full"),
        ('error: {"message": "slot crashed"}\n\n', ServerError, "slot crashed"),
        ("data: {not json\n\n", ResponseFormatError, "malformed JSON in stream"),
        ('data: {"choices": ["x"]}\n\n', ResponseFormatError, "unexpected stream chunk"),
        (
            'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n',
            ServerUnavailable,
            "stream ended before the answer was complete",
        ),
    ],
)
async def test_fake_server_broken_streams_raise_llm_errors(
    body: str, error: type[Exception], text: str
) -> None:
    def fake_server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body.encode())

    async with LLMClient("http://fake", transport=httpx.MockTransport(fake_server)) as client:
        with pytest.raises(error, match=text):
            async for _ in client.stream_chat(ChatRequest(HELLO)):
                pass
