"""Delegation: the main model hands a sub-task to a subagent on the rlm slot.

The subagent starts from a fresh, minimal context (its own short system prompt, the task,
the same tools minus `delegate` itself), runs its own tool loop in its own session file
(`<parent>-sub<N>`, so its work can be read afterwards), and only its short final answer
goes back to the main model: the tool-heavy middle never enters the main context.

Each delegation is a `Delegation` record, reported to `on_change` as it starts, after
each of its rounds and when it ends; the app shows these as children of the chat session
in the process tree pane.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from nanobot_tui.engine.agent.tools.registry import Tool, ToolError, object_schema
from nanobot_tui.engine.llm.errors import LLMError

if TYPE_CHECKING:
    from nanobot_tui.engine.agent.loop import Agent

ANSWER_CHARS = 1500  # what comes back to the main model, at most


@dataclass(frozen=True)
class Delegation:
    id: int
    task: str
    session: str  # the subagent's session name
    status: str = "running"  # running | completed | failed | cancelled
    rounds: int = 0
    tool_calls: int = 0
    tokens: int = 0
    answer: str = ""
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.time()) - self.started


DelegationSink = Callable[[Delegation], None]
# Builds the subagent for a delegation (its client, tools, session); the caller decides.
SubagentFactory = Callable[[Delegation], "Agent"]


def delegate_tool(
    make_subagent: SubagentFactory,
    *,
    session_prefix: str,
    on_change: DelegationSink | None = None,
    answer_chars: int = ANSWER_CHARS,
    first: int = 1,
) -> Tool:
    """`first`: the number of the first delegation (a resumed session goes on counting,
    so its subagents' session names stay unique)."""
    counter = itertools.count(first)
    notify = on_change or (lambda _d: None)

    async def run(args: dict[str, object]) -> str:
        from nanobot_tui.engine.agent.loop import RoundDone, ToolCalls, TurnDone

        task = str(args["task"]).strip()
        if not task:
            raise ToolError("delegate: the task is empty; say what the subagent should do")
        n = next(counter)
        record = Delegation(n, task, f"{session_prefix}-sub{n}")
        notify(record)
        try:
            agent = make_subagent(record)
            async for event in agent.turn(task):
                if isinstance(event, ToolCalls):
                    record = replace(record, tool_calls=record.tool_calls + len(event.calls))
                elif isinstance(event, RoundDone):
                    tokens = record.tokens + event.usage.total_tokens
                    record = replace(record, rounds=event.round, tokens=tokens)
                    notify(record)
                elif isinstance(event, TurnDone):
                    record = replace(record, answer=event.answer.strip())
        except asyncio.CancelledError:
            notify(replace(record, status="cancelled", finished=time.time()))
            raise
        except LLMError as exc:
            notify(replace(record, status="failed", error=str(exc), finished=time.time()))
            raise ToolError(f"delegate: the subagent's model failed: {exc}") from None
        except Exception as exc:  # whatever broke, the tree must not show it running forever
            error = f"{type(exc).__name__}: {exc}"
            notify(replace(record, status="failed", error=error, finished=time.time()))
            raise ToolError(f"delegate: the subagent failed: {error}") from None
        record = replace(record, status="completed", finished=time.time())
        notify(record)
        answer = record.answer or "(the subagent gave no answer)"
        if len(answer) > answer_chars:
            answer = answer[:answer_chars] + f" … [cut; the whole answer is in {record.session}]"
        return f"Subagent ({record.rounds} rounds, {record.tool_calls} tool calls): {answer}"

    return Tool(
        name="delegate",
        description="Hand a self-contained sub-task to a helper with the same tools; "
        "returns its short result.",
        parameters=object_schema({"task": "string"}, ["task"]),
        handler=run,
        read_only=False,
    )
