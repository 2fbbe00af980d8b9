"""The workspace tools against paths that change under them (issue 12, items 17 and 19):
a folder swapped for a symlink after the check, a racing flipper, FIFOs and devices,
and files too large to read whole."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from nanobot_tui.engine.agent.tools import workspace as workspace_module
from nanobot_tui.engine.agent.tools.registry import ToolError
from nanobot_tui.engine.agent.tools.workspace import (
    Workspace,
    edit_file,
    list_dir,
    read_file,
    write_file,
)

SECRET = "the secret\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text(SECRET)
    (out / "only_outside.txt").write_text("x")
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "flip").mkdir(parents=True)
    (root / "flip" / "secret.txt").write_text("inside\n")
    return root


def _outside_intact(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["only_outside.txt", "secret.txt"]
    assert (outside / "secret.txt").read_text() == SECRET


TOOLS: dict[str, Callable[[Workspace], str]] = {
    "read_file": lambda ws: read_file(ws, "flip/secret.txt"),
    "list_dir": lambda ws: list_dir(ws, "flip"),
    "write_file": lambda ws: write_file(ws, "flip/secret.txt", "pwned\n"),
    "write_file_new": lambda ws: write_file(ws, "flip/planted.txt", "pwned\n"),
    "edit_file": lambda ws: edit_file(ws, "flip/secret.txt", "secret", "pwned"),
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_symlink_swapped_in_after_the_check_is_never_followed(
    tool: str, root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check passes on a real folder; right after it (a fault injector wrapping
    resolve) the folder becomes a symlink out. The tool must refuse, not go through."""
    checked = Workspace.resolve

    def resolve_then_swap(self: Workspace, path: str, *, must_exist: bool = True) -> Path:
        real = checked(self, path, must_exist=must_exist)
        flip = root / "flip"
        if not flip.is_symlink():
            flip.rename(root / "flip.away")
            flip.symlink_to(outside)
        return real

    monkeypatch.setattr(Workspace, "resolve", resolve_then_swap)
    ws = Workspace(root)
    with pytest.raises(ToolError, match="leads outside the workspace through a symlink"):
        TOOLS[tool](ws)
    _outside_intact(outside)


_FLIPPER = """
import os, sys, time
root, outside = sys.argv[1], sys.argv[2]
flip, away, stop = root + "/flip", root + "/flip.away", root + "/../stop"
deadline = time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < deadline:
    try:
        os.rename(flip, away)
        os.symlink(outside, flip)
        os.unlink(flip)
        os.rename(away, flip)
    except OSError:
        pass
"""


def test_the_tools_never_leave_while_a_process_flips_a_folder(
    root: Path, outside: Path, tmp_path: Path
) -> None:
    """A second process flips `flip` between a folder and a symlink out, as fast as it
    can, while every file tool works on it a few thousand times: no outside file is ever
    read, listed or written."""
    ws = Workspace(root)
    flipper = subprocess.Popen([sys.executable, "-c", _FLIPPER, str(root), str(outside)])
    done = {name: 0 for name in TOOLS}
    try:
        for _ in range(400):
            for name, tool in TOOLS.items():
                try:
                    out = tool(ws)
                except ToolError:
                    continue
                done[name] += 1
                assert "the secret" not in out and "only_outside" not in out, out
                if name == "write_file":  # put the text edit_file looks for back
                    with contextlib.suppress(ToolError):  # the flipper may be mid-swap
                        write_file(ws, "flip/secret.txt", "inside secret\n")
            _outside_intact(outside)
    finally:
        (tmp_path / "stop").touch()
        try:
            flipper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            flipper.kill()
            flipper.wait()
    _outside_intact(outside)
    assert all(done.values()), done  # each tool did get through sometimes


def test_a_fifo_swapped_in_after_the_check_is_refused_not_waited_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    target = root / "notes.txt"
    target.write_text("hi\n")
    checked = Workspace.resolve

    def resolve_then_swap(self: Workspace, path: str, *, must_exist: bool = True) -> Path:
        real = checked(self, path, must_exist=must_exist)
        if not target.is_fifo():
            target.unlink()
            os.mkfifo(target)
        return real

    monkeypatch.setattr(Workspace, "resolve", resolve_then_swap)
    ws = Workspace(root)
    for tool in (lambda: read_file(ws, "notes.txt"), lambda: edit_file(ws, "notes.txt", "h", "j")):
        outcome: list[BaseException | str] = []

        def run(
            tool: Callable[[], str] = tool, outcome: list[BaseException | str] = outcome
        ) -> None:
            try:
                outcome.append(tool())
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(20)
        if worker.is_alive():  # blocked opening the FIFO: free it, then fail
            os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(5)
        assert not worker.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], ToolError), outcome
        assert "notes.txt is not a regular file" in str(outcome[0])


def test_devices_are_refused(tmp_path: Path) -> None:
    dev = Workspace("/dev")
    for tool in (lambda: read_file(dev, "zero"), lambda: edit_file(dev, "zero", "a", "b")):
        with pytest.raises(ToolError, match="zero is not a regular file"):
            tool()
    root = tmp_path / "ws"
    root.mkdir()
    (root / "zero").symlink_to("/dev/zero")
    with pytest.raises(ToolError, match="outside the workspace"):
        read_file(Workspace(root), "zero")


def test_read_file_on_one_huge_line_reads_bounded_bytes(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    size = 24 * 1024 * 1024
    with (root / "dump.json").open("wb") as f:
        f.write(b"[" + b"1," * (size // 2) + b"1]\nsecond line\n")
    ws = Workspace(root)
    tracemalloc.start()
    try:
        text = read_file(ws, "dump.json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    lines = text.splitlines()
    assert lines[0] == "dump.json (2 lines)"
    assert lines[1].startswith("   1| [1,1,1,") and lines[1].endswith(
        f"… [line cut: {size + 3:,} characters]"
    )
    assert lines[2] == "   2| second line"
    assert peak < 4 * 1024 * 1024  # the line is 24 MB; it was read whole before


def test_edit_file_refuses_files_over_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workspace_module, "EDIT_MAX_BYTES", 1000)
    root = tmp_path / "ws"
    root.mkdir()
    (root / "big.txt").write_text("a" * 1500 + " needle\n")
    with pytest.raises(ToolError) as caught:
        edit_file(Workspace(root), "big.txt", "needle", "pin")
    assert str(caught.value) == (
        "big.txt is 1.5 kB; edit_file edits files up to 1.0 kB: "
        "change it with the shell or write a new file"
    )
    assert (root / "big.txt").read_text().endswith("needle\n")
