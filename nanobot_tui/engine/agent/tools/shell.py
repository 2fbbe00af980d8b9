"""The shell tool: one /bin/sh command in the workspace, in its own process group.

The command gets no stdin and an environment without secrets; it may run for `timeout`
seconds, after which its whole process group gets SIGTERM and, KILL_GRACE_S later,
SIGKILL. Whatever it left running in the background when it ended is stopped the same
way, so nothing it started outlives the call. Its output keeps the head and the tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from pathlib import Path
from typing import Any

from nanobot_tui.engine.agent.tools.registry import Tool, ToolError, object_schema
from nanobot_tui.engine.agent.tools.workspace import Workspace

# Environment variables whose names hold one of these are not handed to the command.
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
# stdin is /dev/null: nothing may stop to wait for a person.
NON_INTERACTIVE = {"PAGER": "cat", "GIT_PAGER": "cat", "GIT_TERMINAL_PROMPT": "0"}
# Between SIGTERM and SIGKILL to the process group.
KILL_GRACE_S = 2.0
# After the shell exits, how long background children may keep writing to the pipe.
DRAIN_S = 0.5
READ_CHUNK = 65536
POLL_S = 0.05
# Room in the output budget for the status line and the cut note.
_OVERHEAD = 150


def scrubbed_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) without variables that look like secrets."""
    source = os.environ if env is None else env
    kept = {k: v for k, v in source.items() if not any(w in k.upper() for w in SECRET_WORDS)}
    return {**kept, **NON_INTERACTIVE}


def shell_tool(ws: Workspace, *, timeout: float, output_chars: int) -> Tool:
    async def handler(args: dict[str, Any]) -> str:
        return await run_shell(
            args["command"], cwd=ws.root, timeout=timeout, output_chars=output_chars
        )

    return Tool(
        "shell",
        "Run a shell command in the workspace.",
        object_schema({"command": "string"}, ["command"]),
        handler,
        read_only=False,
    )


async def run_shell(
    command: str,
    *,
    cwd: Path,
    timeout: float,
    output_chars: int,
    kill_grace: float = KILL_GRACE_S,
) -> str:
    """Run `command` with /bin/sh -c in `cwd`: its exit status and combined output, at most
    about `output_chars` characters (head and tail kept)."""
    if not command.strip():
        raise ToolError("the command is empty")
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, which we can stop as a whole
        env=scrubbed_env(),
    )
    budget = max(100, output_chars - _OVERHEAD)
    sink = _HeadTail(budget // 2, budget - budget // 2)
    assert proc.stdout is not None
    reader = asyncio.create_task(_read_all(proc.stdout, sink))
    # proc.wait() also waits for the pipe to close, which a background child can hold
    # open: the shell's own exit shows in returncode, so poll that as well.
    waiter = asyncio.create_task(proc.wait())
    deadline = asyncio.get_running_loop().time() + timeout
    timed_out = False
    try:
        while proc.returncode is None:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                timed_out = True
                break
            await asyncio.wait({waiter}, timeout=min(remaining, POLL_S))
        if not timed_out:
            await asyncio.wait({reader}, timeout=DRAIN_S)
    finally:
        # Also on cancellation and after a normal exit: nothing it started may live on.
        await _stop_group(proc, kill_grace)
        await asyncio.wait({reader}, timeout=0.2)  # what is still in the pipe
        reader.cancel()
        waiter.cancel()
    if timed_out:
        status = f"timed out after {timeout:g} s; the command and its children were stopped"
    elif proc.returncode is not None and proc.returncode < 0:
        status = f"killed by {signal.Signals(-proc.returncode).name}"
    else:
        status = f"exit code {proc.returncode}"
    return f"{status}\n{sink.text() or '(no output)'}"


class _HeadTail:
    """Keeps the first `head` and the last `tail` bytes of a stream, and counts the rest."""

    def __init__(self, head: int, tail: int) -> None:
        self.head_limit = head
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_limit = tail
        self.tail_size = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data:
            return
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size - len(self.tail[0]) >= self.tail_limit:
            self.tail_size -= len(self.tail.popleft())

    def text(self) -> str:
        tail = b"".join(self.tail)[-self.tail_limit :] if self.tail else b""
        cut = self.total - len(self.head) - len(tail)
        head_text = self.head.decode("utf-8", "replace")
        tail_text = tail.decode("utf-8", "replace")
        if cut <= 0:
            return head_text + tail_text
        return f"{head_text}\n… [cut {cut:,} bytes from the middle] …\n{tail_text}"


async def _read_all(stream: asyncio.StreamReader, sink: _HeadTail) -> None:
    while chunk := await stream.read(READ_CHUNK):
        sink.write(chunk)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _live_member(pgid)


def _live_member(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running: killpg also reaches zombies,
    which an init that does not reap them (a bare container's) keeps forever."""
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs (macOS): trust killpg
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


async def _stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it `grace` seconds later if any of it is left,
    and reap the shell."""
    pgid = proc.pid  # start_new_session: the shell leads its own group
    loop = asyncio.get_running_loop()
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.returncode is not None and not _group_alive(pgid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            await asyncio.sleep(POLL_S)
            if proc.returncode is not None and not _group_alive(pgid):
                return
