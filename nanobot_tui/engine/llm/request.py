"""One chat request, whichever client sends it.

Messages and tools are in OpenAI's shape, as every local server speaks them; the
Anthropic client translates them on the way out. Fields left None are not sent, so the
server's own defaults apply.

    request = ChatRequest(messages, tools=tools, temperature=0.2, max_tokens=256)
    result = await client.chat(request)
    async with contextlib.aclosing(client.stream_chat(request)) as events: ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ChatRequest", "Message"]

Message = Mapping[str, Any]

# The fields sent under their own names, in the order they go into an OpenAI body.
_OPTIONS = (
    "tools",
    "tool_choice",
    "response_format",
    "temperature",
    "max_tokens",
    "n",
    "seed",
    "stop",
)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The messages and sampling settings of one chat completion.

    `response_format` constrains the answer (a JSON schema; llama.cpp and OpenAI only).
    `n` asks for several choices in one request; `seed` fixes sampling where the server
    honours it. `extra` is merged into the request body last, for fields particular to
    one server (llama.cpp's `ignore_eos`, `chat_template_kwargs`, Anthropic's `thinking`).
    """

    messages: Sequence[Message]
    tools: Sequence[Mapping[str, Any]] | None = None
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: Mapping[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    n: int | None = None
    seed: int | None = None
    stop: str | Sequence[str] | None = None
    extra: Mapping[str, Any] | None = None

    def options(self) -> dict[str, Any]:
        """The settings that are set (not None), by their OpenAI names; not `messages`,
        not `extra`."""
        return {name: value for name in _OPTIONS if (value := getattr(self, name)) is not None}
