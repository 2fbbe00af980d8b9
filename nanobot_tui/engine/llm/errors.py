"""What a model request can fail with, and the helpers that keep each message one line.

    NanobotError
    └── LLMError                  a model server or cloud API failed a request
        ├── ServerUnavailable     cannot connect, connection lost, or (OpenAI-compatible)
        │                         still 503 after the retries
        ├── LLMTimeout            no answer (or no more stream) within the timeout
        ├── ResponseFormatError   an answer that is not the JSON the API promises
        ├── StatusError           an HTTP error status, with the server's own message
        │   ├── RequestError      4xx (and llama.cpp's 501): the request's fault
        │   └── ServerError       5xx, or an error event in the middle of a stream
        └── ToolCallError         a tool call's arguments are not a JSON object (also a
                                  ValueError, like any bad value)

Every message starts with the URL it concerns and never holds an API key: the transport
scrubs the key out of whatever the server sent back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from nanobot_tui.errors import NanobotError

if TYPE_CHECKING:
    from nanobot_tui.engine.llm.results import ToolCall

__all__ = [
    "LLMError",
    "LLMTimeout",
    "RequestError",
    "ResponseFormatError",
    "ServerError",
    "ServerUnavailable",
    "StatusError",
    "ToolCallError",
    "clip",
    "describe",
    "one_line",
]


class LLMError(NanobotError):
    """Base of every error a model client raises; `str(exc)` is one readable line."""


class ServerUnavailable(LLMError):
    """The server cannot be reached, dropped the connection, or kept answering 503."""


class LLMTimeout(LLMError):
    """The server took longer than the configured timeout."""


class ResponseFormatError(LLMError):
    """The server answered, but not with the JSON its API promises."""


class StatusError(LLMError):
    """The server answered with an error status; `server_message` is what it said."""

    def __init__(self, message: str, *, status: int, server_message: str, error_type: str):
        super().__init__(message)
        self.status = status
        self.server_message = server_message
        self.error_type = error_type

    @classmethod
    def answered(cls, url: str, status: int, message: str, error_type: str, note: str = "") -> Self:
        """The error for an HTTP error answer: `{url}: HTTP {status}: {message}{note}`."""
        return cls(
            f"{url}: HTTP {status}: {message}{note}",
            status=status,
            server_message=message,
            error_type=error_type,
        )


class RequestError(StatusError):
    """The server rejected the request (4xx, or 501 for an endpoint it does not serve)."""


class ServerError(StatusError):
    """The server failed on the request (5xx, or an error event in the middle of a stream)."""


class ToolCallError(LLMError, ValueError):
    """A tool call's arguments are not a JSON object; the message is fit to show the model."""

    def __init__(self, message: str, *, call: ToolCall):
        super().__init__(message)
        self.call = call


def clip(text: str, limit: int = 300) -> str:
    """`text`, cut to `limit` characters with a note of its full length."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe(exc: BaseException) -> str:
    """An exception as one line: its message, else its type's name."""
    return one_line(str(exc)) or type(exc).__name__
