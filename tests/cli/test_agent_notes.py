"""`nanobot agent`'s notes on stderr: each tool call and result is one short line."""

from __future__ import annotations

import pytest

from nanobot_tui.cli.agent import _Turn
from nanobot_tui.engine.agent.loop import ToolCalls, ToolDone
from nanobot_tui.engine.agent.tools.registry import ToolResult
from nanobot_tui.engine.llm.results import ToolCall


def test_a_huge_tool_call_is_clipped_to_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    content = "line\n" * 20_000  # a write_file of 100 KB
    arguments = '{"path": "a.txt", "content": ' + repr(content).replace("'", '"') + "}"
    _Turn(quiet=False).show(ToolCalls(1, [ToolCall("c1", "write_file", arguments)]))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("→ write_file(")
    assert len(err) < 400 and f"{len(arguments)} chars" in err


def test_a_failed_tool_says_error_once(capsys: pytest.CaptureFixture[str]) -> None:
    result = ToolResult("c1", "read_file", {"path": "x"}, "error: no such file: x", False, 0.01)
    _Turn(quiet=False).show(ToolDone(result))
    assert capsys.readouterr().err == "  error: no such file: x\n"
