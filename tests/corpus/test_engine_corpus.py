"""The bad-input corpus through the engine: tool-call arguments a model might write, run
through the agent's real tool registry over a real workspace and volume, and model text
holding terminal control sequences through `printable`. Every call ends as a ToolResult
the model can read (never an exception, never the registry's catch-all for a bug), and
the files saved before are as they were."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.agent.tools.defaults import default_tools
from nanobot_tui.engine.agent.tools.registry import ToolRegistry
from nanobot_tui.engine.agent.tools.workspace import Workspace
from nanobot_tui.engine.context.micro_tools import ContextStore
from nanobot_tui.engine.llm.results import ToolCall
from nanobot_tui.text import printable
from tests.corpus.cases import CONTROL_TEXTS

OUTPUT_CHARS = 2000
DEEP = "[" * 100_000 + "]" * 100_000

# (tool, raw arguments text) as a model might send them; none may escape as an exception.
TOOL_CALLS: dict[str, tuple[str, str]] = {
    "unknown-tool": ("rm_rf", "{}"),
    "unknown-tool-odd-name": ("\x1b[31mread\x00", "{}"),
    "shell-turned-off": ("shell", '{"command": "ls"}'),
    "not-json": ("read_file", "read keep.txt please"),
    "cut-json": ("read_file", '{"path": "keep.txt"'),
    "single-quotes": ("read_file", "{'path': 'keep.txt'}"),
    "json-null": ("read_file", "null"),
    "json-array": ("read_file", '["keep.txt"]'),
    "json-number": ("read_file", "42"),
    "json-string": ("read_file", '"keep.txt"'),
    "nan": ("read_file", '{"path": "keep.txt", "start_line": NaN}'),
    "infinity": ("read_file", '{"path": "keep.txt", "max_lines": Infinity}'),
    "path-a-number": ("read_file", '{"path": 5}'),
    "path-null": ("read_file", '{"path": null}'),
    "path-a-list": ("read_file", '{"path": ["keep.txt"]}'),
    "path-an-object": ("read_file", '{"path": {"a": 1}}'),
    "line-a-string": ("read_file", '{"path": "keep.txt", "start_line": "x"}'),
    "line-a-fraction": ("read_file", '{"path": "keep.txt", "start_line": 1.5}'),
    "line-negative": ("read_file", '{"path": "keep.txt", "start_line": -5}'),
    "line-huge": ("read_file", '{"path": "keep.txt", "start_line": 1e30}'),
    "lines-huge-int": ("read_file", f'{{"path": "keep.txt", "max_lines": {10**40}}}'),
    "line-a-bool": ("read_file", '{"path": "keep.txt", "start_line": true}'),
    "missing-required": ("write_file", '{"path": "new.txt"}'),
    "no-arguments": ("edit_file", ""),
    "unknown-argument": ("read_file", '{"path": "keep.txt", "sudo": true}'),
    "duplicate-keys": ("read_file", '{"path": "nope.txt", "path": "keep.txt"}'),
    "deep-nesting": ("read_file", DEEP),
    "deep-in-a-value": ("write_file", '{"path": "d.txt", "content": ' + DEEP + "}"),
    "deep-in-a-string": ("write_file", json.dumps({"path": "s.txt", "content": DEEP})),
    "huge-path": ("read_file", json.dumps({"path": "a" * 100_000})),
    "huge-content": ("write_file", json.dumps({"path": "big.txt", "content": "x" * 3_000_000})),
    "nul-in-path": ("read_file", '{"path": "keep\\u0000.txt"}'),
    "lone-surrogate-path": ("write_file", '{"path": "\\ud800.txt", "content": "x"}'),
    "lone-surrogate-content": ("write_file", '{"path": "sur.txt", "content": "a\\udc80b"}'),
    "escape-by-dots": ("read_file", '{"path": "../outside.txt"}'),
    "escape-absolute": ("write_file", '{"path": "/etc/nanobot-corpus", "content": "x"}'),
    "overwrite-escape": ("write_file", '{"path": "../outside.txt", "content": "gone"}'),
    "edit-missing-file": ("edit_file", '{"path": "nope.txt", "old": "a", "new": "b"}'),
    "edit-empty-old": ("edit_file", '{"path": "keep.txt", "old": "", "new": "b"}'),
    "list-a-file": ("list_dir", '{"path": "keep.txt"}'),
    "read-a-folder": ("read_file", '{"path": "."}'),
    "grep-backtracking": ("ctx_grep", '{"volume": "v", "pattern": "(a+)+$"}'),
    "grep-invalid": ("ctx_grep", '{"volume": "v", "pattern": "("}'),
    "grep-backreference": ("ctx_grep", '{"volume": "v", "pattern": "(a)\\\\1"}'),
    "grep-lookbehind": ("ctx_grep", '{"volume": "v", "pattern": "(?<=a)b"}'),
    "grep-no-volume": ("ctx_grep", '{"volume": "../../etc", "pattern": "x"}'),
    "slice-backwards": ("ctx_slice", '{"volume": "v", "start": 9, "end": 2}'),
    "slice-strings": ("ctx_slice", '{"volume": "v", "start": "a", "end": "b"}'),
    "slice-huge": ("ctx_slice", f'{{"volume": "v", "start": 1, "end": {10**30}}}'),
    "length-no-volume": ("ctx_length", '{"volume": ""}'),
    "search-empty": ("ctx_search", '{"volume": "v", "query": ""}'),
}

REGISTRY_LOG = "nanobot_tui.engine.agent.tools.registry"


@pytest.fixture
def registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> ToolRegistry:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "keep.txt").write_text("saved before\n")
    (tmp_path / "outside.txt").write_text("outside\n")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a" * 5000 + "\nab\n")
    assert cli.main(["ingest", str(source), "--name", "v", "--no-index"]) == 0
    capsys.readouterr()
    return default_tools(
        Workspace(tmp_path / "ws"),
        ContextStore(),
        shell=False,
        shell_timeout=5,
        output_chars=OUTPUT_CHARS,
    )


@pytest.mark.parametrize("case", sorted(TOOL_CALLS))
async def test_a_bad_tool_call(
    case: str, registry: ToolRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=REGISTRY_LOG)
    name, arguments = TOOL_CALLS[case]
    result = await registry.execute(ToolCall(id="c1", name=name, arguments=arguments))
    # The catch-all for a bug in a tool logs with its traceback: none may be hit.
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in result.content
    assert result.content and len(result.content) <= OUTPUT_CHARS
    if not result.ok:
        assert result.content.startswith("error: ")
    assert (tmp_path / "ws" / "keep.txt").read_text() == "saved before\n"
    assert (tmp_path / "outside.txt").read_text() == "outside\n"
    json.dumps({"content": result.content})  # what goes back to the model serialises


async def test_a_batch_of_bad_calls_keeps_its_order(registry: ToolRegistry) -> None:
    calls = [
        ToolCall(id=f"c{i}", name=name, arguments=arguments)
        for i, (name, arguments) in enumerate(TOOL_CALLS.values())
    ]
    results = await registry.execute_all(calls)
    assert [r.call_id for r in results] == [c.id for c in calls]


@pytest.mark.parametrize("case", sorted(CONTROL_TEXTS))
def test_model_text_with_control_sequences(case: str) -> None:
    clean = printable(CONTROL_TEXTS[case])
    assert not [c for c in clean if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    assert "PWNED" not in clean and "evil" not in clean and "cm0g" not in clean
    assert printable(clean) == clean
    text = CONTROL_TEXTS[case]
    assert clean.startswith("a") == text.startswith("a")  # the text before them stays
