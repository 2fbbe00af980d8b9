"""The context micro-tools over volumes, plus named values in memory: ctx_length,
ctx_slice, ctx_grep, ctx_search, ctx_summarize, mem_store, mem_recall.

The CLI, the volume browser and the agent all call these, so their names and signatures
stay stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nanobot_tui.engine.context.grep import GrepResult
from nanobot_tui.engine.context.search import SearchResult, search, search_with_vectors
from nanobot_tui.engine.context.storage import VolumeError, VolumeInputError
from nanobot_tui.engine.context.volume import Line, Volume
from nanobot_tui.engine.llm.request import ChatRequest

if TYPE_CHECKING:
    from nanobot_tui.engine.llm.chat_client import ChatClient
    from nanobot_tui.engine.llm.openai import LLMClient

# A slice is read by a model with a small window: cap it rather than flood the context.
MAX_SLICE_LINES = 2000
# ctx_summarize reads at most this much per model call, and summarises longer ranges in
# pieces whose summaries are then summarised (map, then reduce).
SUMMARY_PIECE_CHARS = 6000
SUMMARY_MAX_TOKENS = 256

SUMMARIZE_PROMPT = (
    "Summarise the following lines from {where} in a few sentences. Keep names, numbers "
    "and identifiers exactly as written.\n\n{text}"
)
REDUCE_PROMPT = (
    "Combine these partial summaries of {where} into one short summary. Keep names, "
    "numbers and identifiers exactly.\n\n{text}"
)


@dataclass(frozen=True)
class VolumeLength:
    volume: str
    files: int
    lines: int
    bytes: int
    est_tokens: int

    def to_dict(self) -> dict[str, object]:
        return {
            "volume": self.volume,
            "files": self.files,
            "lines": self.lines,
            "bytes": self.bytes,
            "estTokens": self.est_tokens,
        }


@dataclass(frozen=True)
class Summary:
    volume: str
    start: int
    end: int
    text: str
    model_calls: int


class ContextStore:
    """Opens volumes on demand and keeps them open (opening only maps files)."""

    def __init__(
        self,
        *,
        summarizer: ChatClient | None = None,
        embedder: LLMClient | None = None,
        summary_tokens: int = SUMMARY_MAX_TOKENS,
    ) -> None:
        self.summarizer = summarizer
        self.embedder = embedder
        self.summary_tokens = summary_tokens
        self._volumes: dict[str, Volume] = {}
        self._memory: dict[str, str] = {}

    def volume(self, name: str) -> Volume:
        if name not in self._volumes:
            self._volumes[name] = Volume.open(name)
        return self._volumes[name]

    def close(self) -> None:
        for volume in self._volumes.values():
            volume.close()
        self._volumes.clear()

    def __enter__(self) -> ContextStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # the micro-tools

    def ctx_length(self, volume: str) -> VolumeLength:
        v = self.volume(volume)
        return VolumeLength(v.name, len(v.files), v.n_lines, v.n_bytes, v.est_tokens)

    def ctx_slice(self, volume: str, start: int, end: int) -> list[Line]:
        """Volume lines start..end, 1-based and inclusive (as grep -n numbers them)."""
        if end < start:
            raise VolumeInputError(f"ctx_slice: end {end} is before start {start}")
        if end - start + 1 > MAX_SLICE_LINES:
            raise VolumeInputError(
                f"ctx_slice: {end - start + 1} lines asked, at most {MAX_SLICE_LINES} at once"
            )
        return self.volume(volume).lines(start, end)

    def ctx_grep(self, volume: str, pattern: str, max_hits: int = 50) -> GrepResult:
        return self.volume(volume).grep(pattern, max_hits)

    async def ctx_search(self, volume: str, query: str, top: int = 5) -> SearchResult:
        """Lexical + simhash, or lexical + vectors when an embedding model is configured;
        the result's `method` says which."""
        v = self.volume(volume)
        if self.embedder is not None:
            return await search_with_vectors(v, query, top, self.embedder)
        return search(v, query, top)

    async def ctx_summarize(self, volume: str, start: int, end: int) -> Summary:
        """Summarise volume lines start..end with the memory slot's model."""
        if self.summarizer is None:
            raise VolumeError("ctx_summarize needs the memory slot's model, and none is running")
        v = self.volume(volume)
        lines = v.lines(start, end)
        if not lines:
            raise VolumeInputError(f"ctx_summarize: no lines in {start}..{end} of {volume}")
        where = f"{volume} lines {lines[0].vline}-{lines[-1].vline}"
        pieces = _pieces([line.text for line in lines], SUMMARY_PIECE_CHARS)
        calls = 0
        summaries = []
        for piece in pieces:
            summaries.append(await self._summarize(SUMMARIZE_PROMPT, where, piece))
            calls += 1
        while len(summaries) > 1:
            grouped = _pieces(summaries, SUMMARY_PIECE_CHARS)
            summaries = [await self._summarize(REDUCE_PROMPT, where, g) for g in grouped]
            calls += len(grouped)
        return Summary(volume, lines[0].vline, lines[-1].vline, summaries[0], calls)

    async def _summarize(self, prompt: str, where: str, text: str) -> str:
        assert self.summarizer is not None
        result = await self.summarizer.chat(
            ChatRequest(
                [{"role": "user", "content": prompt.format(where=where, text=text)}],
                temperature=0.2,
                max_tokens=self.summary_tokens,
            )
        )
        return result.content.strip()

    def mem_store(self, key: str, value: str) -> None:
        if not key:
            raise ValueError("mem_store: the key is empty")
        self._memory[key] = value

    def mem_recall(self, key: str | None = None) -> str | dict[str, str]:
        """One value by key, or every stored key and value when no key is given."""
        if key is None:
            return dict(self._memory)
        if key not in self._memory:
            known = ", ".join(sorted(self._memory)) or "none"
            raise KeyError(f"mem_recall: nothing stored under {key!r} (stored: {known})")
        return self._memory[key]


def _pieces(texts: list[str], limit: int) -> list[str]:
    """Join texts with newlines into pieces of at most ~limit characters."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for text in texts:
        if current and size + len(text) > limit:
            pieces.append("\n".join(current))
            current, size = [], 0
        current.append(text[: limit * 2])  # one monster line must not blow the window
        size += len(text) + 1
    if current:
        pieces.append("\n".join(current))
    return pieces
