"""Agent sessions: one JSONL file per conversation under NANOBOT_HOME/sessions/.

A session file is append-only; each line is one record, its "type" first:

    {"type":"meta","created":...}                       written once, when created
    {"type":"message","message":{OpenAI message},"ts":...}
    {"type":"tool","call_id","name","arguments","ok","elapsed_s","content","ts"}
    {"type":"compaction","summary":str,"first":i,"last":j,"ts":...}
    {"type":"volume","index":i,"volume":name,"content":str,"ts":...}

Message records are numbered 0, 1, 2, ... in file order. A compaction record says that
messages first..last are replaced, in the live conversation, by its summary; they stay
in the file. A later compaction may cover an earlier one's range (its summary then
folds the earlier summary in). A volume record says that message i, too long for the
model's window, is stored as a volume and given to the model as `content`, a note that
names it (see long_message.py); the file keeps the whole message. Tool records are for
display and traces only: the tool results the model saw are message records of role
"tool".

A crash mid-write leaves a truncated last line: reading skips any line that does not
parse (with a warning), and the next append starts on a fresh line. Files are 0600 in a
0700 folder; the session never writes config or request headers, and meta records lose
any key that names a secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from nanobot_tui import paths
from nanobot_tui.engine.agent.tools.registry import ToolResult
from nanobot_tui.errors import NanobotError, UsageError

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
RECORD_TYPES = frozenset({"meta", "message", "tool", "compaction", "volume"})
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SECRET_KEY_RE = re.compile(r"api[_-]?key|authorization|secret|password|bearer", re.I)
TITLE_CHARS = 60
# The live conversation shows a summary as a system note that names the range it stands
# for; compaction.py reads the range back from it, so the two must agree.
_SUMMARY_HEAD = (
    "[Summary of earlier messages {first}-{last}; the originals stay in the session file]"
)
_SUMMARY_RE = re.compile(r"\[Summary of earlier messages (\d+)-(\d+); [^\]\n]*\]\n?")
_CLIP_NOTE = (
    "\n[... clipped: {shown} of {total} characters shown; the whole message is in the session file]"
)


class SessionError(NanobotError):
    """A session that cannot be created, read or written; the message is one line."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))


class SessionNameError(SessionError, UsageError):
    """A session name that cannot be used: not a safe name, or taken already."""


class SessionNotFound(SessionError, UsageError):
    """No session of that name; the message lists a few that exist."""


def now_ts() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def valid_name(name: str) -> str:
    """`name` itself when it is a safe session name: 1-64 of A-Z a-z 0-9 . _ -, starting
    with a letter or digit (so no paths, no hidden files)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SessionNameError(
            f"bad session name {name!r}: use 1 to 64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def default_name() -> str:
    """A timestamp plus a random tag, like 2026-11-25-1432-ab12: sorts by time, and two
    sessions started in the same minute do not collide."""
    return f"{datetime.now():%Y-%m-%d-%H%M}-{secrets.token_hex(2)}"


def summary_message(first: int, last: int, summary: str) -> dict[str, Any]:
    """The note that stands for message records first..last in the live conversation."""
    head = _SUMMARY_HEAD.format(first=first, last=last)
    return {"role": "system", "content": f"{head}\n{summary}"}


def summary_range(message: dict[str, Any]) -> tuple[int, int] | None:
    """The record range a summary note stands for; None for any other message."""
    content = message.get("content")
    if message.get("role") != "system" or not isinstance(content, str):
        return None
    match = _SUMMARY_RE.match(content)
    return (int(match.group(1)), int(match.group(2))) if match else None


def clip_content(message: dict[str, Any], chars: int) -> dict[str, Any]:
    """A copy of `message` whose text content keeps its first `chars` characters, with a
    note saying so (other messages come back unchanged)."""
    content = message.get("content")
    if not isinstance(content, str) or len(content) <= chars:
        return message
    note = _CLIP_NOTE.format(shown=chars, total=len(content))
    return {**message, "content": content[:chars] + note}


def _scrub(value: Any) -> Any:
    """Meta data without keys that name secrets (API keys, authorization headers)."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if not _SECRET_KEY_RE.search(str(k))}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _dump(record: dict[str, Any]) -> bytes:
    # "type" first: list() counts message records by this prefix without parsing lines.
    ordered = {"type": record["type"], **record}
    text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8") + b"\n"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate (an undecodable byte that Python kept, as in a
    file name or argv) replaced by U+FFFD, the way a UTF-8 reader would show it."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


