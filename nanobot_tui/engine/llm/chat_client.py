"""`ChatClient`: what every model client offers the rest of nanobot.

The agent loop streams through it, the samplers and compaction chat through it, context's
`ask` and summaries chat through it, setup's server check sends one request, and the
workbench hands one out per slot. `LLMClient` (local llama.cpp servers and any
OpenAI-compatible endpoint) and `AnthropicClient` both satisfy it.

What only an OpenAI-compatible endpoint has (embeddings, health, /props, /metrics,
/slots) stays on `LLMClient`: callers that need it ask for an `LLMClient` by type.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, Self, runtime_checkable

from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, StreamEvent

__all__ = ["ChatClient"]


@runtime_checkable
class ChatClient(Protocol):
    """One model endpoint. Failures raise `LLMError`s (see `engine.llm.errors`)."""

    @property
    def model(self) -> str | None:
        """The model requests name (None: whatever the server serves)."""
        ...

    @property
    def base_url(self) -> str:
        """The endpoint's root, for display and logs (never holds the key)."""
        ...

    async def chat(self, request: ChatRequest) -> ChatResult:
        """One whole answer."""
        ...

    def stream_chat(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Text, reasoning and tool-call deltas as they arrive, then one `StreamDone`.

        Closing the generator (`contextlib.aclosing`) or cancelling its consumer closes
        the connection at once, which stops a llama.cpp server generating.
        """
        ...

    async def close(self) -> None:
        """Close the connection pool; the client is not used afterwards."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...
