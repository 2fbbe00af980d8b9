"""A client for Anthropic's Messages API with the interface of LLMClient.

Callers speak OpenAI-shaped messages and tools, as they do to every local server. On the
way out they become Messages API requests: system messages join the top-level `system`,
tool results become `tool_result` blocks of one user turn, assistant tool calls become
`tool_use` blocks, tools get an `input_schema`. Answers and SSE streams come back as the
same ChatResult and stream events LLMClient gives, so a slot can change provider without
its callers knowing.

    async with AnthropicClient(api_key, "claude-sonnet-4-5") as claude:
        result = await claude.chat(messages, tools=tools, max_tokens=512)
        print(result.content, result.tool_calls, result.usage.completion_tokens)

Errors are llm.py's: `RequestError` (4xx, with Anthropic's own message), `ServerError`
(5xx and 529 overloaded, after the retries), `ServerUnavailable` (cannot connect, or the
connection dropped), `LLMTimeout`, `ResponseFormatError`. Connection failures, 429, 5xx
and 529 are retried with a 0.25 s backoff that doubles (longer when the server's
retry-after says so); a stream is never retried once its response has begun.

What the Messages API lacks is said, not faked: `n` > 1 is refused with a RequestError
that names `n` (LLMSampler then draws one sample per request); `seed` is ignored (there is
none); temperatures above 1 are cut to 1 (Anthropic's range is 0-1, OpenAI's 0-2).

The API key travels only in the x-api-key header: it is masked in `repr(client)` and
scrubbed from every error message this module builds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from nanobot_tui.engine.llm.client import (
    ChatResult,
    Choice,
    LLMError,
    LLMTimeout,
    ReasoningDelta,
    RequestError,
    ResponseFormatError,
    ServerError,
    ServerUnavailable,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    _clip,
    _describe,
    _Secret,
    _server_message,
)

__all__ = ["API_VERSION", "DEFAULT_BASE_URL", "DEFAULT_MAX_TOKENS", "AnthropicClient"]

log = logging.getLogger(__name__)

Message = Mapping[str, Any]

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
# The Messages API requires max_tokens; OpenAI-style callers may leave it out.
DEFAULT_MAX_TOKENS = 1024

_BACKOFF_S = 0.25
_MAX_RETRY_AFTER_S = 30.0
# Rate limits, server faults and 529 "overloaded" pass; other 4xx are the request's fault.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
_MAX_CONNECTIONS = 16

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


class _StreamState:
    """Assembles one streamed message out of its content-block events."""

    __slots__ = ("calls", "model", "reasoning", "stop_reason", "text", "usage")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        # content block index -> [call index, id, name, argument pieces]
        self.calls: dict[int, list[Any]] = {}
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.model = ""

    def events(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        """Fold one SSE event in; the stream events it gives the caller."""
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            dkind = delta.get("type")
            if dkind == "text_delta":
                self.text.append(delta["text"])
                return [TextDelta(delta["text"])]
            if dkind == "input_json_delta":
                call = self.calls[event["index"]]
                piece = delta.get("partial_json") or ""
                call[3].append(piece)
                return [ToolCallDelta(call_index=call[0], id=None, name=None, arguments=piece)]
            if dkind == "thinking_delta":
                self.reasoning.append(delta["thinking"])
                return [ReasoningDelta(delta["thinking"])]
        elif kind == "content_block_start":
            block = event["content_block"]
            if block.get("type") == "tool_use":
                # The API sends input {} here and the JSON in deltas; a proxy may send it whole.
                first = _arguments(block["input"]) if block.get("input") else ""
                call = [len(self.calls), block["id"], block["name"], [first] if first else []]
                self.calls[event["index"]] = call
                return [ToolCallDelta(call[0], id=call[1], name=call[2], arguments=first)]
            if block.get("type") == "text" and block.get("text"):
                self.text.append(block["text"])
                return [TextDelta(block["text"])]
        elif kind == "message_start":
            message = event["message"]
            self.model = message.get("model") or ""
            self.usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            self.stop_reason = event.get("delta", {}).get("stop_reason") or self.stop_reason
            # Counts here are cumulative; fields left null keep message_start's value.
            usage = event.get("usage") or {}
            self.usage.update({k: v for k, v in usage.items() if v is not None})
        # ping, content_block_stop, signature deltas and event types added later: nothing.
        return []

    def result(self, latency: float, ttft: float | None, last: dict[str, Any]) -> ChatResult:
        calls = [
            ToolCall(id=cid, name=name, arguments="".join(parts) or "{}")
            for _, cid, name, parts in sorted(self.calls.values(), key=lambda c: c[0])
        ]
        choice = Choice(
            content="".join(self.text),
            tool_calls=calls,
            finish_reason=_finish_reason(self.stop_reason),
            reasoning="".join(self.reasoning),
        )
        return ChatResult(
            choices=[choice],
            usage=_usage(self.usage),
            timings=None,
            latency_s=latency,
            model=self.model,
            raw=last,
            ttft_s=ttft,
        )


# --------------------------------------------------------------------------- client


class AnthropicClient:
    """Async client for Anthropic's Messages API (`POST {base_url}/v1/messages`).

    `base_url` is the API root ("https://api.anthropic.com", with or without "/v1"). Use
    it as an async context manager or call `close()`.
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
        self.retries = max(0, retries)
        self.default_max_tokens = default_max_tokens
        self._timeout = timeout
        self._key = _Secret(api_key)
        self._url = base + "/v1/messages"
        self._http = httpx.AsyncClient(
            headers={
                "x-api-key": api_key,
                "anthropic-version": API_VERSION,
                "accept": "application/json",
            },
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS
            ),
            transport=transport,
            verify=base.startswith("https://"),  # no SSL context for a plain-http proxy
        )

    def __repr__(self) -> str:
        return f"AnthropicClient(base_url={self.base_url!r}, model={self.model!r}, api_key='***')"

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AnthropicClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ chat

    def _payload(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: str | Mapping[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
        n: int | None,
        stop: str | Sequence[str] | None,
        extra: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        try:
            if n is not None and n > 1:
                raise _Refused(f"n = {n}: the Messages API gives one answer per request")
            system, turns = to_anthropic_messages(messages)
            payload: dict[str, Any] = {
                "model": self.model,
                "max_tokens": max_tokens or self.default_max_tokens,
                "messages": turns,
            }
            if system:
                payload["system"] = system
            if tools:
                payload["tools"] = to_anthropic_tools(tools)
                # Without tools there is nothing to choose (and the API refuses the field).
                if tool_choice is not None:
                    payload["tool_choice"] = to_anthropic_tool_choice(tool_choice)
        except (_Refused, KeyError, TypeError, AttributeError) as exc:
            # Refused here rather than sent: the API would answer 400 to it.
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
        if temperature is not None:
            payload["temperature"] = min(temperature, 1.0)
        if stop is not None:
            payload["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if extra:
            payload.update(extra)
        return payload

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        n: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """One non-streamed message. `extra` is merged into the request body last
        (Messages API fields such as `top_k`, `thinking` or `metadata`)."""
        payload = self._payload(
            messages, tools, tool_choice, temperature, max_tokens, n, stop, extra
        )
        start = time.perf_counter()
        response = await self._send(payload, stream=False)
        latency = time.perf_counter() - start
        try:
            data = json.loads(response.content)
            return _result(data, latency)
        except ValueError as exc:
            raise ResponseFormatError(
                f"{self._url}: malformed JSON from the server ({exc}): "
                f"{self._scrub(_clip(response.text))}"
            ) from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise ResponseFormatError(
                f"{self._url}: unexpected answer shape ({type(exc).__name__}: {exc}): "
                f"{self._scrub(_clip(response.text))}"
            ) from None

    async def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        n: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream a message: TextDelta / ReasoningDelta / ToolCallDelta as they arrive,
        then one StreamDone with the whole answer, the tool calls and the usage.

        Stop early with `contextlib.aclosing(...)` or by cancelling: the connection closes.
        """
        payload = self._payload(
            messages, tools, tool_choice, temperature, max_tokens, n, stop, extra
        )
        payload["stream"] = True
        url = self._url
        start = time.perf_counter()
        response = await self._send(payload, stream=True)
        state = _StreamState()
        last: dict[str, Any] = {}
        ttft: float | None = None
        finished = False
        try:
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):  # event: names, blank lines, comments
                        continue
                    data = line[5:].strip()
                    try:
                        event = json.loads(data)
                    except ValueError as exc:
                        raise ResponseFormatError(
                            f"{url}: malformed JSON in stream ({exc}): {self._scrub(_clip(data))}"
                        ) from None
                    if not isinstance(event, dict):
                        raise ResponseFormatError(
                            f"{url}: stream event is not a JSON object: {self._scrub(_clip(data))}"
                        )
                    last = event
                    kind = event.get("type")
                    if kind == "error":
                        raise self._stream_error(data.encode())
                    if kind == "message_stop":
                        finished = True
                        break
                    for out in state.events(event):
                        if ttft is None and not isinstance(out, ToolCallDelta):
                            ttft = time.perf_counter() - start
                        yield out
            except (KeyError, AttributeError, TypeError) as exc:
                raise ResponseFormatError(
                    f"{url}: unexpected stream event shape ({type(exc).__name__}: {exc})"
                ) from None
            except httpx.TimeoutException as exc:
                raise LLMTimeout(
                    f"{url}: no data for {self._timeout:g} s mid-stream ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                raise ServerUnavailable(
                    f"{url}: connection lost mid-stream: {_describe(exc)}"
                ) from exc
        finally:
            await response.aclose()
        if not finished:
            raise ServerUnavailable(f"{url}: stream ended before the answer was complete")
        yield StreamDone(state.result(time.perf_counter() - start, ttft, last))

    # ------------------------------------------------------------------ transport

    async def _send(self, payload: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST with bounded retries; raise an LLMError for any failure. The returned
        response has status < 400."""
        url = self._url
        delay = _BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            try:
                request = self._http.build_request("POST", url, json=payload)
                response = await self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt <= self.retries:
                    log.debug("POST %s: %s; retry in %.2f s", url, _describe(exc), delay)
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                raise ServerUnavailable(
                    f"{url}: cannot connect after {attempt} attempt(s): {_describe(exc)}"
                ) from exc
            except httpx.TimeoutException as exc:
                raise LLMTimeout(
                    f"{url}: no answer within {self._timeout:g} s ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                raise ServerUnavailable(f"{url}: connection failed: {_describe(exc)}") from exc

            status = response.status_code
            if status < 400:
                return response
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            if status in _RETRY_STATUSES and attempt <= self.retries:
                wait = max(delay, _retry_after(response.headers.get("retry-after")))
                log.debug("POST %s: HTTP %d; retry in %.2f s", url, status, wait)
                await asyncio.sleep(wait)
                delay *= 2
                continue
            raise self._status_error(status, body, attempt)

    def _status_error(self, status: int, body: bytes, attempts: int) -> LLMError:
        message, error_type = _server_message(body)
        message = self._scrub(message)
        cls = ServerError if status >= 500 else RequestError
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        return cls(
            f"{self._url}: HTTP {status}: {message}{tries}",
            status=status,
            server_message=message,
            error_type=error_type,
        )

    def _stream_error(self, body: bytes) -> LLMError:
        message, error_type = _server_message(body)
        message = self._scrub(message)
        return ServerError(
            f"{self._url}: error mid-stream ({error_type or 'error'}): {message}",
            status=200,
            server_message=message,
            error_type=error_type,
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._key.value, "***")


def _retry_after(value: str | None) -> float:
    """Seconds the server asked to wait (capped), 0 when it did not say."""
    try:
        return min(max(float(value or 0), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0
