"""The context micro-tools as agent tools: ctx_* over the ingested volumes, mem_* over
the store's named values.

Results are written for a small model's window: one line per hit, as
`file:line [volume line] text`. Volume line numbers are what ctx_slice takes; file lines
are what a person reads, so both are given.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from nanobot_tui.engine.agent.tools.registry import Tool, ToolError, object_schema
from nanobot_tui.engine.context.micro_tools import ContextStore
from nanobot_tui.engine.context.search import SearchError, SearchResult
from nanobot_tui.engine.context.storage import VolumeError, list_volumes
from nanobot_tui.engine.context.volume import Line, Volume
from nanobot_tui.text import display_name
from nanobot_tui.units import human_bytes

SLICE_LINES = 200
GREP_HITS = 20
MAX_GREP_HITS = 100
SEARCH_TOP = 5
MAX_SEARCH_TOP = 20
# One ctx_summarize call reads at most this many lines (each piece is a model call).
SUMMARIZE_LINES = 2000
# ctx_length lists this many of a volume's files with their volume line ranges.
LENGTH_FILES = 20


def context_tools(store: ContextStore, *, output_chars: int = 4000) -> list[Tool]:
    """The ctx_* and mem_* tools over `store`; ctx_summarize only when it has a summarizer.
    Slices stop at about `output_chars` characters and say where to go on."""
    ctx = _ContextTools(store, output_chars)
    volume = {"volume": "string"}
    lines = {**volume, "start": "integer", "end": "integer"}
    tools = [
        Tool("ctx_volumes", "List the ingested volumes.", object_schema({}), ctx.volumes),
        Tool(
            "ctx_length",
            "Size and files of a volume.",
            object_schema(volume, ["volume"]),
            ctx.length,
        ),
        Tool(
            "ctx_slice",
            "Read volume lines start to end.",
            object_schema(lines, [*lines]),
            ctx.slice,
        ),
        Tool(
            "ctx_grep",
            "Regex search the lines of a volume.",
            object_schema(
                {**volume, "pattern": "string", "max_hits": "integer"}, ["volume", "pattern"]
            ),
            ctx.grep,
        ),
        Tool(
            "ctx_search",
            "Search a volume for passages about a query.",
            object_schema({**volume, "query": "string", "top": "integer"}, ["volume", "query"]),
            ctx.search,
        ),
    ]
    if store.summarizer is not None:
        summarize = object_schema(lines, [*lines])
        tools.append(
            Tool("ctx_summarize", "Summarize volume lines start to end.", summarize, ctx.summarize)
        )
    memory = object_schema({"key": "string", "value": "string"}, ["key", "value"])
    tools += [
        Tool("mem_store", "Remember a value under a key.", memory, ctx.mem_store, read_only=False),
        Tool(
            "mem_recall",
            "Recall a key's value, or all keys.",
            object_schema({"key": "string"}),
            ctx.mem_recall,
        ),
    ]
    return tools


class _ContextTools:
    """The handlers. Sync ones run in worker threads (the registry sees to that)."""

    def __init__(self, store: ContextStore, output_chars: int) -> None:
        self.store = store
        self.output_chars = output_chars
        # ContextStore opens volumes into a plain dict: two threads must not open one twice.
        self._open_lock = threading.Lock()

    def _volume(self, name: str) -> Volume:
        with self._open_lock:
            try:
                return self.store.volume(name)
            except VolumeError as exc:
                names = [v["name"] for v in list_volumes()]
                if name in names:
                    raise ToolError(str(exc)) from None
                present = ", ".join(names) if names else "none yet"
                raise ToolError(f"no volume named {name!r} (volumes: {present})") from None

    def volumes(self, args: dict[str, Any]) -> str:
        volumes = list_volumes()
        if not volumes:
            return "no volumes yet (a person ingests them with: nanobot ingest PATH)"
        lines = [f"{_count(len(volumes), 'volume')}:"]
        for v in volumes:
            if v["error"]:
                lines.append(f"{v['name']}: unreadable ({v['error']})")
            else:
                lines.append(
                    f"{v['name']}: {v['files']:,} files, {v['lines']:,} lines, "
                    f"~{v['est_tokens']:,} tokens"
                )
        return "\n".join(lines)

    def length(self, args: dict[str, Any]) -> str:
        volume = self._volume(args["volume"])
        length = self.store.ctx_length(volume.name)
        lines = [
            f"{length.volume}: {length.files:,} files, {length.lines:,} lines, "
            f"{human_bytes(length.bytes)}, ~{length.est_tokens:,} tokens",
            "files [volume lines]:",
        ]
        shown = [f for f in volume.files if f.n_lines][:LENGTH_FILES]
        lines += [f"{display_name(f.path)} [{f.first_line + 1}-{f.last_line}]" for f in shown]
        more = sum(1 for f in volume.files if f.n_lines) - len(shown)
        if more > 0:
            lines.append(f"[{more:,} more files; find them with ctx_grep or ctx_search]")
        return "\n".join(lines)

    def slice(self, args: dict[str, Any]) -> str:
        volume = self._volume(args["volume"])
        start, end = max(1, args["start"]), args["end"]
        if end < start:
            raise ToolError(f"end {end} is before start {start}")
        if start > volume.n_lines:
            raise ToolError(
                f"start {start} is past the end: {volume.name} has {volume.n_lines:,} lines"
            )
        last = min(end, volume.n_lines, start + SLICE_LINES - 1)
        try:
            got = self.store.ctx_slice(volume.name, start, last)
        except VolumeError as exc:
            raise ToolError(str(exc)) from None
        body, shown_to = _slice_text(got, self.output_chars - 200)
        head = f"{volume.name} lines {start}-{shown_to} of {volume.n_lines:,}"
        text = f"{head}\n{body}"
        if shown_to < min(end, volume.n_lines):
            text += f"\n[more from volume line {shown_to + 1}]"
        return text

    def grep(self, args: dict[str, Any]) -> str:
        volume = self._volume(args["volume"])
        pattern, max_hits = args["pattern"], args.get("max_hits", GREP_HITS)
        try:
            result = self.store.ctx_grep(volume.name, pattern, _clamp(max_hits, MAX_GREP_HITS))
        except VolumeError as exc:
            raise ToolError(str(exc)) from None
        if not result.hits:
            return f"no line of {volume.name} matches {pattern!r}"
        lines = [f"{_count(len(result.hits), 'hit')}, file:line [volume line]:"]
        lines += [
            f"{display_name(h.file)}:{h.fline} [{h.vline}] {h.text.strip()}" for h in result.hits
        ]
        if result.truncated:
            lines.append("[more hits exist: narrow the pattern or raise max_hits]")
        return "\n".join(lines)

    async def search(self, args: dict[str, Any]) -> str:
        name, query = args["volume"], args["query"]
        top = _clamp(args.get("top", SEARCH_TOP), MAX_SEARCH_TOP)
        store = self.store
        await asyncio.to_thread(self._volume, name)
        try:
            if store.embedder is not None:
                result = await store.ctx_search(name, query, top)
            else:
                # The lexical search is CPU work: keep it off the agent's event loop.
                result = await asyncio.to_thread(asyncio.run, store.ctx_search(name, query, top))
        except (VolumeError, SearchError) as exc:
            raise ToolError(str(exc)) from None
        return _search_text(name, query, result)

    async def summarize(self, args: dict[str, Any]) -> str:
        name, start, end = args["volume"], max(1, args["start"]), args["end"]
        if end - start + 1 > SUMMARIZE_LINES:
            raise ToolError(
                f"{end - start + 1:,} lines asked, at most {SUMMARIZE_LINES:,} at once: "
                "summarize in parts"
            )
        await asyncio.to_thread(self._volume, name)
        try:
            summary = await self.store.ctx_summarize(name, start, end)
        except VolumeError as exc:
            raise ToolError(str(exc)) from None
        return f"{name} lines {summary.start}-{summary.end}: {summary.text}"

    def mem_store(self, args: dict[str, Any]) -> str:
        self.store.mem_store(args["key"], args["value"])
        return f"stored {args['key']!r} ({len(args['value']):,} characters)"

    def mem_recall(self, args: dict[str, Any]) -> str:
        key = args.get("key")
        recalled = self.store.mem_recall(key)
        if isinstance(recalled, str):
            return recalled
        if not recalled:
            return "nothing stored yet"
        return "\n".join(f"{k}: {v}" for k, v in sorted(recalled.items()))


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def _clamp(value: int, most: int) -> int:
    """Bounds are enforced here, not in the schema: every schema token costs prompt space."""
    return min(max(1, value), most)


def _slice_text(got: list[Line], budget: int) -> tuple[str, int]:
    """Lines numbered as in their file, under a header per file saying which volume lines
    they are; stops at about `budget` characters. (text, last volume line shown)."""
    out: list[str] = []
    used = 0
    last = got[0].vline - 1 if got else 0
    i = 0
    while i < len(got):
        first = got[i]
        rows: list[str] = []
        while i < len(got) and got[i].file == first.file:
            row = f"{got[i].fline:>4}| {got[i].text}"
            if (out or rows) and used + len(row) + 1 > budget:
                break
            rows.append(row)
            used += len(row) + 1
            i += 1
        if not rows:
            break
        end = got[i - 1]
        header = f"[{display_name(first.file)} lines {first.fline}-{end.fline}"
        header += f" = volume lines {first.vline}-{end.vline}]"
        out.append(header)
        out += rows
        used += len(header) + 1
        last = end.vline
        if i < len(got) and got[i].file == first.file:
            break  # out of room in the middle of a file
    return "\n".join(out), last


def _search_text(volume: str, query: str, result: SearchResult) -> str:
    if not result.hits:
        return f"nothing in {volume} matches {query!r}"
    lines = [f"{_count(len(result.hits), 'best passage')}, file:line [volume line]:"]
    lines += [
        f"{display_name(h.file)}:{h.best_fline} [{h.best_vline}] {h.preview}" for h in result.hits
    ]
    return "\n".join(lines)
