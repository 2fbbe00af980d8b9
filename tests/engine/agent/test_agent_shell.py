"""The shell tool on real processes: timeouts kill the whole group, output is capped."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.engine.agent.tools.registry import ToolRegistry
from nanobot_tui.engine.agent.tools.shell import run_shell, scrubbed_env, shell_tool
from nanobot_tui.engine.agent.tools.workspace import Workspace
from nanobot_tui.engine.llm.results import ToolCall
from tests.conftest import until


def group_gone(pgid: int) -> bool:
    """No running process is left in group `pgid` (zombies awaiting their reaper aside)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                return False
    return True


@pytest.fixture
def shell_pids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pid of each shell that run_shell starts: each leads its own process group."""
    pids: list[int] = []
    spawn = asyncio.create_subprocess_exec

    async def recording_spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await spawn(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording_spawn)
    return pids


async def test_runs_in_the_workspace_and_reports_the_exit_code(tmp_path: Path) -> None:
    out = await run_shell("pwd; echo oops >&2; exit 3", cwd=tmp_path, timeout=60, output_chars=500)
    assert out == f"exit code 3\n{tmp_path}\noops\n"
    assert await run_shell("true", cwd=tmp_path, timeout=60, output_chars=500) == (
        "exit code 0\n(no output)"
    )
    # No stdin: a command that reads it gets end of file at once instead of hanging.
    out = await run_shell("cat; echo read-done", cwd=tmp_path, timeout=60, output_chars=500)
    assert out == "exit code 0\nread-done\n"


async def test_the_environment_has_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-2")
    monkeypatch.setenv("MY_SECRET", "s-3")
    monkeypatch.setenv("DB_PASSWORD", "p-4")
    monkeypatch.setenv("aws_secret_access_key", "a-5")
    monkeypatch.setenv("HARMLESS_SETTING", "kept")
    out = await run_shell("env", cwd=tmp_path, timeout=60, output_chars=100_000)
    for value in ("sk-1", "ghp-2", "s-3", "p-4", "a-5"):
        assert value not in out
    assert "HARMLESS_SETTING=kept" in out and "PAGER=cat" in out
    env = scrubbed_env({"PATH": "/bin", "API_KEY": "x", "keyring": "y"})
    assert env["PATH"] == "/bin" and "API_KEY" not in env and "keyring" not in env


async def test_a_timeout_stops_the_whole_group(tmp_path: Path, shell_pids: list[int]) -> None:
    # Left alone, the command would end after 30 s and print "not stopped".
    out = await run_shell(
        "sleep 30 & sleep 30; echo not stopped", cwd=tmp_path, timeout=1, output_chars=500
    )
    assert out == "timed out after 1 s; the command and its children were stopped\n(no output)"
    assert group_gone(shell_pids[0])  # the background sleep as well as the foreground one


async def test_a_child_that_ignores_sigterm_gets_sigkill(
    tmp_path: Path, shell_pids: list[int]
) -> None:
    # The shell must ignore SIGTERM before its timeout ends: one too busy to say "ready"
    # within 1 s is given 10 s instead.
    for timeout in (1, 10):
        t0 = time.monotonic()
        out = await run_shell(
            "trap '' TERM; echo ready; sleep 30; echo not stopped",
            cwd=tmp_path,
            timeout=timeout,
            output_chars=500,
            kill_grace=1,
        )
        waited = time.monotonic() - t0
        if "ready" in out:
            break
    assert out == f"timed out after {timeout} s; the command and its children were stopped\nready\n"
    # SIGTERM stopped nothing, so it waited out the grace (a lower bound: a busy machine
    # only waits longer); then SIGKILL stopped the group.
    assert waited >= timeout + 1
    assert group_gone(shell_pids[-1])


async def test_background_children_do_not_outlive_the_command(
    tmp_path: Path, shell_pids: list[int]
) -> None:
    # The background child holds the output pipe for 20 s, then prints "late": a call that
    # waited for it (for the pipe to close) would return that line, or time out.
    out = await run_shell("(sleep 20; echo late) &", cwd=tmp_path, timeout=60, output_chars=500)
    assert out == "exit code 0\n(no output)"
    assert group_gone(shell_pids[0])


async def test_cancelling_the_call_stops_the_group(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    task = asyncio.create_task(
        run_shell(f"echo $$ > {marker}; sleep 30", cwd=tmp_path, timeout=60, output_chars=500)
    )
    await until(lambda: marker.exists() and marker.read_text().strip())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert group_gone(int(marker.read_text()))


async def test_long_output_keeps_head_and_tail(tmp_path: Path) -> None:
    out = await run_shell("seq 1 100000", cwd=tmp_path, timeout=60, output_chars=1000)
    assert len(out) <= 1000
    assert out.startswith("exit code 0\n1\n2\n3\n")
    assert out.endswith("99999\n100000\n")
    total = len("".join(f"{i}\n" for i in range(1, 100001)).encode())
    head, tail = out.removeprefix("exit code 0\n").split("\n… [cut ")
    cut = int(tail.split(" bytes")[0].replace(",", ""))
    kept_tail = tail.split("] …\n", 1)[1]
    assert len(head) + cut + len(kept_tail) == total


async def test_the_tool_through_the_registry(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    tool = shell_tool(ws, timeout=60, output_chars=2000)
    assert tool.name == "shell" and not tool.read_only
    registry = ToolRegistry([tool], output_chars=2000)

    def call(arguments: object) -> ToolCall:
        return ToolCall(id="s", name="shell", arguments=json.dumps(arguments))

    result = await registry.execute(call({"command": "echo hi > made.txt; ls"}))
    assert result.ok and result.content == "exit code 0\nmade.txt\n"
    assert (tmp_path / "made.txt").read_text() == "hi\n"
    result = await registry.execute(call({"command": "  "}))
    assert not result.ok and result.content == "error: the command is empty"
    result = await registry.execute(call({"cmd": "ls"}))
    assert not result.ok and "missing required argument 'command'" in result.content
