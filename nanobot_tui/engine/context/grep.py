"""grep over a volume: every line that matches a pattern, once, in order, like `grep -n`.

A line matches when ``re.search(pattern, line_text)`` would (Python's regex syntax and
meaning on the line's text, CR removed), except that a pattern runs in linear time (see
pattern.py: what only a backtracking engine can do is refused in one line).

ripgrep does the work where it can answer exactly (ripgrep.py: a volume without CR, the
pattern translated to Rust's syntax): it searches text.bin, whose lines are the volume's.
Otherwise, or when rg cannot run, the memory-mapped text.bin is searched here, many lines
at a time, in one of these ways:

- a literal (no regex metacharacters, or fixed=True) is found with mmap.find;
- an ASCII literal ignoring case: pieces lower-cased as bytes, then find;
- a regex with a literal that every match must contain, rare in the piece: bytes.find for
  the literal, the pattern (RE2) tried on the lines that hold it;
- otherwise the pattern (RE2) runs over pieces of many lines (UTF-8, CR before LF dropped).
"""

from __future__ import annotations

import fnmatch
import mmap
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nanobot_tui.engine.context.hits import HIT_CHARS, GrepHit, GrepHits, ParsedRows, Rows, clip
from nanobot_tui.engine.context.pattern import (
    LinePattern,
    clean_piece,
    compile_pattern,
    rust_source,
)
from nanobot_tui.engine.context.ripgrep import rg_search
from nanobot_tui.engine.context.storage import VolumeInputError

if TYPE_CHECKING:
    from nanobot_tui.engine.context.volume import Volume, VolumeFile

# GrepHit and HIT_CHARS live in hits.py; grep's callers import them from here.
__all__ = ["HIT_CHARS", "GrepHit", "GrepHits", "GrepResult", "grep_volume"]

# The regex path decodes the mmap in pieces of about this size, cut at line boundaries.
GREP_CHUNK = 8 << 20
GREP_FIRST_CHUNK = 64 << 10
# A literal every match must contain picks the candidate lines while it occurs at most
# once per this many characters; more often, a scan with the pattern is cheaper.
PREFILTER_SPACING = 256

_META = frozenset(".^$*+?{}[]\\|()")
# UTF-8 of the letters that re.IGNORECASE matches to an ASCII letter: İ ı (i), ſ (s), K (k).
_FOLD_EXTRA = (b"\xc4\xb0", b"\xc4\xb1", b"\xc5\xbf", b"\xe2\x84\xaa")

# (volume line, clipped text) of a matching line; byte ranges (a, b, first 0-based line).
Found = list[tuple[int, str]]
Ranges = list[tuple[int, int, int]]


@dataclass(frozen=True)
class GrepResult:
    hits: GrepHits  # a Sequence of GrepHit, built as they are read
    truncated: bool  # more matching lines exist beyond max_hits
    files_searched: int
    bytes_searched: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "hits": [
                {"file": h.file, "fline": h.fline, "vline": h.vline, "text": h.text}
                for h in self.hits
            ],
            "truncated": self.truncated,
            "files_searched": self.files_searched,
            "bytes_searched": self.bytes_searched,
            "seconds": self.seconds,
        }


def grep_volume(
    volume: Volume,
    pattern: str,
    max_hits: int,
    *,
    ignore_case: bool,
    fixed: bool,
    path_glob: str | None,
) -> GrepResult:
    """`Volume.grep`: see there."""
    t0 = time.perf_counter()
    raw = volume.raw()
    if max_hits < 1:
        raise VolumeInputError(f"max_hits must be at least 1, not {max_hits}")
    selected = _select(volume.files, path_glob)
    ranges = _merge_ranges(selected)
    scan = _Scan(raw if isinstance(raw, mmap.mmap) else None, volume.starts, ranges, max_hits + 1)
    keep = None if len(selected) == len(volume.files) else _line_ranges(volume.starts, ranges)
    rows = _matching_lines(volume, scan, pattern, ignore_case, fixed, keep)
    truncated = len(rows) > max_hits
    rows = rows.head(max_hits)
    hits = GrepHits(rows, volume.locate)
    if truncated:
        # Searched up to the end of the last reported line.
        stop = int(volume.starts[rows.last_vline()])
        files_searched = sum(1 for f in selected if f.offset < stop)
        bytes_searched = sum(max(0, min(b, stop) - a) for a, b, _ in ranges)
    else:
        files_searched = len(selected)
        bytes_searched = sum(b - a for a, b, _ in ranges)
    return GrepResult(hits, truncated, files_searched, bytes_searched, time.perf_counter() - t0)


