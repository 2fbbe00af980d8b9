"""The run store: one SQLite database per durable run, NANOBOT_HOME/runs/<id>/run.db.

Written by the runner only (it holds the run's lock), through one background thread with
its own connection that group-commits (writer.py). Read by anyone through a separate
read-only connection (`RunStore.open(id)`, reader.py), safe while the runner writes.

    db.py           the tables, opening a database, meta rows, StoreError / RunNotFound
    places.py       where a run lives (runs/<id>/, traces/<id>.jsonl) and run ids
    create.py       a new run: its folder, spec, tree blocks and first status
    rows.py         the rows read and written, and their compact forms
    totals.py       the counts kept in meta beside the rows they count
    status.py       a run at a glance (RunStatus) and the list of runs
    reader.py       RunStore: the tree, steps, samples, trace lines, export
    writer.py       StoreWriter: the group-committing writer thread
    tree_update.py  the blocks' counters and summaries, recomputed at each commit
    trace_lines.py  trace lines rendered from committed rows; the trace file and its repair
"""

from nanobot_tui.engine.runs.store.create import create_run
from nanobot_tui.engine.runs.store.db import (
    SAMPLE_TEXT_MAX,
    RunNotFound,
    StoreDamaged,
    StoreError,
    connect,
    meta_set,
    read_meta,
    to_json,
)
from nanobot_tui.engine.runs.store.places import (
    db_path,
    marker_path,
    resolve_run_id,
    run_dir,
    trace_path,
)
from nanobot_tui.engine.runs.store.reader import RunStore
from nanobot_tui.engine.runs.store.rows import (
    AttemptOut,
    Batch,
    NodeRow,
    SampleRow,
    StepOut,
    StepRow,
    describe,
)
from nanobot_tui.engine.runs.store.status import RunStatus, list_runs, status_from_meta
from nanobot_tui.engine.runs.store.writer import StoreWriter

__all__ = [
    "SAMPLE_TEXT_MAX",
    "AttemptOut",
    "Batch",
    "NodeRow",
    "RunNotFound",
    "RunStatus",
    "RunStore",
    "SampleRow",
    "StepOut",
    "StepRow",
    "StoreDamaged",
    "StoreError",
    "StoreWriter",
    "connect",
    "create_run",
    "db_path",
    "describe",
    "list_runs",
    "marker_path",
    "meta_set",
    "read_meta",
    "resolve_run_id",
    "run_dir",
    "status_from_meta",
    "to_json",
    "trace_path",
]
