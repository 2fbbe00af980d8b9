"""An async client for any OpenAI-compatible endpoint: llama-server, vLLM, a cloud API.

One shared `httpx.AsyncClient` (keep-alive, 64 connections, enough for parallel voting)
carries every request. The hot path is plain `json.loads` plus direct dict access; the
results are small frozen dataclasses.

    async with LLMClient("http://127.0.0.1:8080") as llm:
        result = await llm.chat([{"role": "user", "content": "hi"}], max_tokens=32)
        print(result.content, result.usage.completion_tokens, result.timings)

        async with contextlib.aclosing(llm.stream_chat(messages)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    print(event.text, end="")

Errors are `LLMError` subclasses with one clear line of text each: `ServerUnavailable`
(cannot connect, connection lost, or 503 after the retries), `RequestError` (4xx and 501,
with the server's own message; never retried), `ServerError` (other 5xx), `LLMTimeout`,
`ResponseFormatError` (the server sent something that is not the expected JSON) and
`ToolCallError` (a model's tool-call arguments are not a JSON object). Only connection
failures and 503 are retried, with a 0.25 s backoff that doubles; a stream is never
retried once its response has begun.

The API key travels only in the Authorization header: it is masked in `repr(client)`
and scrubbed from every error message this module builds.

llama.cpp specifics, measured on the embedded runtime:
- `timings` (prompt_n, prompt_ms, predicted_n, predicted_ms, predicted_per_second,
  cache_n, ...) come with every non-streamed answer; in a stream they ride on the last
  chunk (the usage chunk when `stream_options.include_usage` is set, else the chunk with
  the finish_reason). Endpoints that do not send them give `timings=None`.
- `n > 1` is supported: one choice per sample. A non-streamed answer then reports
  usage and timings of one choice only; a stream sends one usage chunk per choice, and
  this client adds their completion tokens up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = [
    "ChatResult",
    "Choice",
    "EmbeddingResult",
    "LLMClient",
    "LLMError",
    "LLMTimeout",
    "ReasoningDelta",
    "RequestError",
    "ResponseFormatError",
    "ServerError",
    "ServerUnavailable",
    "StreamDone",
    "StreamEvent",
    "TextDelta",
    "Timings",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallError",
    "Usage",
]

log = logging.getLogger(__name__)

Message = Mapping[str, Any]

_BACKOFF_S = 0.25
_HEALTH_TIMEOUT_S = 5.0
_MAX_CONNECTIONS = 64


# --------------------------------------------------------------------------- errors


class LLMError(Exception):
    """Base of every error this client raises; `str(exc)` is one readable line."""


class ServerUnavailable(LLMError):
    """The server cannot be reached, dropped the connection, or kept answering 503."""


class LLMTimeout(LLMError):
    """The server took longer than the configured timeout."""


class ResponseFormatError(LLMError):
    """The server answered, but not with the JSON this API promises."""


class _StatusError(LLMError):
    def __init__(self, message: str, *, status: int, server_message: str, error_type: str):
        super().__init__(message)
        self.status = status
        self.server_message = server_message
        self.error_type = error_type


class RequestError(_StatusError):
    """The server rejected the request (4xx, or 501 for an endpoint it does not serve)."""


class ServerError(_StatusError):
    """The server failed on the request (a 5xx other than 501 and 503)."""


class ToolCallError(LLMError, ValueError):
    """A tool call's arguments are not a JSON object; the message is fit to show the model."""

    def __init__(self, message: str, *, call: ToolCall):
        super().__init__(message)
        self.call = call


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON text, exactly as the model wrote it

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; `ToolCallError` says precisely what is wrong if not.

        Empty arguments (a tool without parameters) give `{}`.
        """
        text = self.arguments
        if not text.strip():
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ToolCallError(
                f"tool call {self.name!r}: arguments are not valid JSON: {exc.msg} at line "
                f"{exc.lineno} column {exc.colno} (char {exc.pos}); arguments were: "
                f"{_clip(text)}",
                call=self,
            ) from None
        if not isinstance(value, dict):
            raise ToolCallError(
                f"tool call {self.name!r}: arguments must be a JSON object, got "
                f"{_json_type(value)}; arguments were: {_clip(text)}",
                call=self,
            )
        return value


@dataclass(frozen=True, slots=True)
class Choice:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    index: int = 0
    reasoning: str = ""  # `reasoning_content` of thinking models (Qwen3 and kin)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        if not data:
            return cls()
        details = data.get("prompt_tokens_details") or {}
        prompt = data.get("prompt_tokens") or 0
        completion = data.get("completion_tokens") or 0
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=data.get("total_tokens") or prompt + completion,
            cached_tokens=details.get("cached_tokens") or 0,
        )


@dataclass(frozen=True, slots=True)
class Timings:
    """llama.cpp's own per-request timings (server-side, excluding HTTP)."""

    prompt_n: int = 0
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    predicted_per_second: float = 0.0
    prompt_per_second: float = 0.0
    cache_n: int = 0
    draft_n: int = 0
    draft_n_accepted: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Timings | None:
        if not data:
            return None
        return cls(
            prompt_n=data.get("prompt_n") or 0,
            prompt_ms=data.get("prompt_ms") or 0.0,
            predicted_n=data.get("predicted_n") or 0,
            predicted_ms=data.get("predicted_ms") or 0.0,
            predicted_per_second=data.get("predicted_per_second") or 0.0,
            prompt_per_second=data.get("prompt_per_second") or 0.0,
            cache_n=data.get("cache_n") or 0,
            draft_n=data.get("draft_n") or 0,
            draft_n_accepted=data.get("draft_n_accepted") or 0,
        )


