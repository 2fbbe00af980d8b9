"""Creating a run: its folder, and its store with the spec, the tree's blocks and the
status "stopped: created, not started yet".

Bounded. The tree's block rows are written up front (about 1 per 9 steps at fan-out 10),
so a run's size is checked first: at most MAX_TREE_NODES nodes (1,000,000: a 23-disk
Hanoi run at fan-out 10, a larger one with a larger --fanout) and steps that SQLite's
integers can number; anything larger is a SpecError saying so, before a byte is written.

Never half a run. The store is built as run.db.new and renamed when complete, with the
run's lock held. A creation that fails (a full disk, an interrupt) removes its folder; one
that was killed leaves a folder without run.db whose lock nobody holds, which the next
creation removes (`sweep_abandoned`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import time
from pathlib import Path

from nanobot_tui import paths
from nanobot_tui.engine.runs.spec import RunSpec, SpecError
from nanobot_tui.engine.runs.store.db import (
    DB_NAME,
    SCHEMA,
    StoreError,
    connect,
    meta_set,
    save_groups,
)
from nanobot_tui.engine.runs.store.places import db_path, new_run_id, run_dir
from nanobot_tui.engine.runs.store.totals import new_totals
from nanobot_tui.engine.runs.tree import Layout, groups_of
from nanobot_tui.engine.voting.domains import Domain

# The reason a run's status gives until its runner first starts it.
NOT_STARTED = "created, not started yet"

MAX_TREE_NODES = 1_000_000
MAX_STEPS = 2**62  # step numbers and node ids are SQLite integers (64-bit, signed)
ABANDONED_AFTER_S = 60.0  # a folder without a lock file this old is a dead creation's


def check_size(total: int, fanout: int, groups: list[tuple[str, int]] | None = None) -> Layout:
    """The run's tree layout (the domain's `groups` as its level-1 blocks, when it has
    them), or SpecError when the run is too large to create."""
    if total >= MAX_STEPS:
        raise SpecError(f"a run of {total:,} steps is more than a run can number ({MAX_STEPS:,})")
    if groups is None:
        layout = Layout.build(total, fanout)
    else:
        layout = Layout.grouped(groups, fanout)
        if layout.steps != total:  # a domain's mistake, not the user's
            raise ValueError(f"the domain's groups hold {layout.steps:,} steps, not {total:,}")
    nodes = 1 + sum(layout.counts)
    if nodes > MAX_TREE_NODES:
        raise SpecError(
            f"a run of {total:,} steps at fan-out {fanout} needs {nodes:,} tree nodes, more "
            f"than the {MAX_TREE_NODES:,} a run may have: take fewer steps or a larger --fanout"
        )
    return layout


def sweep_abandoned() -> list[str]:
    """Remove what creations that were killed left: run folders without a run.db whose
    lock nobody holds, and run.db.new* files beside a complete run.db. Returns the ids
    of the folders removed."""
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    removed = []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        if (folder / DB_NAME).is_file():
            for left in folder.glob(DB_NAME + ".new*"):
                left.unlink(missing_ok=True)
        elif _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _abandoned(folder: Path) -> bool:
    lock = folder / "lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:  # between mkdir and the lock, or a very old creation
        with contextlib.suppress(OSError):
            return time.time() - folder.stat().st_mtime > ABANDONED_AFTER_S
        return False
    except OSError:
        return False
    try:
        if time.time() - os.fstat(fd).st_mtime < 2.0:
            return False  # just made: its creator may be about to take it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # being created (or run) right now
    finally:
        os.close(fd)
    return True


def _new_folder(label: str, run_id: str | None) -> str:
    for _ in range(20):
        rid = run_id or new_run_id(label)
        try:
            run_dir(rid).mkdir(mode=0o700)
            return rid
        except FileExistsError:
            if run_id is not None:
                raise StoreError(f"run {run_id} exists already") from None
    raise StoreError("could not pick a fresh run id")  # pragma: no cover - 20 collisions


def create_run(spec: RunSpec, run_id: str | None = None) -> str:
    """Create the run's folder and store (spec, tree, status "stopped: not started yet");
    return its id."""
    domain = spec.build_domain()
    total = domain.total_steps()
    layout = check_size(total, spec.fanout, groups_of(domain))
    paths.ensure(paths.runs_dir())
    sweep_abandoned()
    try:
        rid = _new_folder(spec.label or spec.domain, run_id)
    except OSError as exc:
        raise StoreError(f"cannot create a run folder in {paths.runs_dir()}: {exc}") from None
    folder = run_dir(rid)
    lock = -1
    try:
        lock = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build(rid, spec, domain, total, layout)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, (OSError, sqlite3.Error)):
            raise StoreError(f"could not create run {rid} in {folder}: {exc}") from None
        raise
    finally:
        if lock >= 0:
            os.close(lock)
    return rid


def start_store(conn: sqlite3.Connection, layout: Layout) -> None:
    """An empty store's schema, its tree's block rows and a grouped run's groups, in a
    transaction left open."""
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO nodes(id, parent, kind, level, ordinal, first_step, last_step, "
        "children) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        layout.block_rows(),
    )
    save_groups(conn, layout)


def _build(rid: str, spec: RunSpec, domain: Domain, total: int, layout: Layout) -> None:
    """Write the store (spec, tree, status) as run.db.new and rename it run.db."""
    # Built under another name and renamed when complete: a reader never sees half a run.
    building = run_dir(rid) / (DB_NAME + ".new")
    conn = connect(building)
    try:
        start_store(conn, layout)
        simulated = spec.simulated
        # Steps in order from the truth: each input is the true solution's (row_input).
        canonical = simulated and not domain.independent_steps
        now = time.time()
        meta_set(
            conn,
            {
                "version": 1,
                "id": rid,
                "spec": spec.to_dict(),
                "created": now,
                "status": "stopped",
                "status_reason": NOT_STARTED,
                "domain": domain.name,
                "sampler": spec.sampler,
                "steps_total": total,
                "layout": layout.to_dict(groups=False),  # groups: in step_groups
                "storage": {"canonical_inputs": canonical, "truth_answers": simulated},
                "totals": new_totals(),
                "elapsed_s": 0.0,
                "sessions": 0,
                "updated": now,
            },
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    os.replace(building, db_path(rid))
    for suffix in ("-wal", "-shm"):
        (run_dir(rid) / (DB_NAME + ".new" + suffix)).unlink(missing_ok=True)