def _check_record(record: object) -> None:
    if not isinstance(record, dict):
        raise SessionError(f"a session record is a dict, not {type(record).__name__}")
    kind = record.get("type")
    if kind not in RECORD_TYPES:
        raise SessionError(f"unknown session record type {kind!r} (one of {sorted(RECORD_TYPES)})")
    if kind == "message":
        message = record.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise SessionError("a message record needs a message dict with a role")


def _open_append(path: Path, *, exclusive: bool = False) -> BinaryIO:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if exclusive else 0)
    return open(path, "ab", buffering=0, opener=lambda p, _: os.open(p, flags, 0o600))


@dataclass(frozen=True)
class SessionInfo:
    name: str
    path: Path
    created: str  # ISO 8601 UTC
    updated: str  # ISO 8601 UTC, the file's modification time
    messages: int  # message records (the whole history, compacted or not)
    title: str  # the first user line, clipped

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "created": self.created,
            "updated": self.updated,
            "messages": self.messages,
            "title": self.title,
        }


class Session:
    """One conversation's file. Records are read once when opened and kept in memory;
    appends go to both. Not for two writers at once (each would miss the other's
    records until `reload()`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name.removesuffix(SUFFIX)
        self.warnings: list[str] = []  # lines skipped when read, one line each
        self._records: list[dict[str, Any]] = []
        self._n_messages = 0
        self._file: BinaryIO | None = None
        self.reload()

    def __repr__(self) -> str:
        return f"Session({self.name!r}, records={len(self._records)})"

    # -- reading -----------------------------------------------------------------------

    def reload(self) -> None:
        """Read the file again (what another writer appended becomes visible)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise SessionNotFound(f"session file {self.path} is gone") from None
        except OSError as exc:
            raise SessionError(f"cannot read session {self.name}: {exc}") from None
        records: list[dict[str, Any]] = []
        self.warnings = []
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                _check_record(record)
            except (ValueError, SessionError) as exc:
                where = "last line" if number >= len(lines) - 1 else f"line {number}"
                warning = (
                    f"session {self.name}: {where} skipped, not a readable record "
                    f"(a crash mid-write?): {str(exc).splitlines()[0][:120]}"
                )
                self.warnings.append(warning)
                log.warning(warning)
                continue
            records.append(record)
        self._records = records
        self._n_messages = sum(1 for r in records if r["type"] == "message")

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)

    @property
    def message_count(self) -> int:
        """Message records in the file: the index the next message will get."""
        return self._n_messages

    def all_messages(self) -> list[dict[str, Any]]:
        """Every message ever recorded, compactions ignored (the full history)."""
        return [dict(r["message"]) for r in self._records if r["type"] == "message"]

    def messages(self) -> list[dict[str, Any]]:
        """The live conversation to send: compacted ranges replaced by their summary note
        (see `summary_message`), clipped messages clipped. The system prompt is not part
        of a session; the caller puts it first."""
        # items: (first, last, message); a plain message covers its own index only
        items: list[tuple[int, int, dict[str, Any]]] = []
        index = 0
        for record in self._records:
            if record["type"] == "message":
                items.append((index, index, record["message"]))
                index += 1
            elif record["type"] == "compaction":
                items = self._apply_compaction(items, record, index)
            elif record["type"] == "volume":
                items = self._apply_volume(items, record)
        return [dict(message) for _, _, message in items]

    def _apply_volume(
        self, items: list[tuple[int, int, dict[str, Any]]], record: dict[str, Any]
    ) -> list[tuple[int, int, dict[str, Any]]]:
        """Message `index` given as the record's note (a message summarised already
        stays summarised)."""
        at, note = record.get("index"), record.get("content")
        if not isinstance(at, int) or not isinstance(note, str):
            warning = f"session {self.name}: a volume record without index or content was skipped"
            self.warnings.append(warning)
            log.warning(warning)
            return items
        return [(a, b, {**m, "content": note} if a == b == at else m) for a, b, m in items]

    def volumes(self) -> list[str]:
        """The volumes that hold messages of this session too long for the window."""
        return [str(r.get("volume")) for r in self._records if r["type"] == "volume"]

    def _apply_compaction(
        self, items: list[tuple[int, int, dict[str, Any]]], record: dict[str, Any], count: int
    ) -> list[tuple[int, int, dict[str, Any]]]:
        first, last = record.get("first"), record.get("last")
        try:
            clips = {int(i): int(n) for i, n in record.get("clipped") or []}
            ranged = first is not None or last is not None
            if ranged and not (
                isinstance(first, int) and isinstance(last, int) and 0 <= first <= last < count
            ):
                raise ValueError(f"only {count} messages precede it")
        except (TypeError, ValueError) as exc:
            warning = (
                f"session {self.name}: a compaction of messages {first}-{last} was skipped ({exc})"
            )
            self.warnings.append(warning)
            log.warning(warning)
            return items
        if isinstance(first, int) and isinstance(last, int):  # ranged, and checked above
            kept = [item for item in items if not (first <= item[0] and item[1] <= last)]
            at = sum(1 for _, b, _ in kept if b < first)
            note = (first, last, summary_message(first, last, str(record.get("summary", ""))))
            items = [*kept[:at], note, *kept[at:]]
        if clips:
            items = [
                (a, b, clip_content(m, clips[a]) if a == b and a in clips else m)
                for a, b, m in items
            ]
        return items

    # -- writing -----------------------------------------------------------------------

    def _writer(self) -> BinaryIO:
        if self._file is None:
            try:
                fh = _open_append(self.path)
                size = os.fstat(fh.fileno()).st_size
                if size:
                    # A crash may have left a partial last line: start on a fresh one.
                    with open(self.path, "rb") as reader:
                        reader.seek(size - 1)
                        if reader.read(1) != b"\n":
                            fh.write(b"\n")
            except OSError as exc:
                raise SessionError(f"cannot write session {self.name}: {exc}") from None
            self._file = fh
        return self._file

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line (a single write, no buffering) and keep it."""
        _check_record(record)
        record = dict(record)
        record.setdefault("ts", now_ts())
        if record["type"] == "meta":
            record = _scrub(record)
        elif record["type"] == "compaction":
            self._check_compaction(record)
        elif record["type"] == "volume":
            at = record.get("index")
            if not (isinstance(at, int) and 0 <= at < self._n_messages):
                raise SessionError(f"a volume record for message {at} does not fit this session")
        try:
            data = _dump(record)
        except UnicodeEncodeError:  # text that holds a lone surrogate: write what it shows
            record = _without_surrogates(record)
            data = _dump(record)
        try:
            self._writer().write(data)
        except OSError as exc:
            raise SessionError(f"cannot write session {self.name}: {exc}") from None
        self._records.append(record)
        if record["type"] == "message":
            self._n_messages += 1

    def _check_compaction(self, record: dict[str, Any]) -> None:
        first, last = record.get("first"), record.get("last")
        if first is None and last is None and record.get("clipped"):
            return
        if not (isinstance(first, int) and isinstance(last, int)):
            raise SessionError("a compaction record needs integer first and last")
        if not 0 <= first <= last < self._n_messages:
            raise SessionError(
                f"a compaction of messages {first}-{last} does not fit this session's "
                f"{self._n_messages} messages"
            )

    def append_message(self, message: dict[str, Any]) -> int:
        """Record one message; returns its index among the message records."""
        self.append({"type": "message", "message": message})
        return self._n_messages - 1

    def append_tool(self, result: ToolResult) -> None:
        """Record a tool run for display and traces (its message is recorded apart)."""
        self.append(
            {
                "type": "tool",
                "call_id": result.call_id,
                "name": result.name,
                "arguments": result.arguments,
                "ok": result.ok,
                "elapsed_s": round(result.elapsed_s, 4),
                "content": result.content,
            }
        )

    def sync(self) -> None:
        """fsync what was appended: called at the end of a turn."""
        if self._file is not None:
            try:
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise SessionError(f"cannot sync session {self.name}: {exc}") from None

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- description -------------------------------------------------------------------

    def info(self) -> SessionInfo:
        return _info_from(self.path, self._records)


def _title(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and content.strip():
            line = next(line.strip() for line in content.splitlines() if line.strip())
            return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"
    return ""


def _mtime(path: Path) -> str:
    stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def _info_from(path: Path, records: list[dict[str, Any]]) -> SessionInfo:
    meta = next((r for r in records if r["type"] == "meta"), {})
    messages = [r["message"] for r in records if r["type"] == "message"]
    updated = _mtime(path)
    return SessionInfo(
        name=path.name.removesuffix(SUFFIX),
        path=path,
        created=str(meta.get("created") or meta.get("ts") or updated),
        updated=updated,
        messages=len(messages),
        title=_title(messages),
    )


_TS_END = re.compile(rb',"ts":"[^"\\]*"}$')


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _quick_info(path: Path) -> SessionInfo:
    """A listing without parsing every line: the meta line, the first user message, and
    message records counted by their prefix."""
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    for line in data.split(b"\n"):
        if line.startswith(b'{"type":"meta"') or line.startswith(b'{"type":"message"'):
            try:
                record = json.loads(line)
                _check_record(record)
            except (ValueError, SessionError):
                continue
            records.append(record)
            if record["type"] == "message" and _title([record["message"]]):
                break
    info = _info_from(path, records)
    count = 0
    for line in data.split(b"\n"):
        if line.startswith(b'{"type":"message"'):
            # A whole record ends with its timestamp; anything else (a crash's half
            # record, or a record written with its own key order) is parsed to tell.
            count += bool(_TS_END.search(line)) or _parses(line)
    return SessionInfo(info.name, path, info.created, info.updated, count, info.title)


class SessionStore:
    """The sessions folder: create, open and list sessions."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else paths.sessions_dir()

    def path_of(self, name: str) -> Path:
        return self.root / f"{valid_name(name)}{SUFFIX}"

    def create(self, name: str | None = None) -> Session:
        """A new, empty session (a meta record only). SessionError if it exists."""
        name = valid_name(name) if name is not None else default_name()
        paths.ensure(self.root)
        path = self.path_of(name)
        try:
            with _open_append(path, exclusive=True) as fh:
                ts = now_ts()
                fh.write(
                    _dump({"type": "meta", "name": name, "created": ts, "version": 1, "ts": ts})
                )
        except FileExistsError:
            raise SessionNameError(f"session {name!r} exists already; open it instead") from None
        except OSError as exc:
            raise SessionError(f"cannot create session {name!r}: {exc}") from None
        return Session(path)

    def open(self, name: str) -> Session:
        path = self.path_of(name)
        if not path.is_file():
            names = [info.name for info in self.list()[:5]]
            known = ", ".join(names) if names else "none yet"
            raise SessionNotFound(f"no session named {name!r} (recent: {known})")
        return Session(path)

    def list(self) -> list[SessionInfo]:
        """Every session, the most recently updated first."""
        if not self.root.is_dir():
            return []
        found: list[tuple[int, SessionInfo]] = []
        for path in self.root.glob(f"*{SUFFIX}"):
            if not _NAME_RE.fullmatch(path.name.removesuffix(SUFFIX)):
                continue
            try:
                found.append((path.stat().st_mtime_ns, _quick_info(path)))
            except OSError as exc:  # vanished or unreadable: not worth failing a listing
                log.warning("session %s not listed: %s", path.name, exc)
        found.sort(key=lambda pair: (pair[0], pair[1].name), reverse=True)
        return [info for _, info in found]

    def latest(self) -> Session | None:
        infos = self.list()
        return Session(infos[0].path) if infos else None


__all__ = [
    "Session",
    "SessionError",
    "SessionInfo",
    "SessionNameError",
    "SessionNotFound",
    "SessionStore",
    "clip_content",
    "default_name",
    "summary_message",
    "summary_range",
    "valid_name",
]
