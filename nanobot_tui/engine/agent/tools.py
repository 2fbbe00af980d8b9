"""Tools the agent's models may call: what a tool is, and the registry that runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

ToolHandler = Callable[[dict[str, Any]], Awaitable[str] | str]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str  # one short sentence: every prompt token counts on a small window
    parameters: dict[str, Any]  # JSON schema of type "object"
    handler: ToolHandler  # returns the text the model sees
    read_only: bool = True  # read-only tools may run together; the others one at a time


class ToolError(Exception):
    """A problem the model caused (a bad path, an unknown key): its message goes back to
    the model as the tool's result."""


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    arguments: dict[str, Any] | None  # parsed; None when they did not parse
    content: str  # what the model sees, capped
    ok: bool
    elapsed_s: float
    truncated: bool = False
