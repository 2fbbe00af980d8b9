"""How tool calls travel between the agent and a model: natively, or written in the text.

A server whose chat template renders tools (llama.cpp says so in /props
`chat_template_caps.supports_tools`; every cloud API) gets them in the OpenAI `tools` field
and answers with structured `tool_calls`: `NativeTools`.

A template that cannot (SmolLM2's, the embedded default) would silently drop the `tools`
field: the model would never see a tool. `PromptedTools` then lists the tools in the
system prompt, compactly, and reads calls back out of the answer's text in the format
small models are trained on (`<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>`),
forgiving the usual slips (a bare JSON object, a code fence, a missing closing tag,
arguments given as a string). What it cannot read becomes a `problem` that goes back to
the model, never an exception. The session always keeps OpenAI-shaped messages;
`PromptedTools.wire` turns them into what the template can render.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nanobot_tui.engine.agent.tools.registry import MAX_JSON_DEPTH, json_too_deep
from nanobot_tui.engine.llm.results import ToolCall

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_TOO_DEEP = f"your tool call nests deeper than {MAX_JSON_DEPTH} levels; give flat arguments"


@dataclass(frozen=True)
class Parsed:
    text: str  # the answer's prose, calls taken out
    calls: list[ToolCall] = field(default_factory=list)
    problem: str | None = None  # a call the model tried to write but that could not be read


class ToolProtocol(Protocol):
    name: str

    def system_text(self, specs: Sequence[dict[str, Any]]) -> str: ...

    def request_tools(self, specs: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None: ...

    def stop(self) -> list[str] | None: ...

    def response_format(self, specs: Sequence[dict[str, Any]]) -> dict[str, Any] | None: ...

    def wire(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def parse(self, content: str, native: Sequence[ToolCall], round_no: int) -> Parsed: ...

    def looks_like_call(self, prefix: str) -> bool | None: ...


class NativeTools:
    """The server renders the tools and parses the calls."""

    name = "native"

    def system_text(self, specs: Sequence[dict[str, Any]]) -> str:
        return ""

    def request_tools(self, specs: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
        return list(specs) or None

    def stop(self) -> list[str] | None:
        return None

    def response_format(self, specs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        return None

    def wire(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        # The session keeps the tool's name on its result for display; the OpenAI schema
        # has no such field on tool messages, and strict endpoints refuse extra fields.
        return [
            {k: v for k, v in m.items() if k != "name"} if m.get("role") == "tool" else m
            for m in messages
        ]

    def parse(self, content: str, native: Sequence[ToolCall], round_no: int) -> Parsed:
        return Parsed(content, list(native))

    def looks_like_call(self, prefix: str) -> bool | None:
        return False


class PromptedTools:
    """Tools listed in the system prompt, calls read from the answer's text."""

    name = "prompted"

    def system_text(self, specs: Sequence[dict[str, Any]]) -> str:
        if not specs:
            return ""
        lines = [_signature(spec["function"]) for spec in specs]
        return (
            "To use a tool, reply with only "
            f'{CALL_OPEN}[{{"name": "TOOL", "arguments": {{...}}}}]{CALL_CLOSE} '
            "and wait for its result. Otherwise answer directly.\n<tools>\n"
            + "\n".join(lines)
            + "\n</tools>"
        )

    def request_tools(self, specs: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
        return None  # the template would drop them; they are in the system prompt

    def stop(self) -> list[str] | None:
        return [CALL_CLOSE]  # one call per turn: the model waits for its result

    def response_format(self, specs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        return None

    def wire(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Assistant tool calls back into their text form; tool results as one user turn
        (the template knows no `tool` role)."""
        out: list[dict[str, Any]] = []
        results: list[str] = []

        def flush() -> None:
            if results:
                out.append({"role": "user", "content": "\n".join(results)})
                results.clear()

        for message in messages:
            role = message.get("role")
            if role == "tool":
                name = message.get("name") or "tool"
                results.append(f'<tool_response name="{name}">\n{message.get("content") or ""}')
                results[-1] += "\n</tool_response>"
                continue
            flush()
            calls = message.get("tool_calls")
            if role == "assistant" and calls:
                written = [
                    {"name": c["function"]["name"], "arguments": _loads_or_raw(c)} for c in calls
                ]
                text = (message.get("content") or "").strip()
                call_text = f"{CALL_OPEN}{json.dumps(written)}{CALL_CLOSE}"
                out.append({"role": "assistant", "content": f"{text}\n{call_text}".strip()})
            else:
                out.append({"role": role, "content": message.get("content") or ""})
        flush()
        return out

    def parse(self, content: str, native: Sequence[ToolCall], round_no: int) -> Parsed:
        if native:  # a server that did parse calls after all
            return Parsed(content, list(native))
        start = content.find(CALL_OPEN)
        if start >= 0:
            body = content[start + len(CALL_OPEN) :]
            end = body.find(CALL_CLOSE)
            body = body[:end] if end >= 0 else body
            prose = content[:start].strip()
            return _read_calls(_unfence(body), prose, round_no, explicit=True)
        stripped = _unfence(content.strip())
        if stripped.startswith(("{", "[")) and '"name"' in stripped:
            return _read_calls(stripped, "", round_no, explicit=False, fallback=content)
        return Parsed(content)

    def looks_like_call(self, prefix: str) -> bool | None:
        """For streaming: True when the answer so far starts like a call (hold it back),
        False when it is prose (show it), None while it cannot be told yet."""
        return _call_prefix(prefix)


class ConstrainedTools(PromptedTools):
    """Prompted tools whose every reply is held to a JSON schema by the server's grammar:
    `{"tool": NAME, "arguments": {...}}` with that tool's own argument schema, or
    `{"answer": TEXT}`. A model too small to write a call in free text (SmolLM2-135M never
    does) then always writes a well-formed one; whether it picks well is another matter,
    measured in benchmarks/agent_rounds.py. The answer arrives whole, not streamed."""

    name = "constrained"

    def system_text(self, specs: Sequence[dict[str, Any]]) -> str:
        if not specs:
            return ""
        lines = [_signature(spec["function"]) for spec in specs]
        return (
            'Reply in JSON: {"tool": NAME, "arguments": {...}} to call a tool and wait for '
            'its result, or {"answer": TEXT}.\n<tools>\n' + "\n".join(lines) + "\n</tools>"
        )

    def stop(self) -> list[str] | None:
        return None

    def response_format(self, specs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        if not specs:
            return None
        choices: list[dict[str, Any]] = [_closed({"answer": {"type": "string"}})]
        for spec in specs:
            function = spec["function"]
            params = dict(function.get("parameters") or {"type": "object"})
            params.setdefault("properties", {})
            params["additionalProperties"] = False
            choices.append(_closed({"tool": {"const": function["name"]}, "arguments": params}))
        schema = {"anyOf": choices}
        return {"type": "json_schema", "json_schema": {"schema": schema}}

    def wire(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = super().wire(messages)
        # The model's own calls as it wrote them (the JSON form), not the <tool_call> form.
        for sent, kept in zip(_assistants(out), _assistants(messages), strict=True):
            calls = kept.get("tool_calls")
            if calls:
                c = calls[0]
                sent["content"] = json.dumps(
                    {"tool": c["function"]["name"], "arguments": _loads_or_raw(c)}
                )
        return out

    def parse(self, content: str, native: Sequence[ToolCall], round_no: int) -> Parsed:
        if json_too_deep(content):
            return Parsed("", problem=_TOO_DEEP)
        try:
            value = json.loads(content)
        except json.JSONDecodeError:
            # Cut short by max_tokens mid-JSON: nothing usable, say so to the model.
            return Parsed("", problem="your reply was cut off before its JSON ended; be shorter")
        if isinstance(value, dict) and isinstance(value.get("tool"), str):
            args = value.get("arguments") or {}
            call = ToolCall(id=f"call_{round_no}_0", name=value["tool"], arguments=json.dumps(args))
            return Parsed("", [call])
        if isinstance(value, dict) and isinstance(value.get("answer"), str):
            return Parsed(value["answer"])
        return Parsed(content)

    def looks_like_call(self, prefix: str) -> bool | None:
        return True  # JSON until the end: the answer is shown once parsed


def _closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _assistants(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("role") == "assistant"]


# --- reading calls ----------------------------------------------------------------------

_FENCE_OPEN = re.compile(r"```[a-zA-Z]*[ \t]*(\n|$)")
_CALL_KEYS = ('"name"', '"arguments"', '"parameters"', '"args"')


def _call_prefix(prefix: str) -> bool | None:
    """Whether an answer that starts with `prefix` is a tool call: True (hold it back),
    False (prose: show it), None (cannot be told yet). Decided as soon as the text can no
    longer be a call's start, so an answer that opens with a code fence, `[` or `{`
    streams from its first characters unless they are `{"name"`, `[{"name"` and the like."""
    head = prefix.lstrip()
    if not head:
        return None
    if head.startswith(CALL_OPEN):
        return True
    if CALL_OPEN.startswith(head):
        return None
    if head.startswith("`"):
        if "```".startswith(head):
            return None
        fence = _FENCE_OPEN.match(head)
        if fence is None:
            # "```lang" still being written, or not a fence at all
            return None if re.fullmatch(r"```[a-zA-Z]*[ \t]*", head) else False
        if not fence.group(1):
            return None
        return _call_prefix(head[fence.end() :]) if head[fence.end() :].strip() else None
    if head.startswith("["):
        rest = head[1:].lstrip()
        return None if not rest else (_object_prefix(rest) if rest[0] == "{" else False)
    if head.startswith("{"):
        return _object_prefix(head)
    return False


def _object_prefix(head: str) -> bool | None:
    """The same for text that starts with `{`: a call when its first key is one of a
    call's keys."""
    rest = head[1:].lstrip()
    if not rest:
        return None
    if any(rest.startswith(key) for key in _CALL_KEYS):
        return True
    return None if any(key.startswith(rest) for key in _CALL_KEYS) else False


_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def _unfence(text: str) -> str:
    return _FENCE.sub("", text.strip()).strip()


def _loads_or_raw(call: dict[str, Any]) -> Any:
    raw = call["function"].get("arguments") or "{}"
    if json_too_deep(raw):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _read_calls(
    body: str, prose: str, round_no: int, *, explicit: bool, fallback: str = ""
) -> Parsed:
    """The calls in `body` (a JSON list of calls or one call). With explicit=False (a bare
    JSON answer) anything unreadable is taken as prose, not as a failed call."""
    fix = f'write it as {CALL_OPEN}[{{"name": "TOOL", "arguments": {{...}}}}]{CALL_CLOSE}'
    if json_too_deep(body):
        return Parsed(prose, problem=_TOO_DEEP) if explicit else Parsed(fallback)
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as exc:
        if not explicit:
            return Parsed(fallback)
        return Parsed(prose, problem=f"your tool call is not valid JSON ({exc.msg}); {fix}")
    items = value if isinstance(value, list) else [value]
    calls: list[ToolCall] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            if not explicit:
                return Parsed(fallback)
            return Parsed(prose, problem=f'each tool call needs a "name"; {fix}')
        args = item.get("arguments", item.get("parameters", item.get("args", {})))
        # Arguments written as a JSON string stay raw: the registry says what is wrong.
        raw = args if isinstance(args, str) else json.dumps(args if args is not None else {})
        calls.append(ToolCall(id=f"call_{round_no}_{i}", name=item["name"], arguments=raw))
    if not calls and explicit:
        return Parsed(prose, problem=f"the tool call list is empty; {fix}")
    return Parsed(prose, calls)


def _signature(function: dict[str, Any]) -> str:
    """`name(arg: type, opt?: type) - description`: a tool in a dozen tokens."""
    params = function.get("parameters") or {}
    required = set(params.get("required") or ())
    args = []
    for arg, schema in (params.get("properties") or {}).items():
        kind = schema.get("type", "any")
        if "enum" in schema:
            kind = "|".join(map(str, schema["enum"]))
        args.append(f"{arg}{'' if arg in required else '?'}: {kind}")
    return f"{function['name']}({', '.join(args)}) - {function.get('description', '')}".strip()
