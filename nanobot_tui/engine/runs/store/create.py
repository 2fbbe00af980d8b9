"""Creating a run: its folder, and its store with the spec, the tree's blocks and the
status "stopped: created, not started yet"."""

from __future__ import annotations

import os
import time

from nanobot_tui import paths
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.runs.store.db import DB_NAME, SCHEMA, StoreError, connect, meta_set
from nanobot_tui.engine.runs.store.places import db_path, new_run_id, run_dir
from nanobot_tui.engine.runs.store.totals import new_totals
from nanobot_tui.engine.runs.tree import Layout


def create_run(spec: RunSpec, run_id: str | None = None) -> str:
    """Create the run's folder and store (spec, tree, status "stopped: not started yet");
    return its id."""
    domain = spec.build_domain()
    total = domain.total_steps()
    layout = Layout.build(total, spec.fanout)
    label = spec.label or spec.domain
    paths.ensure(paths.runs_dir())
    for _ in range(20):
        rid = run_id or new_run_id(label)
        try:
            run_dir(rid).mkdir(mode=0o700)
            break
        except FileExistsError:
            if run_id is not None:
                raise StoreError(f"run {run_id} exists already") from None
    else:  # pragma: no cover - 20 collisions of 16 random bits in one second
        raise StoreError("could not pick a fresh run id")
    # Built under another name and renamed when complete: a reader never sees half a run.
    building = run_dir(rid) / (DB_NAME + ".new")
    conn = connect(building)
    try:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO nodes(id, parent, kind, level, ordinal, first_step, last_step, "
            "children) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            layout.block_rows(),
        )
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
                "status_reason": "created, not started yet",
                "domain": domain.name,
                "sampler": spec.sampler,
                "steps_total": total,
                "layout": layout.to_dict(),
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
    return rid
