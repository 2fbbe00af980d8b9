"""Recovering a damaged run store (`nanobot runs recover RUN`): a run.db that was cut
short (a runner killed, a full disk, a copy cut short) or overwritten in part.

What is readable is read, a step range at a time; a range that fails is halved until
the rows that can be read are read and the ones that cannot are skipped (a truncated
file's missing pages take the rows on them, the others are intact). A new store is
written beside it from those rows (the schema, spec and tree blocks as a new run has
them), with the blocks' counters and the run's totals recomputed from the recovered
rows, and swapped in under the run's lock. Nothing already saved is lost: the damaged
file (with its WAL) is kept as run.db.damaged-<time>, the old trace file as
trace.jsonl.damaged-<time> in the run's folder; the new trace file holds the lines of
the recovered steps. A run whose steps go in order keeps the recovered steps up to the
first one missing (a resume goes on from the last step of a prefix); `nanobot resume`
runs the rest, and with a seeded sampler it votes them exactly as they were voted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.engine.runs.prune import holding_idle
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.runs.store.create import start_store
from nanobot_tui.engine.runs.store.db import (
    DB_NAME,
    STEP_COLS,
    StoreError,
    connect,
    damage,
    load_layout,
    meta_set,
)
from nanobot_tui.engine.runs.store.places import (
    db_path,
    marker_path,
    resolve_run_id,
    run_dir,
    trace_path,
)
from nanobot_tui.engine.runs.store.rows import StepOut
from nanobot_tui.engine.runs.store.totals import Totals, count_row, new_totals
from nanobot_tui.engine.runs.store.trace_lines import TraceFile, unpack_trace
from nanobot_tui.engine.runs.store.tree_update import merge_ranges, update_tree
from nanobot_tui.engine.runs.tree import Layout, groups_of
from nanobot_tui.engine.voting.domains import Domain
from nanobot_tui.errors import UsageError

CHUNK = 4096  # steps read at a time; a range that fails is halved
ATTEMPT_COLS = (
    "step, attempt, status, answer, votes, rounds, samples, valid, red_flags, "
    "completion_tokens, latency_ms, wall_ms, error"
)
SAMPLE_COLS = "step, attempt, i, key, red_flag, temperature, tokens, latency_ms, text"
# meta keys that describe the run, copied as they were; the rest is recomputed or reset.
KEPT_META = ("version", "id", "spec", "created", "domain", "sampler", "sampler_name",
             "steps_total", "layout", "storage", "elapsed_s", "sessions")  # fmt: skip


class NotDamaged(UsageError):
    """`runs recover` on a store that reads whole; str() is one line."""


class Unrecoverable(StoreError):
    """A store whose description of the run (its meta rows) cannot be read."""


@dataclass(frozen=True)
class Recovery:
    """What `recover_run` did: the steps the damaged store held (its runner's last count)
    and the ones recovered, the steps a resume will run, and where the damaged file
    went."""

    run_id: str
    path: str
    problem: str
    recovered: int
    held: int | None  # steps its runner had committed (runs/<id>/committed), if known
    to_run: int  # steps a resume runs: every step not recovered
    kept_as: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.run_id, "path": self.path, "problem": self.problem,
                "recovered": self.recovered, "held": self.held, "to_run": self.to_run,
                "kept_as": self.kept_as}  # fmt: skip


def problem_of(path: Path) -> str | None:
    """What is wrong with the store at `path`, from its header, else from SQLite's own
    check of every page; None when it reads whole."""
    found = damage(path)
    if found is not None:
        return found
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            rows = conn.execute("PRAGMA quick_check(3)").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"cannot be read ({exc})"
    if rows and rows[0][0] == "ok":
        return None
    return "is damaged: " + "; ".join(str(r[0]) for r in rows)


def readable(
    conn: sqlite3.Connection, sql: str, lo: int, hi: int, skipped: list[int]
) -> Iterator[tuple[Any, ...]]:
    """The rows of `sql` (bound to a step range) over steps lo..hi that can be read: a
    range that fails is halved down to single steps, which are skipped (counted in
    `skipped`)."""
    stack = [(lo, hi)]
    while stack:
        a, z = stack.pop()
        try:
            rows = conn.execute(sql, (a, z)).fetchall()
        except sqlite3.DatabaseError:
            if a == z:
                skipped.append(a)
                continue
            mid = (a + z) // 2
            stack += [(mid + 1, z), (a, mid)]  # the lower half first
            continue
        yield from rows


def read_meta_salvaged(conn: sqlite3.Connection) -> dict[str, Any]:
    """The meta rows that can be read, key by key where the whole table cannot."""
    try:
        pairs = conn.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.DatabaseError:
        pairs = []
        for key in KEPT_META:
            with contextlib.suppress(sqlite3.DatabaseError):
                pairs += conn.execute("SELECT key, value FROM meta WHERE key = ?", (key,))
    out: dict[str, Any] = {}
    for key, value in pairs:
        with contextlib.suppress(ValueError, TypeError):
            out[key] = json.loads(value)
    return out


def recover_run(run_id: str) -> Recovery:
    """Rebuild run `run_id`'s damaged store from what it still holds (see the module
    note). NotDamaged when it reads whole, RunBusy while a runner holds it,
    Unrecoverable when not even the run's description can be read."""
    rid = resolve_run_id(run_id)
    with holding_idle(rid, "it cannot be recovered now"):
        return _recover(rid)


