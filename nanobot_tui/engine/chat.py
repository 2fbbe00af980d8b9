"""A chat session: the history of one conversation and one streamed turn at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nanobot_tui.engine.llm import LLMClient, StreamDone, StreamEvent, TextDelta

SYSTEM_PROMPT = "You are nanobot, a helpful assistant running locally. Answer concisely."


@dataclass
class ChatSession:
    client: LLMClient
    temperature: float = 0.7
    max_tokens: int = 1024
    system_prompt: str = SYSTEM_PROMPT
    history: list[dict[str, Any]] = field(default_factory=list)

    def messages_for(self, user_text: str) -> list[dict[str, Any]]:
        return [
            {"role": "system", "content": self.system_prompt},
            *self.history,
            {"role": "user", "content": user_text},
        ]

    async def stream(self, user_text: str) -> AsyncIterator[StreamEvent]:
        """Stream one answer. The turn enters the history when it ends, also if cancelled
        (with what had arrived), so the conversation stays coherent."""
        messages = self.messages_for(user_text)
        parts: list[str] = []
        try:
            async for event in self.client.stream_chat(
                messages, temperature=self.temperature, max_tokens=self.max_tokens
            ):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                yield event
        finally:
            self.history.append({"role": "user", "content": user_text})
            self.history.append({"role": "assistant", "content": "".join(parts)})

    def clear(self) -> None:
        self.history.clear()


__all__ = ["ChatSession", "StreamDone", "StreamEvent", "TextDelta"]
