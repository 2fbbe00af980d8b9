"""Reading OpenAI-compatible answers: a whole chat completion, or its stream chunk by chunk.

A stream's chunks carry deltas per choice (`index`); tool calls arrive in fragments keyed
by the call's own index, the id and name with the first one. Usage and llama.cpp's
timings ride on the last chunks; with n > 1 there is one usage chunk per choice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nanobot_tui.engine.llm.results import (
    ChatResult,
    Choice,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Timings,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from nanobot_tui.engine.llm.transport import Transport

__all__ = ["ChunkAssembler", "chat_result"]


# --------------------------------------------------------------------------- whole answers


def chat_result(data: dict[str, Any], latency: float) -> ChatResult:
    """A decoded chat completion as a ChatResult; KeyError / TypeError / AttributeError
    when it is not in the API's shape."""
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


# --------------------------------------------------------------------------- streams


class _ChoiceAcc:
    """Accumulates one choice of a stream."""

    __slots__ = ("calls", "finish_reason", "parts", "reasoning")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, list[Any]] = {}  # call index -> [id, name, [argument parts]]
        self.finish_reason: str | None = None

    def fold(self, delta: Mapping[str, Any], index: int) -> list[StreamEvent]:
        """One choice delta in; the events it gives."""
        events: list[StreamEvent] = []
        text = delta.get("content")
        if text:
            self.parts.append(text)
            events.append(TextDelta(text, index))
        text = delta.get("reasoning_content")
        if text:
            self.reasoning.append(text)
            events.append(ReasoningDelta(text, index))
        calls = delta.get("tool_calls")
        if calls:
            events += _merge_tool_calls(self, calls, index)
        return events

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


class ChunkAssembler:
    """Folds a chat completion's SSE chunks into stream events and one ChatResult."""

    unit = "chunk"

    def __init__(self, url: str, transport: Transport) -> None:
        self._url = url
        self._transport = transport
        self._choices: dict[int, _ChoiceAcc] = {}
        self._usages: list[Mapping[str, Any]] = []
        self._timings: Mapping[str, Any] | None = None
        self._model = ""
        self._last: dict[str, Any] = {}
        self._done = False

    def fold(self, name: str, data: str) -> list[StreamEvent] | None:
        if name == "error":  # llama.cpp's `error:` line
            raise self._transport.stream_error(self._url, data)
        if data == "[DONE]":
            self._done = True
            return None
        chunk = self._transport.stream_object(self._url, data, "stream chunk")
        self._last = chunk
        choices = chunk.get("choices")
        if choices is None and "error" in chunk:
            raise self._transport.stream_error(self._url, data)
        self._model = self._model or chunk.get("model") or ""
        if chunk.get("usage"):
            self._usages.append(chunk["usage"])
        self._timings = chunk.get("timings") or self._timings
        events: list[StreamEvent] = []
        for c in choices or ():
            idx = c.get("index") or 0
            acc = self._choices.get(idx)
            if acc is None:
                acc = self._choices[idx] = _ChoiceAcc()
            delta = c.get("delta")
            if delta:
                events += acc.fold(delta, idx)
            acc.finish_reason = c.get("finish_reason") or acc.finish_reason
        return events

    @property
    def complete(self) -> bool:
        """[DONE] arrived, or at least a finish reason (some servers end without [DONE])."""
        return self._done or any(a.finish_reason for a in self._choices.values())

    def result(self, latency_s: float, ttft_s: float | None) -> ChatResult:
        return ChatResult(
            choices=[acc.choice(i) for i, acc in sorted(self._choices.items())],
            usage=_sum_usage(self._usages),
            timings=Timings.from_dict(self._timings),
            latency_s=latency_s,
            model=self._model,
            raw=self._last,
            ttft_s=ttft_s,
        )


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
