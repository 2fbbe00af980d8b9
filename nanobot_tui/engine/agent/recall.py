"""Recall over past sessions, through the context store's search.

Each past session's user and assistant text is exported as one small text file
(`<session>.txt`, a line per message line, prefixed with its role) under
NANOBOT_HOME/cache/recall/text/, and that folder is ingested as the volume `sessions`.
A session is exported again only when its file changed (size or modification time),
and the folder re-ingested only when an export changed (the ingest itself then re-reads
just the changed files). The current session is left out: its text is in the
conversation already, and it changes every turn.

The search is the volumes' own: BM25 with a simhash nudge, or BM25 fused with vectors
when an embedding model is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.engine.agent.memory import atomic_write
from nanobot_tui.engine.agent.sessions import SUFFIX, Session, SessionError, SessionStore
from nanobot_tui.engine.agent.tools.registry import Tool, ToolError, object_schema
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.search import (
    Embedder,
    SearchError,
    SearchResult,
    query_terms,
    search,
    search_with_vectors,
)
from nanobot_tui.engine.context.storage import VolumeError, delete_volume, volume_dir
from nanobot_tui.engine.context.tokens import tokens
from nanobot_tui.engine.context.volume import Volume
from nanobot_tui.errors import NanobotError

log = logging.getLogger(__name__)

RECALL_VOLUME = "sessions"
EXPORT_ROLES = ("user", "assistant")
MAX_TOP = 10
LINES_PER_HIT = 4
LINE_CHARS = 240


def recall_cache_dir() -> Path:
    return paths.home() / "cache" / "recall"


def export_text(session: Session) -> str:
    """A session's user and assistant text, one line per line, role first."""
    info = session.info()
    out = [f"session {session.name}: {info.title} (created {info.created})"]
    for message in session.all_messages():
        role = message.get("role")
        content = message.get("content")
        if role not in EXPORT_ROLES or not isinstance(content, str):
            continue
        out.extend(f"[{role}] {line}" for line in content.splitlines() if line.strip())
    return "\n".join(out) + "\n"


class RecallError(NanobotError):
    """Recall cannot work here; the message is one line."""


@dataclass(frozen=True)
class RecallHit:
    session: str
    lines: list[str]  # the matching lines, "[role] text", clipped
    score: float


