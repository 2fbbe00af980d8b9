"""MEMORY.md and the scratchpad, through the tools the model calls."""

from __future__ import annotations

import os
import stat
from datetime import date
from pathlib import Path

import pytest

from nanobot_tui import atomic, paths
from nanobot_tui.engine.agent.memory import MemoryFile, Scratchpad, memory_prompt, memory_tools
from nanobot_tui.engine.agent.sessions import SessionStore
from nanobot_tui.engine.agent.tools.registry import Tool, ToolError


def _tools() -> tuple[MemoryFile, Scratchpad, dict[str, Tool]]:
    memory = MemoryFile()
    session = SessionStore().create("work")
    pad = Scratchpad.for_session(session.path)
    return memory, pad, {t.name: t for t in memory_tools(memory, pad)}


def test_memory_update_appends_dated_bullets(nanobot_home: Path) -> None:
    memory, _, tools = _tools()
    assert memory.path == paths.memory_file()
    assert tools["memory_update"].read_only is False
    assert tools["memory_update"].handler({"note": "The user prefers metric units."}) == (
        "Saved to memory."
    )
    tools["memory_update"].handler({"note": "Project Zephyr ships in May.\nAsk about QA."})
    today = date.today().isoformat()
    assert memory.read() == (
        f"- {today}: The user prefers metric units.\n"
        f"- {today}: Project Zephyr ships in May.\n  Ask about QA.\n"
    )
    assert stat.S_IMODE(os.stat(memory.path).st_mode) == 0o600


def test_memory_update_replaces_a_section(nanobot_home: Path) -> None:
    memory, _, tools = _tools()
    memory.path.parent.mkdir(parents=True, exist_ok=True)
    memory.path.write_text(
        "# Notes\n\n## Preferences\n- tabs\n### detail\nold detail\n\n## People\n- Ana\n"
    )
    update = tools["memory_update"].handler
    assert update({"note": "- spaces, 4 wide", "section": "preferences"}) == (
        "Replaced section 'preferences'."
    )
    assert memory.read() == ("# Notes\n\n## Preferences\n- spaces, 4 wide\n\n## People\n- Ana\n")
    assert update({"note": "Lisbon", "section": "Places"}) == "Added section 'Places'."
    assert memory.read().endswith("## People\n- Ana\n\n## Places\nLisbon\n")


def test_memory_writes_are_atomic(nanobot_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = MemoryFile()
    memory.append("kept")
    before = memory.read()

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", crash)  # MemoryFile writes through atomic.py
    tool = {t.name: t for t in memory_tools(memory, Scratchpad(nanobot_home / "p.md"))}
    with pytest.raises(ToolError, match="No space left on device"):
        tool["memory_update"].handler({"note": "lost"})
    assert memory.read() == before  # the old file is whole
    leftovers = [p.name for p in memory.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_bad_notes_are_tool_errors(nanobot_home: Path) -> None:
    _, _, tools = _tools()
    update = tools["memory_update"].handler
    with pytest.raises(ToolError, match="note must be a string"):
        update({})
    with pytest.raises(ToolError, match="empty"):
        update({"note": "   "})
    with pytest.raises(ToolError, match="at most 2000"):
        update({"note": "x" * 2001})
    with pytest.raises(ToolError, match="bad section name"):
        update({"note": "x", "section": "## nested"})


def test_scratchpad_write_and_read(nanobot_home: Path) -> None:
    _, pad, tools = _tools()
    assert pad.path == paths.sessions_dir() / "work.scratch.md"
    read, write = tools["scratchpad_read"], tools["scratchpad_write"]
    assert read.read_only and not write.read_only
    assert read.handler({}) == "(the scratchpad is empty)"
    write.handler({"text": "step 1: list files"})
    write.handler({"text": "step 2: grep"})
    assert read.handler({}) == "step 1: list files\nstep 2: grep\n"
    assert write.handler({"text": "fresh", "append": False}) == "Scratchpad now 6 characters."
    assert read.handler({}) == "fresh\n"
    with pytest.raises(ToolError, match="append must be true or false"):
        write.handler({"text": "x", "append": "yes"})
    with pytest.raises(ToolError, match="at most"):
        write.handler({"text": "x" * 70_000})
    # The session listing does not mistake the pad for a session.
    assert [i.name for i in SessionStore().list()] == ["work"]


def test_memory_prompt_is_none_when_empty_and_clipped_when_long(nanobot_home: Path) -> None:
    memory = MemoryFile()
    assert memory_prompt(memory) is None
    memory.path.parent.mkdir(parents=True, exist_ok=True)
    memory.path.write_text("\n  \n")
    assert memory_prompt(memory) is None
    memory.append("short note")
    prompt = memory_prompt(memory)
    assert prompt is not None and prompt.endswith("short note")
    for i in range(100):
        memory.append(f"note number {i} with some words to fill the line")
    prompt = memory_prompt(memory, max_chars=500)
    assert prompt is not None and len(prompt) < 650
    assert "more characters of MEMORY.md not shown" in prompt
    assert "short note" in prompt  # the start is kept
