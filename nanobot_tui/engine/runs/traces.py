"""Trace files: NANOBOT_HOME/traces/<run>.jsonl, one JSON line per step execution
(<run>.jsonl.gz once compacted by `nanobot runs compact`: the same lines, read alike).

Written by the store's writer thread right after each group commit, from the committed
rows themselves (one SQL statement renders a batch's lines), so the file never holds a
step the store does not, and after a crash the last batch's lines are cut back and
written again (store/trace_lines.py, TraceFile.repair): every execution the store records
appears once. An earlier, undecided attempt of a retried step has its own line before
the step's final one.

A line: {"step", "attempt", "status", "rounds", "samples", "valid", "votes" (display
key -> votes; absent: every valid vote went to the winner), "red_flags", "winner" (the
answer; absent with "correct": 1 in a simulated run: the truth, which is not copied),
"correct", "tokens", "latency_ms", "wall_ms", "error"} and, where samples are kept,
"sample_list" (key, red flag, tokens, temperature, latency of each sample). Fields that
are null are left out; the run is the file's name. A plain simulated step's line is
{"step":5,"attempt":1,"status":"completed","rounds":1,"samples":3,"valid":3,"correct":1,
"tokens":0}.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections import deque
from pathlib import Path

from nanobot_tui import paths
from nanobot_tui.engine.runs.store import trace_path
from nanobot_tui.engine.runs.store.places import packed_trace_path

__all__ = ["latest_trace_run", "run_trace", "tail", "trace_path"]

PACKED = ".jsonl.gz"


def run_trace(run_id: str) -> Path | None:
    """Run `run_id`'s trace file: plain (traces/<id>.jsonl, being written or never
    compacted), else compacted (.jsonl.gz, `nanobot runs compact`); None if neither."""
    for path in (trace_path(run_id), packed_trace_path(run_id)):
        if path.exists():
            return path
    return None


def tail(path: Path, n: int, block: int = 65536) -> list[str]:
    """The last `n` lines of a (possibly huge) file, read backwards; a compacted (.gz)
    one is read through (gzip cannot be read backwards)."""
    if n <= 0:
        return []
    if path.name.endswith(".gz"):
        return _tail_packed(path, n)
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            pos = end
            blocks: list[bytes] = []  # read backwards, counted once each (not re-joined)
            ends = 0
            while pos > 0 and ends <= n:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                blocks.append(f.read(step))
                ends += blocks[-1].count(b"\n")
    except OSError:
        return []
    lines = b"".join(reversed(blocks)).decode("utf-8", "replace").splitlines()
    if pos > 0:
        lines = lines[1:]  # the first one is cut
    return [ln for ln in lines if ln.strip()][-n:]


def _tail_packed(path: Path, n: int, block: int = 1 << 20) -> list[str]:
    """The last `n` lines of a gzip file: decompressed a block at a time, keeping only
    the blocks that hold its last n+1 line ends (no line by line work in Python)."""
    blocks: deque[tuple[bytes, int]] = deque()
    ends = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(block):
                blocks.append((chunk, chunk.count(b"\n")))
                ends += blocks[-1][1]
                while len(blocks) > 1 and ends - blocks[0][1] > n + 1:
                    ends -= blocks.popleft()[1]
    except (OSError, EOFError, zlib.error):
        pass  # a damaged compressed file: the lines read up to the damage
    lines = b"".join(b for b, _ in blocks).decode("utf-8", "replace").splitlines()
    return [ln for ln in lines if ln.strip()][-n:]


def latest_trace_run() -> str | None:
    """The run whose trace file (plain or compacted) was written last."""
    folder = paths.traces_dir()
    if not folder.is_dir():
        return None
    files = sorted(
        [*folder.glob("*.jsonl"), *folder.glob("*" + PACKED)], key=lambda p: p.stat().st_mtime
    )
    return files[-1].name.removesuffix(PACKED).removesuffix(".jsonl") if files else None
