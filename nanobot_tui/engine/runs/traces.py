"""Trace files: NANOBOT_HOME/traces/<run>.jsonl, one JSON line per step execution.

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

import os
from pathlib import Path

from nanobot_tui import paths
from nanobot_tui.engine.runs.store import trace_path

__all__ = ["latest_trace_run", "tail", "trace_path"]


def tail(path: Path, n: int, block: int = 65536) -> list[str]:
    """The last `n` lines of a (possibly huge) file, read backwards."""
    if n <= 0:
        return []
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            pos = end
            data = b""
            while pos > 0 and data.count(b"\n") <= n:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if pos > 0:
        lines = lines[1:]  # the first one is cut
    return [ln for ln in lines if ln.strip()][-n:]


def latest_trace_run() -> str | None:
    """The run whose trace file was written last."""
    folder = paths.traces_dir()
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    return files[-1].stem if files else None
