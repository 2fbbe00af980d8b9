"""Giving disk space back: removing runs (`nanobot runs rm`, `nanobot runs prune`) and
what the data folders cost (`nanobot doctor`).

A run takes runs/<id>/ (run.db and its WAL, lock, runner.log, ...) and
traces/<id>.jsonl (or .jsonl.gz, compacted). Removing one first takes its lock
(control.RunLock, no patience), so a run a runner holds is never touched and no runner
can take it up while it goes; the folder is then renamed into runs/.trash/ (at once it
is no longer a run), the trace file is deleted, and the folder after it. A removal cut
short leaves only runs/.trash/, which the next removal empties.

Sizes are what `du` counts: allocated blocks, not apparent lengths.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.engine.context.storage import volumes_dir
from nanobot_tui.engine.runs.control import RunLock, RunLocked, is_locked
from nanobot_tui.engine.runs.store import list_runs, resolve_run_id
from nanobot_tui.engine.runs.store.places import packed_trace_path, run_dir, trace_path
from nanobot_tui.errors import UsageError

FINISHED = ("completed", "cancelled", "failed")
# Statuses a prune may select; "running" is not one (a run a runner holds is never removed).
PRUNABLE = (*FINISHED, "stopped", "paused", "damaged", "unreadable")
TRASH = ".trash"


class RunBusy(UsageError):
    """A run a runner holds, asked to be removed; str() is one line."""


class PruneInputError(UsageError):
    """A bad age, size or status for a prune; str() is one line."""


# --- sizes ---------------------------------------------------------------------------


def path_size(path: Path) -> int:
    """Bytes allocated to `path` (a file, or a folder and all below it; links are not
    followed); 0 when it is not there."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    total = st.st_blocks * 512
    if not path.is_dir() or path.is_symlink():
        return total
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def run_size(run_id: str) -> int:
    """What run `run_id` takes: its folder and its trace file (plain or compacted)."""
    return (
        path_size(run_dir(run_id))
        + path_size(trace_path(run_id))
        + path_size(packed_trace_path(run_id))
    )


def data_usage() -> dict[str, dict[str, Any]]:
    """What each data folder costs: {name: {"path", "bytes"}} for runs, traces, volumes,
    models and sessions (a missing folder costs 0)."""
    folders = {
        "runs": paths.runs_dir(),
        "traces": paths.traces_dir(),
        "volumes": volumes_dir(),
        "models": paths.models_dir(),
        "sessions": paths.sessions_dir(),
    }
    return {name: {"path": str(p), "bytes": path_size(p)} for name, p in folders.items()}


# --- parsing -------------------------------------------------------------------------

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS = {
    "": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_age(text: str) -> float:
    """ "7d", "12h", "30m", "90s", "2w" -> seconds; PruneInputError otherwise."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not found:
        raise PruneInputError(f"bad age {text!r}: a number and s, m, h, d or w, as 7d or 12h")
    return float(found[1]) * _AGE_UNITS[found[2]]


def parse_size(text: str) -> int:
    """ "2GB", "500MB", "1.5G", "800MiB", "1000" -> bytes (decimal units as `doctor` shows
    them, binary with "iB"); PruneInputError otherwise."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if not found or found[2] not in _SIZE_UNITS:
        raise PruneInputError(f"bad size {text!r}: a number and B, kB, MB, GB or TB, as 2GB")
    return int(float(found[1]) * _SIZE_UNITS[found[2]])


def parse_statuses(text: str) -> tuple[str, ...]:
    """ "completed,cancelled" -> ("completed", "cancelled"); PruneInputError for a status
    that cannot be pruned."""
    wanted = tuple(s.strip().lower() for s in text.split(",") if s.strip())
    bad = [s for s in wanted if s not in PRUNABLE]
    if bad or not wanted:
        raise PruneInputError(
            f"bad status {', '.join(bad) or repr(text)}: one or more of {', '.join(PRUNABLE)}"
        )
    return wanted


# --- removing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """A run removed (or, in a dry run, that would be): its id, status, age and size."""

    run_id: str
    status: str
    updated: float
    freed: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.run_id, "status": self.status, "updated": self.updated,
                "bytes": self.freed}  # fmt: skip