class SessionRecall:
    """Recall over the sessions in `sessions`, leaving out `current` (a session name)."""

    def __init__(
        self,
        sessions: SessionStore | None = None,
        *,
        current: str | None = None,
        embedder: Embedder | None = None,
        volume: str = RECALL_VOLUME,
        cache_dir: Path | None = None,
    ) -> None:
        self.sessions = sessions or SessionStore()
        self.current = current
        self.embedder = embedder
        self.volume_name = volume
        self.cache_dir = cache_dir if cache_dir is not None else recall_cache_dir()
        self.ingests = 0  # how many times refresh() ingested (for tests and traces)
        self._checked = False
        self._volume: Volume | None = None
        self._lock = asyncio.Lock()

    @property
    def _text_dir(self) -> Path:
        return self.cache_dir / "text"

    @property
    def _state_file(self) -> Path:
        return self.cache_dir / "state.json"

    def _load_state(self) -> dict[str, list[int]]:
        try:
            state = json.loads(self._state_file.read_text(encoding="utf-8"))
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def refresh(self) -> bool:
        """Export the sessions that changed and re-ingest when anything did; True when
        it ingested."""
        text_dir = paths.ensure(self._text_dir)
        self._check_ours(text_dir)
        state = self._load_state()
        seen: dict[str, list[int]] = {}
        changed = False
        root = self.sessions.root
        for path in sorted(root.glob(f"*{SUFFIX}")) if root.is_dir() else []:
            name = path.name.removesuffix(SUFFIX)
            if name == self.current:
                if name in state:  # exported while it was a past session: keep that
                    seen[name] = state[name]
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = [st.st_size, st.st_mtime_ns]
            export = text_dir / f"{name}.txt"
            if state.get(name) == stamp and export.is_file():
                seen[name] = stamp
                continue
            try:
                atomic_write(export, export_text(Session(path)))
            except (SessionError, OSError) as exc:
                log.warning("recall: session %s not exported: %s", name, exc)
                continue
            seen[name] = stamp
            changed = True
        for export in text_dir.glob("*.txt"):
            if export.stem not in seen:
                export.unlink(missing_ok=True)
                changed = True
        for stray in text_dir.glob(".*.tmp"):  # an export a crash interrupted
            stray.unlink(missing_ok=True)
        if not changed and (not seen or volume_dir(self.volume_name).is_dir()):
            return False
        self._close_volume()
        if seen:
            try:
                ingest(text_dir, self.volume_name)
            except VolumeError as exc:
                log.warning("recall: could not ingest past sessions: %s", exc)
                return False
        else:
            with contextlib.suppress(VolumeError):
                delete_volume(self.volume_name)
        atomic_write(self._state_file, json.dumps(seen))
        self.ingests += 1
        return True

    def _check_ours(self, text_dir: Path) -> None:
        """Never overwrite a volume of the same name that the user ingested."""
        if self._checked:
            return
        try:
            with Volume.open(self.volume_name) as volume:
                root = volume.root
        except VolumeError:  # none yet (or unreadable: an ingest replaces it)
            root = None
        if root is not None and Path(root) != text_dir.resolve():
            raise RecallError(
                f"volume {self.volume_name!r} holds {root}, not past sessions; rename or "
                "delete it to use recall"
            )
        self._checked = True

    def _close_volume(self) -> None:
        if self._volume is not None:
            self._volume.close()
            self._volume = None

    def close(self) -> None:
        self._close_volume()

    async def search(self, query: str, top: int = 3) -> list[RecallHit]:
        """The past-session lines that best match `query`, grouped by session."""
        async with self._lock:
            await asyncio.to_thread(self.refresh)
            if self._volume is None:
                try:
                    self._volume = Volume.open(self.volume_name)
                except VolumeError:
                    return []  # no past sessions yet
            volume = self._volume
            top = max(1, min(MAX_TOP, int(top)))
            result: SearchResult
            if self.embedder is not None:
                result = await search_with_vectors(volume, query, top, self.embedder)
            else:
                result = search(volume, query, top)
            return _group(volume, result, query)


def _group(volume: Volume, result: SearchResult, query: str) -> list[RecallHit]:
    """Hits grouped by session: each hit's best line, then its lines that hold most
    query words."""
    words = set(query_terms(query))
    hits: dict[str, RecallHit] = {}
    for hit in result.hits:
        session = Path(hit.file).stem
        lines = volume.lines(hit.first_vline, hit.last_vline)
        best = [line.text for line in lines if line.vline == hit.best_vline]
        others = [
            (len(words.intersection(tokens(line.text))), line.text)
            for line in lines
            if line.vline != hit.best_vline
        ]
        matching = [text for n, text in sorted(others, key=lambda x: -x[0]) if n > 0]
        found = [_clip(x) for x in [*best, *matching][:LINES_PER_HIT]]
        if session in hits:
            old = hits[session]
            merged = list(dict.fromkeys([*old.lines, *found]))[: LINES_PER_HIT * 2]
            hits[session] = RecallHit(session, merged, old.score)
        else:
            hits[session] = RecallHit(session, found, hit.score)
    return list(hits.values())


def _clip(line: str) -> str:
    line = line.strip()
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"


def format_hits(hits: list[RecallHit]) -> str:
    if not hits:
        return "Nothing found in past sessions."
    blocks = []
    for hit in hits:
        blocks.append("\n".join([f"session {hit.session}:", *(f"  {x}" for x in hit.lines)]))
    return "\n".join(blocks)


def recall_tool(recall: SessionRecall) -> Tool:
    """`recall(query, top=3)`: search past sessions."""

    async def handler(args: dict[str, Any]) -> str:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("query must be a non-empty string")
        top = args.get("top", 3)
        if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
            raise ToolError(f"top must be a whole number from 1 to {MAX_TOP}")
        try:
            return format_hits(await recall.search(query, top))
        except (SearchError, RecallError) as exc:
            raise ToolError(str(exc)) from None

    return Tool(
        name="recall",
        description="Search past sessions for what was said.",
        parameters=object_schema({"query": "string", "top": "integer"}, ["query"]),
        handler=handler,
    )


__all__ = [
    "RECALL_VOLUME",
    "RecallError",
    "RecallHit",
    "SessionRecall",
    "export_text",
    "format_hits",
    "recall_tool",
]