def _recover(rid: str) -> Recovery:
    path = db_path(rid)
    problem = problem_of(path)
    if problem is None:
        raise NotDamaged(f"run {rid}: its database {path} reads whole; nothing to recover")
    held = _committed_mark(rid)
    building = run_dir(rid) / (DB_NAME + ".recovering")
    _remove_db(building)
    try:
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            # Lets SQLite open a file shorter than its header says (it reads the pages
            # that are there) instead of calling the whole file malformed.
            src.execute("PRAGMA writable_schema=ON")
            meta = read_meta_salvaged(src)
            if not all(k in meta for k in ("spec", "layout", "steps_total")):
                raise Unrecoverable(
                    f"run {rid}: its database {path} {problem}, and the run's description "
                    f"went with it: nothing can be recovered (its trace: nanobot traces "
                    f"--run {rid})"
                )
            held = max(held or 0, int((meta.get("totals") or {}).get("steps_done") or 0))
            recovered = _rebuild(src, building, meta, problem)
        finally:
            src.close()
    except BaseException as exc:
        _remove_db(building)
        if isinstance(exc, (OSError, sqlite3.Error)):
            raise StoreError(f"run {rid}: could not recover {path}: {exc}") from None
        raise
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{DB_NAME}.damaged-{stamp}")
    n = 1
    while aside.exists():  # a second recovery within the second: never over the first
        n += 1
        aside = path.with_name(f"{DB_NAME}.damaged-{stamp}-{n}")
    stamp = aside.name.removeprefix(f"{DB_NAME}.damaged-")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    os.replace(building, path)
    _remove_db(building)
    try:
        _retrace(rid, RunSpec.from_dict(meta["spec"]), stamp)
        with open(marker_path(rid), "w") as f:
            f.write(f"{recovered} -1 {time.time():.3f}".ljust(63) + "\n")
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(
            f"run {rid}: its store was recovered ({recovered:,} steps; the damaged file is "
            f"kept as {aside}), but its trace file could not be written again: {exc}"
        ) from None
    total = int(meta["steps_total"])
    return Recovery(rid, str(path), problem, recovered, held or None, total - recovered, str(aside))