def _matching_lines(
    volume: Volume,
    scan: _Scan,
    pattern: str,
    ignore_case: bool,
    fixed: bool,
    keep: list[tuple[int, int]] | None,
) -> Rows:
    """The first scan.limit matching lines: by ripgrep
    where it can answer exactly (ripgrep.py), else on the mapped text with mmap.find or
    RE2."""
    literal = fixed or not any(c in _META for c in pattern)
    if literal and not ignore_case:
        source: str | None = pattern if "\n" not in pattern else None
        rx = None
    else:
        rx = compile_pattern(pattern, ignore_case=ignore_case, literal=literal)  # or refuse
        source = rust_source(pattern, ignore_case=ignore_case, literal=literal)
    if scan.ranges and source is not None:
        found = rg_search(
            volume,
            source,
            fixed=rx is None,
            ignore_case=ignore_case,
            keep=keep,
            limit=scan.limit,
        )
        if found is not None:
            return found
    if rx is None:
        got = scan.literal(pattern)
    elif literal and pattern.isascii():
        got = scan.nocase(pattern, rx)
    else:
        musts = [] if literal else _required_literals(pattern, ignore_case)
        got = scan.regex(rx, musts)
    return ParsedRows(np.asarray([v for v, _ in got], dtype=np.int64), [t for _, t in got])


def _line_ranges(starts: np.ndarray, ranges: Ranges) -> list[tuple[int, int]]:
    """The 1-based volume lines [first, end) of each byte range."""
    ends = np.searchsorted(starts, np.asarray([b for _, b, _ in ranges], dtype=starts.dtype))
    return [(line0 + 1, int(k) + 1) for (_, _, line0), k in zip(ranges, ends, strict=True)]


def _select(files: list[VolumeFile], path_glob: str | None) -> list[VolumeFile]:
    if path_glob is None:
        return list(files)
    base_too = "/" not in path_glob
    return [
        f
        for f in files
        if fnmatch.fnmatchcase(f.path, path_glob)
        or (base_too and fnmatch.fnmatchcase(f.path.rsplit("/", 1)[-1], path_glob))
    ]


def _merge_ranges(files: list[VolumeFile]) -> Ranges:
    """Byte ranges (a, b, first 0-based line) covering the files' text, adjacent ones merged."""
    out: Ranges = []
    for f in files:
        if not f.length:
            continue
        if out and out[-1][1] == f.offset:
            a, _, line0 = out[-1]
            out[-1] = (a, f.offset + f.length, line0)
        else:
            out.append((f.offset, f.offset + f.length, f.first_line))
    return out


# -- the scan over the mapped text ---------------------------------------------------------


