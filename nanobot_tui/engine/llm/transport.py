"""The HTTP side both model clients share.

One `Transport` per client owns a pooled `httpx.AsyncClient` (keep-alive, enough
connections for parallel voting), sends with bounded retries, reads server-sent events,
holds the API key and scrubs it from every message it builds, and closes the pool.
The clients state only what differs between APIs (`ApiRules`): which answers are worth
another try, which error an HTTP status becomes, how many connections to keep.

Connection failures are retried, and so are the statuses the rules name, with a 0.25 s
backoff that doubles (longer when the rules honour the server's retry-after); a stream
is never retried once its response has begun.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import httpx

from nanobot_tui.engine.llm.errors import (
    LLMError,
    LLMTimeout,
    ResponseFormatError,
    ServerError,
    ServerUnavailable,
    clip,
    describe,
    one_line,
)

__all__ = ["ApiRules", "Secret", "StatusErrorFactory", "Transport", "TransportClient"]

# A JSON escape of a UTF-16 surrogate. A pair becomes one character when parsed; a lone
# one stays a lone surrogate, which no UTF-8 writer (stdout, a session file) accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


log = logging.getLogger(__name__)

BACKOFF_S = 0.25
MAX_RETRY_AFTER_S = 30.0
HEALTH_TIMEOUT_S = 5.0
# The SSE fields a chat stream carries; blank lines, comments, event: and id: are skipped.
_SSE_FIELDS = frozenset({"data", "error"})

# (url, status, the server's message with the key scrubbed, its error type, attempts)
StatusErrorFactory = Callable[[str, int, str, str, int], LLMError]


class Secret:
    """Holds an API key; prints as *** wherever it ends up."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


@dataclass(frozen=True)
class ApiRules:
    """What differs between the APIs a `Transport` speaks to."""

    # Which error an HTTP error status becomes.
    status_error: StatusErrorFactory
    # HTTP statuses worth another try (connection failures always are).
    retry_statuses: frozenset[int]
    # Whether the server's retry-after header may stretch the wait.
    honour_retry_after: bool = False
    max_connections: int = 16
    keepalive_expiry: float = 5.0  # seconds an idle connection is kept


