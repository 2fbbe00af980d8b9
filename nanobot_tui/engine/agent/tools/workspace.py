"""The workspace: the one folder the agent's file tools may touch, and those tools.

Every path the model gives is resolved the way the kernel would follow it (symlinks
included, also dangling ones and ones in the middle of the path) and refused when it
ends outside the root. Paths go back to the model relative to the root.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from nanobot_tui.atomic import write_atomic
from nanobot_tui.engine.agent.tools.registry import Tool, ToolError, object_schema
from nanobot_tui.units import human_bytes

# A file with a NUL byte in its first BINARY_PROBE bytes is binary (as git and grep judge).
BINARY_PROBE = 8192
READ_LINES = 200
MAX_READ_LINES = 2000
# One very long line (minified code, a data dump) is clipped rather than flooding the window.
LINE_CHARS = 1000
LIST_ENTRIES = 200

# read_file's line numbers, as the model sees them: "  12| text".
_NUMBERED_LINE = re.compile(r"^\s*\d+\| ", re.MULTILINE)


def _read_umask() -> int:
    # os.umask can only be read by setting it: do it once, at import, before tool threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


class Workspace:
    """The folder the agent works in. resolve() turns the model's paths into real paths
    inside it, or raises ToolError with one line saying why not."""

    def __init__(self, root: Path | str) -> None:
        real = Path(os.path.realpath(Path(root).expanduser()))
        if not real.is_dir():
            raise ValueError(f"the workspace {str(root)!r} is not a folder")
        self.root = real

    def resolve(self, path: str, *, must_exist: bool = True) -> Path:
        if not isinstance(path, str) or not path.strip():
            raise ToolError("the path is empty; use '.' for the workspace itself")
        if "\x00" in path:
            raise ToolError("the path contains a NUL byte")
        if path.startswith("~"):
            raise ToolError(f"{path!r} is outside the workspace; use a path relative to it")
        given = Path(path)
        candidate = given if given.is_absolute() else self.root / given
        # realpath follows every symlink, dangling ones too, before applying "..", so this
        # is the file an open() would reach.
        real = Path(os.path.realpath(candidate))
        if not self.contains(real):
            if given.is_absolute() and not self.contains(Path(os.path.normpath(given))):
                raise ToolError(f"{path!r} is outside the workspace; use a path relative to it")
            if not self.contains(Path(os.path.normpath(candidate))):
                raise ToolError(f"{path!r} leads outside the workspace (through '..')")
            raise ToolError(f"{path!r} leads outside the workspace through a symlink")
        if must_exist and not os.path.lexists(real):
            raise ToolError(f"no such file or folder: {self.show(real)}")
        return real

    def contains(self, real: Path) -> bool:
        return real == self.root or self.root in real.parents

    def show(self, real: Path) -> str:
        """A real path inside the workspace as the model sees it: relative to the root."""
        return os.path.relpath(real, self.root)


def workspace_tools(ws: Workspace, *, output_chars: int = 4000) -> list[Tool]:
    """read_file, list_dir, write_file, edit_file over `ws`. Readers stop at about
    `output_chars` characters and say where to go on, so the registry never cuts them."""
    read = object_schema(
        {"path": "string", "start_line": "integer", "max_lines": "integer"}, ["path"]
    )
    write = object_schema({"path": "string", "content": "string"}, ["path", "content"])
    edit = object_schema(
        {"path": "string", "old": "string", "new": "string"}, ["path", "old", "new"]
    )
    return [
        Tool(
            "read_file",
            "Read a text file with line numbers.",
            read,
            lambda args: read_file(ws, output_chars=output_chars, **args),
        ),
        Tool(
            "list_dir",
            "List a folder.",
            object_schema({"path": "string"}),
            lambda args: list_dir(ws, **args),
        ),
        Tool(
            "write_file",
            "Create or overwrite a file.",
            write,
            lambda args: write_file(ws, **args),
            read_only=False,
        ),
        Tool(
            "edit_file",
            "Replace unique text old with new in a file.",
            edit,
            lambda args: edit_file(ws, **args),
            read_only=False,
        ),
    ]


# --------------------------------------------------------------------------- the tools


def read_file(
    ws: Workspace,
    path: str,
    start_line: int = 1,
    max_lines: int = READ_LINES,
    *,
    output_chars: int = 4000,
) -> str:
    """Numbered lines start_line.. of a text file, at most max_lines of them and about
    output_chars characters, with the total and where to go on."""
    real = ws.resolve(path)
    shown = ws.show(real)
    _require_file(real, shown)
    # Bounds are enforced here, not in the schema: every schema token costs prompt space.
    start, wanted = max(1, start_line), min(max(1, max_lines), MAX_READ_LINES)
    budget = output_chars - 200  # room for the header and the note on how to go on
    picked: list[str] = []
    total = 0
    try:
        with real.open("rb") as f:
            _refuse_binary(f.read(BINARY_PROBE), shown, real)
            f.seek(0)
            used = 0
            for total, raw in enumerate(f, 1):
                if total < start or len(picked) >= wanted:
                    continue
                line = f"{total:>4}| {_clip_line(_decode_line(raw))}"
                if picked and used + len(line) + 1 > budget:
                    wanted = len(picked)  # full: count the remaining lines only
                    continue
                picked.append(line)
                used += len(line) + 1
    except OSError as exc:
        raise ToolError(f"cannot read {shown}: {exc.strerror or exc}") from None
    if total == 0:
        return f"{shown} is empty"
    if start > total:
        raise ToolError(f"start_line {start} is past the end: {shown} has {total} lines")
    end = start + len(picked) - 1
    if start == 1 and end == total:
        head = f"{shown} ({_count(total, 'line')})"
    else:
        head = f"{shown} lines {start}-{end} of {total}"
    body = "\n".join([head, *picked])
    if end < total:
        body += f"\n[{total - end} more lines: read_file start_line={end + 1}]"
    return body


def list_dir(ws: Workspace, path: str = ".") -> str:
    """The folder's entries, sorted: folders with a trailing "/", files with their size,
    symlinks with their target; at most LIST_ENTRIES of them."""
    real = ws.resolve(path)
    shown = ws.show(real)
    if not real.is_dir():
        raise ToolError(f"{shown} is not a folder; read a file with read_file")
    try:
        with os.scandir(real) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise ToolError(f"cannot list {shown}: {exc.strerror or exc}") from None
    if not entries:
        return f"{shown}/ is empty"
    lines = [f"{shown}/ ({_count(len(entries), 'entry', 'entries')})"]
    lines += [_entry_line(e) for e in entries[:LIST_ENTRIES]]
    if len(entries) > LIST_ENTRIES:
        lines.append(f"[{len(entries) - LIST_ENTRIES} more entries not shown]")
    return "\n".join(lines)


def write_file(ws: Workspace, path: str, content: str) -> str:
    """Write `content` to `path` atomically, creating the folders on the way."""
    real = ws.resolve(path, must_exist=False)
    shown = ws.show(real)
    if real.is_dir():
        raise ToolError(f"{shown} is a folder")
    for folder in real.parents:  # the nearest that exists must be a folder
        if folder.exists():
            if not folder.is_dir():
                raise ToolError(f"cannot write {shown}: {ws.show(folder)} is a file")
            break
    existed = real.exists()
    data = content.encode("utf-8")
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(real, data)
    except OSError as exc:
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from None
    lines = content.count("\n") + (1 if content and not content.endswith("\n") else 0)
    what = "replaced" if existed else "created"
    return f"{what} {shown} ({_count(lines, 'line')}, {_count(len(data), 'byte')})"


def edit_file(ws: Workspace, path: str, old: str, new: str) -> str:
    """Replace the one occurrence of `old` in a text file with `new`."""
    real = ws.resolve(path)
    shown = ws.show(real)
    _require_file(real, shown)
    if not old:
        raise ToolError("old is empty: give the exact text to replace")
    try:
        data = real.read_bytes()
    except OSError as exc:
        raise ToolError(f"cannot read {shown}: {exc.strerror or exc}") from None
    _refuse_binary(data[:BINARY_PROBE], shown, real)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{shown} is not valid UTF-8; rewrite it with write_file") from None
    count = text.count(old)
    if count == 0 and "\r\n" in text and "\n" in old and "\r" not in old:
        # The file has Windows line ends, which a model cannot type.
        old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
        count = text.count(old)
    if count == 0:
        raise ToolError(f"old text not found in {shown}; {_not_found_hint(text, old)}")
    if count > 1:
        numbers = _occurrence_lines(text, old)
        where = ", ".join(map(str, numbers[:10])) + (", …" if len(numbers) > 10 else "")
        raise ToolError(
            f"old text occurs {count} times in {shown} (lines {where}); "
            "include more of the surrounding text so it occurs once"
        )
    at = text.index(old)
    try:
        _atomic_write(real, text.replace(old, new, 1).encode("utf-8"))
    except OSError as exc:
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from None
    first = text.count("\n", 0, at) + 1
    last = first + old.count("\n")
    new_last = first + new.count("\n")
    return f"edited {shown}: lines {first}-{last} are now lines {first}-{new_last}"


# --------------------------------------------------------------------------- helpers


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _require_file(real: Path, shown: str) -> None:
    if real.is_dir():
        raise ToolError(f"{shown} is a folder; list it with list_dir")
    if not real.is_file():  # a FIFO or a device could block the read forever
        raise ToolError(f"{shown} is not a regular file")


def _refuse_binary(head: bytes, shown: str, real: Path) -> None:
    if b"\0" in head:
        size = human_bytes(real.stat().st_size)
        raise ToolError(f"{shown} is a binary file ({size}); only text files can be read")


def _decode_line(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")


def _clip_line(text: str) -> str:
    if len(text) <= LINE_CHARS:
        return text
    return f"{text[:LINE_CHARS]}… [line cut: {len(text):,} characters]"


def _entry_line(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink():
            return f"{entry.name} -> {os.readlink(entry.path)}"
        if entry.is_dir():
            return f"{entry.name}/"
        if entry.is_file():
            return f"{entry.name}  {human_bytes(entry.stat().st_size)}"
    except OSError:
        pass
    return f"{entry.name}  (special file)"


def _atomic_write(real: Path, data: bytes) -> None:
    """Replace the file whole, keeping its mode (a new file gets the umask's)."""
    try:
        mode = stat.S_IMODE(real.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    write_atomic(real, data, mode=mode)


def _occurrence_lines(text: str, old: str) -> list[int]:
    lines, at = [], text.find(old)
    while at >= 0:
        lines.append(text.count("\n", 0, at) + 1)
        at = text.find(old, at + 1)
    return lines


def _not_found_hint(text: str, old: str) -> str:
    if _NUMBERED_LINE.search(old):
        return "leave out the line numbers that read_file shows"
    if " ".join(old.split()) in " ".join(text.split()):
        return "it occurs with different spaces or indentation: copy it exactly"
    return "read_file the part you want to change and copy the text exactly"