class _Scan:
    """One grep's walk over the mapped text.bin: the byte ranges of the selected files,
    and how many matching lines to find (`limit`). Nothing to find in an empty volume
    (no mmap)."""

    def __init__(self, mm: mmap.mmap | None, starts: np.ndarray, ranges: Ranges, limit: int):
        self.mm = mm
        self.starts = starts
        self.ranges = ranges
        self.limit = limit

    def literal(self, pattern: str) -> Found:
        """The first `limit` lines containing `pattern`, by mmap.find."""
        needle = pattern.encode("utf-8", "surrogatepass")
        if b"\n" in needle or self.mm is None:
            return []
        where: list[int] = []
        for a, b, _ in self.ranges:
            where += _find_lines(self.mm, needle, a, b, self.limit - len(where))
            if len(where) >= self.limit:
                break
        return self._hits_at(where)

    def nocase(self, pattern: str, rx: LinePattern) -> Found:
        """An ASCII literal, ignoring case: pieces are lower-cased as bytes (ASCII letters
        only: the same length, so positions hold) and searched with find. Python's
        IGNORECASE also lets i, k and s match four non-ASCII letters (İ ı K ſ); a piece
        that holds one of them, when the needle has one of those letters, goes through
        the regex instead."""
        needle = pattern.lower().encode()
        found: Found = []
        if b"\n" in needle or self.mm is None:
            return found
        folds = any(c in needle for c in b"iks")
        for ca, cb, j0 in self._pieces():
            raw = self.mm[ca:cb]
            need = self.limit - len(found)
            if not folds or raw.isascii() or not any(x in raw for x in _FOLD_EXTRA):
                low = raw.lower()
                found += self._hits_at(
                    [ca + p for p in _find_lines(low, needle, 0, len(low), need)]
                )
            else:
                found += _scan_piece(clean_piece(raw), j0, rx, need)
            if len(found) >= self.limit:
                return found
        return found

    def regex(self, rx: LinePattern, musts: list[str]) -> Found:
        """The first `limit` matching lines.

        Per cleaned piece of many lines (see pattern.clean_piece), one of two ways:
        - a literal that every match must contain (`musts`) is rare in the piece: find
          it with bytes.find and check only the lines that hold it, with the line pattern;
        - otherwise the pattern runs over the whole piece: a match that stays inside its
          line's text is a hit; one that runs past it (a pattern that can match "\\n")
          is checked against that line alone. Without lookaround (which RE2 lacks) this
          finds exactly the lines that a search line by line finds.
        """
        found: Found = []
        if self.mm is None:
            return found
        for ca, cb, j0 in self._pieces():
            text = clean_piece(self.mm[ca:cb])
            need = self.limit - len(found)
            resume, j = 0, j0
            if musts:
                must = musts[0].encode("utf-8", "surrogatepass")
                got, resume, j = _scan_candidates(text, j0, must, rx, need)
                found += got
                need -= len(got)
            if resume >= 0 and need > 0:
                found += _scan_piece(text, j, rx, need, resume)
            if len(found) >= self.limit:
                return found
        return found

    def _pieces(self) -> Iterator[tuple[int, int, int]]:
        """Pieces [ca, cb) of the ranges, of about GREP_CHUNK bytes, cut at line starts,
        with the 0-based index of the line at ca."""
        starts = self.starts
        for a, b, line0 in self.ranges:
            ca, j = a, line0
            size = GREP_FIRST_CHUNK  # small first, so that a few hits come back fast
            while ca < b:
                target = min(b, ca + size)
                size = min(2 * size, GREP_CHUNK)
                k = int(np.searchsorted(starts, starts.dtype.type(target), side="left"))
                cb = int(starts[k])
                yield ca, cb, j
                ca, j = cb, k

    def _hits_at(self, where: list[int]) -> Found:
        """(vline, clipped text) of the lines holding byte positions `where` (ascending)."""
        if not where:
            return []
        mm, starts = self.mm, self.starts
        assert mm is not None
        rows = np.searchsorted(starts, np.asarray(where, dtype=np.uint64), side="right") - 1
        cap = 4 * HIT_CHARS + 4  # bytes enough for HIT_CHARS characters and then some
        found = []
        for j, ls, le in zip(
            rows.tolist(), starts[rows].tolist(), (starts[rows + 1] - 1).tolist(), strict=True
        ):
            if le > ls and mm[le - 1] == 13:
                le -= 1
            text = mm[ls : le if le - ls <= cap else ls + cap].decode("utf-8", "replace")
            found.append((j + 1, clip(text)))
        return found


