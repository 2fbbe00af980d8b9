"""A grep's hits as columns: a GrepHit is built only when one is read.

A grep may find a hundred thousand lines; building an object per line costs more than
ripgrep's whole search. GrepHits keeps rg's output as it came (its rows counted) and
makes numpy columns of it (volume line, file line, file) when a hit is first read, the
texts staying rows of that one buffer; a GrepHit is built when one is read. So a grep's
result costs what finding the lines costs, and a caller that shows 100 hits builds 100
(after one parse of the output, in bulk). It is a Sequence (len, index, slice, iterate)
and equals a list of the same hits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, overload

import numpy as np

if TYPE_CHECKING:
    from nanobot_tui.engine.context.volume import VolumeFile

# A grep hit's text is clipped to this many characters (an 8K-window model reads it).
HIT_CHARS = 400


class GrepHit(NamedTuple):
    """One matching line."""

    file: str
    fline: int
    vline: int
    text: str  # clipped to HIT_CHARS characters, with "…" when longer


def clip(text: str) -> str:
    return text if len(text) <= HIT_CHARS else text[:HIT_CHARS] + "…"


class RowTexts(Sequence[str]):
    """Texts held as rows of one UTF-8 buffer: row i is buf[starts[i]:ends[i]], decoded
    (errors replaced) and clipped to HIT_CHARS when read."""

    __slots__ = ("_buf", "_ends", "_starts")

    def __init__(self, buf: bytes | bytearray, starts: np.ndarray, ends: np.ndarray) -> None:
        self._buf = buf
        self._starts = starts
        self._ends = ends

    def __len__(self) -> int:
        return int(self._starts.shape[0])

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> RowTexts: ...
    def __getitem__(self, i: int | slice) -> str | RowTexts:
        if isinstance(i, slice):
            return RowTexts(self._buf, self._starts[i], self._ends[i])
        return _text(self._buf[int(self._starts[i]) : int(self._ends[i])])

    def __iter__(self) -> Iterator[str]:
        starts, ends = self._starts.tolist(), self._ends.tolist()
        if not starts:
            return iter(())
        lo, hi = int(self._starts.min()), int(self._ends.max())  # a slice may reverse them
        part = self._buf if (lo, hi) == (0, len(self._buf)) else self._buf[lo:hi]
        if part.isascii():  # bytes are characters: one decode for all, then slices
            text = part.decode("ascii")
            cuts = map(slice, [a - lo for a in starts], [b - lo for b in ends])
            return (t if len(t) <= HIT_CHARS else clip(t) for t in map(text.__getitem__, cuts))
        buf = self._buf
        return (_text(buf[a:b]) for a, b in zip(starts, ends, strict=True))


def _text(raw: bytes | bytearray) -> str:
    text = raw.decode("utf-8", "replace")
    # A row of at most HIT_CHARS bytes has at most HIT_CHARS characters: no clip needed.
    return text if len(raw) <= HIT_CHARS else clip(text)


# A GrepHit from a (file, fline, vline, text) row without the named tuple's Python-level
# __new__: reading 100,000 hits then costs about what building plain tuples does.
_new_hit = functools.partial(tuple.__new__, GrepHit)


class Rows(Protocol):
    """Matching lines found by an engine, in order; parsed() gives them as columns."""

    def __len__(self) -> int: ...
    def head(self, k: int) -> Rows: ...
    def part(self, a: int, b: int) -> Rows: ...  # rows a..b-1, 0 <= a <= b <= len
    def last_vline(self) -> int: ...
    def parsed(self) -> tuple[np.ndarray, Sequence[str]]: ...


class ParsedRows:
    """Rows already held as columns: volume lines (int64) and texts."""

    __slots__ = ("texts", "vlines")

    def __init__(self, vlines: np.ndarray, texts: Sequence[str]) -> None:
        self.vlines = vlines
        self.texts = texts

    def __len__(self) -> int:
        return int(self.vlines.shape[0])

    def head(self, k: int) -> ParsedRows:
        return ParsedRows(self.vlines[:k], self.texts[:k])

    def part(self, a: int, b: int) -> ParsedRows:
        return ParsedRows(self.vlines[a:b], self.texts[a:b])

    def last_vline(self) -> int:
        return int(self.vlines[-1])

    def parsed(self) -> tuple[np.ndarray, Sequence[str]]:
        return self.vlines, self.texts


# Where volume lines are: (index of each one's file in the list, its file line, the list).
Locate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, Sequence["VolumeFile"]]]


class _Columns(NamedTuple):
    vlines: np.ndarray
    flines: np.ndarray
    which: np.ndarray  # index into files
    files: Sequence[VolumeFile]
    texts: Sequence[str]


class GrepHits(Sequence[GrepHit]):
    """Matching lines, in order. Its length is known at once; the columns (volume line,
    file line, file, text) are made when a hit is first read, and a GrepHit when one is
    read. `locate` (Volume.locate) maps volume lines to files without opening text."""

    __slots__ = ("_cols", "_locate", "_rows")

    def __init__(self, rows: Rows, locate: Locate) -> None:
        self._rows = rows
        self._locate = locate
        self._cols: _Columns | None = None

    @classmethod
    def _of(cls, cols: _Columns, locate: Locate) -> GrepHits:
        hits = cls(ParsedRows(cols.vlines, cols.texts), locate)
        hits._cols = cols
        return hits

    def _columns(self) -> _Columns:
        cols = self._cols
        if cols is None:  # two threads may both get here: both make the same columns
            vlines, texts = self._rows.parsed()
            which, flines, files = self._locate(vlines)
            cols = self._cols = _Columns(vlines, flines, which, files, texts)
        return cols

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> GrepHit: ...
    @overload
    def __getitem__(self, i: slice) -> GrepHits: ...
    def __getitem__(self, i: int | slice) -> GrepHit | GrepHits:
        if isinstance(i, slice) and self._cols is None and i.step in (None, 1):
            # hits[:100] of many: only those rows are parsed, not all of them
            a, b, _ = i.indices(len(self))
            return GrepHits(self._rows.part(a, max(a, b)), self._locate)
        c = self._columns()
        if isinstance(i, slice):
            part = _Columns(c.vlines[i], c.flines[i], c.which[i], c.files, c.texts[i])
            return GrepHits._of(part, self._locate)
        if not -len(self) <= i < len(self):
            raise IndexError("grep hit index out of range")
        return GrepHit(
            c.files[int(c.which[i])].path, int(c.flines[i]), int(c.vlines[i]), c.texts[i]
        )

    def __iter__(self) -> Iterator[GrepHit]:
        if not len(self):
            return iter(())
        c = self._columns()
        rows = zip(
            [c.files[k].path for k in c.which.tolist()],
            c.flines.tolist(),
            c.vlines.tolist(),
            c.texts,
            strict=True,
        )
        return map(_new_hit, rows)

    @property
    def vlines(self) -> np.ndarray:
        """The volume lines (1-based), as one array: no hit is built."""
        return self._columns().vlines

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GrepHits | list | tuple):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"GrepHits({list(self)!r})"
