"""File-backed volumes: the text of many files in one memory-mapped blob, read by line.

A volume lives in NANOBOT_HOME/volumes/<name>/:

- ``text.bin``: the text of every file, one after another. Each file is decoded from
  UTF-8 with errors="replace" and re-encoded, so the blob is valid UTF-8; CRLF is kept
  as it is; every non-empty file's text ends with "\\n" (one is added when missing), so
  every line of the blob ends with "\\n". Empty files contribute nothing.
- ``lines.npy``: uint64, total_lines + 1 entries: where each line starts in text.bin,
  then len(text.bin). It is simply 0 followed by (position of every "\\n") + 1.
- ``manifest.json``: format version, name, root, times, totals and the file table.
- ``index/``: the chunk index, written by ``index.build_index`` (not this module).

Line semantics, which the tests compare with Python's own reading of the files: a file's
lines are ``data.decode("utf-8", "replace").split("\\n")`` with one trailing "\\r"
removed from each, and the final empty piece dropped when the text ends with "\\n" or
is empty. A lone "\\r" (old Mac line ending) is not a line break: it stays in the text.

Opening a volume maps text.bin and lines.npy; nothing is read until a slice asks for it,
so a slice of a 1 GB volume costs two index lookups and one small read.
"""

from __future__ import annotations

import bisect
import contextlib
import fnmatch
import json
import mmap
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from nanobot_tui import paths

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TEXT = "text.bin"
LINES = "lines.npy"
INDEX_DIR = "index"
# A grep hit's text is clipped to this many characters (an 8K-window model reads it).
HIT_CHARS = 400
# The regex path decodes the mmap in pieces of about this size, cut at line boundaries.
GREP_CHUNK = 8 << 20
GREP_FIRST_CHUNK = 64 << 10
# A literal every match must contain picks the candidate lines while it occurs at most
# once per this many characters; more often, a scan with the pattern is cheaper.
PREFILTER_SPACING = 256

_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_META = frozenset(".^$*+?{}[]\\|()")
# UTF-8 of the letters that re.IGNORECASE matches to an ASCII letter: İ ı (i), ſ (s), K (k).
_FOLD_EXTRA = (b"\xc4\xb0", b"\xc4\xb1", b"\xc5\xbf", b"\xe2\x84\xaa")


class VolumeError(Exception):
    """A problem with a volume or its input, said in one line."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))


def volumes_dir() -> Path:
    return paths.home() / "volumes"


def valid_name(name: str) -> str:
    """The name itself if it is a valid volume name ([A-Za-z0-9._-]{1,64}, no leading ".")."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise VolumeError(
            f"bad volume name {name!r}: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'"
        )
    return name


def volume_dir(name: str) -> Path:
    return volumes_dir() / valid_name(name)


@dataclass(frozen=True)
class VolumeFile:
    path: str  # relative to the root, "/" separators; a single-file ingest: its file name
    size: int  # bytes on disk
    mtime_ns: int
    sha1: str  # of the raw bytes
    language: str  # lower-case pygments alias ("python", "markdown"), "log", or "text"
    offset: int  # byte offset of its text in text.bin
    length: int  # bytes of its text in text.bin (including an added final "\n")
    first_line: int  # 0-based index of its first line in the volume's line table
    n_lines: int
    bad_bytes: int  # invalid UTF-8 bytes in the original, each replaced by U+FFFD

    @property
    def last_line(self) -> int:
        """1-based volume line number of its last line (== first_line when it has none)."""
        return self.first_line + self.n_lines


FILE_COLUMNS = tuple(f.name for f in fields(VolumeFile))


@dataclass(frozen=True)
class Line:
    vline: int  # 1-based line number in the volume
    file: str  # VolumeFile.path
    fline: int  # 1-based line number in the file
    text: str


@dataclass(frozen=True)
class GrepHit:
    file: str
    fline: int
    vline: int
    text: str  # clipped to HIT_CHARS characters, with "…" when longer


