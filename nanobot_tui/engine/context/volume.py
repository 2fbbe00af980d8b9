"""File-backed volumes: the text of many files in one memory-mapped blob, read by line.

A volume lives in NANOBOT_HOME/volumes/<name>/ (storage.py: names, install, recovery):

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
so a slice of a 1 GB volume costs two index lookups and one small read. grep.py searches
the mapped text.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import mmap
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from nanobot_tui.engine.context.grep import GrepResult, grep_volume
from nanobot_tui.engine.context.storage import (
    FORMAT_VERSION,
    LINES,
    MANIFEST,
    TEXT,
    VolumeError,
    VolumeInputError,
    no_such_volume,
    recover,
    valid_name,
    volume_dir,
)


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


class Volume:
    """An open volume: its file table in memory, its text and line index memory-mapped."""

    def __init__(
        self,
        name: str,
        dir: Path,
        manifest: dict[str, Any],
        files: list[VolumeFile],
        starts: np.ndarray,
        handle: BinaryIO,
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
        self._st = np.asarray(starts)  # a plain ndarray view: cheaper to index
        self._handle: BinaryIO | None = handle
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
            raise no_such_volume(name)
        return cls.open_dir(path, name)

    @classmethod
    def open_dir(cls, path: Path, name: str | None = None) -> Volume:
        """Open the volume stored in folder `path` (also a not yet installed one)."""
        name = name or path.name

        def corrupt(what: str) -> VolumeError:
            return VolumeError(f"volume {name!r} is corrupt: {what}")

        manifest, files, n_lines, n_bytes = _read_manifest(path, corrupt)
        starts = _load_line_table(path, n_lines, n_bytes, corrupt)
        handle, mm = _map_text(path, n_bytes, corrupt)
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
            raise VolumeInputError(f"no file {path!r} in volume {self.name!r}") from None

    def _nz_index(self, vline: int) -> int:
        return bisect.bisect_right(self._nz_first, vline - 1) - 1

    def file_at(self, vline: int) -> VolumeFile:
        """The file that holds volume line `vline` (1-based)."""
        if not 1 <= vline <= self._n_lines:
            raise VolumeInputError(
                f"line {vline} is outside volume {self.name!r} (1..{self._n_lines})"
            )
        return self._nz[self._nz_index(vline)]

    def files_at(self, vlines: Sequence[int]) -> list[VolumeFile]:
        """The files that hold volume lines `vlines` (1-based, each inside the volume)."""
        if not vlines:
            return []
        where = np.asarray(vlines, dtype=np.int64) - 1
        which = np.searchsorted(self._nz_first_np, where, side="right") - 1
        return [self._nz[i] for i in which.tolist()]

    def locate(self, vlines: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[VolumeFile]]:
        """Where volume lines `vlines` (1-based, each inside the volume) are, as columns:
        (index of each one's file in the returned list of files, its file line), with no
        object per line (a grep may locate a hundred thousand)."""
        where = np.asarray(vlines, dtype=np.int64)
        which = np.searchsorted(self._nz_first_np, where - 1, side="right") - 1
        return which, where - self._nz_first_np[which], self._nz

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
        return grep_volume(
            self, pattern, max_hits, ignore_case=ignore_case, fixed=fixed, path_glob=path_glob
        )

    def _check_open(self) -> None:
        if self._handle is None:
            raise VolumeError(f"volume {self.name!r} is closed")


Corrupt = Callable[[str], VolumeError]


def _read_manifest(
    path: Path, corrupt: Corrupt
) -> tuple[dict[str, Any], list[VolumeFile], int, int]:
    """The manifest, its file table, and the volume's line and byte counts, checked."""
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
    return manifest, files, n_lines, n_bytes


def _load_line_table(path: Path, n_lines: int, n_bytes: int, corrupt: Corrupt) -> np.ndarray:
    """lines.npy, memory-mapped, checked against the manifest's counts."""
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
    return starts


def _map_text(path: Path, n_bytes: int, corrupt: Corrupt) -> tuple[BinaryIO, mmap.mmap | None]:
    """text.bin, open and memory-mapped (no mmap when it is empty)."""
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
    return handle, mm


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


def _check_table(files: list[VolumeFile], n_lines: int, n_bytes: int, corrupt: Corrupt) -> None:
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