def _committed_mark(rid: str) -> int | None:
    try:
        return int(marker_path(rid).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _rebuild(src: sqlite3.Connection, building: Path, meta: dict[str, Any], problem: str) -> int:
    """Write the new store at `building` from the rows of `src` that can be read; return
    how many steps it holds."""
    spec = RunSpec.from_dict(meta["spec"])
    domain = spec.build_domain()
    layout = _layout(src, meta["layout"], domain)
    total = int(meta["steps_total"])
    dst = connect(building)
    try:
        start_store(dst, layout)
        totals = new_totals()
        kept = _copy_steps(src, dst, total, not domain.independent_steps, totals)
        ranges = merge_ranges((s, s) for s in kept)
        for table, cols, json_cols in (
            ("attempts", ATTEMPT_COLS, ATTEMPT_JSON),
            ("samples", SAMPLE_COLS, ()),
        ):
            _copy_children(src, dst, table, cols, kept, json_cols)
        now = time.time()
        if ranges:
            update_tree(dst, layout, domain, ranges, now, [])
        items = {k: meta[k] for k in KEPT_META if k in meta}
        items.update(
            status="stopped",
            status_reason=f"recovered {len(kept):,} of {total:,} steps from a damaged store "
            f"(it {problem}); `nanobot resume` runs the rest",
            totals=totals,
            updated=now,
        )
        if meta.get("status") == "cancelled":  # cancelled is for good, recovered or not
            items.update(status="cancelled", status_reason=meta.get("status_reason"))
        meta_set(dst, items)
        dst.execute("COMMIT")
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        dst.close()
    return len(kept)


def _layout(src: sqlite3.Connection, data: dict[str, Any], domain: Domain) -> Layout:
    """The run's layout; a grouped run's groups from its store, else (their pages are
    gone) from its domain again when they still fit the tree."""
    try:
        return load_layout(src, data)
    except StoreError:
        groups = groups_of(domain)
        if groups is None:
            raise
        layout = Layout.grouped(groups, int(data["fanout"]))
        if layout.to_dict(groups=False) != data:
            raise Unrecoverable(
                "the run's groups (a code run's files) cannot be read, and its domain's "
                "no longer fit its tree: nothing can be recovered"
            ) from None
        return layout


def _copy_steps(
    src: sqlite3.Connection, dst: sqlite3.Connection, total: int, prefix: bool, totals: Totals
) -> list[int]:
    """Copy the readable step rows (with `prefix`, only those up to the first step
    missing: a run that goes in order resumes from a prefix) and count them into
    `totals`; return their step numbers, ascending."""
    sql = f"SELECT {STEP_COLS} FROM steps WHERE step BETWEEN ? AND ? ORDER BY step"
    insert = f"INSERT INTO steps ({STEP_COLS}) VALUES ({', '.join('?' * 16)})"
    kept: list[int] = []
    skipped: list[int] = []
    for lo in range(0, total, CHUNK):
        rows = [r for r in readable(src, sql, lo, min(lo + CHUNK, total) - 1, skipped) if _sane(r)]
        if prefix:
            expect = kept[-1] + 1 if kept else 0
            cut = next((i for i, r in enumerate(rows) if r[0] != expect + i), len(rows))
            rows = rows[:cut]
        dst.executemany(insert, rows)
        for r in rows:
            count_row(totals, _step_out(r))
        kept += [r[0] for r in rows]
        if prefix and (len(rows) < min(CHUNK, total - lo)):
            break  # the prefix ends in this chunk
    return kept


STEP_INTS = (0, 1, 6, 7, 8, 10, 13)  # step, node, rounds, samples, valid, tokens, attempts
STEP_JSON = (3, 4, 5, 9)  # input, answer, votes, red_flags
ATTEMPT_JSON = (3, 4, 8)  # answer, votes, red_flags


def _sane(row: tuple[Any, ...]) -> bool:
    """Whether a step row read is whole: a cell on a page cut short reads back with
    zeros (NUL text, broken JSON, NULL counts) rather than as an error."""
    return (
        row[2] in ("completed", "skipped", "failed")
        and all(isinstance(row[i], int) for i in STEP_INTS)
        and _clean(row, STEP_JSON)
    )


def _clean(row: tuple[Any, ...], json_cols: tuple[int, ...]) -> bool:
    """No NUL or blob where text goes, and JSON where JSON goes."""
    for i, value in enumerate(row):
        if isinstance(value, bytes) or (isinstance(value, str) and "\x00" in value):
            return False
        if i in json_cols and value is not None:
            try:
                json.loads(value)
            except (TypeError, ValueError):
                return False
    return True


def _step_out(r: tuple[Any, ...]) -> StepOut:
    """A stored step row (STEP_COLS) as the writer counts it."""
    step, _node, status, inp, ans, votes, rounds, samples, valid, flags = r[:10]
    tokens, latency, wall, attempts, correct, error = r[10:]
    reason = str(error).split(":")[0] if error and status != "completed" else None
    return StepOut(
        step, status, inp, ans, votes, rounds, samples, valid,
        json.loads(flags) if flags else None, tokens, latency, wall, attempts, correct,
        error, reason,
    )  # fmt: skip


def _copy_children(
    src: sqlite3.Connection,
    dst: sqlite3.Connection,
    table: str,
    cols: str,
    kept: list[int],
    json_cols: tuple[int, ...],
) -> None:
    """Copy the readable rows of `table` (attempts or samples) of the kept steps."""
    if not kept:
        return
    keep = set(kept)
    sql = f"SELECT {cols} FROM {table} WHERE step BETWEEN ? AND ?"
    insert = (
        f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({', '.join('?' * len(cols.split(',')))})"
    )
    skipped: list[int] = []
    for lo in range(kept[0], kept[-1] + 1, CHUNK):
        rows = readable(src, sql, lo, min(lo + CHUNK - 1, kept[-1]), skipped)
        dst.executemany(insert, [r for r in rows if r[0] in keep and _clean(r, json_cols)])


def _retrace(rid: str, spec: RunSpec, stamp: str) -> None:
    """The trace file again from the recovered rows (the steps not recovered will be
    traced when they run again); the old one is kept in the run's folder."""
    plain = trace_path(rid)
    with contextlib.suppress(OSError):
        unpack_trace(plain)
    if plain.exists():
        os.replace(plain, run_dir(rid) / f"trace.jsonl.damaged-{stamp}")
    if not spec.traces:
        return
    conn = connect(db_path(rid))
    try:
        steps = conn.execute("SELECT step FROM steps ORDER BY step").fetchall()
        ranges = merge_ranges((s, s) for (s,) in steps)
        paths.ensure(paths.traces_dir())
        trace = TraceFile(plain, conn, spec.keeps_samples)
        try:
            trace.append(trace.text(ranges))
        finally:
            trace.close()
    finally:
        conn.close()


def recover_line(r: Recovery) -> str:
    """What `runs recover` says, in one line."""
    lost = f" (of the {r.held:,} its runner had committed)" if r.held else ""
    return (
        f"run {r.run_id}: its database {r.path} {r.problem}; recovered {r.recovered:,} "
        f"steps{lost}, {r.to_run:,} to run with `nanobot resume {r.run_id}`; the damaged "
        f"file is kept as {r.kept_as}"
    )
