"""A client for Anthropic's Messages API with the interface of LLMClient.

Callers speak OpenAI-shaped messages and tools, as they do to every local server. On the
way out they become Messages API requests: system messages join the top-level `system`,
tool results become `tool_result` blocks of one user turn, assistant tool calls become
`tool_use` blocks, tools get an `input_schema`. Answers and SSE streams come back as the
same ChatResult and stream events LLMClient gives, so a slot can change provider without
its callers knowing.

    async with AnthropicClient(api_key, "claude-sonnet-4-5") as claude:
        result = await claude.chat(ChatRequest(messages, tools=tools, max_tokens=512))
        print(result.content, result.tool_calls, result.usage.completion_tokens)

Errors are `engine.llm.errors`: `RequestError` (4xx, with Anthropic's own message),
`ServerError` (5xx and 529 overloaded, after the retries), `ServerUnavailable` (cannot
connect, or the connection dropped), `LLMTimeout`, `ResponseFormatError`. Connection
failures, 429, 5xx and 529 are retried by the shared `Transport`, longer when the
server's retry-after says so.

What the Messages API lacks is said, not faked: `n` > 1 is refused with a RequestError
that names `n` (LLMSampler then draws one sample per request), and so is
`response_format`; `seed` is ignored (there is none); temperatures above 1 are cut to 1
(Anthropic's range is 0-1, OpenAI's 0-2).

The API key travels only in the x-api-key header: it is masked in `repr(client)` and
scrubbed from every error message.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from nanobot_tui.engine.llm.errors import LLMError, RequestError, ServerError
from nanobot_tui.engine.llm.request import ChatRequest, Message
from nanobot_tui.engine.llm.results import (
    ChatResult,
    Choice,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from nanobot_tui.engine.llm.streaming import assemble
from nanobot_tui.engine.llm.transport import ApiRules, Secret, Transport, TransportClient

__all__ = ["API_VERSION", "DEFAULT_BASE_URL", "DEFAULT_MAX_TOKENS", "AnthropicClient"]

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
# The Messages API requires max_tokens; OpenAI-style callers may leave it out.
DEFAULT_MAX_TOKENS = 1024


_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}

_TOOL_CHOICES: dict[str, dict[str, str]] = {
    "auto": {"type": "auto"},
    "required": {"type": "any"},
    "any": {"type": "any"},
    "none": {"type": "none"},
}


class _Refused(ValueError):
    """A request the Messages API cannot express; becomes a RequestError with the URL."""


# --------------------------------------------------------------------------- requests


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system, turns): OpenAI-shaped messages as the Messages API wants them.

    Consecutive messages of one role merge into one turn, so the tool results that answer
    one assistant turn arrive together, ahead of any text, as the API requires.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("system", "developer"):
            text = "".join(b["text"] for b in _blocks(msg.get("content")) if b["type"] == "text")
            if text:
                system.append(text)
            continue
        if role == "user":
            turn_role, blocks = "user", _blocks(msg.get("content"))
        elif role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(msg)
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(msg, i)]
        else:
            raise _Refused(f"message {i}: role {role!r} has no Messages API equivalent")
        if not blocks:  # the API refuses empty turns and empty text blocks
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")  # stable
    return "\n\n".join(system), turns


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Message content (a string, OpenAI content parts, or None) as Anthropic blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part["image_url"]))
        else:  # already an Anthropic block (image, document, ...): passed on as it is
            blocks.append(dict(part))
    return blocks


def _image_block(image_url: Any) -> dict[str, Any]:
    url = image_url["url"] if isinstance(image_url, Mapping) else str(image_url)
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(msg: Message) -> list[dict[str, Any]]:
    blocks = _blocks(msg.get("content"))
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": _tool_input(fn.get("arguments")),
            }
        )
    return blocks


def _tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the JSON object `tool_use.input` must be."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments is None or not str(arguments).strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    # A broken call from another model earlier in the conversation: keep what it wrote,
    # since the tool result after it explains the error.
    return {"unparsed_arguments": str(arguments)}


def _tool_result(msg: Message, i: int) -> dict[str, Any]:
    call_id = msg.get("tool_call_id")
    if not call_id:
        raise _Refused(f"message {i}: a tool message needs tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = _blocks(content)
    return block


def to_anthropic_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI function tools as Anthropic tools; tools already in Anthropic shape pass."""
    out = []
    for tool in tools:
        fn = tool.get("function")
        if fn is None:
            out.append(dict(tool))
            continue
        entry: dict[str, Any] = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def to_anthropic_tool_choice(choice: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise _Refused(f"tool_choice {choice!r} is not one of {', '.join(_TOOL_CHOICES)}")
        return dict(_TOOL_CHOICES[choice])
    if choice.get("type") == "function":
        return {"type": "tool", "name": choice["function"]["name"]}
    return dict(choice)  # already Anthropic's shape


# --------------------------------------------------------------------------- answers


def _finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return _FINISH_REASONS.get(stop_reason, stop_reason)


def _usage(data: Mapping[str, Any]) -> Usage:
    """Anthropic counts cached prompt tokens apart from input_tokens; OpenAI's
    prompt_tokens includes them, so they are added back."""
    cache_read = data.get("cache_read_input_tokens") or 0
    prompt = (
        (data.get("input_tokens") or 0)
        + cache_read
        + (data.get("cache_creation_input_tokens") or 0)
    )
    completion = data.get("output_tokens") or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cache_read,
    )


