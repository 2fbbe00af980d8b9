"""Compacting trace files (`nanobot runs compact`): a run's traces/<id>.jsonl becomes
traces/<id>.jsonl.gz, the same lines gzip-compressed. A simulated run's lines differ
only in their step numbers, so they shrink about 20-fold (see the report of
`runs compact --json`).

Every reader reads either form (`nanobot traces`, runs/traces.py; `export` and the app's
inspect view render trace lines from the store, not from the file). A runner that takes
a compacted run up again first makes its trace plain again (store/trace_lines.py,
`unpack_trace`), so its appends and a crash's repair apply to the bytes they always did.
Compacting takes the run's lock (no patience): a run a runner holds is never touched,
and no runner can take it up meanwhile. The compressed file is complete (written as
.gz.part, flushed to disk, renamed) before the plain one is removed: a compaction cut
short loses nothing.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nanobot_tui.engine.runs.control import RunLock, is_locked
from nanobot_tui.engine.runs.prune import FINISHED, RunBusy, busy, holding_idle
from nanobot_tui.engine.runs.store import list_runs, resolve_run_id
from nanobot_tui.engine.runs.store.places import packed_trace_path, trace_path


@dataclass(frozen=True)
class Compaction:
    """A run's trace compacted (or, in a dry run, that would be): bytes before and after
    (after is None in a dry run)."""

    run_id: str
    status: str
    before: int
    after: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.run_id, "status": self.status, "before": self.before,
                "after": self.after}  # fmt: skip


def _size(path: os.PathLike[str] | str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


_WHEN_IT_STOPS = "compact it when it stops"


def compact_trace(run_id: str) -> int | None:
    """Compress run `run_id`'s trace file; return its new size in bytes (None when it has
    no plain trace file). RunBusy when a runner holds the run."""
    with holding_idle(run_id, _WHEN_IT_STOPS):
        plain, packed = trace_path(run_id), packed_trace_path(run_id)
        if not plain.exists():
            return None
        part = packed.with_name(packed.name + ".part")
        with open(plain, "rb") as src, open(part, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
                shutil.copyfileobj(src, gz, 1 << 20)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(part, packed)
        plain.unlink()
        return _size(packed)


def compact_runs(
    run_ids: Iterable[str] | None = None, *, dry_run: bool = False
) -> list[Compaction]:
    """Compact the traces of the runs `run_ids` (ids or unique prefixes: each must not be
    held by a runner, checked before anything is done), or with None of every finished
    run (completed, cancelled, failed) that no runner holds. Runs without a plain trace
    file are left out."""
    statuses = {run["id"]: str(run.get("status", "?")) for run in list_runs()}
    if run_ids is None:
        wanted = [r for r, s in statuses.items() if s in FINISHED and not is_locked(r)]
    else:
        wanted = list(dict.fromkeys(resolve_run_id(r) for r in run_ids))
        for rid in wanted:
            if is_locked(rid):
                raise busy(rid, RunLock(rid).holder(), _WHEN_IT_STOPS)
    out = []
    for rid in wanted:
        before = _size(trace_path(rid))
        if not trace_path(rid).exists():
            continue
        status = statuses.get(rid, "?")
        if dry_run:
            out.append(Compaction(rid, status, before, None))
            continue
        try:
            after = compact_trace(rid)
        except RunBusy:
            if run_ids is not None:
                raise
            continue  # taken up meanwhile: left as it is
        if after is not None:
            out.append(Compaction(rid, status, before, after))
    return out
