"""Turning a provider's server-sent events into stream events and one final result.

Each client brings an `Assembler` that knows its API's events; `assemble` runs the loop
they share: time to first token, shape errors, a stream cut short, and the closing
`StreamDone`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Protocol

from nanobot_tui.engine.llm.errors import ResponseFormatError, ServerUnavailable
from nanobot_tui.engine.llm.results import (
    ChatResult,
    ReasoningDelta,
    StreamDone,
    StreamEvent,
    TextDelta,
)

__all__ = ["Assembler", "assemble"]


class Assembler(Protocol):
    """Folds one API's SSE fields into stream events and, at the end, a `ChatResult`."""

    # What one SSE data object is called in errors: "chunk", "event".
    unit: str

    def fold(self, name: str, data: str) -> list[StreamEvent] | None:
        """The events one SSE field gives the caller; None when it ends the stream."""
        ...

    @property
    def complete(self) -> bool:
        """Whether what arrived is a whole answer."""
        ...

    def result(self, latency_s: float, ttft_s: float | None) -> ChatResult: ...


async def assemble(
    fields: AsyncGenerator[tuple[str, str], None], assembler: Assembler, url: str
) -> AsyncGenerator[StreamEvent, None]:
    """The events `assembler` makes of `fields`, then one `StreamDone`. `fields` is
    closed before the `StreamDone`, and at once when this generator is closed."""
    start = time.perf_counter()
    ttft: float | None = None
    async with aclosing(fields):
        try:
            async for name, data in fields:
                events = assembler.fold(name, data)
                if events is None:
                    break
                for event in events:
                    if ttft is None and isinstance(event, TextDelta | ReasoningDelta):
                        ttft = time.perf_counter() - start
                    yield event
        except (KeyError, AttributeError, TypeError) as exc:  # an object of the wrong shape
            raise ResponseFormatError(
                f"{url}: unexpected stream {assembler.unit} shape ({type(exc).__name__}: {exc})"
            ) from None
    if not assembler.complete:
        raise ServerUnavailable(f"{url}: stream ended before the answer was complete")
    yield StreamDone(assembler.result(time.perf_counter() - start, ttft))