def _arguments(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _result(data: Mapping[str, Any], latency: float) -> ChatResult:
    """A (non-streamed) Message as a ChatResult."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for block in data["content"]:
        kind = block.get("type")
        if kind == "text":
            text.append(block["text"])
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(ToolCall(block["id"], block["name"], _arguments(block.get("input", {}))))
    choice = Choice(
        content="".join(text),
        tool_calls=calls,
        finish_reason=_finish_reason(data.get("stop_reason")),
        reasoning="".join(reasoning),
    )
    return ChatResult(
        choices=[choice],
        usage=_usage(data.get("usage") or {}),
        timings=None,
        latency_s=latency,
        model=data.get("model") or "",
        raw=dict(data),
    )


class _EventAssembler:
    """Assembles one streamed message out of its content-block events."""

    unit = "event"

    def __init__(self, url: str, transport: Transport) -> None:
        self._url = url
        self._transport = transport
        self._text: list[str] = []
        self._reasoning: list[str] = []
        # content block index -> [call index, id, name, argument pieces]
        self._calls: dict[int, list[Any]] = {}
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._model = ""
        self._last: dict[str, Any] = {}
        self._done = False

    def fold(self, name: str, data: str) -> list[StreamEvent] | None:
        if name != "data":
            return []
        event = self._transport.stream_object(self._url, data, "stream event")
        self._last = event
        kind = event.get("type")
        if kind == "error":
            raise self._transport.stream_error(self._url, data, typed=True)
        if kind == "message_stop":
            self._done = True
            return None
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            message = event["message"]
            self._model = message.get("model") or ""
            self._usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            self._stop_reason = event.get("delta", {}).get("stop_reason") or self._stop_reason
            # Counts here are cumulative; fields left null keep message_start's value.
            usage = event.get("usage") or {}
            self._usage.update({k: v for k, v in usage.items() if v is not None})
        # ping, content_block_stop, signature deltas and event types added later: nothing.
        return []

    def _delta(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        delta = event["delta"]
        kind = delta.get("type")
        if kind == "text_delta":
            self._text.append(delta["text"])
            return [TextDelta(delta["text"])]
        if kind == "input_json_delta":
            call = self._calls[event["index"]]
            piece = delta.get("partial_json") or ""
            call[3].append(piece)
            return [ToolCallDelta(call_index=call[0], id=None, name=None, arguments=piece)]
        if kind == "thinking_delta":
            self._reasoning.append(delta["thinking"])
            return [ReasoningDelta(delta["thinking"])]
        return []

    def _block_start(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        block = event["content_block"]
        if block.get("type") == "tool_use":
            # The API sends input {} here and the JSON in deltas; a proxy may send it whole.
            first = _arguments(block["input"]) if block.get("input") else ""
            call = [len(self._calls), block["id"], block["name"], [first] if first else []]
            self._calls[event["index"]] = call
            return [ToolCallDelta(call[0], id=call[1], name=call[2], arguments=first)]
        if block.get("type") == "text" and block.get("text"):
            self._text.append(block["text"])
            return [TextDelta(block["text"])]
        return []

    @property
    def complete(self) -> bool:
        """Only message_stop ends a message: a stream cut before it is incomplete."""
        return self._done

    def result(self, latency_s: float, ttft_s: float | None) -> ChatResult:
        calls = [
            ToolCall(id=cid, name=name, arguments="".join(parts) or "{}")
            for _, cid, name, parts in sorted(self._calls.values(), key=lambda c: c[0])
        ]
        choice = Choice(
            content="".join(self._text),
            tool_calls=calls,
            finish_reason=_finish_reason(self._stop_reason),
            reasoning="".join(self._reasoning),
        )
        return ChatResult(
            choices=[choice],
            usage=_usage(self._usage),
            timings=None,
            latency_s=latency_s,
            model=self._model,
            raw=self._last,
            ttft_s=ttft_s,
        )


# --------------------------------------------------------------------------- client


def _status_error(url: str, status: int, message: str, error_type: str, attempts: int) -> LLMError:
    cls = ServerError if status >= 500 else RequestError
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    return cls.answered(url, status, message, error_type, tries)


_RULES = ApiRules(
    _status_error,
    # Rate limits, server faults and 529 "overloaded" pass; other 4xx are the request's fault.
    retry_statuses=frozenset({429, 500, 502, 503, 504, 529}),
    honour_retry_after=True,
)


class AnthropicClient(TransportClient):
    """Async client for Anthropic's Messages API (`POST {base_url}/v1/messages`).

    `base_url` is the API root ("https://api.anthropic.com", with or without "/v1").
    """

    def __init__(
        self,
        api_key: str,
        model: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("AnthropicClient needs an API key")
        base = base_url.rstrip("/").removesuffix("/v1")
        self.base_url = base
        self.model = model
        self.default_max_tokens = default_max_tokens
        self._url = base + "/v1/messages"
        headers = {
            "x-api-key": api_key,
            "anthropic-version": API_VERSION,
            "accept": "application/json",
        }
        self._transport = Transport(
            _RULES,
            base,
            headers,
            Secret(api_key),
            timeout=timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AnthropicClient(base_url={self.base_url!r}, model={self.model!r}, api_key='***')"

    # ------------------------------------------------------------------ chat

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        """The Messages API body; a RequestError, before anything is sent, for what the
        API cannot express or would refuse (it would answer 400)."""
        try:
            payload = self._translated(request)
        except (_Refused, KeyError, TypeError, AttributeError) as exc:
            message = (
                str(exc)
                if isinstance(exc, _Refused)
                else f"a message or tool is not in OpenAI's shape ({type(exc).__name__}: {exc})"
            )
            raise RequestError(
                f"{self._url}: {message}",
                status=400,
                server_message=message,
                error_type="invalid_request_error",
            ) from None
        if request.temperature is not None:
            payload["temperature"] = min(request.temperature, 1.0)
        stop = request.stop
        if stop is not None:
            payload["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if request.extra:
            payload.update(request.extra)
        return payload

    def _translated(self, request: ChatRequest) -> dict[str, Any]:
        if request.n is not None and request.n > 1:
            raise _Refused(f"n = {request.n}: the Messages API gives one answer per request")
        if request.response_format is not None:
            raise _Refused("response_format: the Messages API has no constrained output")
        system, turns = to_anthropic_messages(request.messages)
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": turns,
        }
        if system:
            payload["system"] = system
        if request.tools:
            payload["tools"] = to_anthropic_tools(request.tools)
            # Without tools there is nothing to choose (and the API refuses the field).
            if request.tool_choice is not None:
                payload["tool_choice"] = to_anthropic_tool_choice(request.tool_choice)
        return payload

    async def chat(self, request: ChatRequest) -> ChatResult:
        """One non-streamed message."""
        payload = self._payload(request)
        start = time.perf_counter()
        response = await self._transport.send("POST", self._url, payload)
        latency = time.perf_counter() - start
        data = self._transport.decode(response, self._url)
        try:
            return _result(data, latency)
        except (KeyError, TypeError, AttributeError) as exc:
            raise self._transport.shape_error(self._url, exc, response) from None

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream a message: TextDelta / ReasoningDelta / ToolCallDelta as they arrive,
        then one StreamDone with the whole answer, the tool calls and the usage.

        Stop early with `contextlib.aclosing(...)` or by cancelling: the connection closes.
        """
        payload = self._payload(request)
        payload["stream"] = True
        fields = self._transport.sse(self._url, payload)
        assembler = _EventAssembler(self._url, self._transport)
        async with aclosing(assemble(fields, assembler, self._url)) as events:
            async for event in events:
                yield event
