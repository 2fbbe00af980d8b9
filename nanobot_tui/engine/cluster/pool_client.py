"""`PoolClient`: the host pool as one `ChatClient`, so the voting engine's LLMSampler samples
across the cluster unchanged.

Each request's affinity key is its prompt (the messages, hashed): the votes of a step ask
the same prompt, so they go to the same host while it has free slots, where the prompt is
in the server's cache. `stream_chat` gives the whole answer as one delta, then done: the
pool answers whole requests (the samplers never stream).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator
from typing import Self

from nanobot_tui.engine.cluster.pool import HostPool
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, StreamDone, StreamEvent, TextDelta

__all__ = ["PoolClient", "affinity_key"]


def affinity_key(request: ChatRequest) -> str:
    """The key that keeps requests with the same prompt on the same host."""
    text = json.dumps(list(request.messages), sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class PoolClient:
    """A `ChatClient` over a HostPool. Closing it leaves the pool (and its hosts) running:
    whoever started the pool closes it."""

    def __init__(self, pool: HostPool, *, name: str = "cluster") -> None:
        self.pool = pool
        self._name = name

    @property
    def model(self) -> str | None:
        return self.pool.model

    @property
    def base_url(self) -> str:
        return f"ray://{self._name}"

    def __repr__(self) -> str:
        return f"PoolClient(base_url={self.base_url!r}, model={self.model!r})"

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await self.pool.chat(request, affinity_key(request))

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        result = await self.chat(request)
        for choice in result.choices:
            if choice.content:
                yield TextDelta(choice.content, choice.index)
        yield StreamDone(result)

    async def health(self) -> str:
        """'ok' while some host is up, else 'unreachable' (as LLMClient.health says)."""
        if not self.pool.healthy():
            await self.pool.refresh()
        return "ok" if self.pool.healthy() else "unreachable"

    async def close(self) -> None:
        """Nothing of its own to close: the pool belongs to whoever started it."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
