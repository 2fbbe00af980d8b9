"""The workspace: confinement of every path, and the four file tools on real files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from nanobot_tui.engine.agent.tools.registry import ToolError, ToolRegistry
from nanobot_tui.engine.agent.tools.workspace import (
    LIST_ENTRIES,
    Workspace,
    edit_file,
    list_dir,
    read_file,
    workspace_tools,
    write_file,
)
from nanobot_tui.engine.llm.results import ToolCall


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text("the secret\n")
    return out


@pytest.fixture
def ws(root: Path) -> Workspace:
    return Workspace(root)


# --------------------------------------------------------------------------- confinement


def test_paths_inside_resolve(ws: Workspace, root: Path) -> None:
    assert ws.resolve("src/app.py") == root.resolve() / "src" / "app.py"
    assert ws.resolve(".") == root.resolve()
    assert ws.resolve("src/../src/./app.py") == root.resolve() / "src" / "app.py"
    assert ws.resolve(str(root / "src" / "app.py")) == root.resolve() / "src" / "app.py"
    assert ws.show(ws.resolve("src/app.py")) == "src/app.py"
    assert ws.show(ws.resolve(".")) == "."
    assert ws.resolve("new/file.txt", must_exist=False) == root.resolve() / "new" / "file.txt"
    with pytest.raises(ToolError, match=r"no such file or folder: src/nope\.py"):
        ws.resolve("src/nope.py")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../x", "'../x' leads outside the workspace (through '..')"),
        ("a/../../x", "'a/../../x' leads outside the workspace (through '..')"),
        ("src/../../outside/secret.txt", "leads outside the workspace (through '..')"),
        ("/etc/passwd", "'/etc/passwd' is outside the workspace; use a path relative to it"),
        ("~/notes.txt", "'~/notes.txt' is outside the workspace"),
        ("", "the path is empty"),
        ("   ", "the path is empty"),
        ("a\x00b", "the path contains a NUL byte"),
    ],
)
def test_paths_that_leave_are_refused(ws: Workspace, path: str, reason: str) -> None:
    with pytest.raises(ToolError) as caught:
        ws.resolve(path, must_exist=False)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_symlinks_out_of_the_workspace_are_refused(
    ws: Workspace, root: Path, outside: Path
) -> None:
    (root / "file_link").symlink_to(outside / "secret.txt")
    (root / "dir_link").symlink_to(outside)
    (root / "dangling").symlink_to(outside / "not-yet.txt")
    (root / "src" / "up").symlink_to("../..")  # relative, in the middle of a path
    for path in ["file_link", "dir_link", "dir_link/secret.txt", "dangling", "src/up/outside"]:
        with pytest.raises(ToolError, match="leads outside the workspace through a symlink"):
            ws.resolve(path, must_exist=False)
    # Absolute paths go through the same links.
    with pytest.raises(ToolError, match="through a symlink"):
        ws.resolve(str(root / "dir_link" / "secret.txt"))


def test_symlinks_inside_the_workspace_are_followed(ws: Workspace, root: Path) -> None:
    (root / "app_link").symlink_to("src/app.py")
    (root / "later").symlink_to("src/later.txt")  # dangling, but inside
    assert ws.resolve("app_link") == root.resolve() / "src" / "app.py"
    assert ws.resolve("later", must_exist=False) == root.resolve() / "src" / "later.txt"


def test_a_workspace_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a folder"):
        Workspace(tmp_path / "missing")


# --------------------------------------------------------------------------- read_file


def test_read_file_numbers_lines_and_pages(ws: Workspace, root: Path) -> None:
    (root / "big.txt").write_text("".join(f"row {i}\n" for i in range(1, 501)))
    first = read_file(ws, "big.txt", max_lines=3)
    assert first == (
        "big.txt lines 1-3 of 500\n   1| row 1\n   2| row 2\n   3| row 3\n"
        "[497 more lines: read_file start_line=4]"
    )
    last = read_file(ws, "big.txt", start_line=499)
    assert last == "big.txt lines 499-500 of 500\n 499| row 499\n 500| row 500"
    assert read_file(ws, "src/app.py") == "src/app.py (1 line)\n   1| print('hi')"
    with pytest.raises(ToolError, match=r"start_line 501 is past the end: big\.txt has 500 lines"):
        read_file(ws, "big.txt", start_line=501)


def test_read_file_stays_within_its_output_budget(ws: Workspace, root: Path) -> None:
    (root / "wide.txt").write_text("".join(f"{i:04d} " + "x" * 80 + "\n" for i in range(300)))
    text = read_file(ws, "wide.txt", output_chars=2000)
    assert len(text) <= 2000
    shown = text.splitlines()
    assert shown[0].startswith("wide.txt lines 1-")
    last = int(shown[-2].split("|")[0])
    assert shown[-1] == f"[{300 - last} more lines: read_file start_line={last + 1}]"
    # One monster line is clipped, not dropped.
    (root / "min.js").write_text("a" * 50_000 + "\n")
    assert "… [line cut: 50,000 characters]" in read_file(ws, "min.js")


def test_read_file_text_handling(ws: Workspace, root: Path) -> None:
    (root / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    assert read_file(ws, "crlf.txt").splitlines()[1:] == ["   1| one", "   2| two"]
    (root / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert "caf\ufffd" in read_file(ws, "latin1.txt")
    (root / "empty.txt").write_text("")
    assert read_file(ws, "empty.txt") == "empty.txt is empty"


def test_read_file_refuses_binaries_and_folders(ws: Workspace, root: Path) -> None:
    (root / "blob.bin").write_bytes(b"\x7fELF\x00\x01" + b"x" * 3000)
    with pytest.raises(ToolError, match=r"blob.bin is a binary file \(3.0 kB\)"):
        read_file(ws, "blob.bin")
    with pytest.raises(ToolError, match="src is a folder; list it with list_dir"):
        read_file(ws, "src")
    os.mkfifo(root / "pipe")
    with pytest.raises(ToolError, match="pipe is not a regular file"):
        read_file(ws, "pipe")


# --------------------------------------------------------------------------- list_dir


def test_list_dir(ws: Workspace, root: Path, outside: Path) -> None:
    (root / "b.txt").write_text("x" * 1500)
    (root / "a.txt").write_text("hi")
    (root / "link").symlink_to(outside)
    assert list_dir(ws) == f"./ (4 entries)\na.txt  2 B\nb.txt  1.5 kB\nlink -> {outside}\nsrc/"
    assert list_dir(ws, "src") == "src/ (1 entry)\napp.py  12 B"
    with pytest.raises(ToolError, match=r"a\.txt is not a folder"):
        list_dir(ws, "a.txt")
    (root / "void").mkdir()
    assert list_dir(ws, "void") == "void/ is empty"


def test_list_dir_is_capped(ws: Workspace, root: Path) -> None:
    many = root / "many"
    many.mkdir()
    for i in range(LIST_ENTRIES + 25):
        (many / f"f{i:04d}").write_text("")
    lines = list_dir(ws, "many").splitlines()
    assert lines[0] == f"many/ ({LIST_ENTRIES + 25} entries)"
    assert lines[1] == "f0000  0 B" and len(lines) == LIST_ENTRIES + 2
    assert lines[-1] == "[25 more entries not shown]"


# --------------------------------------------------------------------------- write_file


def test_write_file_creates_folders_and_replaces_atomically(ws: Workspace, root: Path) -> None:
    assert write_file(ws, "deep/er/new.txt", "a\nb") == "created deep/er/new.txt (2 lines, 3 bytes)"
    assert (root / "deep" / "er" / "new.txt").read_text() == "a\nb"
    target = root / "src" / "app.py"
    target.chmod(0o755)
    assert write_file(ws, "src/app.py", "x\n") == "replaced src/app.py (1 line, 2 bytes)"
    assert target.read_text() == "x\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # the mode survives the replace
    assert sorted(p.name for p in (root / "src").iterdir()) == ["app.py"]  # no temp left
    with pytest.raises(ToolError, match="src is a folder"):
        write_file(ws, "src", "x")
    with pytest.raises(
        ToolError, match=r"cannot write src/app\.py/inner\.txt: src/app\.py is a file"
    ):
        write_file(ws, "src/app.py/inner.txt", "x")


def test_write_file_never_writes_outside(ws: Workspace, root: Path, outside: Path) -> None:
    (root / "escape").symlink_to(outside / "secret.txt")
    (root / "dangling").symlink_to(outside / "planted.txt")
    (root / "out_dir").symlink_to(outside)
    for path in ["escape", "dangling", "out_dir/new.txt", "../outside/new.txt"]:
        with pytest.raises(ToolError, match="outside the workspace"):
            write_file(ws, path, "pwned")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "the secret\n"


# --------------------------------------------------------------------------- edit_file


def test_edit_file_replaces_one_occurrence(ws: Workspace, root: Path) -> None:
    (root / "m.py").write_text("a = 1\nb = 2\nc = 3\n")
    assert edit_file(ws, "m.py", "b = 2\n", "b = 20\nbb = 21\n") == (
        "edited m.py: lines 2-3 are now lines 2-4"
    )
    assert (root / "m.py").read_text() == "a = 1\nb = 20\nbb = 21\nc = 3\n"


def test_edit_file_not_found_and_ambiguous(ws: Workspace, root: Path) -> None:
    (root / "m.py").write_text("x = 1\nx = 1\n    y = 2\n")
    with pytest.raises(ToolError, match=r"old text occurs 2 times in m.py \(lines 1, 2\)"):
        edit_file(ws, "m.py", "x = 1", "x = 3")
    with pytest.raises(ToolError, match=r"old text not found in m\.py; read_file the part"):
        edit_file(ws, "m.py", "z = 9", "z = 0")
    with pytest.raises(ToolError, match="different spaces or indentation"):
        edit_file(ws, "m.py", "y  =  2", "y = 3")
    with pytest.raises(ToolError, match="leave out the line numbers"):
        edit_file(ws, "m.py", "   3|     y = 2", "y = 3")
    with pytest.raises(ToolError, match="old is empty"):
        edit_file(ws, "m.py", "", "y")
    assert (root / "m.py").read_text() == "x = 1\nx = 1\n    y = 2\n"  # untouched


def test_edit_file_keeps_windows_line_ends(ws: Workspace, root: Path) -> None:
    (root / "w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    edit_file(ws, "w.txt", "one\ntwo", "1\n2")
    assert (root / "w.txt").read_bytes() == b"1\r\n2\r\nthree\r\n"


def test_edit_file_refuses_binary_and_non_utf8(ws: Workspace, root: Path) -> None:
    (root / "b.bin").write_bytes(b"ab\x00cd")
    with pytest.raises(ToolError, match="binary"):
        edit_file(ws, "b.bin", "ab", "x")
    (root / "l.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(ToolError, match="not valid UTF-8"):
        edit_file(ws, "l.txt", "caf", "x")


# --------------------------------------------------------------------------- through the registry


async def test_the_tools_through_the_registry(ws: Workspace, root: Path) -> None:
    registry = ToolRegistry(workspace_tools(ws), output_chars=4000)
    assert [(t, registry.get(t).read_only) for t in registry.names()] == [
        ("read_file", True),
        ("list_dir", True),
        ("write_file", False),
        ("edit_file", False),
    ]

    def call(name: str, **arguments: object) -> ToolCall:
        return ToolCall(id=name, name=name, arguments=json.dumps(arguments))

    results = await registry.execute_all(
        [
            call("write_file", path="notes/todo.md", content="- one\n"),
            call("edit_file", path="notes/todo.md", old="- one", new="- one\n- two"),
            call("read_file", path="notes/todo.md"),
            call("read_file", path="../escape.txt"),
            call("list_dir", path="notes"),
        ]
    )
    assert [r.ok for r in results] == [True, True, True, False, True]
    assert results[2].content == "notes/todo.md (2 lines)\n   1| - one\n   2| - two"
    assert results[3].content == (
        "error: '../escape.txt' leads outside the workspace (through '..')"
    )
    assert results[4].content == "notes/ (1 entry)\ntodo.md  12 B"


async def test_outputs_are_capped(ws: Workspace, root: Path) -> None:
    """The readers fit the registry's budget themselves, so they say how to go on."""
    (root / "long.txt").write_text("".join(f"{i} " + "y" * 60 + "\n" for i in range(5000)))
    registry = ToolRegistry(workspace_tools(ws, output_chars=1500), output_chars=1500)
    call = ToolCall(id="1", name="read_file", arguments='{"path": "long.txt"}')
    result = await registry.execute(call)
    assert result.ok and not result.truncated and len(result.content) <= 1500
    assert "more lines: read_file start_line=" in result.content
