"""Tools the agent's models may call: what a tool is, and the registry that runs them."""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nanobot_tui.engine.llm.errors import ToolCallError
from nanobot_tui.engine.llm.results import ToolCall

ToolHandler = Callable[[dict[str, Any]], Awaitable[str] | str]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str  # one short sentence: every prompt token counts on a small window
    parameters: dict[str, Any]  # JSON schema of type "object"
    handler: ToolHandler  # returns the text the model sees
    read_only: bool = True  # read-only tools may run together; the others one at a time


def object_schema(
    properties: Mapping[str, str | dict[str, Any]], required: Sequence[str] = ()
) -> dict[str, Any]:
    """A tool's `parameters`: an object whose properties are each given by their JSON type
    ("string") or a whole schema, listing `required` when there are any."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            name: {"type": kind} if isinstance(kind, str) else kind
            for name, kind in properties.items()
        },
    }
    if required:
        schema["required"] = list(required)
    return schema


class ToolError(Exception):
    """A problem the model caused (a bad path, an unknown key): its message goes back to
    the model as the tool's result.

    Not a NanobotError: the user did not cause it and never sees it as an error; the
    registry turns it into a tool result for the model, so no front-end ever catches it.
    """


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    arguments: dict[str, Any] | None  # parsed; None when they did not parse
    content: str  # what the model sees, capped
    ok: bool
    elapsed_s: float
    truncated: bool = False


# --------------------------------------------------------------------------- the registry

# Tool names as the OpenAI API takes them.
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Failures the model caused: their message goes back to it as the result.
_MODEL_ERRORS = (ToolError, ValueError, OSError, KeyError, TimeoutError)
_CUT_NOTE = "\n… [cut {n:,} characters; read a narrower range]"
# JSON nested deeper than this is refused before it is parsed: Python's json recurses once
# per level, so a model writing "[[[[…" thousands deep would raise RecursionError.
MAX_JSON_DEPTH = 64
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')

log = logging.getLogger(__name__)


class ToolRegistry:
    """The tools one agent may call: their specs for the model, and a runner that turns
    every call, good or bad, into a ToolResult (only cancellation propagates)."""

    def __init__(self, tools: Iterable[Tool] = (), *, output_chars: int = 4000) -> None:
        if output_chars < 100:
            raise ValueError(f"output_chars must be at least 100, not {output_chars}")
        self.output_chars = output_chars
        self._tools: dict[str, Tool] = {}
        self._missing: dict[str, str] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if not _NAME_RE.fullmatch(tool.name):
            raise ValueError(f"bad tool name {tool.name!r}: use 1 to 64 of A-Z a-z 0-9 _ -")
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        if tool.parameters.get("type") != "object":
            raise ValueError(f"tool {tool.name!r}: parameters must be a schema of type object")
        self._tools[tool.name] = tool
        self._missing.pop(tool.name, None)

    def explain_missing(self, name: str, reason: str) -> None:
        """Say why tool `name` is not offered; a call to it then gets this reason back."""
        self._missing[name] = reason

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise KeyError(self._unknown(name)) from None

    def specs(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The OpenAI `tools` field for these tools (all of them by default)."""
        chosen = self.names() if names is None else list(names)
        return [_spec(self.get(name)) for name in chosen]

    async def execute(self, call: ToolCall) -> ToolResult:
        t0 = time.perf_counter()
        arguments: dict[str, Any] | None = None
        ok = False
        try:
            try:
                if json_too_deep(call.arguments):
                    raise ToolError(
                        f"tool call {call.name!r}: the arguments nest deeper than "
                        f"{MAX_JSON_DEPTH} levels; give them flat"
                    )
                arguments = call.parsed_arguments()
            except (ToolCallError, ToolError) as exc:
                parse_error: Exception | None = exc
            else:
                parse_error = None
            tool = self._tools.get(call.name)
            if tool is None:
                raise ToolError(self._unknown(call.name))
            if parse_error is not None:
                raise parse_error
            assert arguments is not None
            arguments = check_arguments(tool, arguments)
            content = await _run(tool, arguments)
            ok = True
        except _MODEL_ERRORS as exc:
            content = f"error: {_message(exc)}"
        except Exception as exc:  # a bug in a tool must not end the agent's loop
            log.debug("tool %s failed", call.name, exc_info=True)
            content = f"error: {type(exc).__name__}: {_message(exc)}"
        content, truncated = cap_text(content, self.output_chars)
        return ToolResult(
            call_id=call.id,
            name=call.name,
            arguments=arguments,
            content=content,
            ok=ok,
            elapsed_s=time.perf_counter() - t0,
            truncated=truncated,
        )

    async def execute_all(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Results in call order. Consecutive read-only calls run together; any other call
        waits for all before it and runs alone, so writes keep their order."""
        results: list[ToolResult] = []
        batch: list[ToolCall] = []
        for call in calls:
            tool = self._tools.get(call.name)
            if tool is None or tool.read_only:  # an unknown tool only fails: run it with reads
                batch.append(call)
                continue
            results += await self._gather(batch)
            batch = []
            results.append(await self.execute(call))
        results += await self._gather(batch)
        return results

    async def _gather(self, calls: list[ToolCall]) -> list[ToolResult]:
        if len(calls) == 1:
            return [await self.execute(calls[0])]
        return list(await asyncio.gather(*(self.execute(c) for c in calls)))

    def _unknown(self, name: str) -> str:
        if name in self._missing:
            return f"unknown tool {name!r}: {self._missing[name]}"
        known = ", ".join(self._tools) or "none"
        close = difflib.get_close_matches(name, self._tools, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown tool {name!r} (tools: {known}){hint}"


def _spec(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


async def _run(tool: Tool, arguments: dict[str, Any]) -> str:
    handler = tool.handler
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        out: Awaitable[str] | str = handler(arguments)
    else:
        # A plain function may block on I/O: a thread keeps the event loop responsive.
        out = await asyncio.to_thread(handler, arguments)
    if inspect.isawaitable(out):
        out = await out
    if not isinstance(out, str):
        raise TypeError(f"tool {tool.name!r} returned {type(out).__name__}, not text")
    return out


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON in `text` (valid or not) opens more than `limit` arrays or objects
    inside each other; brackets inside strings do not count. Linear in the text."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _message(exc: BaseException) -> str:
    """The exception's own words, without the quotes KeyError adds or OSError's errno."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    if len(exc.args) == 1 and isinstance(exc.args[0], str) and exc.args[0]:
        return exc.args[0]
    text = str(exc)
    if text:
        return text
    return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """Text cut to at most `limit` characters, ending with a note of how much was cut;
    the cut falls on a line break when one is near. (text, whether it was cut)."""
    if len(text) <= limit:
        return text, False
    keep = max(0, limit - len(_CUT_NOTE.format(n=len(text))))
    head = text[:keep]
    newline = head.rfind("\n")
    if newline > keep // 2:
        head = head[:newline]
    return head + _CUT_NOTE.format(n=len(text) - len(head)), True


# --------------------------------------------------------------------------- argument checks

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def check_arguments(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments checked against the tool's schema (a practical subset of JSON Schema:
    type, required, enum, unknown properties, minimum/maximum, string and array lengths).
    Whole floats given for integers become ints. ToolError names what is wrong."""
    checked = _check(arguments, tool.parameters, "", tool.name)
    assert isinstance(checked, dict)
    return checked


# Python types and their JSON names; bool before int, since a bool is an int too.
_JSON_TYPES = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next(
        (name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__
    )


def _fits(value: Any, kind: str) -> bool:
    actual = _json_type(value)
    if kind == "number":
        return actual in ("integer", "number")
    if kind == "integer":
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == kind


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:40] + "…"


def _check(value: Any, schema: dict[str, Any], where: str, tool: str) -> Any:
    def fail(problem: str) -> ToolError:
        what = f"argument {where!r}" if where else "the arguments"
        return ToolError(f"{tool}: {what} {problem}")

    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        kind = next((k for k in kinds if _fits(value, k)), None)
        if kind is None:
            expected = " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)
            raise fail(f"must be {expected}, got {_json_type(value)} {_show(value)}")
        if kind == "integer" and isinstance(value, float):
            value = int(value)
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(_show(c) for c in schema["enum"])
        raise fail(f"must be one of {choices}; got {_show(value)}")
    if _json_type(value) in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise fail(f"must be at least {schema['minimum']}, got {_show(value)}")
        if "maximum" in schema and value > schema["maximum"]:
            raise fail(f"must be at most {schema['maximum']}, got {_show(value)}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise fail("is empty" if not value else f"is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise fail(f"is longer than {schema['maxLength']} characters")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise fail(f"needs at least {schema['minItems']} items, got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise fail(f"takes at most {schema['maxItems']} items, got {len(value)}")
        items = schema.get("items")
        if isinstance(items, dict):
            value = [_check(v, items, f"{where}[{i}]", tool) for i, v in enumerate(value)]
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        value = _check_object(value, schema, where, tool)
    return value


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], where: str, tool: str
) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties", {})
    names = ", ".join(properties) or "none"
    prefix = f"{where}." if where else ""

    def label(key: str) -> str:
        return f"{prefix}{key}"

    for key in schema.get("required", []):
        if key not in value:
            raise ToolError(
                f"{tool}: missing required argument {label(key)!r} (arguments: {names})"
            )
    extra = schema.get("additionalProperties", False)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in properties:
            out[key] = _check(item, properties[key], label(key), tool)
        elif extra is False:
            close = difflib.get_close_matches(key, properties, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ToolError(f"{tool}: unknown argument {label(key)!r} (arguments: {names}){hint}")
        elif isinstance(extra, dict):
            out[key] = _check(item, extra, label(key), tool)
        else:
            out[key] = item
    return out