def _find_lines(buf: mmap.mmap | bytes, needle: bytes, a: int, b: int, limit: int) -> list[int]:
    """Positions in buf[a:b] of `needle`, the first in each line whose text (CR dropped)
    holds it, at most `limit`. buf is text.bin-like: every line ends with "\n"."""
    where: list[int] = []
    find = buf.find
    size = len(needle)
    pos = a
    while len(where) < limit:
        p = find(needle, pos, b)
        if p < 0 or p >= b:
            break
        le = find(b"\n", p, b)  # the end of p's line
        ce = le - 1 if le > p and buf[le - 1] == 13 else le
        if p + size > ce:  # runs into the CR that the line's text drops
            pos = p + 1
            continue
        where.append(p)
        pos = le + 1
    return where


# -- regex pieces --------------------------------------------------------------------------


def _required_literals(pattern: str, ignore_case: bool) -> list[str]:
    """Literal strings that every match of `pattern` contains (runs of plain characters at
    the pattern's top level), longest first; none for case-insensitive patterns. Read by
    Python's own parser (no matching: it takes time in the pattern's length only)."""
    if ignore_case:
        return []
    try:
        from re import _constants, _parser  # type: ignore[attr-defined]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = _parser.parse(pattern, 0)
        if parsed.state.flags & re.IGNORECASE:
            return []
        literal = _constants.LITERAL
        runs: list[str] = []
        run: list[str] = []
        for op, arg in parsed.data:
            if op is literal:
                run.append(chr(arg))
                continue
            runs.append("".join(run))
            run = []
        runs.append("".join(run))
    except Exception:  # private module, or a pattern it cannot take: no prefilter
        return []
    good = {r for r in runs if len(r) >= 3 and "\n" not in r}
    return sorted(good, key=lambda r: (-len(r), r))[:2]


def _line_of(text: bytes, p: int) -> tuple[int, int, bytes]:
    """(start, end) of the line holding position p of a cleaned piece, and its text."""
    ls = text.rfind(b"\n", 0, p) + 1
    le = text.find(b"\n", p)
    return ls, le, text[ls:le]


def _hit(j: int, line: bytes) -> tuple[int, str]:
    return j + 1, clip(line.decode("utf-8", "replace"))


def _scan_candidates(
    text: bytes, j0: int, must: bytes, rx: LinePattern, need: int
) -> tuple[Found, int, int]:
    """Matching lines among those holding `must`: (hits, resume, j). When `must` turns out
    to be common, stops at line start `resume` (0-based line j there) for a full scan;
    resume == -1 when the piece is done."""
    out: Found = []
    pos = cur = 0
    j = j0
    tried = 0
    find, search = text.find, rx.search_line
    while len(out) < need:
        p = find(must, pos)
        if p < 0:
            break
        tried += 1
        if tried % 64 == 0 and pos < tried * PREFILTER_SPACING:
            return out, pos, j + text.count(b"\n", cur, pos)
        ls, le, line = _line_of(text, p)
        if search(line):
            j += text.count(b"\n", cur, ls)
            cur = ls
            out.append(_hit(j, line))
        pos = le + 1
    return out, -1, j


def _scan_piece(text: bytes, j0: int, rx: LinePattern, need: int, start: int = 0) -> Found:
    """Matching lines from line start `start` (0-based line j0), running the pattern over
    the whole cleaned piece."""
    out: Found = []
    n = len(text)
    pos = cur = start
    j = j0
    search = rx.scan.search
    while len(out) < need:
        m = search(text, pos)
        if m is None:
            break
        p = m.start()
        if p >= n:  # an empty match after the piece's last "\n": no line there
            break
        j += text.count(b"\n", cur, p)
        cur = p
        ls, le, line = _line_of(text, p)
        if (m.end() <= ls + len(line) and not rx.verify) or rx.search_line(line):
            out.append(_hit(j, line))
        pos = le + 1
    return out
