"""Tool calls nested thousands deep (issue 12, item 19): a tool error or a call problem the
model sees, never a RecursionError out of the turn. The model is the scripted FAKE of
test_agent_loop (a real one cannot be made to write this on demand)."""

from __future__ import annotations

import json

import pytest

from nanobot_tui.engine.agent.loop import CallProblem
from nanobot_tui.engine.agent.tool_protocol import ConstrainedTools, PromptedTools
from nanobot_tui.engine.agent.tools.registry import MAX_JSON_DEPTH, json_too_deep
from nanobot_tui.engine.llm.results import ToolCall
from tests.engine.agent.test_agent_loop import (
    ScriptedModel,
    agent_on,
    collect,
    done_of,
    echo_registry,
)

DEEP = "[" * 100_000 + "]" * 100_000
# Under Python's recursion limit, so json.loads alone would take it: refused all the same.
MEDIUM = "[" * 500 + "]" * 500


@pytest.mark.parametrize("nested", [DEEP, MEDIUM])
async def test_a_deep_prompted_call_is_a_problem_the_model_sees(nested: str) -> None:
    model = ScriptedModel(
        [
            f'<tool_call>[{{"name": "echo", "arguments": {{"text": {nested}}}}}]</tool_call>',
            f'{{"name": "echo", "arguments": {{"text": {nested}}}}}',  # bare JSON
            "All right.",
        ]
    )
    agent = agent_on(model, echo_registry(), context_size=1_000_000)  # no compaction
    events = await collect(agent, "go")
    problems = [e.problem for e in events if isinstance(e, CallProblem)]
    assert problems == [
        f"your tool call nests deeper than {MAX_JSON_DEPTH} levels; give flat arguments"
    ]
    assert "nests deeper" in model.requests[1]["messages"][-1]["content"][-200:]
    # The bare JSON one is taken as prose: a final answer, not a crash.
    assert done_of(events).answer.startswith('{"name": "echo"')


async def test_a_deep_constrained_reply_is_a_problem_the_model_sees() -> None:
    model = ScriptedModel(
        [f'{{"tool": "echo", "arguments": {{"text": {DEEP}}}}}', '{"answer": "ok"}']
    )
    agent = agent_on(model, echo_registry(), protocol=ConstrainedTools(), context_size=1_000_000)
    events = await collect(agent, "go")
    assert [e.problem for e in events if isinstance(e, CallProblem)] == [
        f"your tool call nests deeper than {MAX_JSON_DEPTH} levels; give flat arguments"
    ]
    assert done_of(events).answer == "ok"


@pytest.mark.parametrize("nested", [DEEP, MEDIUM])
async def test_deep_native_arguments_are_a_tool_error(nested: str) -> None:
    registry = echo_registry()
    call = ToolCall(id="c1", name="echo", arguments=f'{{"text": {nested}}}')
    result = await registry.execute(call)
    assert not result.ok and result.arguments is None
    assert result.content == (
        f"error: tool call 'echo': the arguments nest deeper than {MAX_JSON_DEPTH} levels; "
        "give them flat"
    )


def test_a_deep_call_kept_in_a_session_is_wired_back_raw() -> None:
    raw = f'{{"text": {DEEP}}}'
    history = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "echo", "arguments": raw}}
            ],
        }
    ]
    for protocol in (PromptedTools(), ConstrainedTools()):
        assert raw in protocol.wire(history)[0]["content"].replace("\\", "")


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert not json_too_deep(json.dumps({"text": "[" * 1000, "q": '"{{{{' * 100}))
    assert not json_too_deep("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert json_too_deep("[" * (MAX_JSON_DEPTH + 1))
    assert json_too_deep('{"a": "\\"[[", "b": ' + "{" * 100)
