"""What a chat answers: the result of a whole request, and the events of a stream.

Both clients give the same small frozen dataclasses, so a slot can change provider
without its callers knowing. A stream yields `TextDelta`, `ReasoningDelta` and
`ToolCallDelta` as they arrive, then one `StreamDone` holding the assembled `ChatResult`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from nanobot_tui.engine.llm.errors import ToolCallError, clip

__all__ = [
    "ChatResult",
    "Choice",
    "EmbeddingResult",
    "ReasoningDelta",
    "StreamDone",
    "StreamEvent",
    "TextDelta",
    "Timings",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]

_JSON_TYPES: dict[type, str] = {
    list: "an array",
    str: "a string",
    bool: "a boolean",
    type(None): "null",
}


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
                f"{clip(text)}",
                call=self,
            ) from None
        if not isinstance(value, dict):
            kind = _JSON_TYPES.get(type(value), "a number")
            raise ToolCallError(
                f"tool call {self.name!r}: arguments must be a JSON object, got {kind}; "
                f"arguments were: {clip(text)}",
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
        """The server's `timings` object under the same names; what it leaves out is 0."""
        if not data:
            return None
        return cls(**{name: data.get(name) or zero for name, zero in _TIMINGS_FIELDS})


_TIMINGS_FIELDS: tuple[tuple[str, Any], ...] = tuple((f.name, f.default) for f in fields(Timings))


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
