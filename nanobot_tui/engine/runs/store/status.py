"""A run at a glance: its status (what `nanobot status` prints and the Process pane's
header shows), read from the meta rows alone, and the list of every run."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from nanobot_tui.engine.runs.store.db import (
    StoreDamaged,
    StoreError,
    check_intact,
    connect,
    read_meta,
    runner_holds,
)
from nanobot_tui.engine.runs.store.places import all_run_ids, db_path, marker_path
from nanobot_tui.engine.runs.store.totals import new_totals


@dataclass(frozen=True)
class RunStatus:
    """A run at a glance: what `nanobot status` prints and the pane's header shows."""

    run_id: str
    status: str  # running | paused | stopped | completed | failed | cancelled
    reason: str | None
    domain: str
    sampler: str
    simulated: bool
    k: int
    steps_total: int
    steps_done: int  # steps with a final row: completed + skipped + failed
    completed: int
    skipped: int
    failed: int
    errors: int  # steps not right: wrong winner, skipped or failed
    errors_by_reason: dict[str, int]
    nodes: dict[str, int]  # nodes (blocks and steps) by status
    rate: float  # steps per second over the last minute (0 with no runner)
    eta_s: float | None
    elapsed_s: float  # active runner time, all sessions
    votes: dict[str, Any]  # per-step vote statistics
    red_flags: dict[str, int]
    samples: int
    tokens: int
    retried: int  # steps that needed more than one attempt
    pid: int | None  # the runner's pid while one runs
    created: float
    started: float | None  # when the current (or last) runner session began
    updated: float | None  # last commit or heartbeat
    spec: dict[str, Any] = field(default_factory=dict)
    # One line when the store holds fewer steps than its runner committed (lost_steps).
    warning: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["id"] = self.run_id
        return out


def pid_alive(runner: dict[str, Any] | None) -> int | None:
    """The runner's pid if that very process (pid and start time) is alive."""
    if not runner or not runner.get("pid"):
        return None
    try:
        proc = psutil.Process(int(runner["pid"]))
        if abs(proc.create_time() - float(runner.get("created") or 0)) > 1.0:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.Error, ValueError, TypeError):
        return None
    return int(runner["pid"])


def committed_mark(run_id: str) -> int | None:
    """The steps done that the writer recorded in runs/<id>/committed after its last
    commit (None: no marker, or one that cannot be read). Read BEFORE the store's meta, so
    that a commit in between can only make the store hold more than the marker says."""
    try:
        with open(marker_path(run_id), "rb") as f:
            return int(f.read(64).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def lost_steps(run_id: str, mark: int | None, steps_done: int) -> str | None:
    """One line when the store holds fewer steps than its writer had committed: the
    marker is written after each commit, so a store behind it lost committed
    transactions, which happens when the write-ahead log (run.db-wal) of a killed runner
    is deleted: SQLite then opens the file at its last checkpoint, silently. None while
    a runner holds the run (its next commit rewrites the marker) and when nothing is
    lost."""
    if mark is None or mark <= steps_done:
        return None
    path = db_path(run_id)
    if runner_holds(path.parent):
        return None
    lost = mark - steps_done
    wal = path.name + "-wal"
    try:
        gone = path.with_name(wal).stat().st_size == 0  # a reader may have made it anew
    except OSError:
        gone = True
    gone_text = f" (its write-ahead log {wal} is gone)" if gone else ""
    return (
        f"run {run_id}: {lost:,} committed step(s) are missing from {path}{gone_text}: it holds "
        f"{steps_done:,} steps, its runner had committed {mark:,} ({marker_path(run_id)}); "
        f"`nanobot resume {run_id}` redoes them"
    )


def status_from_meta(
    run_id: str, meta: dict[str, Any], nodes: dict[str, int], mark: int | None = None
) -> RunStatus:
    totals = meta.get("totals") or new_totals()
    spec = meta.get("spec") or {}
    runner = meta.get("runner") or {}
    pid = None if runner.get("ended") else pid_alive(runner)
    status = str(meta.get("status") or "stopped")
    reason = meta.get("status_reason")
    if status == "running" and pid is None:
        status = "stopped"
        reason = f"the runner (pid {runner.get('pid')}) is gone; `nanobot resume {run_id}`"
    total = int(meta.get("steps_total") or 0)
    done = int(totals.get("steps_done", 0))
    rate = float(totals.get("rate") or 0.0) if pid is not None else 0.0
    left = max(total - done, 0)
    eta = 0.0 if left == 0 else (left / rate if rate > 0 else None)
    hist = {int(k): int(v) for k, v in (totals.get("votes_hist") or {}).items()}
    n = sum(hist.values())
    votes = {
        "mean": (sum(k * v for k, v in hist.items()) / n) if n else None,
        "min": min(hist) if hist else None,
        "max": max(hist) if hist else None,
        "histogram": {str(k): hist[k] for k in sorted(hist)},
        "mean_samples": (int(totals.get("samples", 0)) / done) if done else None,
        "rounds": {str(k): v for k, v in sorted(
            ((int(a), b) for a, b in (totals.get("rounds_hist") or {}).items()))},
    }  # fmt: skip
    vote = spec.get("vote") or {}
    return RunStatus(
        run_id=run_id,
        status=status,
        reason=reason,
        domain=str(meta.get("domain") or spec.get("domain") or ""),
        sampler=str(meta.get("sampler_name") or spec.get("sampler") or ""),
        simulated=str(spec.get("sampler", "")).startswith("simulated"),
        k=int(vote.get("k") or 0),
        steps_total=total,
        steps_done=done,
        completed=int(totals.get("completed", 0)),
        skipped=int(totals.get("skipped", 0)),
        failed=int(totals.get("failed", 0)),
        errors=int(totals.get("errors", 0)),
        errors_by_reason=dict(totals.get("errors_by_reason") or {}),
        nodes=nodes,
        rate=rate,
        eta_s=eta,
        elapsed_s=float(meta.get("elapsed_s") or 0.0),
        votes=votes,
        red_flags=dict(totals.get("red_flags") or {}),
        samples=int(totals.get("samples", 0)),
        tokens=int(totals.get("tokens", 0)),
        retried=int(totals.get("retried", 0)),
        pid=pid,
        created=float(meta.get("created") or 0.0),
        started=runner.get("started"),
        updated=meta.get("updated"),
        spec=spec,
        warning=lost_steps(run_id, mark, done),
    )


def list_runs() -> list[dict[str, Any]]:
    """Every run, oldest first: id, status (a dead runner's "running" reads "stopped"),
    reason, domain, sampler, steps_done, steps_total, errors, rate, pid, created,
    updated."""
    out: list[dict[str, Any]] = []
    for rid in all_run_ids():
        try:
            check_intact(rid, db_path(rid))
        except StoreDamaged as exc:
            out.append({"id": rid, "status": "damaged", "reason": str(exc)})
            continue
        try:
            conn = connect(db_path(rid), readonly=True)
            try:
                meta = read_meta(conn)
            finally:
                conn.close()
            st = status_from_meta(rid, meta, {})
        except (sqlite3.Error, StoreError, KeyError, TypeError, ValueError) as exc:
            out.append({"id": rid, "status": "unreadable", "reason": str(exc)})
            continue
        out.append(
            {
                "id": rid,
                "status": st.status,
                "reason": st.reason,
                "domain": st.domain,
                "sampler": st.sampler,
                "steps_done": st.steps_done,
                "steps_total": st.steps_total,
                "errors": st.errors,
                "rate": st.rate,
                "pid": st.pid,
                "created": st.created,
                "updated": st.updated,
            }
        )
    return out