def busy(run_id: str, pid: int | None, instead: str) -> RunBusy:
    """The one-line refusal for work on a run a runner holds; `instead` says what to do."""
    who = f"pid {pid}" if pid else "another process"
    return RunBusy(f"run {run_id} is being run by {who}; {instead}")


def _cancel_first(run_id: str) -> str:
    return f"cancel it first (nanobot cancel {run_id})"


@contextlib.contextmanager
def holding_idle(run_id: str, instead: str) -> Iterator[None]:
    """Hold run `run_id`'s lock for work no runner may see half done (removing,
    compacting, recovering); RunBusy (see `busy`) when a runner holds it."""
    lock = RunLock(run_id)
    try:
        lock.acquire(patience=0.0)
    except RunLocked as exc:
        raise busy(run_id, exc.pid, instead) from None
    try:
        yield
    finally:
        lock.release()


def empty_trash() -> None:
    """Finish removals cut short earlier."""
    trash = paths.runs_dir() / TRASH
    if trash.is_dir():
        for leftover in trash.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)


def remove_run(run_id: str) -> int:
    """Remove run `run_id` (a whole id): its folder and its trace file; return the bytes
    freed. RunBusy when a runner holds it."""
    size = run_size(run_id)
    with holding_idle(run_id, _cancel_first(run_id)):
        trash = paths.ensure(paths.runs_dir() / TRASH)
        gone = trash / f"{run_id}-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(run_dir(run_id), gone)  # from here on it is no run
        trace_path(run_id).unlink(missing_ok=True)
        packed_trace_path(run_id).unlink(missing_ok=True)
    shutil.rmtree(gone, ignore_errors=True)
    return size


def _record(run: dict[str, Any]) -> Removal:
    rid = run["id"]
    updated = run.get("updated") or run.get("created")
    if not updated:
        with contextlib.suppress(OSError):
            updated = run_dir(rid).stat().st_mtime
    return Removal(rid, str(run.get("status", "?")), float(updated or 0.0), run_size(rid))


def remove_runs(run_ids: Iterable[str]) -> list[Removal]:
    """Remove the runs `run_ids` (each a whole id or a unique prefix). Every id is
    resolved and every run checked first: RunNotFound or RunBusy (one line) removes
    nothing."""
    wanted = list(dict.fromkeys(resolve_run_id(r) for r in run_ids))
    for rid in wanted:
        if is_locked(rid):
            raise busy(rid, RunLock(rid).holder(), _cancel_first(rid))
    empty_trash()
    by_id = {run["id"]: run for run in list_runs()}
    out = []
    for rid in wanted:
        record = _record(by_id.get(rid, {"id": rid}))
        out.append(Removal(record.run_id, record.status, record.updated, remove_run(rid)))
    return out


def select_prune(
    *,
    statuses: tuple[str, ...] = FINISHED,
    older_than: float | None = None,
    keep_size: int | None = None,
    now: float | None = None,
) -> list[Removal]:
    """The runs a prune removes, oldest first: those with a status in `statuses`, last
    updated more than `older_than` seconds ago (if given), no runner holding them; with
    `keep_size`, only as many of the oldest as it takes for all runs (folders and traces)
    to fit in `keep_size` bytes."""
    now = time.time() if now is None else now
    records = [_record(run) for run in list_runs()]
    chosen = [
        r
        for r in records
        if r.status in statuses
        and (older_than is None or now - r.updated > older_than)
        and not is_locked(r.run_id)
    ]
    chosen.sort(key=lambda r: (r.updated, r.run_id))
    if keep_size is None:
        return chosen
    total = sum(r.freed for r in records)
    taken = []
    for r in chosen:
        if total <= keep_size:
            break
        taken.append(r)
        total -= r.freed
    return taken


def prune(*, dry_run: bool = False, **filters: Any) -> list[Removal]:
    """Remove what `select_prune(**filters)` selects (nothing with `dry_run`); a run a
    runner took up meanwhile is left, and not listed."""
    chosen = select_prune(**filters)
    if dry_run:
        return chosen
    empty_trash()
    out = []
    for r in chosen:
        try:
            out.append(Removal(r.run_id, r.status, r.updated, remove_run(r.run_id)))
        except RunBusy:
            continue
    return out