class Transport:
    """Retrying HTTP for one API at `root`: `send`, `sse`, `probe`, then `close`."""

    def __init__(
        self,
        rules: ApiRules,
        root: str,
        headers: Mapping[str, str],
        secret: Secret | None,
        *,
        timeout: float,
        connect_timeout: float,
        retries: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = max(0, retries)
        self._secret = secret
        self._rules = rules
        self._http = httpx.AsyncClient(
            headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=rules.max_connections,
                max_keepalive_connections=rules.max_connections,
                keepalive_expiry=rules.keepalive_expiry,
            ),
            transport=transport,
            # Building an SSL context costs 15-50 ms (certifi bundle); plain-http endpoints
            # (every local server, a local proxy) never use one.
            verify=root.startswith("https://"),
        )
        self._probe_timeout = httpx.Timeout(min(timeout, HEALTH_TIMEOUT_S), connect=connect_timeout)

    def __repr__(self) -> str:
        return f"Transport(retries={self.retries}, api_key={self._secret!r})"

    async def close(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ sending

    async def send(
        self, method: str, url: str, payload: Any = None, *, stream: bool = False
    ) -> httpx.Response:
        """Send with bounded retries; raise an `LLMError` for any failure. The returned
        response has status < 400 (for `stream`, its body is still to be read)."""
        delay = BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            response = await self._attempt(method, url, payload, stream, attempt, delay)
            if response is None:  # a connection failure worth another try
                await asyncio.sleep(delay)
                delay *= 2
                continue
            status = response.status_code
            if status < 400:
                return response
            body = await _body_of(response, stream)
            if status in self._rules.retry_statuses and attempt <= self.retries:
                wait = max(delay, self._retry_after(response))
                log.debug("%s %s: HTTP %d; retry in %.2f s", method, url, status, wait)
                await asyncio.sleep(wait)
                delay *= 2
                continue
            message, error_type = self.server_message(body)
            raise self._rules.status_error(url, status, message, error_type, attempt)

    async def _attempt(
        self, method: str, url: str, payload: Any, stream: bool, attempt: int, delay: float
    ) -> httpx.Response | None:
        """One try: the response, or None after a connection failure that leaves tries."""
        try:
            request = self._http.build_request(method, url, json=payload)
            return await self._http.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if attempt <= self.retries:
                log.debug("%s %s: %s; retry in %.2f s", method, url, describe(exc), delay)
                return None
            raise ServerUnavailable(
                f"{url}: cannot connect after {attempt} attempt(s): {describe(exc)}"
            ) from exc
        except httpx.TransportError as exc:
            raise self._failure(url, exc, mid_stream=False) from exc

    def _failure(self, url: str, exc: httpx.TransportError, *, mid_stream: bool) -> LLMError:
        """A timeout or a broken connection, before the answer or in the middle of it."""
        if isinstance(exc, httpx.TimeoutException):
            seconds = f"{self.timeout:g} s"
            waited = (
                f"no data for {seconds} mid-stream" if mid_stream else f"no answer within {seconds}"
            )
            return LLMTimeout(f"{url}: {waited} ({type(exc).__name__})")
        what = "connection lost mid-stream" if mid_stream else "connection failed"
        return ServerUnavailable(f"{url}: {what}: {describe(exc)}")

    def _retry_after(self, response: httpx.Response) -> float:
        """Seconds the server asked to wait (capped), 0 when it did not say or the
        rules do not listen."""
        if not self._rules.honour_retry_after:
            return 0.0
        try:
            seconds = float(response.headers.get("retry-after") or 0)
        except ValueError:
            return 0.0
        return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)

    async def probe(self, url: str) -> int | None:
        """One GET with a short timeout and no retries: its status, None if unreachable."""
        try:
            response = await self._http.get(url, timeout=self._probe_timeout)
        except httpx.HTTPError:
            return None
        return response.status_code

    # ------------------------------------------------------------------ streams

    async def sse(self, url: str, payload: Any) -> AsyncGenerator[tuple[str, str], None]:
        """POST `payload` and yield the streamed answer's SSE fields as (name, value):
        `data` and `error` lines. A failure mid-stream becomes an `LLMError`; the
        response is closed however the iteration ends (cancelled, closed early, done)."""
        response = await self.send("POST", url, payload, stream=True)
        try:
            async for line in response.aiter_lines():
                name, colon, value = line.partition(":")
                if colon and name in _SSE_FIELDS:
                    yield name, value.strip()
        except httpx.TransportError as exc:
            raise self._failure(url, exc, mid_stream=True) from exc
        finally:
            await response.aclose()

    # ------------------------------------------------------------------ decoding

    def decode(self, response: httpx.Response, url: str) -> Any:
        """The response's JSON body; `ResponseFormatError` when it is not JSON."""
        try:
            value = json.loads(response.content)
        except ValueError as exc:
            raise ResponseFormatError(
                f"{url}: malformed JSON from the server ({exc}): "
                f"{self.scrub(clip(one_line(response.text)))}"
            ) from None
        if _SURROGATE_ESCAPE_BYTES.search(response.content):
            value = _without_lone_surrogates(value)
        return value

    def stream_object(self, url: str, data: str, what: str) -> dict[str, Any]:
        """One SSE data line's JSON object (`what` names it in errors: 'stream chunk')."""
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise ResponseFormatError(
                f"{url}: malformed JSON in stream ({exc}): {self.scrub(clip(data))}"
            ) from None
        if not isinstance(value, dict):
            raise ResponseFormatError(
                f"{url}: {what} is not a JSON object: {self.scrub(clip(data))}"
            )
        if _SURROGATE_ESCAPE.search(data):
            value = _without_lone_surrogates(value)
        return value

    def stream_error(self, url: str, data: str, *, typed: bool = False) -> ServerError:
        """An error the server sent in the middle of a stream (`typed`: its error type is
        named in the message)."""
        message, error_type = self.server_message(data.encode())
        kind = f" ({error_type or 'error'})" if typed else ""
        return ServerError(
            f"{url}: error mid-stream{kind}: {message}",
            status=200,
            server_message=message,
            error_type=error_type,
        )

    def shape_error(self, url: str, exc: Exception, response: httpx.Response) -> LLMError:
        """A JSON answer whose shape is not the API's (a key missing, a wrong type)."""
        return ResponseFormatError(
            f"{url}: unexpected answer shape ({type(exc).__name__}: {exc}): "
            f"{self.scrub(clip(response.text))}"
        )

    def server_message(self, body: bytes) -> tuple[str, str]:
        """(message, type) out of an error body from llama.cpp, vLLM, OpenAI, Anthropic
        or a proxy, as one clipped line with the key scrubbed."""
        message, error_type = _server_message(body)
        return self.scrub(message), error_type

    def scrub(self, text: str) -> str:
        """`text` with the API key replaced by ***."""
        if self._secret is not None and self._secret.value in text:
            return text.replace(self._secret.value, "***")
        return text


class TransportClient:
    """A client that sends through a `Transport`: closing it closes the connection pool.
    Use it as an async context manager or call `close()`."""

    _transport: Transport

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _body_of(response: httpx.Response, stream: bool) -> bytes:
    """An error answer's body, read whole (a streamed one is closed after, so its
    connection goes back to the pool); empty when it cannot be read."""
    try:
        return await response.aread() if stream else response.content
    except httpx.HTTPError:
        return b""
    finally:
        if stream:
            await response.aclose()


def _server_message(body: bytes) -> tuple[str, str]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return clip(one_line(text)) or "(empty body)", ""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or json.dumps(err)
            return clip(one_line(str(message))), str(err.get("type") or "")
        if isinstance(err, str):
            return clip(one_line(err)), ""
    return clip(one_line(json.dumps(data))), ""