@dataclass(frozen=True)
class GrepResult:
    hits: list[GrepHit]
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


def _clip(text: str) -> str:
    return text if len(text) <= HIT_CHARS else text[:HIT_CHARS] + "…"


def _prepare_regex(pattern: str) -> tuple[str, bool, bool]:
    """Rewrite a pattern for a search over many lines at once: (rewritten, exotic, verify).

    Outside character classes, "$" and "\\Z" become (?=\\r?$) so that they match at the
    end of a CRLF line as they do on the line's text, and "\\A" becomes "^" (MULTILINE).
    A pattern with lookaround, atomic groups or possessive quantifiers can see past the
    end of a line in the blob, so it is searched line by line instead (exotic=True).
    verify: every hit must be checked on its line alone (re.search(r"\\B", "") finds
    nothing, but \\B matches between two newlines).
    """
    out: list[str] = []
    exotic = verify = False
    i, n = 0, len(pattern)
    in_class = False
    class_start = 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            esc = pattern[i : i + 2]
            if not in_class and esc == "\\Z":
                out.append(r"(?=\r?$)")
            elif not in_class and esc == "\\A":
                out.append("^")
            else:
                verify = verify or (not in_class and esc == "\\B")
                out.append(esc)
            i += 2
            continue
        if in_class:
            # "]" right after "[" or "[^" is a literal member, not the end of the class.
            if c == "]" and i > class_start:
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            class_start = i + 1
            if pattern[i + 1 : i + 2] == "^":
                class_start += 1
        elif c == "$":
            out.append(r"(?=\r?$)")
            i += 1
            continue
        elif c == "(" and pattern[i + 1 : i + 2] == "?":
            head = pattern[i + 2 : i + 4]
            if head[:1] in ("=", "!", ">") or head in ("<=", "<!"):
                exotic = True
        elif c in "*+?}" and pattern[i + 1 : i + 2] == "+" and i > 0:
            exotic = True
        out.append(c)
        i += 1
    return "".join(out), exotic, verify


