"""An async client for any OpenAI-compatible endpoint: llama-server, vLLM, a cloud API.

The hot path is plain `json.loads` plus direct dict access; the results are the small
frozen dataclasses of `engine.llm.results`. The HTTP side (pooling, retries, SSE, the
key) is the shared `Transport`.

    async with LLMClient("http://127.0.0.1:8080") as llm:
        result = await llm.chat(ChatRequest(messages, max_tokens=32))
        print(result.content, result.usage.completion_tokens, result.timings)

        async with contextlib.aclosing(llm.stream_chat(ChatRequest(messages))) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    print(event.text, end="")

Errors are `engine.llm.errors`: `ServerUnavailable` (cannot connect, connection lost, or
503 after the retries), `RequestError` (4xx and 501, with the server's own message; never
retried), `ServerError` (other 5xx), `LLMTimeout`, `ResponseFormatError` and, from
`ToolCall.parsed_arguments`, `ToolCallError`. Only connection failures and 503 are
retried.

The API key travels only in the Authorization header: it is masked in `repr(client)`
and scrubbed from every error message.

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

import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx

from nanobot_tui.engine.llm.errors import (
    LLMError,
    RequestError,
    ResponseFormatError,
    ServerError,
    ServerUnavailable,
    clip,
)
from nanobot_tui.engine.llm.kv_pool import COUNT_MARGIN, KvPool, prompt_bound
from nanobot_tui.engine.llm.openai_answers import ChunkAssembler, chat_result
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, EmbeddingResult, StreamEvent, Usage
from nanobot_tui.engine.llm.streaming import assemble
from nanobot_tui.engine.llm.transport import ApiRules, Secret, Transport, TransportClient

__all__ = ["LLMClient"]


def _status_error(url: str, status: int, message: str, error_type: str, attempts: int) -> LLMError:
    if status == 503:
        return ServerUnavailable(
            f"{url}: server unavailable (503: {message}) after {attempts} attempt(s)"
        )
    cls = RequestError if status < 500 or status == 501 else ServerError
    return cls.answered(url, status, message, error_type)


_RULES = ApiRules(
    _status_error,
    retry_statuses=frozenset({503}),  # llama.cpp's "Loading model"
    max_connections=64,  # enough for parallel voting
    keepalive_expiry=30.0,
)


class LLMClient(TransportClient):
    """Async client for one OpenAI-compatible endpoint.

    `base_url` is the server root ("http://127.0.0.1:8080") or its API root ending in
    "/v1"; either works. With a `kv_pool` (a llama.cpp server whose slots share one
    unified KV pool), every chat first reserves its worst case of KV cells there and waits
    its turn (engine.llm.kv_pool); give every client of that server the same pool.
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
        kv_pool: KvPool | None = None,
    ) -> None:
        self.move_to(base_url)
        self.model = model
        self.kv_pool = kv_pool
        self._key = Secret(api_key) if api_key else None
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._transport = Transport(
            _RULES,
            self._root,
            headers,
            self._key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            transport=transport,
        )

    def move_to(self, base_url: str) -> None:
        """Send every later request to `base_url` (a restarted server on a new port): the
        agents and samplers that hold this client follow it."""
        base = base_url.rstrip("/")
        if base.endswith("/v1"):
            self._root, self._api = base[:-3], base
        else:
            self._root, self._api = base, base + "/v1"
        self.base_url = base
        self._chat_url = self._api + "/chat/completions"

    def auth_headers(self) -> dict[str, str]:
        """The header a raw HTTP request to this endpoint carries (its key; {} without)."""
        return {"Authorization": f"Bearer {self._key.value}"} if self._key else {}

    def __repr__(self) -> str:
        key = "'***'" if self._key else "None"
        return f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    # ------------------------------------------------------------------ chat

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {"messages": request.messages}
        if self.model is not None:
            payload["model"] = self.model
        payload.update(request.options())
        if request.extra:
            payload.update(request.extra)
        return payload

    async def chat(self, request: ChatRequest) -> ChatResult:
        """One non-streamed chat completion."""
        url = self._chat_url
        payload = self._payload(request)
        async with self._admitted(request, payload):
            start = time.perf_counter()
            response = await self._transport.send("POST", url, payload)
            data = self._transport.decode(response, url)
            latency = time.perf_counter() - start
        try:
            return chat_result(data, latency)
        except (KeyError, TypeError, AttributeError) as exc:
            raise self._transport.shape_error(url, exc, response) from None

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream a chat completion: `TextDelta`s (and `ReasoningDelta`s / `ToolCallDelta`s)
        as they arrive, then one `StreamDone` whose result holds the full text, the
        assembled tool calls, usage and timings.

        Cancelling the consuming task closes the HTTP response at once, which makes
        llama.cpp stop generating. If you stop iterating early without cancelling, wrap
        the call in `contextlib.aclosing(...)` so the connection closes right there.
        """
        url = self._chat_url
        payload = self._payload(request)
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        async with self._admitted(request, payload):  # held until the stream ends or closes
            fields = self._transport.sse(url, payload)
            assembled = assemble(fields, ChunkAssembler(url, self._transport), url)
            async with aclosing(assembled) as events:
                async for event in events:
                    yield event

    # ------------------------------------------------------------------ KV admission

    @asynccontextmanager
    async def _admitted(self, request: ChatRequest, payload: dict[str, Any]) -> AsyncIterator[None]:
        """Hold the request's worst case of KV cells in the pool (none without a pool)."""
        pool = self.kv_pool
        if pool is None:
            yield
            return
        n = request.n or 1
        prompt = prompt_bound(request)
        cells = pool.cells_for(prompt, request.max_tokens, n, exact=False)
        if not pool.fits_now(cells):
            # The cheap bound would wait (or can never fit): count the prompt exactly.
            counted = await self.count_prompt_tokens(payload)
            if counted is not None:
                prompt = counted + COUNT_MARGIN
                cells = pool.cells_for(prompt, request.max_tokens, n)
        if cells > pool.capacity:
            raise pool.too_small(self._chat_url, cells, prompt, request)
        async with pool.hold(cells):
            yield

    async def count_prompt_tokens(self, payload: dict[str, Any]) -> int | None:
        """The tokens of a chat body's prompt as the server templates and tokenizes it
        (llama.cpp's /apply-template, then /tokenize); None when the server cannot say."""
        keys = ("messages", "tools", "tool_choice", "chat_template_kwargs")
        body = {key: payload[key] for key in keys if key in payload}
        try:
            url = self._root + "/apply-template"
            templated = self._transport.decode(await self._transport.send("POST", url, body), url)
            url = self._root + "/tokenize"
            text = {"content": templated["prompt"], "add_special": True, "parse_special": True}
            tokens = self._transport.decode(await self._transport.send("POST", url, text), url)
            return len(tokens["tokens"])
        except (LLMError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------------ other endpoints

    async def embeddings(self, inputs: Sequence[str]) -> EmbeddingResult:
        """Embed each input; vectors come back in input order."""
        url = self._api + "/embeddings"
        payload: dict[str, Any] = {"input": list(inputs)}
        if self.model is not None:
            payload["model"] = self.model
        start = time.perf_counter()
        response = await self._transport.send("POST", url, payload)
        data = self._transport.decode(response, url)
        latency = time.perf_counter() - start
        try:
            items = data["data"]
            if any(item.get("index") is not None for item in items):
                items = sorted(items, key=lambda item: item.get("index") or 0)
            vectors = [item["embedding"] for item in items]
        except (KeyError, TypeError, AttributeError) as exc:
            raise _shape_error(url, exc) from None
        return EmbeddingResult(
            vectors=vectors,
            usage=Usage.from_dict(data.get("usage")),
            latency_s=latency,
            model=data.get("model") or "",
        )

    async def health(self) -> str:
        """'ok', 'loading' (503 while the model loads) or 'unreachable'. Never raises and
        never retries. Endpoints without /health (cloud APIs) are probed through /models."""
        status = await self._transport.probe(self._root + "/health")
        if status == 404:
            status = await self._transport.probe(self._api + "/models")
        if status == 200:
            return "ok"
        if status == 503:
            return "loading"
        return "unreachable"

    async def metrics(self) -> dict[str, float]:
        """Prometheus text from /metrics as {name: value}; labelled samples keep their
        labels in the name (`name{a="b"}`). llama-server needs `--metrics`."""
        response = await self._transport.send("GET", self._root + "/metrics")
        return _prometheus_values(response.text)

    async def models(self) -> list[str]:
        """Model ids the endpoint serves (GET /v1/models)."""
        url = self._api + "/models"
        data = self._transport.decode(await self._transport.send("GET", url), url)
        try:
            return [item["id"] for item in data["data"]]
        except (KeyError, TypeError) as exc:
            raise _shape_error(url, exc) from None

    async def props(self) -> dict[str, Any]:
        """llama.cpp's /props: the chat template and what it can do (`chat_template_caps`,
        e.g. `supports_tools`). Other OpenAI-compatible servers answer 404 (RequestError)."""
        url = self._root + "/props"
        data = self._transport.decode(await self._transport.send("GET", url), url)
        if not isinstance(data, dict):
            raise ResponseFormatError(f"{url}: expected a JSON object, got {clip(str(data))}")
        return data

    async def slots(self) -> list[dict[str, Any]]:
        """llama.cpp's /slots (needs `--slots`): one dict per slot, with `is_processing`."""
        url = self._root + "/slots"
        data = self._transport.decode(await self._transport.send("GET", url), url)
        if not isinstance(data, list):
            raise ResponseFormatError(f"{url}: expected a JSON array, got {clip(str(data))}")
        return data


def _shape_error(url: str, exc: Exception) -> ResponseFormatError:
    return ResponseFormatError(f"{url}: unexpected answer shape ({type(exc).__name__}: {exc})")


def _prometheus_values(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
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
