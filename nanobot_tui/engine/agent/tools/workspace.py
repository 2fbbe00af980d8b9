"""The workspace: the one folder the agent's file tools may touch, and those tools.

Every path the model gives is resolved the way the kernel would follow it (symlinks
included, also dangling ones and ones in the middle of the path) and refused when it
ends outside the root. Paths go back to the model relative to the root.

A check and a later open by name would race: a folder swapped for a symlink in between
would lead the open outside. So the tools never open by name: they walk the resolved path
from a descriptor of the root, one component at a time, with O_NOFOLLOW (a symlink met
there was swapped in after the check: resolve again), and read, list and write through the
descriptors they got. Only regular files are read, and only so many bytes of them.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from nanobot_tui.engine.agent.tools.registry import Tool, ToolError, object_schema
from nanobot_tui.units import human_bytes

# A file with a NUL byte in its first BINARY_PROBE bytes is binary (as git and grep judge).
BINARY_PROBE = 8192
READ_LINES = 200
MAX_READ_LINES = 2000
# One very long line (minified code, a data dump) is clipped rather than flooding the window.
LINE_CHARS = 1000
LIST_ENTRIES = 200
# edit_file holds the file in memory twice: larger files are refused, not read.
EDIT_MAX_BYTES = 8 * 1024 * 1024
# read_file reads a line this many bytes at a time, so one huge line never fills memory.
READ_CHUNK = 64 * 1024
# Tries to open a path that keeps being swapped for a symlink before giving up.
OPEN_TRIES = 3

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused right after).
_LEAF_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_T = TypeVar("_T")

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
        real = _realpath(candidate, path)
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
    # Bounds are enforced here, not in the schema: every schema token costs prompt space.
    start, wanted = max(1, start_line), min(max(1, max_lines), MAX_READ_LINES)
    budget = output_chars - 200  # room for the header and the note on how to go on
    picked: list[str] = []
    total = 0
    with _open_file(ws, path) as opened:
        f, shown, size = opened.file, opened.shown, opened.size
        try:
            _refuse_binary(f.read(BINARY_PROBE), shown, size)
            f.seek(0)
            used = 0
            for total, (raw, chars) in enumerate(_read_lines(f), 1):
                if total < start or len(picked) >= wanted:
                    continue
                line = f"{total:>4}| {_clip_line(_decode_line(raw), chars)}"
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

    def listing(real: Path) -> str:
        shown = ws.show(real)
        fd = _open_path(ws, real)
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise ToolError(f"{shown} is not a folder; read a file with read_file")
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
                shown_entries = [_entry_line(e, fd) for e in entries[:LIST_ENTRIES]]
            except OSError as exc:
                raise ToolError(f"cannot list {shown}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        if not entries:
            return f"{shown}/ is empty"
        lines = [f"{shown}/ ({_count(len(entries), 'entry', 'entries')})", *shown_entries]
        if len(entries) > LIST_ENTRIES:
            lines.append(f"[{len(entries) - LIST_ENTRIES} more entries not shown]")
        return "\n".join(lines)

    return _retrying(ws, path, listing)


def write_file(ws: Workspace, path: str, content: str) -> str:
    """Write `content` to `path` atomically, creating the folders on the way."""
    data = content.encode("utf-8", "replace")  # a lone surrogate: "?"

    def write(real: Path) -> str:
        shown = ws.show(real)
        if real == ws.root or real.is_dir():
            raise ToolError(f"{shown} is a folder")
        for folder in real.parents:  # the nearest that exists must be a folder
            if folder.exists():
                if not folder.is_dir():
                    raise ToolError(f"cannot write {shown}: {ws.show(folder)} is a file")
                break
        try:
            dir_fd = _open_path(ws, real.parent, create=True)
        except OSError as exc:
            raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from None
        try:
            existed = _write_at(dir_fd, real.name, data, shown)
        finally:
            os.close(dir_fd)
        lines = content.count("\n") + (1 if content and not content.endswith("\n") else 0)
        what = "replaced" if existed else "created"
        return f"{what} {shown} ({_count(lines, 'line')}, {_count(len(data), 'byte')})"

    return _retrying(ws, path, write, must_exist=False)


def edit_file(ws: Workspace, path: str, old: str, new: str) -> str:
    """Replace the one occurrence of `old` in a text file with `new`."""
    if not old:
        raise ToolError("old is empty: give the exact text to replace")
    with _open_file(ws, path, parent=True) as opened:
        f, shown, size = opened.file, opened.shown, opened.size
        if size > EDIT_MAX_BYTES:
            raise ToolError(
                f"{shown} is {human_bytes(size)}; edit_file edits files up to "
                f"{human_bytes(EDIT_MAX_BYTES)}: change it with the shell or write a new file"
            )
        try:
            data = f.read(EDIT_MAX_BYTES + 1)
        except OSError as exc:
            raise ToolError(f"cannot read {shown}: {exc.strerror or exc}") from None
        if len(data) > EDIT_MAX_BYTES:  # it grew since
            raise ToolError(f"{shown} is over {human_bytes(EDIT_MAX_BYTES)}; edit_file refuses it")
        _refuse_binary(data[:BINARY_PROBE], shown, size)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{shown} is not valid UTF-8; rewrite it with write_file") from None
        old, new, at = _locate(text, old, new, shown)
        assert opened.dir_fd is not None
        _write_at(
            opened.dir_fd,
            Path(shown).name,
            text.replace(old, new, 1).encode("utf-8", "replace"),
            shown,
        )
    first = text.count("\n", 0, at) + 1
    last = first + old.count("\n")
    new_last = first + new.count("\n")
    return f"edited {shown}: lines {first}-{last} are now lines {first}-{new_last}"


def _locate(text: str, old: str, new: str, shown: str) -> tuple[str, str, int]:
    """(old, new, where old starts), old occurring exactly once in text."""
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
    return old, new, text.index(old)


# --------------------------------------------------------------------------- opening safely


def _realpath(candidate: Path, given: str) -> Path:
    """The file an open() of `candidate` would reach: realpath follows every symlink,
    dangling ones too, before applying "..". A component that vanishes while it is being
    followed (another process swapping it) makes realpath raise; it is followed again."""
    for _ in range(OPEN_TRIES):
        try:
            return Path(os.path.realpath(candidate))
        except OSError:
            continue
    raise ToolError(f"{given!r} kept changing while it was resolved; try again")


class _Swapped(Exception):
    """A component of a checked path turned out to be a symlink or gone: resolve again."""


def _retrying(
    ws: Workspace, path: str, action: Callable[[Path], _T], *, must_exist: bool = True
) -> _T:
    """action(real path) for the path as resolved now; resolved again (and so checked
    again) when a component changed between the check and the open."""
    for _ in range(OPEN_TRIES):
        real = ws.resolve(path, must_exist=must_exist)
        try:
            return action(real)
        except _Swapped:
            continue
        except OSError as exc:
            raise ToolError(f"cannot open {ws.show(real)}: {exc.strerror or exc}") from None
    raise ToolError(f"{path!r} kept changing while it was opened (a symlink swapped in); try again")


def _open_path(ws: Workspace, real: Path, *, create: bool = False) -> int:
    """A descriptor of `real` (a resolved path inside the workspace), reached from the root
    one component at a time without following any symlink. Folders on the way are made
    when `create`. Raises _Swapped when a component is now a symlink or missing."""
    fd = os.open(ws.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    parts = real.relative_to(ws.root).parts
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
            try:
                nxt = os.open(name, _LEAF_FLAGS if last and not create else _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                _explain(exc, fd, name, ws.show(ws.root.joinpath(*parts[: i + 1])))
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _explain(exc: OSError, dir_fd: int, name: str, shown: str) -> None:
    """Turn a failed open of `name` in `dir_fd` into _Swapped or a ToolError."""
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
        return
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise _Swapped from None  # gone since the check: resolving again says so
    if stat.S_ISLNK(st.st_mode):
        raise _Swapped from None
    if exc.errno == errno.ENOTDIR:
        raise ToolError(f"{shown} is not a folder") from None


@dataclass
class _Opened:
    file: BinaryIO  # open for reading
    shown: str  # its path as the model sees it
    size: int
    dir_fd: int | None  # its folder's descriptor, for a rewrite; with parent=True only


@contextlib.contextmanager
def _open_file(ws: Workspace, path: str, *, parent: bool = False) -> Iterator[_Opened]:
    """A regular file of the workspace opened for reading (never a FIFO or a device),
    with its folder's descriptor too when `parent`."""

    def opening(real: Path) -> tuple[int, int | None, Path]:
        shown = ws.show(real)
        if real == ws.root:
            raise ToolError(f"{shown} is a folder; list it with list_dir")
        fd = _open_path(ws, real)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ToolError(f"{shown} is a folder; list it with list_dir")
            if not stat.S_ISREG(st.st_mode):
                # A FIFO or a device (/dev/zero) would block the read or never end.
                raise ToolError(f"{shown} is not a regular file")
            os.set_blocking(fd, True)
            return fd, _open_path(ws, real.parent) if parent else None, real
        except BaseException:
            os.close(fd)
            raise

    fd, dir_fd, real = _retrying(ws, path, opening)
    try:
        with os.fdopen(fd, "rb") as f:
            yield _Opened(f, ws.show(real), os.fstat(fd).st_size, dir_fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _write_at(dir_fd: int, name: str, data: bytes, shown: str) -> bool:
    """Replace `name` in the folder `dir_fd` whole (a temporary file renamed over it),
    keeping its mode; a new file gets the umask's. Whether it existed."""
    try:
        st: os.stat_result | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{shown} is a folder")
    # A symlink swapped in at `name` since the check is replaced by the rename, not followed.
    keep = st is not None and stat.S_ISREG(st.st_mode)
    mode = stat.S_IMODE(st.st_mode) if st is not None and keep else 0o666 & ~_UMASK
    tmp = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from None
    return st is not None


# --------------------------------------------------------------------------- helpers


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _refuse_binary(head: bytes, shown: str, size: int) -> None:
    if b"\0" in head:
        raise ToolError(
            f"{shown} is a binary file ({human_bytes(size)}); only text files can be read"
        )


def _read_lines(f: BinaryIO) -> Iterator[tuple[bytes, int | None]]:
    """Each line of `f` as (its start, None) or, for a line longer than READ_CHUNK bytes,
    (its first few kilobytes, its length in characters): memory stays bounded whatever
    the file holds."""
    keep = LINE_CHARS * 4 + 4
    while part := f.readline(READ_CHUNK):
        if part.endswith(b"\n") or len(part) < READ_CHUNK:
            yield part, None
            continue
        head = part[:keep]
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        chars = len(decoder.decode(part))
        while part and not part.endswith(b"\n"):
            part = f.readline(READ_CHUNK)
            chars += len(decoder.decode(part))
        chars += len(decoder.decode(b"", final=True))
        chars -= part.endswith(b"\n") + part.endswith(b"\r\n")
        yield head, chars


def _decode_line(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")


def _clip_line(text: str, chars: int | None = None) -> str:
    if chars is None and len(text) <= LINE_CHARS:
        return text
    return f"{text[:LINE_CHARS]}… [line cut: {chars or len(text):,} characters]"


def _entry_line(entry: os.DirEntry[str], dir_fd: int) -> str:
    try:
        if entry.is_symlink():
            return f"{entry.name} -> {os.readlink(entry.name, dir_fd=dir_fd)}"
        if entry.is_dir(follow_symlinks=False):
            return f"{entry.name}/"
        if entry.is_file(follow_symlinks=False):
            return f"{entry.name}  {human_bytes(entry.stat(follow_symlinks=False).st_size)}"
    except OSError:
        pass
    return f"{entry.name}  (special file)"


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
