"""The runner's single writer: a thread with its own connection that GROUP-COMMITS.

The runner hands it batches; it writes everything that arrived in one transaction (WAL,
synchronous=NORMAL), at most every ~50 ms, then updates the tree, the totals, the
`committed` marker file and the trace file. Consecutive plain simulated steps (same
rounds and samples, every vote for the truth) reach it as one run (first, last, rounds,
samples) and are inserted by one recursive-CTE statement.

Every SQL call releases the GIL while SQLite works, but has to win it back from the
runner's loop afterwards, so a commit is a fixed handful of statements whatever its
size: runs of plain steps are expanded by one recursive CTE, other rows arrive as one
JSON array (json_each), each tree level is one UPDATE.

Durability. A batch is committed before its steps count as done anywhere (the totals,
the tree, the trace file and the `committed` marker file are written from it), commits
are in order, and the sequential scheduler hands over steps in order, so after a crash
the store holds an exact prefix of the run and the runner re-executes the rest. With
synchronous=NORMAL a commit survives the process being killed; after a power cut the last
commits before it may be gone, and are re-executed in the same way.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from typing import Any

from nanobot_tui import paths
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.runs.store.db import (
    STEP_COLS,
    StoreError,
    connect,
    load_layout,
    meta_set,
    read_meta,
    to_json,
)
from nanobot_tui.engine.runs.store.places import db_path, marker_path, trace_path
from nanobot_tui.engine.runs.store.rows import Batch, StepOut
from nanobot_tui.engine.runs.store.totals import (
    Totals,
    count_mixed,
    count_row,
    count_run,
    new_totals,
    uncount_row,
)
from nanobot_tui.engine.runs.store.trace_lines import TraceFile, unpack_trace
from nanobot_tui.engine.runs.store.tree_update import mark_running, merge_ranges, update_tree
from nanobot_tui.engine.runs.tree import ROOT_ID, Layout

_CLOSE = object()


class StoreWriter:
    """The runner's single writer (see the module note); `submit` batches, `flush` to
    wait for them, `close` at the end."""

    def __init__(self, run_id: str, *, traces: bool = True) -> None:
        self.run_id = run_id
        self.conn = connect(db_path(run_id))
        meta = read_meta(self.conn)
        self.spec = RunSpec.from_dict(meta["spec"])
        self.layout = load_layout(self.conn, meta["layout"])
        self.domain = self.spec.build_domain()  # the writer's own (summaries)
        self.totals: Totals = {**new_totals(), **(meta.get("totals") or {})}
        self.committed = int(self.totals["steps_done"])
        self.commits = 0
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._rate: deque[tuple[float, int]] = deque()
        self._marker = os.open(marker_path(run_id), os.O_WRONLY | os.O_CREAT, 0o600)
        self._plain_sql, self._mixed_sql, self._rows_sql = _insert_sql(self.layout)
        self._trace: TraceFile | None = None
        if traces and self.spec.traces:
            paths.ensure(paths.traces_dir())
            unpack_trace(trace_path(run_id))
            self._trace = TraceFile(trace_path(run_id), self.conn, self.spec.keeps_samples)
            self._trace.repair(meta.get("trace"))
        self._thread = threading.Thread(target=self._loop, name=f"store-{run_id}", daemon=True)
        self._thread.start()

    # --- the runner's side -------------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        if self.error is not None:
            raise StoreError(f"run {self.run_id}: the store writer failed: {self.error}")
        self._queue.put(batch)

    def lag(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout: float | None = None, **meta: Any) -> None:
        """Submit `meta` (may be empty) and wait until it and everything before it is
        committed; raise StoreError if the writer failed."""
        done = threading.Event()
        self._queue.put(Batch(meta=meta or None, done=done))
        if not done.wait(timeout):
            raise StoreError(f"run {self.run_id}: the store writer did not commit in time")
        if self.error is not None:
            raise StoreError(f"run {self.run_id}: the store writer failed: {self.error}")

    def close(self) -> None:
        self._queue.put(_CLOSE)
        self._thread.join()
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.conn.close()
        os.close(self._marker)
        if self._trace is not None:
            self._trace.close()

    # --- the thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        closing = False
        while not closing:
            batches = [self._queue.get()]
            while True:
                try:
                    batches.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(b is _CLOSE for b in batches):
                closing = True
                batches = [b for b in batches if b is not _CLOSE]
            if batches and self.error is None:
                try:
                    self._commit(batches)
                except BaseException as exc:  # reported to the runner at its next submit
                    self.error = exc
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
            for b in batches:
                if b.done is not None:
                    b.done.set()

    def _commit(self, batches: list[Batch]) -> None:
        conn = self.conn
        now = time.time()
        totals = self.totals
        b = _merged(batches)
        ranges = merge_ranges(
            [(a, z) for a, z, _, _ in b.runs] + [(m[0], m[0]) for m in b.mixed] +
            [(r.step, r.step) for r in b.rows] + [(s, s) for s in b.deletes]
        )  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        for step in b.deletes:
            self._delete(step)
        if b.runs:
            conn.execute(self._plain_sql, (to_json(b.runs),))
            for a, z, rounds, samples in b.runs:
                count_run(totals, z - a + 1, z, rounds, samples)
        if b.mixed:
            conn.execute(self._mixed_sql, (to_json(b.mixed),))
            for m in b.mixed:
                count_mixed(totals, m)
        if b.rows:
            self._insert_rows(b.rows)
        if ranges:
            update_tree(conn, self.layout, self.domain, ranges, now, b.runs)
        if b.inflight:
            mark_running(conn, self.layout, b.inflight, now)
        done = int(totals["steps_done"])
        totals["rate"] = self._rate_now(now, done)
        items: dict[str, Any] = {"totals": totals, "updated": now, "heartbeat": now}
        items.update(b.meta or {})
        if b.inflight is not None:
            items["inflight"] = b.inflight
        if b.elapsed is not None:
            items["elapsed_s"] = b.elapsed
        trace = self._trace
        if trace is not None and ranges:
            items["trace"] = {"offset": trace.offset(), "ranges": ranges}
        meta_set(conn, items)
        conn.execute("COMMIT")
        self.committed = done
        self.commits += 1
        line = f"{done} {int(totals['max_step'])} {now:.3f}".ljust(63) + "\n"
        os.pwrite(self._marker, line.encode(), 0)
        if trace is not None and ranges:
            trace.append(trace.batch_text(b.runs, b.mixed, b.rows))

    def _delete(self, step: int) -> None:
        """Take a failed step back out (a resumed run votes it again)."""
        conn = self.conn
        row = conn.execute(
            "SELECT status, rounds, samples, valid, completion_tokens, correct, error "
            "FROM steps WHERE step = ?",
            (step,),
        ).fetchone()
        if row is None:
            return
        uncount_row(self.totals, *row)
        conn.execute("DELETE FROM steps WHERE step = ?", (step,))
        conn.execute("DELETE FROM attempts WHERE step = ?", (step,))
        conn.execute("DELETE FROM samples WHERE step = ?", (step,))
        ids = self.layout.ancestors(step)
        conn.execute(
            "UPDATE nodes SET status = 'running', finished = NULL, error = NULL "
            f"WHERE id IN ({', '.join('?' * len(ids))})",
            ids,
        )

    def _insert_rows(self, rows: list[StepOut]) -> None:
        conn = self.conn
        leaf_of = self.layout.leaf_of
        totals = self.totals
        conn.execute(
            self._rows_sql,
            (
                to_json([
                    (r.step, leaf_of(r.step), r.status, r.input, r.answer, r.votes, r.rounds,
                     r.samples, r.valid, to_json(r.red_flags) if r.red_flags else None,
                     r.tokens, r.latency_ms, r.wall_ms, r.attempts, r.correct, r.error)
                    for r in rows
                ]),
            ),
        )  # fmt: skip
        earlier = [
            (r.step, a.attempt, a.status, a.answer, a.votes, a.rounds, a.samples, a.valid,
             a.red_flags, a.tokens, a.latency_ms, a.wall_ms, a.error)
            for r in rows for a in r.earlier
        ]  # fmt: skip
        if earlier:
            conn.executemany(
                "INSERT OR REPLACE INTO attempts(step, attempt, status, answer, votes, rounds, "
                "samples, valid, red_flags, completion_tokens, latency_ms, wall_ms, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                earlier,
            )
        samples = [s for r in rows for s in r.sample_rows]
        if samples:
            conn.executemany(
                "INSERT OR REPLACE INTO samples(step, attempt, i, key, red_flag, temperature, "
                "tokens, latency_ms, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                samples,
            )
        for r in rows:
            count_row(totals, r)

    def _rate_now(self, now: float, done: int) -> float:
        window = self._rate
        window.append((now, done))
        while len(window) > 2 and now - window[1][0] >= 60.0:
            window.popleft()
        t0, d0 = window[0]
        if now - t0 < 0.2:
            return float(self.totals.get("rate") or 0.0)
        return max(done - d0, 0) / (now - t0)


def _merged(batches: list[Batch]) -> Batch:
    """The batches as one: rows in order, the last inflight and elapsed given."""
    out = Batch()
    meta: dict[str, Any] = {}
    for b in batches:
        out.runs += b.runs
        out.mixed += b.mixed
        out.rows += b.rows
        out.deletes += b.deletes
        meta.update(b.meta or {})
        if b.inflight is not None:
            out.inflight = b.inflight
        if b.elapsed is not None:
            out.elapsed = b.elapsed
    out.meta = meta
    return out


def _insert_sql(layout: Layout) -> tuple[str, str, str]:
    """The INSERTs of a commit: runs of plain steps (one recursive CTE expands them),
    mixed simulated steps and full rows (each one JSON array, read by json_each)."""
    node = f"{layout.bases[0]} + s / {layout.fanout}" if layout.depth else str(ROOT_ID)
    if layout.is_grouped:  # the group that starts last at or before s (a key lookup)
        node = (
            f"{layout.bases[0]} + (SELECT ordinal FROM step_groups WHERE first_step <= s "
            "ORDER BY first_step DESC LIMIT 1)"
        )
    plain = (
        "WITH RECURSIVE r(s, z, rounds, n) AS ("
        "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
        "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?) "
        "UNION ALL SELECT s + 1, z, rounds, n FROM r WHERE s < z ORDER BY 1) "
        "INSERT INTO steps(step, node, status, rounds, samples, valid, attempts, correct) "
        f"SELECT s, {node}, 'completed', rounds, n, n, 1, 1 FROM r"
    )
    mixed = (
        "INSERT INTO steps(step, node, status, rounds, samples, valid, votes, red_flags, "
        "attempts, correct) SELECT s, " + node + ", 'completed', "
        "json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
        "json_extract(value, '$[3]'), json_extract(value, '$[4]'), "
        "json_extract(value, '$[5]'), 1, 1 FROM "
        "(SELECT json_extract(value, '$[0]') AS s, value FROM json_each(?))"
    )
    cols = STEP_COLS.split(", ")
    rows = (
        f"INSERT INTO steps({STEP_COLS}) SELECT "
        + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(cols)))
        + " FROM json_each(?)"
    )
    return plain, mixed, rows
