"""Long-term notes (MEMORY.md), a scratchpad per session, and the tools over them.

MEMORY.md is plain Markdown the user may edit too. The agent adds dated bullets at its
end or replaces the body of one `## section`. Every write goes to a temporary file that
replaces the old one (a crash leaves the old or the new file, never half of one), under
a lock so that two sessions updating memory at once do not lose each other's notes.

What goes into the system prompt is small on purpose: nothing when MEMORY.md is empty,
at most `max_chars` otherwise, clipped with a note.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.engine.agent.tools.registry import Tool, ToolError, object_schema
from nanobot_tui.errors import NanobotError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

MAX_NOTE_CHARS = 2000  # one note; longer ones belong in a file, not in every prompt
MAX_SECTION_CHARS = 8000
MAX_SCRATCHPAD_CHARS = 64_000
SCRATCH_SUFFIX = ".scratch.md"
_SECTION_NAME = re.compile(r"[^\n#]{1,80}")


class MemoryFileError(NanobotError):
    """A memory or scratchpad file that cannot be read or written; one line."""


def atomic_write(path: Path, text: str) -> None:
    """Replace `path` with `text` (0600), creating its folder."""
    paths.ensure(path.parent)
    write_atomic(path, text, mode=0o600)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One read-modify-write of `path` at a time, across processes."""
    paths.ensure(path.parent)
    lock = path.parent / f".{path.name}.lock"
    with open(lock, "a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise MemoryFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write(path: Path, text: str) -> None:
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise MemoryFileError(f"cannot write {path}: {exc.strerror or exc}") from None


def _heading(line: str) -> str | None:
    """The name of a `## name` heading line (level 2 exactly), else None."""
    if line.startswith("## ") and not line.startswith("###"):
        return line[3:].strip()
    return None


class MemoryFile:
    """MEMORY.md: long-term notes the agent reads in its prompt and may update."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else paths.memory_file()

    def read(self) -> str:
        return _read(self.path)

    def append(self, note: str, *, today: date | None = None) -> str:
        """Add `note` as a dated bullet at the end; returns the bullet."""
        note = _clean_note(note, MAX_NOTE_CHARS)
        # A multi-line note stays one bullet: its next lines are indented under it.
        bullet = f"- {(today or date.today()).isoformat()}: " + note.replace("\n", "\n  ")
        with _locked(self.path):
            text = self.read()
            if text and not text.endswith("\n"):
                text += "\n"
            _write(self.path, text + bullet + "\n")
        return bullet

    def replace_section(self, section: str, body: str) -> bool:
        """Make `body` the content of `## section` (created at the end when missing);
        True when the section existed."""
        section = section.strip()
        if not _SECTION_NAME.fullmatch(section):
            raise ValueError(
                f"bad section name {section[:80]!r}: one line of at most 80 characters, no '#'"
            )
        body = _clean_note(body, MAX_SECTION_CHARS)
        with _locked(self.path):
            lines = self.read().splitlines()
            start = next(
                (i for i, x in enumerate(lines) if (_heading(x) or "").lower() == section.lower()),
                None,
            )
            heading = lines[start] if start is not None else f"## {section}"
            block = [heading, *body.splitlines(), ""]
            if start is None:
                while lines and not lines[-1].strip():
                    lines.pop()
                new = [*lines, "", *block] if lines else block
            else:
                end = next(
                    (i for i in range(start + 1, len(lines)) if lines[i].startswith(("# ", "## "))),
                    len(lines),
                )
                new = [*lines[:start], *block, *lines[end:]]
            _write(self.path, "\n".join(new).rstrip("\n") + "\n")
        return start is not None


def _clean_note(text: str, limit: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the note is empty")
    text = text.strip()
    if len(text) > limit:
        raise ValueError(f"the note has {len(text)} characters; at most {limit}")
    return text


class Scratchpad:
    """Working notes for one session: `<session name>.scratch.md` next to the session."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_session(cls, session_path: Path) -> Scratchpad:
        name = session_path.name.removesuffix(".jsonl")
        return cls(session_path.with_name(name + SCRATCH_SUFFIX))

    def read(self) -> str:
        return _read(self.path)

    def write(self, text: str, *, append: bool = True) -> int:
        """Append `text` (on a line of its own) or replace the whole pad; returns its size
        in characters."""
        if not isinstance(text, str):
            raise ValueError("the text must be a string")
        with _locked(self.path):
            old = self.read() if append else ""
            if old and not old.endswith("\n"):
                old += "\n"
            new = old + text + ("\n" if text and not text.endswith("\n") else "")
            if len(new) > MAX_SCRATCHPAD_CHARS:
                raise ValueError(
                    f"the scratchpad would hold {len(new)} characters; at most "
                    f"{MAX_SCRATCHPAD_CHARS} (rewrite it with append=false)"
                )
            _write(self.path, new)
        return len(new)


# --------------------------------------------------------------------------- tools


def _string_arg(args: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = args.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ToolError(f"{key} must be a string")
    return value


def memory_tools(memory: MemoryFile, scratchpad: Scratchpad) -> list[Tool]:
    """memory_update, scratchpad_write and scratchpad_read."""

    def memory_update(args: dict[str, Any]) -> str:
        note = _string_arg(args, "note")
        section = _string_arg(args, "section", required=False)
        assert note is not None
        try:
            if section:
                existed = memory.replace_section(section, note)
                return f"{'Replaced' if existed else 'Added'} section '{section.strip()}'."
            memory.append(note)
        except (ValueError, MemoryFileError) as exc:
            raise ToolError(str(exc)) from None
        return "Saved to memory."

    def scratchpad_write(args: dict[str, Any]) -> str:
        text = _string_arg(args, "text")
        append = args.get("append", True)
        if not isinstance(append, bool):
            raise ToolError("append must be true or false")
        assert text is not None
        try:
            size = scratchpad.write(text, append=append)
        except (ValueError, MemoryFileError) as exc:
            raise ToolError(str(exc)) from None
        return f"Scratchpad now {size} characters."

    def scratchpad_read(args: dict[str, Any]) -> str:
        try:
            return scratchpad.read() or "(the scratchpad is empty)"
        except MemoryFileError as exc:
            raise ToolError(str(exc)) from None

    note = object_schema(
        {"note": "string", "section": {"type": "string", "description": "section to replace"}},
        ["note"],
    )
    text = object_schema(
        {"text": "string", "append": {"type": "boolean", "description": "false replaces all"}},
        ["text"],
    )
    return [
        Tool(
            "memory_update",
            "Save a lasting note to MEMORY.md, or replace a ## section.",
            note,
            memory_update,
            read_only=False,
        ),
        Tool(
            "scratchpad_write",
            "Write working notes for this session.",
            text,
            scratchpad_write,
            read_only=False,
        ),
        Tool(
            "scratchpad_read",
            "Read this session's working notes.",
            object_schema({}),
            scratchpad_read,
        ),
    ]


def memory_prompt(memory: MemoryFile, max_chars: int = 1500) -> str | None:
    """MEMORY.md for the system prompt: None when empty; clipped at a line boundary with
    a note when longer than `max_chars`."""
    text = memory.read().strip()
    if not text:
        return None
    head = "Long-term memory (MEMORY.md):\n"
    if len(text) > max_chars:
        cut = text.rfind("\n", 0, max_chars)
        cut = cut if cut > max_chars // 2 else max_chars
        rest = len(text) - cut
        text = text[:cut].rstrip() + f"\n[... {rest} more characters of MEMORY.md not shown]"
    return head + text


__all__ = [
    "MemoryFile",
    "MemoryFileError",
    "Scratchpad",
    "atomic_write",
    "memory_prompt",
    "memory_tools",
]