class Volume:
    """An open volume: its file table in memory, its text and line index memory-mapped."""

    def __init__(
        self,
        name: str,
        dir: Path,
        manifest: dict[str, Any],
        files: list[VolumeFile],
        starts: np.ndarray,
        handle: Any,
        mm: mmap.mmap | None,
    ) -> None:
        self.name = name
        self.dir = dir
        self.root: str = manifest["root"]
        self.files = files
        self.created: str = manifest["created"]
        self.updated: str = manifest["updated"]
        # The manifest's header (format, name, root, times, totals), without the file table.
        self.manifest = {k: v for k, v in manifest.items() if k not in ("files", "file_columns")}
        self._starts = starts
        self._st = np.asarray(starts)  # a plain ndarray view: cheaper to index
        self._handle = handle
        self._mm = mm
        self._n_lines = int(starts.shape[0]) - 1
        self._n_bytes = int(manifest["bytes"])
        self._by_path = {f.path: f for f in files}
        # Files with lines, for bisecting a line number to its file.
        self._nz = [f for f in files if f.n_lines]
        self._nz_first = [f.first_line for f in self._nz]
        self._nz_first_np = np.asarray(self._nz_first, dtype=np.int64)

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, name: str) -> Volume:
        """Open volume `name`; VolumeError if it is missing or corrupt. Reads no text."""
        name = valid_name(name)
        recover(name)
        path = volume_dir(name)
        if not path.is_dir():
            raise VolumeError(f"no volume named {name!r} (in {volumes_dir()})")
        return cls.open_dir(path, name)

    @classmethod
    def open_dir(cls, path: Path, name: str | None = None) -> Volume:
        """Open the volume stored in folder `path` (also a not yet installed one)."""
        name = name or path.name

        def corrupt(what: str) -> VolumeError:
            return VolumeError(f"volume {name!r} is corrupt: {what}")

        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise corrupt(f"{MANIFEST} is missing") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise corrupt(f"{MANIFEST} is unreadable ({exc})") from None
        if not isinstance(manifest, dict):
            raise corrupt(f"{MANIFEST} is not an object")
        if manifest.get("format") != FORMAT_VERSION:
            raise corrupt(
                f"format {manifest.get('format')!r}, this nanobot reads {FORMAT_VERSION}; "
                "ingest it again"
            )
        try:
            files = _files_from_manifest(manifest)
            n_lines, n_bytes = int(manifest["lines"]), int(manifest["bytes"])
            for key in ("root", "created", "updated"):
                if not isinstance(manifest[key], str):
                    raise ValueError(f"{key} is not a string")
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(f"bad {MANIFEST} ({type(exc).__name__}: {exc})") from None
        _check_table(files, n_lines, n_bytes, corrupt)
        try:
            starts = np.load(path / LINES, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise corrupt(f"{LINES} is missing") from None
        except (OSError, ValueError) as exc:
            raise corrupt(f"{LINES} is unreadable ({exc})") from None
        if starts.dtype != np.dtype("<u8") or starts.shape != (n_lines + 1,):
            raise corrupt(f"{LINES} has {starts.shape} {starts.dtype}, want ({n_lines + 1},) <u8")
        if int(starts[0]) != 0 or int(starts[-1]) != n_bytes:
            raise corrupt(f"{LINES} does not span {TEXT} (0..{n_bytes})")
        try:
            handle = open(path / TEXT, "rb")  # noqa: SIM115 - kept open with the mmap
        except OSError as exc:
            raise corrupt(f"{TEXT}: {exc.strerror or exc}") from None
        try:
            size = os.fstat(handle.fileno()).st_size
            if size != n_bytes:
                raise corrupt(f"{TEXT} has {size} bytes, the manifest says {n_bytes}")
            mm = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except BaseException:
            handle.close()
            raise
        return cls(name, path, manifest, files, starts, handle, mm)

    def close(self) -> None:
        # The handle goes first: a reader in another thread that checks _check_open() then
        # finds the volume closed, instead of an mmap that vanished under it.
        handle, self._handle = self._handle, None
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None
        if handle is not None:
            handle.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Volume {self.name!r}: {len(self.files)} files, {self.n_lines} lines>"

    # -- sizes -------------------------------------------------------------------------

    @property
    def n_lines(self) -> int:
        return self._n_lines

    @property
    def n_bytes(self) -> int:
        return self._n_bytes

    @property
    def est_tokens(self) -> int:
        return self._n_bytes // 4

    # -- reading -----------------------------------------------------------------------

    def raw(self) -> mmap.mmap | memoryview:
        """The whole text.bin, read-only (an mmap; an empty memoryview for an empty volume)."""
        self._check_open()
        return self._mm if self._mm is not None else memoryview(b"")

    @property
    def starts(self) -> np.ndarray:
        """The line table (read-only, memory-mapped): line j spans starts[j]:starts[j+1]."""
        return self._st

    def byte_span(self, start: int, end: int) -> tuple[int, int]:
        """text.bin byte range [a, b) of volume lines start..end (1-based, inclusive, clamped).
        An empty range gives (a, a)."""
        s, e = max(1, int(start)), min(self._n_lines, int(end))
        if s > e:
            at = int(self._st[min(max(s - 1, 0), self._n_lines)])
            return at, at
        return int(self._st[s - 1]), int(self._st[e])

    def _texts(self, s: int, e: int) -> list[str]:
        """Texts of volume lines s..e (valid, 1-based inclusive)."""
        self._check_open()
        a, b = int(self._st[s - 1]), int(self._st[e])
        mm = self._mm
        try:
            assert mm is not None
            text = mm[a:b].decode("utf-8", "replace")
        except (AssertionError, ValueError):  # closed by another thread meanwhile
            raise VolumeError(f"volume {self.name!r} is closed") from None
        parts = text.split("\n")
        parts.pop()  # the blob piece ends with "\n": the last piece is empty
        if "\r" in text:
            parts = [p[:-1] if p.endswith("\r") else p for p in parts]
        return parts

    def lines(self, start: int, end: int) -> list[Line]:
        """Volume lines start..end, 1-based and inclusive, clamped to the volume."""
        s, e = max(1, int(start)), min(self._n_lines, int(end))
        if s > e:
            return []
        texts = self._texts(s, e)
        out: list[Line] = []
        i = self._nz_index(s)
        v = s
        while v <= e:
            f = self._nz[i]
            stop = min(e, f.first_line + f.n_lines)
            base = f.first_line
            out.extend(Line(n, f.path, n - base, texts[n - s]) for n in range(v, stop + 1))
            v = stop + 1
            i += 1
        return out

    def text(self, start: int, end: int) -> str:
        """The same lines as lines(start, end), joined with "\\n"."""
        s, e = max(1, int(start)), min(self._n_lines, int(end))
        if s > e:
            return ""
        return "\n".join(self._texts(s, e))

    def file(self, path: str) -> VolumeFile:
        try:
            return self._by_path[path]
        except KeyError:
            raise VolumeError(f"no file {path!r} in volume {self.name!r}") from None

    def _nz_index(self, vline: int) -> int:
        return bisect.bisect_right(self._nz_first, vline - 1) - 1

    def file_at(self, vline: int) -> VolumeFile:
        """The file that holds volume line `vline` (1-based)."""
        if not 1 <= vline <= self._n_lines:
            raise VolumeError(f"line {vline} is outside volume {self.name!r} (1..{self._n_lines})")
        return self._nz[self._nz_index(vline)]

    def file_lines(self, path: str, start: int, end: int) -> list[Line]:
        """Lines start..end (1-based, inclusive, clamped) of one file of the volume."""
        f = self.file(path)
        s, e = max(1, int(start)), min(f.n_lines, int(end))
        if s > e:
            return []
        return self.lines(f.first_line + s, f.first_line + e)

    # -- grep --------------------------------------------------------------------------

    def grep(
        self,
        pattern: str,
        max_hits: int = 100,
        *,
        ignore_case: bool = False,
        fixed: bool = False,
        path_glob: str | None = None,
    ) -> GrepResult:
        """Each line that matches `pattern`, once, in order, like `grep -n`.

        A line matches when ``re.search(pattern, line_text)`` would (Python's own regex
        semantics on the line's text, CR removed). A pattern without regex metacharacters,
        or fixed=True, is a literal found with mmap.find; ignore_case makes it a regex.
        path_glob (fnmatch; without "/" it may also match the file's base name) restricts
        the search to those files. truncated: more matching lines exist than max_hits.
        """
        t0 = time.perf_counter()
        self._check_open()
        if max_hits < 1:
            raise VolumeError(f"max_hits must be at least 1, not {max_hits}")
        selected = self._select(path_glob)
        ranges = _merge_ranges(selected)
        limit = max_hits + 1  # one more, to know whether there are more
        literal = fixed or not any(c in _META for c in pattern)
        if literal and not ignore_case:
            found = self._grep_literal(pattern, ranges, limit)
        else:
            src = re.escape(pattern) if literal else pattern
            flags = re.IGNORECASE if ignore_case else 0
            try:
                line_rx = re.compile(src, flags)
                scan_src, exotic, verify = _prepare_regex(src)
                scan_rx = re.compile(scan_src, flags | re.MULTILINE)
            except (re.error, OverflowError, RecursionError) as exc:
                raise VolumeError(f"invalid pattern {pattern!r}: {exc}") from None
            if literal and pattern.isascii():
                found = self._grep_nocase(pattern, scan_rx, line_rx, ranges, limit)
            else:
                musts = _required_literals(src, flags)
                found = self._grep_regex(scan_rx, line_rx, exotic, verify, musts, ranges, limit)
        truncated = len(found) > max_hits
        found = found[:max_hits]
        hits = []
        if found:
            vlines = np.asarray([v for v, _ in found], dtype=np.int64)
            which = np.searchsorted(self._nz_first_np, vlines - 1, side="right") - 1
            for (vline, text), i in zip(found, which.tolist(), strict=True):
                f = self._nz[i]
                hits.append(GrepHit(f.path, vline - f.first_line, vline, text))
        if truncated:
            # Searched up to the end of the last reported line.
            stop = int(self._st[found[-1][0]])
            files_searched = sum(1 for f in selected if f.offset < stop)
            bytes_searched = sum(max(0, min(b, stop) - a) for a, b, _ in ranges)
        else:
            files_searched = len(selected)
            bytes_searched = sum(b - a for a, b, _ in ranges)
        return GrepResult(hits, truncated, files_searched, bytes_searched, time.perf_counter() - t0)

    def _select(self, path_glob: str | None) -> list[VolumeFile]:
        if path_glob is None:
            return list(self.files)
        base_too = "/" not in path_glob
        return [
            f
            for f in self.files
            if fnmatch.fnmatchcase(f.path, path_glob)
            or (base_too and fnmatch.fnmatchcase(f.path.rsplit("/", 1)[-1], path_glob))
        ]

    def _grep_literal(
        self, pattern: str, ranges: list[tuple[int, int, int]], limit: int
    ) -> list[tuple[int, str]]:
        """(vline, text) of the first `limit` lines containing `pattern`, by mmap.find."""
        needle = pattern.encode("utf-8", "surrogatepass")
        if b"\n" in needle or self._mm is None:
            return []
        where: list[int] = []
        for a, b, _ in ranges:
            where += _find_lines(self._mm, needle, a, b, limit - len(where))
            if len(where) >= limit:
                break
        return self._hits_at(where)

    def _grep_nocase(
        self,
        pattern: str,
        scan_rx: re.Pattern[str],
        line_rx: re.Pattern[str],
        ranges: list[tuple[int, int, int]],
        limit: int,
    ) -> list[tuple[int, str]]:
        """An ASCII literal, ignoring case: pieces are lower-cased as bytes (ASCII letters
        only: the same length, so positions hold) and searched with find. Python's
        IGNORECASE also lets i, k and s match four non-ASCII letters (İ ı K ſ); a piece
        that holds one of them, when the needle has one of those letters, goes through
        the regex instead."""
        needle = pattern.lower().encode()
        found: list[tuple[int, str]] = []
        if b"\n" in needle or self._mm is None:
            return found
        folds = any(c in needle for c in b"iks")
        for a, b, line0 in ranges:
            for ca, cb, j0 in self._chunks(a, b, line0):
                raw = self._mm[ca:cb]
                need = limit - len(found)
                if not folds or raw.isascii() or not any(x in raw for x in _FOLD_EXTRA):
                    low = raw.lower()
                    found += self._hits_at(
                        [ca + p for p in _find_lines(low, needle, 0, len(low), need)]
                    )
                else:
                    text = raw.decode("utf-8", "replace")
                    found += _scan_piece(text, j0, scan_rx, line_rx, False, need)
                if len(found) >= limit:
                    return found
        return found

    def _hits_at(self, where: list[int]) -> list[tuple[int, str]]:
        """(vline, clipped text) of the lines holding byte positions `where` (ascending)."""
        if not where:
            return []
        mm, starts = self._mm, self._st
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
            found.append((j + 1, text if len(text) <= HIT_CHARS else text[:HIT_CHARS] + "…"))
        return found

    def _chunks(self, a: int, b: int, line0: int) -> Iterator[tuple[int, int, int]]:
        """Pieces [ca, cb) of about GREP_CHUNK bytes, cut at line starts, with the 0-based
        index of the line at ca."""
        starts = self._st
        ca, j = a, line0
        size = GREP_FIRST_CHUNK  # small first, so that a few hits come back fast
        while ca < b:
            target = min(b, ca + size)
            size = min(2 * size, GREP_CHUNK)
            k = int(np.searchsorted(starts, target, side="left"))
            cb = int(starts[k])
            yield ca, cb, j
            ca, j = cb, k

    def _grep_regex(
        self,
        scan_rx: re.Pattern[str],
        line_rx: re.Pattern[str],
        exotic: bool,
        verify: bool,
        musts: list[str],
        ranges: list[tuple[int, int, int]],
        limit: int,
    ) -> list[tuple[int, str]]:
        """(vline, text) of the first `limit` matching lines.

        Per decoded piece of many lines, one of three ways:
        - a literal that every match must contain (`musts`) is rare in the piece: find
          it with str.find and check only the lines that hold it, with the line pattern;
        - otherwise the rewritten pattern runs over the whole piece: a match that stays
          inside its line's text is a hit; one that runs past it (a pattern that can
          match "\\n") is checked against that line alone. For patterns without
          lookaround this finds exactly the lines that re.search finds line by line;
        - exotic patterns (lookaround, atomic, possessive): line by line.
        """
        found: list[tuple[int, str]] = []
        mm = self._mm
        if mm is None:
            return found
        for a, b, line0 in ranges:
            for ca, cb, j0 in self._chunks(a, b, line0):
                text = mm[ca:cb].decode("utf-8", "replace")
                need = limit - len(found)
                resume, j = 0, j0
                if musts:
                    got, resume, j = _scan_candidates(text, j0, musts[0], line_rx, need)
                    found += got
                    need -= len(got)
                if resume < 0 or need <= 0:
                    pass
                elif exotic:
                    found += _scan_lines(text[resume:], j, line_rx, need)
                else:
                    found += _scan_piece(text, j, scan_rx, line_rx, verify, need, resume)
                if len(found) >= limit:
                    return found
        return found

    def _check_open(self) -> None:
        if self._handle is None:
            raise VolumeError(f"volume {self.name!r} is closed")


def _required_literals(pattern: str, flags: int) -> list[str]:
    """Literal strings that every match of `pattern` contains (runs of plain characters at
    the pattern's top level), longest first; none for case-insensitive patterns."""
    try:
        from re import _constants, _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(pattern, flags)
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


def _line_of(text: str, p: int) -> tuple[int, int, str]:
    """(start, end) of the line holding position p of a piece, and its text (CR dropped)."""
    ls = text.rfind("\n", 0, p) + 1
    le = text.find("\n", p)
    line = text[ls:le]
    if line.endswith("\r"):
        line = line[:-1]
    return ls, le, line


def _scan_candidates(
    text: str, j0: int, must: str, line_rx: re.Pattern[str], need: int
) -> tuple[list[tuple[int, str]], int, int]:
    """Matching lines among those holding `must`: (hits, resume, j). When `must` turns out
    to be common, stops at line start `resume` (0-based line j there) for a full scan;
    resume == -1 when the piece is done."""
    out: list[tuple[int, str]] = []
    pos = cur = 0
    j = j0
    tried = 0
    find, search = text.find, line_rx.search
    while len(out) < need:
        p = find(must, pos)
        if p < 0:
            break
        tried += 1
        if tried % 64 == 0 and pos < tried * PREFILTER_SPACING:
            return out, pos, j + text.count("\n", cur, pos)
        ls, le, line = _line_of(text, p)
        if search(line):
            j += text.count("\n", cur, ls)
            cur = ls
            out.append((j + 1, _clip(line)))
        pos = le + 1
    return out, -1, j


def _scan_lines(text: str, j0: int, line_rx: re.Pattern[str], need: int) -> list[tuple[int, str]]:
    """Matching lines, trying the pattern on each line alone."""
    out: list[tuple[int, str]] = []
    search = line_rx.search
    for k, line in enumerate(text.split("\n")[:-1]):
        if line.endswith("\r"):
            line = line[:-1]
        if search(line):
            out.append((j0 + k + 1, _clip(line)))
            if len(out) >= need:
                break
    return out


def _scan_piece(
    text: str,
    j0: int,
    scan_rx: re.Pattern[str],
    line_rx: re.Pattern[str],
    verify: bool,
    need: int,
    start: int = 0,
) -> list[tuple[int, str]]:
    """Matching lines from line start `start` (0-based line j0), running the rewritten
    pattern over the whole piece."""
    out: list[tuple[int, str]] = []
    n = len(text)
    pos = cur = start
    j = j0
    search = scan_rx.search
    while len(out) < need:
        m = search(text, pos)
        if m is None:
            break
        p = m.start()
        if p >= n:  # an empty match after the piece's last "\n": no line there
            break
        j += text.count("\n", cur, p)
        cur = p
        ls, le, line = _line_of(text, p)
        if (m.end() <= ls + len(line) and not verify) or line_rx.search(line):
            out.append((j + 1, _clip(line)))
        pos = le + 1
    return out


def _find_lines(buf: Any, needle: bytes, a: int, b: int, limit: int) -> list[int]:
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


def _merge_ranges(files: list[VolumeFile]) -> list[tuple[int, int, int]]:
    """Byte ranges (a, b, first 0-based line) covering the files' text, adjacent ones merged."""
    out: list[tuple[int, int, int]] = []
    for f in files:
        if not f.length:
            continue
        if out and out[-1][1] == f.offset:
            a, _, line0 = out[-1]
            out[-1] = (a, f.offset + f.length, line0)
        else:
            out.append((f.offset, f.offset + f.length, f.first_line))
    return out


def _files_from_manifest(manifest: dict[str, Any]) -> list[VolumeFile]:
    """The file table (its consistency is checked by _check_table)."""
    columns = manifest["file_columns"]
    if list(columns) != list(FILE_COLUMNS):
        raise ValueError(f"file_columns are {columns!r}")
    width = len(FILE_COLUMNS)
    files = []
    for row in manifest["files"]:
        if type(row) is not list or len(row) != width:
            raise ValueError(f"a file row does not have {width} fields")
        files.append(VolumeFile(*row))
    return files


def _check_table(files: list[VolumeFile], n_lines: int, n_bytes: int, corrupt: Any) -> None:
    """The file table tiles text.bin and the line table exactly."""
    offset = line = 0
    seen: set[str] = set()
    for f in files:
        if type(f.path) is not str or not all(
            type(x) is int for x in (f.offset, f.length, f.first_line, f.n_lines)
        ):
            raise corrupt(f"the file table has a bad row for {f.path!r}")
        if f.offset != offset or f.first_line != line or f.length < 0 or f.n_lines < 0:
            raise corrupt(f"the file table is inconsistent at {f.path!r}")
        if f.path in seen:
            raise corrupt(f"{f.path!r} is listed twice")
        seen.add(f.path)
        offset += f.length
        line += f.n_lines
    if offset != n_bytes or line != n_lines:
        raise corrupt(
            f"the file table covers {offset} bytes and {line} lines, not {n_bytes}/{n_lines}"
        )


def manifest_dict(
    name: str,
    root: str,
    files: list[VolumeFile],
    *,
    created: str,
    updated: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest for a volume with this file table (written by ingest)."""
    n_bytes = sum(f.length for f in files)
    return {
        "format": FORMAT_VERSION,
        "name": name,
        "root": root,
        "created": created,
        "updated": updated,
        "files_count": len(files),
        "lines": sum(f.n_lines for f in files),
        "bytes": n_bytes,
        "bad_bytes": sum(f.bad_bytes for f in files),
        "est_tokens": n_bytes // 4,
        **(extra or {}),
        "file_columns": list(FILE_COLUMNS),
        "files": [[getattr(f, c) for c in FILE_COLUMNS] for f in files],
    }


# -- the volumes folder ------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(entry: str) -> int:
    """The pid in a work folder name ".<kind>-<name>-<pid>-<token>", or -1."""
    try:
        return int(entry.rsplit("-", 2)[1])
    except (IndexError, ValueError):
        return -1


def work_dir(kind: str, name: str) -> Path:
    """A fresh path in volumes/ for work on volume `name`: ".<kind>-<name>-<pid>-<token>".
    Its leading dot keeps it out of list_volumes and makes it an invalid volume name."""
    return volumes_dir() / f".{kind}-{name}-{os.getpid()}-{secrets.token_hex(4)}"


def _work_dirs(kind: str, name: str) -> list[Path]:
    base = volumes_dir()
    prefix = f".{kind}-{name}-"
    try:
        entries = os.listdir(base)
    except OSError:
        return []
    return [base / e for e in entries if e.startswith(prefix) and e[len(prefix) :].count("-") == 1]


def recover(name: str) -> None:
    """Finish what a crashed process left of volume `name`: put back a previous volume
    set aside by a swap that did not complete, and remove dead processes' work folders."""
    final = volumes_dir() / name
    olds = [p for p in _work_dirs("old", name) if not _pid_alive(_owner_pid(p.name))]
    if olds and not final.exists():
        newest = max(olds, key=lambda p: p.stat().st_mtime_ns)
        with contextlib.suppress(OSError):
            os.rename(newest, final)
    for kind in ("tmp", "old", "del"):
        for p in _work_dirs(kind, name):
            if p.exists() and not _pid_alive(_owner_pid(p.name)):
                shutil.rmtree(p, ignore_errors=True)


def install(tmp: Path, name: str) -> bool:
    """Make the complete volume folder `tmp` volume `name`, replacing any previous one.
    Returns True when a previous volume was replaced. Either the old or the new volume
    is in place at every moment except between two renames (microseconds), and recover()
    repairs even that after a crash."""
    final = volume_dir(name)
    if not final.exists():
        os.rename(tmp, final)
        return False
    old = work_dir("old", name)
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True


def list_volumes() -> list[dict[str, Any]]:
    """One dict per volume, from the manifests: name, root, files, lines, bytes,
    est_tokens, updated, and error (None, or one line saying why it cannot be read)."""
    base = volumes_dir()
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    out = []
    for entry in entries:
        if not _NAME_RE.fullmatch(entry) or not (base / entry).is_dir():
            continue
        row: dict[str, Any] = {
            "name": entry,
            "root": None,
            "files": 0,
            "lines": 0,
            "bytes": 0,
            "est_tokens": 0,
            "updated": None,
            "error": None,
        }
        try:
            m = json.loads((base / entry / MANIFEST).read_text(encoding="utf-8"))
            if m.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {m.get('format')!r}")
            row.update(
                root=m["root"],
                files=int(m["files_count"]),
                lines=int(m["lines"]),
                bytes=int(m["bytes"]),
                est_tokens=int(m["bytes"]) // 4,
                updated=m["updated"],
            )
        except FileNotFoundError:
            row["error"] = f"volume {entry!r} is corrupt: {MANIFEST} is missing"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            row["error"] = f"volume {entry!r} is corrupt: bad {MANIFEST} ({exc})"
        out.append(row)
    return out


def delete_volume(name: str) -> None:
    """Remove volume `name`; VolumeError if there is none. Open Volume objects keep
    working on their mapped files until closed."""
    final = volume_dir(name)
    if not final.is_dir():
        raise VolumeError(f"no volume named {name!r} (in {volumes_dir()})")
    gone = work_dir("del", name)
    try:
        os.rename(final, gone)
    except OSError as exc:
        raise VolumeError(f"cannot delete volume {name!r}: {exc.strerror or exc}") from None
    shutil.rmtree(gone, ignore_errors=True)