@dataclass(frozen=True, slots=True)
class ChatResult:
    choices: list[Choice]
    usage: Usage
    timings: Timings | None
    latency_s: float  # wall time of the whole call, retries included
    model: str
    raw: dict[str, Any]  # the decoded answer; for a stream, its last chunk
    ttft_s: float | None = None  # streams only: wall time to the first generated text

    @property
    def content(self) -> str:
        return self.choices[0].content if self.choices else ""

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.choices[0].tool_calls if self.choices else []

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    usage: Usage
    latency_s: float
    model: str = ""


# --------------------------------------------------------------------------- stream events


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    index: int = 0  # the choice it belongs to (n > 1)


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call as it streams; the assembled `ToolCall`s are in
    `StreamDone.result`."""

    call_index: int
    id: str | None
    name: str | None
    arguments: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class StreamDone:
    result: ChatResult


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | StreamDone


# --------------------------------------------------------------------------- helpers


class _Secret:
    """Holds the API key; prints as *** wherever it ends up."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    text = _one_line(str(exc))
    return text or type(exc).__name__


def _server_message(body: bytes) -> tuple[str, str]:
    """(message, type) out of an error body from llama.cpp, vLLM, OpenAI or a proxy."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return _clip(_one_line(text)) or "(empty body)", ""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or json.dumps(err)
            return _clip(_one_line(str(message))), str(err.get("type") or "")
        if isinstance(err, str):
            return _clip(_one_line(err)), ""
    return _clip(_one_line(json.dumps(data))), ""


def _parse_tool_calls(raw: Any) -> list[ToolCall]:
    calls = []
    for i, tc in enumerate(raw):
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        if args is None:
            args = ""
        elif not isinstance(args, str):  # some servers send an object, not its JSON text
            args = json.dumps(args)
        calls.append(
            ToolCall(id=tc.get("id") or f"call_{i}", name=fn.get("name") or "", arguments=args)
        )
    return calls


def _parse_choice(raw: Mapping[str, Any]) -> Choice:
    msg = raw.get("message") or {}
    content = msg.get("content") or ""
    if not isinstance(content, str):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    tool_calls = msg.get("tool_calls")
    return Choice(
        content=content,
        tool_calls=_parse_tool_calls(tool_calls) if tool_calls else [],
        finish_reason=raw.get("finish_reason"),
        index=raw.get("index") or 0,
        reasoning=msg.get("reasoning_content") or "",
    )


class _ChoiceAcc:
    """Accumulates one choice of a stream."""

    __slots__ = ("calls", "finish_reason", "parts", "reasoning")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, list[Any]] = {}  # call index -> [id, name, [argument parts]]
        self.finish_reason: str | None = None

    def choice(self, index: int) -> Choice:
        calls = [
            ToolCall(id=cid or f"call_{index}_{ci}", name=name, arguments="".join(parts))
            for ci, (cid, name, parts) in sorted(self.calls.items())
        ]
        return Choice(
            content="".join(self.parts),
            tool_calls=calls,
            finish_reason=self.finish_reason,
            index=index,
            reasoning="".join(self.reasoning),
        )


# --------------------------------------------------------------------------- client


class LLMClient:
    """Async client for one OpenAI-compatible endpoint.

    `base_url` is the server root ("http://127.0.0.1:8080") or its API root ending in
    "/v1"; either works. Use it as an async context manager or call `close()`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        if base.endswith("/v1"):
            self._root, self._api = base[:-3], base
        else:
            self._root, self._api = base, base + "/v1"
        self.base_url = base
        self.model = model
        self.retries = max(0, retries)
        self._timeout = timeout
        self._key = _Secret(api_key) if api_key else None
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._chat_url = self._api + "/chat/completions"
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=_MAX_CONNECTIONS,
                max_keepalive_connections=_MAX_CONNECTIONS,
                keepalive_expiry=30.0,
            ),
            transport=transport,
            # Building an SSL context costs 15-50 ms (certifi bundle); plain-http endpoints
            # (every local server) never use one.
            verify=self._root.startswith("https://"),
        )
        self._health_timeout = httpx.Timeout(
            min(timeout, _HEALTH_TIMEOUT_S), connect=connect_timeout
        )

    def __repr__(self) -> str:
        key = "'***'" if self._key else "None"
        return f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ chat

    def _chat_payload(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: str | Mapping[str, Any] | None,
        response_format: Mapping[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
        n: int | None,
        seed: int | None,
        stop: str | Sequence[str] | None,
        extra: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"messages": messages}
        if self.model is not None:
            payload["model"] = self.model
        if tools is not None:
            payload["tools"] = tools
        if tool_choice is not None:
            payload["tool_choice"] = tool_choice
        if response_format is not None:
            payload["response_format"] = response_format
        if temperature is not None:
            payload["temperature"] = temperature
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if n is not None:
            payload["n"] = n
        if seed is not None:
            payload["seed"] = seed
        if stop is not None:
            payload["stop"] = stop
        if extra:
            payload.update(extra)
        return payload

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        n: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """One non-streamed chat completion. `extra` is merged into the request body last
        (server-specific fields such as llama.cpp's `ignore_eos`, or `model`)."""
        payload = self._chat_payload(
            messages,
            tools,
            tool_choice,
            response_format,
            temperature,
            max_tokens,
            n,
            seed,
            stop,
            extra,
        )
        start = time.perf_counter()
        response = await self._send("POST", self._chat_url, payload)
        data = self._decode(response, self._chat_url)
        latency = time.perf_counter() - start
        try:
            raw_choices = data["choices"]
            if len(raw_choices) == 1:
                choices = [_parse_choice(raw_choices[0])]
            else:
                choices = sorted(map(_parse_choice, raw_choices), key=lambda c: c.index)
            return ChatResult(
                choices=choices,
                usage=Usage.from_dict(data.get("usage")),
                timings=Timings.from_dict(data.get("timings")),
                latency_s=latency,
                model=data.get("model") or "",
                raw=data,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ResponseFormatError(
                f"{self._chat_url}: unexpected answer shape ({type(exc).__name__}: {exc}): "
                f"{self._scrub(_clip(response.text))}"
            ) from None

    async def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        n: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream a chat completion: `TextDelta`s (and `ReasoningDelta`s / `ToolCallDelta`s)
        as they arrive, then one `StreamDone` whose result holds the full text, the
        assembled tool calls, usage and timings.

        Cancelling the consuming task closes the HTTP response at once, which makes
        llama.cpp stop generating. If you stop iterating early without cancelling, wrap
        the call in `contextlib.aclosing(...)` so the connection closes right there.
        """
        payload = self._chat_payload(
            messages,
            tools,
            tool_choice,
            response_format,
            temperature,
            max_tokens,
            n,
            seed,
            stop,
            extra,
        )
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        url = self._chat_url
        start = time.perf_counter()
        response = await self._send("POST", url, payload, stream=True)

        accs: dict[int, _ChoiceAcc] = {}
        usages: list[Mapping[str, Any]] = []
        timings: Mapping[str, Any] | None = None
        model = ""
        last: dict[str, Any] = {}
        ttft: float | None = None
        finished = False
        loads = json.loads
        try:
            try:
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    if line.startswith("data:"):
                        data = line[5:].strip()
                        if data == "[DONE]":
                            finished = True
                            break
                        try:
                            chunk = loads(data)
                        except ValueError as exc:
                            raise ResponseFormatError(
                                f"{url}: malformed JSON in stream ({exc}): "
                                f"{self._scrub(_clip(data))}"
                            ) from None
                    elif line.startswith("error:"):
                        raise self._stream_error(url, line[6:].strip().encode())
                    else:  # SSE comments, event: and id: fields
                        continue
                    if not isinstance(chunk, dict):
                        raise ResponseFormatError(
                            f"{url}: stream chunk is not a JSON object: {self._scrub(_clip(data))}"
                        )
                    last = chunk
                    choices = chunk.get("choices")
                    if choices is None and "error" in chunk:
                        raise self._stream_error(url, data.encode())
                    if not model:
                        model = chunk.get("model") or ""
                    usage = chunk.get("usage")
                    if usage:
                        usages.append(usage)
                    chunk_timings = chunk.get("timings")
                    if chunk_timings:
                        timings = chunk_timings
                    if not choices:
                        continue
                    for c in choices:
                        idx = c.get("index") or 0
                        acc = accs.get(idx)
                        if acc is None:
                            acc = accs[idx] = _ChoiceAcc()
                        delta = c.get("delta")
                        if delta:
                            text = delta.get("content")
                            if text:
                                if ttft is None:
                                    ttft = time.perf_counter() - start
                                acc.parts.append(text)
                                yield TextDelta(text, idx)
                            text = delta.get("reasoning_content")
                            if text:
                                if ttft is None:
                                    ttft = time.perf_counter() - start
                                acc.reasoning.append(text)
                                yield ReasoningDelta(text, idx)
                            calls = delta.get("tool_calls")
                            if calls:
                                for event in _merge_tool_calls(acc, calls, idx):
                                    yield event
                        reason = c.get("finish_reason")
                        if reason:
                            acc.finish_reason = reason
            except (AttributeError, TypeError) as exc:  # a chunk of the wrong shape
                raise ResponseFormatError(
                    f"{url}: unexpected stream chunk shape ({type(exc).__name__}: {exc})"
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

        if not finished and not any(a.finish_reason for a in accs.values()):
            raise ServerUnavailable(f"{url}: stream ended before the answer was complete")
        yield StreamDone(
            ChatResult(
                choices=[acc.choice(i) for i, acc in sorted(accs.items())],
                usage=_sum_usage(usages),
                timings=Timings.from_dict(timings),
                latency_s=time.perf_counter() - start,
                model=model,
                raw=last,
                ttft_s=ttft,
            )
        )

    # ------------------------------------------------------------------ other endpoints

    async def embeddings(self, inputs: Sequence[str]) -> EmbeddingResult:
        """Embed each input; vectors come back in input order."""
        url = self._api + "/embeddings"
        payload: dict[str, Any] = {"input": list(inputs)}
        if self.model is not None:
            payload["model"] = self.model
        start = time.perf_counter()
        response = await self._send("POST", url, payload)
        data = self._decode(response, url)
        latency = time.perf_counter() - start
        try:
            items = data["data"]
            if any(item.get("index") is not None for item in items):
                items = sorted(items, key=lambda item: item.get("index") or 0)
            vectors = [item["embedding"] for item in items]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ResponseFormatError(
                f"{url}: unexpected answer shape ({type(exc).__name__}: {exc})"
            ) from None
        return EmbeddingResult(
            vectors=vectors,
            usage=Usage.from_dict(data.get("usage")),
            latency_s=latency,
            model=data.get("model") or "",
        )

    async def health(self) -> str:
        """'ok', 'loading' (503 while the model loads) or 'unreachable'. Never raises and
        never retries. Endpoints without /health (cloud APIs) are probed through /models."""
        try:
            response = await self._http.get(self._root + "/health", timeout=self._health_timeout)
            status = response.status_code
            if status == 404:
                response = await self._http.get(self._api + "/models", timeout=self._health_timeout)
                status = response.status_code
        except httpx.HTTPError:
            return "unreachable"
        if status == 200:
            return "ok"
        if status == 503:
            return "loading"
        return "unreachable"

    async def metrics(self) -> dict[str, float]:
        """Prometheus text from /metrics as {name: value}; labelled samples keep their
        labels in the name (`name{a="b"}`). llama-server needs `--metrics`."""
        url = self._root + "/metrics"
        response = await self._send("GET", url)
        out: dict[str, float] = {}
        for line in response.text.splitlines():
            line = line.strip()
            if not line or line[0] == "#":
                continue
            if "{" in line:
                end = line.rfind("}")
                name, rest = line[: end + 1], line[end + 1 :].split()
            else:
                name, *rest = line.split()
            if not rest:
                continue
            try:
                out[name] = float(rest[0])
            except ValueError:
                continue
        return out

    async def models(self) -> list[str]:
        """Model ids the endpoint serves (GET /v1/models)."""
        url = self._api + "/models"
        data = self._decode(await self._send("GET", url), url)
        try:
            return [item["id"] for item in data["data"]]
        except (KeyError, TypeError) as exc:
            raise ResponseFormatError(
                f"{url}: unexpected answer shape ({type(exc).__name__}: {exc})"
            ) from None

    async def props(self) -> dict[str, Any]:
        """llama.cpp's /props: the chat template and what it can do (`chat_template_caps`,
        e.g. `supports_tools`). Other OpenAI-compatible servers answer 404 (RequestError)."""
        url = self._root + "/props"
        data = self._decode(await self._send("GET", url), url)
        if not isinstance(data, dict):
            raise ResponseFormatError(f"{url}: expected a JSON object, got {_clip(str(data))}")
        return data

    async def slots(self) -> list[dict[str, Any]]:
        """llama.cpp's /slots (needs `--slots`): one dict per slot, with `is_processing`."""
        url = self._root + "/slots"
        data = self._decode(await self._send("GET", url), url)
        if not isinstance(data, list):
            raise ResponseFormatError(f"{url}: expected a JSON array, got {_clip(str(data))}")
        return data

    # ------------------------------------------------------------------ transport

    async def _send(
        self, method: str, url: str, payload: Any = None, *, stream: bool = False
    ) -> httpx.Response:
        """Send with bounded retries (connection failures and 503 only); raise an
        `LLMError` for any failure. The returned response has status < 400."""
        delay = _BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            try:
                request = self._http.build_request(method, url, json=payload)
                response = await self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt <= self.retries:
                    log.debug("%s %s: %s; retry in %.2f s", method, url, _describe(exc), delay)
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
            if status == 503 and attempt <= self.retries:
                await response.aclose()
                log.debug("%s %s: 503; retry in %.2f s", method, url, delay)
                await asyncio.sleep(delay)
                delay *= 2
                continue
            try:
                body = await response.aread() if stream else response.content
            except httpx.HTTPError:
                body = b""
            finally:
                if stream:
                    await response.aclose()
            raise self._status_error(url, status, body, attempt)

    def _status_error(self, url: str, status: int, body: bytes, attempts: int) -> LLMError:
        message, error_type = _server_message(body)
        message = self._scrub(message)
        if status == 503:
            return ServerUnavailable(
                f"{url}: server unavailable (503: {message}) after {attempts} attempt(s)"
            )
        cls = RequestError if status < 500 or status == 501 else ServerError
        return cls(
            f"{url}: HTTP {status}: {message}",
            status=status,
            server_message=message,
            error_type=error_type,
        )

    def _stream_error(self, url: str, body: bytes) -> LLMError:
        message, error_type = _server_message(body)
        message = self._scrub(message)
        return ServerError(
            f"{url}: error mid-stream: {message}",
            status=200,
            server_message=message,
            error_type=error_type,
        )

    def _decode(self, response: httpx.Response, url: str) -> Any:
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise ResponseFormatError(
                f"{url}: malformed JSON from the server ({exc}): "
                f"{self._scrub(_clip(_one_line(response.text)))}"
            ) from None

    def _scrub(self, text: str) -> str:
        if self._key is not None and self._key.value in text:
            return text.replace(self._key.value, "***")
        return text


def _merge_tool_calls(
    acc: _ChoiceAcc, deltas: Sequence[Mapping[str, Any]], index: int
) -> list[ToolCallDelta]:
    """Fold streamed tool-call fragments into `acc`: the id and name come with a call's
    first fragment, its arguments arrive in pieces keyed by the call's `index`."""
    events = []
    for pos, d in enumerate(deltas):
        ci = d.get("index")
        if ci is None:
            ci = pos if len(deltas) > 1 else max(acc.calls, default=0)
        fn = d.get("function") or {}
        cid = d.get("id")
        name = fn.get("name")
        args = fn.get("arguments") or ""
        if not isinstance(args, str):
            args = json.dumps(args)
        slot = acc.calls.get(ci)
        if slot is None:
            slot = acc.calls[ci] = ["", "", []]
        if cid and not slot[0]:
            slot[0] = cid
        if name and name != slot[1]:  # some servers repeat the whole name each time
            slot[1] = slot[1] + name
        if args:
            slot[2].append(args)
        events.append(ToolCallDelta(call_index=ci, id=cid, name=name, arguments=args, index=index))
    return events


def _sum_usage(usages: Sequence[Mapping[str, Any]]) -> Usage:
    """One usage chunk per choice (llama.cpp with n > 1): prompt once, completions added."""
    if not usages:
        return Usage()
    if len(usages) == 1:
        return Usage.from_dict(usages[0])
    parts = [Usage.from_dict(u) for u in usages]
    completion = sum(p.completion_tokens for p in parts)
    first = parts[0]
    return Usage(
        prompt_tokens=first.prompt_tokens,
        completion_tokens=completion,
        total_tokens=first.prompt_tokens + completion,
        cached_tokens=first.cached_tokens,
    )
