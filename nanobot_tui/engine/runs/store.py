"""The run store: one SQLite database per durable run, NANOBOT_HOME/runs/<id>/run.db.

Written by the runner only (it holds the run's lock), through one background thread with
its own connection that GROUP-COMMITS: the runner hands it batches, it writes everything
that arrived in one transaction (WAL, synchronous=NORMAL), at most every ~50 ms. Read by
anyone through a separate read-only connection (`RunStore.open(id, readonly=True)`), safe
while the runner writes.

Tables
------
meta(key, value JSON)  spec, created, status, status_reason, runner {pid, created},
                       heartbeat, totals (counts kept by the writer in the same
                       transaction as the rows they count), layout, storage, trace.
nodes                  the root and every block (see tree.py), created up front;
                       counters, status and timings are recomputed by SQL from the rows
                       below them at each commit, for the blocks that commit touched.
steps                  one row per step (step = PRIMARY KEY: never twice), written when
                       the step is done (completed, skipped or failed).
attempts               earlier, undecided attempts of a retried step.
samples                every sample of a step (real models; off for simulated runs).

Compact rows. At 150,000 simulated steps a second, binding fifteen values a row would
cost more than the whole vote, so what can be derived is not stored: in a simulated run
of a domain with canonical steps (Hanoi's `step_at`; the run always goes on from the
truth) `input` is NULL and means `domain.step_at(step)`; an answer that is the truth
(simulated, correct = 1) is NULL; `votes` NULL means every valid vote went to the
winner. Consecutive such steps with the same rounds and samples reach the writer as one
run (first, last, rounds, samples) and are inserted by one recursive-CTE statement. The
read API fills in all of these, so a reader never sees a NULL it has to interpret.

Durability. A batch is committed before its steps count as done anywhere (the totals,
the tree, the trace file and the `committed` marker file are written from it), commits
are in order, and the sequential scheduler hands over steps in order, so after a crash
the store holds an exact prefix of the run and the runner re-executes the rest. With
synchronous=NORMAL a commit survives the process being killed; after a power cut the last
commits before it may be gone, and are re-executed in the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from nanobot_tui import paths
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.runs.tree import ROOT_ID, Layout, summarize
from nanobot_tui.engine.voting.domains import Step

DB_NAME = "run.db"
RUN_STATUSES = ("running", "paused", "stopped", "completed", "failed", "cancelled")
NODE_STATUSES = ("pending", "running", "completed", "failed", "skipped")
SUMMARY_MIN_STEPS = 1000  # blocks this big (and the root) get their summary stored
SAMPLE_TEXT_MAX = 4096

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    parent INTEGER,
    kind TEXT NOT NULL,
    level INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    children INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    completed_children INTEGER NOT NULL DEFAULT 0,
    failed_children INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    summary TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS nodes_by_parent ON nodes (parent, ordinal);
CREATE TABLE IF NOT EXISTS steps (
    step INTEGER PRIMARY KEY,
    node INTEGER NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    answer TEXT,
    votes TEXT,
    rounds INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    valid INTEGER NOT NULL DEFAULT 0,
    red_flags TEXT,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    wall_ms REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    correct INTEGER,
    error TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    step INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    answer TEXT,
    votes TEXT,
    rounds INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    valid INTEGER NOT NULL DEFAULT 0,
    red_flags TEXT,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    wall_ms REAL,
    error TEXT,
    PRIMARY KEY (step, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
    step INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    i INTEGER NOT NULL,
    key TEXT,
    red_flag TEXT,
    temperature REAL,
    tokens INTEGER,
    latency_ms REAL,
    text TEXT,
    PRIMARY KEY (step, attempt, i)
) WITHOUT ROWID;
"""


class StoreError(Exception):
    """A run that cannot be found or read; str() is one line."""


class RunNotFound(StoreError):
    pass


# --- rows ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node of the process tree: the root, a block, or a step (kind "step", synthesised
    from its `steps` row; id = layout step_base + step)."""

    id: int
    parent: int | None
    kind: str  # "root" | "block" | "step"
    ordinal: int  # position among its siblings
    first_step: int
    last_step: int
    status: str  # pending | running | completed | failed | skipped
    attempts: int
    started: float | None
    finished: float | None
    completed_children: int
    failed_children: int
    samples: int
    tokens: int
    errors: int
    summary: str | None
    error: str | None
    level: int = 0  # 0 for steps, 1 for blocks of steps, ..., the root highest
    children: int = 0  # how many children it has

    @property
    def step(self) -> int | None:
        return self.first_step if self.kind == "step" else None


@dataclass(frozen=True, slots=True)
class StepRow:
    step: int
    node: int  # the block that holds it
    status: str
    input: Any  # the domain's JSON form of the step's input
    answer: Any  # the winner's answer (JSON form), None when there was none
    votes: dict[str, int]  # display key -> valid votes
    rounds: int
    samples: int
    valid: int
    red_flags: dict[str, int]
    completion_tokens: int
    latency_ms: float | None  # summed model time of its samples
    wall_ms: float | None  # wall time of the step (all attempts)
    attempts: int
    correct: bool | None  # None: no truth to check against
    error: str | None
    winner: str | None = None  # display key of the winner


@dataclass(frozen=True, slots=True)
class SampleRow:
    step: int
    attempt: int
    i: int
    key: str | None  # display key (None: red-flagged)
    red_flag: str | None
    temperature: float | None
    tokens: int | None
    latency_ms: float | None
    text: str  # the raw reply, at most 4 KB


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

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["id"] = self.run_id
        return out


# --- ids and places --------------------------------------------------------------------


def run_dir(run_id: str) -> Path:
    return paths.runs_dir() / run_id


def db_path(run_id: str) -> Path:
    return run_dir(run_id) / DB_NAME


def trace_path(run_id: str) -> Path:
    return paths.traces_dir() / f"{run_id}.jsonl"


def marker_path(run_id: str) -> Path:
    """One line the writer rewrites after every commit: "<steps done> <max step> <time>"."""
    return run_dir(run_id) / "committed"


def new_run_id(label: str) -> str:
    """Short, sortable, unique: 20261125-0215-hanoi20-3f2a."""
    clean = "".join(c for c in label.lower() if c.isalnum())[:16] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{clean}-{secrets.token_hex(2)}"


def all_run_ids() -> list[str]:
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / DB_NAME).is_file())


def resolve_run_id(prefix: str) -> str:
    """The run whose id is `prefix` or starts with it; RunNotFound (one line) otherwise."""
    prefix = prefix.strip()
    ids = all_run_ids()
    if prefix in ids:
        return prefix
    matches = [i for i in ids if i.startswith(prefix)] if prefix else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run {prefix!r} (see `nanobot runs`)")
    shown = ", ".join(matches[:4]) + (" …" if len(matches) > 4 else "")
    raise RunNotFound(f"run id {prefix!r} is ambiguous: {shown}")


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


# --- JSON of steps and answers -----------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def dump_step(domain: Any, step: Step) -> Any:
    own = getattr(domain, "dump_step", None)
    return own(step) if own is not None else _jsonable(step.input)


def load_step(domain: Any, index: int, data: Any) -> Step:
    own = getattr(domain, "load_step", None)
    return own(index, data) if own is not None else Step(index, data)


def dump_answer(domain: Any, answer: Any) -> Any:
    own = getattr(domain, "dump_answer", None)
    return own(answer) if own is not None else _jsonable(answer)


def load_answer(domain: Any, data: Any) -> Any:
    own = getattr(domain, "load_answer", None)
    return own(data) if own is not None else data


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def describe(domain: Any, key: Any) -> str:
    fn = getattr(domain, "describe", None)
    try:
        return str(fn(key)) if fn is not None else str(key)
    except Exception:
        return str(key)


def canonical_step(domain: Any, index: int) -> Step:
    """Step `index` of the true solution."""
    at = getattr(domain, "step_at", None)
    if at is not None:
        return at(index)
    for step in domain.steps():
        if step.index == index:
            return step
    raise StoreError(f"the domain has no step {index}")


# --- connections -----------------------------------------------------------------------


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10.0
        )
    else:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def meta_set(conn: sqlite3.Connection, items: dict[str, Any]) -> None:
    """Upsert meta keys, in one statement."""
    if not items:
        return
    conn.execute(
        "INSERT INTO meta(key, value) VALUES "
        + ", ".join("(?, ?)" for _ in items)
        + " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [x for k, v in items.items() for x in (k, to_json(v))],
    )


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
        canonical = (
            simulated
            and hasattr(domain, "step_at")
            and not bool(getattr(domain, "independent_steps", False))
        )
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


def new_totals() -> dict[str, Any]:
    return {
        "steps_done": 0,
        "completed": 0,
        "skipped": 0,
        "failed": 0,
        "wrong": 0,
        "errors": 0,
        "errors_by_reason": {},
        "samples": 0,
        "valid": 0,
        "tokens": 0,
        "red_flags": {},
        "votes_hist": {},
        "rounds_hist": {},
        "retried": 0,
        "max_step": -1,
        "rate": 0.0,
    }


# --- reading ---------------------------------------------------------------------------

_NODE_COLS = (
    "id, parent, kind, ordinal, first_step, last_step, status, attempts, started, finished, "
    "completed_children, failed_children, samples, tokens, errors, summary, error, level, "
    "children"
)
_STEP_COLS = (
    "step, node, status, input, answer, votes, rounds, samples, valid, red_flags, "
    "completion_tokens, latency_ms, wall_ms, attempts, correct, error"
)


def _trace_select(keep_samples: bool, where: str) -> str:
    """One JSON trace line per step row (and per earlier attempt) matching `where` over
    alias r (r.value = [first, last] of a step range), ordered by step then attempt.
    Fields that are null are left out (json_patch drops them): a plain simulated step's
    line is {"step", "attempt", "status", "rounds", "samples", "valid", "correct",
    "tokens"}."""
    sample_list = (
        ", 'sample_list', (SELECT json_group_array(json_object('key', x.key, 'red_flag', "
        "x.red_flag, 'tokens', x.tokens, 'temperature', x.temperature, 'latency_ms', "
        "x.latency_ms)) FROM samples x WHERE x.step = s.step AND x.attempt = {att})"
    )
    final = sample_list.format(att="s.attempts") if keep_samples else ""
    earlier = sample_list.format(att="s.attempt") if keep_samples else ""
    return (
        "SELECT st, at, line FROM ("
        "SELECT s.step AS st, s.attempts AS at, json_patch('{}', json_object('step', s.step, "
        "'attempt', s.attempts, 'status', s.status, 'rounds', s.rounds, 'samples', s.samples, "
        "'valid', s.valid, 'votes', json(s.votes), 'red_flags', json(s.red_flags), "
        "'winner', json(s.answer), 'correct', s.correct, 'tokens', s.completion_tokens, "
        f"'latency_ms', s.latency_ms, 'wall_ms', s.wall_ms, 'error', s.error{final})) AS line "
        f"FROM json_each(:ranges) AS r CROSS JOIN steps AS s ON {where} "
        "UNION ALL "
        "SELECT s.step AS st, s.attempt AS at, json_patch('{}', json_object('step', s.step, "
        "'attempt', s.attempt, 'status', s.status, 'rounds', s.rounds, 'samples', s.samples, "
        "'valid', s.valid, 'votes', json(s.votes), 'red_flags', json(s.red_flags), "
        "'winner', json(s.answer), 'tokens', s.completion_tokens, "
        f"'latency_ms', s.latency_ms, 'wall_ms', s.wall_ms, 'error', s.error{earlier})) AS line "
        f"FROM json_each(:ranges) AS r CROSS JOIN attempts AS s ON {where} "
        ") ORDER BY st, at"
    )


_RANGE_WHERE = "s.step BETWEEN json_extract(r.value, '$[0]') AND json_extract(r.value, '$[1]')"


class RunStore:
    """A run's store, opened for reading (`RunStore.open(id, readonly=True)`); the
    runner's writes go through `StoreWriter`."""

    def __init__(self, run_id: str, conn: sqlite3.Connection, readonly: bool) -> None:
        self.run_id = run_id
        self.conn = conn
        self.readonly = readonly
        self._meta: dict[str, Any] | None = None
        self._domain: Any = None
        self._spec: RunSpec | None = None
        self._layout: Layout | None = None

    @classmethod
    def open(cls, run_id: str, readonly: bool = True) -> RunStore:
        """Open a run by id (or unique id prefix); RunNotFound if there is none."""
        rid = resolve_run_id(run_id)
        path = db_path(rid)
        try:
            conn = connect(path, readonly=readonly)
            conn.execute("SELECT 1 FROM meta LIMIT 1")
        except sqlite3.Error as exc:
            raise StoreError(f"run {rid}: cannot read {path}: {exc}") from None
        return cls(rid, conn, readonly)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta ----------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """Every meta key, JSON-decoded (read fresh each call)."""
        rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        out: dict[str, Any] = {}
        for key, value in rows:
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        self._meta = out
        return out

    def _static(self) -> dict[str, Any]:
        return self._meta if self._meta is not None else self.meta()

    @property
    def spec(self) -> RunSpec:
        if self._spec is None:
            self._spec = RunSpec.from_dict(self._static()["spec"])
        return self._spec

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            d = self._static()["layout"]
            self._layout = Layout(
                d["steps"], d["fanout"], tuple(d["counts"]), tuple(d["bases"]), d["step_base"]
            )
        return self._layout

    @property
    def domain(self) -> Any:
        if self._domain is None:
            self._domain = self.spec.build_domain()
        return self._domain

    # --- status --------------------------------------------------------------------------

    def status(self) -> RunStatus:
        meta = self.meta()
        return status_from_meta(self.run_id, meta, self._node_counts(meta))

    def _node_counts(self, meta: dict[str, Any]) -> dict[str, int]:
        counts = dict.fromkeys(NODE_STATUSES, 0)
        for status, n in self.conn.execute("SELECT status, count(*) FROM nodes GROUP BY status"):
            counts[status] = counts.get(status, 0) + n
        totals = meta.get("totals") or {}
        total = int(meta.get("steps_total") or 0)
        runner = meta.get("runner") or {}
        alive = not runner.get("ended") and pid_alive(runner)
        inflight = len(meta.get("inflight") or []) if alive else 0
        done = int(totals.get("steps_done", 0))
        counts["completed"] += int(totals.get("completed", 0))
        counts["skipped"] += int(totals.get("skipped", 0))
        counts["failed"] += int(totals.get("failed", 0))
        counts["running"] += inflight
        counts["pending"] += max(total - done - inflight, 0)
        return counts

    # --- the tree ------------------------------------------------------------------------

    def root(self) -> NodeRow:
        return self.node(ROOT_ID)

    def node(self, node_id: int) -> NodeRow:
        """A node by id: the root, a block, or a step (id = step_base + step)."""
        layout = self.layout
        if node_id >= layout.step_base:
            step = node_id - layout.step_base
            if not 0 <= step < layout.steps:
                raise StoreError(f"run {self.run_id}: no node {node_id}")
            return self._step_nodes(step, step)[0]
        row = self.conn.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE id = ?", (node_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"run {self.run_id}: no node {node_id}")
        return self._with_summary(NodeRow(*row))

    def children(self, node_id: int, offset: int = 0, limit: int = 200) -> list[NodeRow]:
        """A node's children in order (steps for the blocks that hold steps)."""
        layout = self.layout
        if node_id >= layout.step_base:
            return []
        try:
            level, index = layout.level_of(node_id)
        except ValueError:
            raise StoreError(f"run {self.run_id}: no node {node_id}") from None
        first, count = layout.children_range(level, index)
        lo = first + max(offset, 0)
        hi = min(first + count, lo + max(limit, 0)) - 1
        if hi < lo:
            return []
        if level == 1:
            return self._step_nodes(lo - layout.step_base, hi - layout.step_base)
        rows = self.conn.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE id BETWEEN ? AND ? ORDER BY id", (lo, hi)
        ).fetchall()
        return [self._with_summary(NodeRow(*r)) for r in rows]

    def _with_summary(self, row: NodeRow) -> NodeRow:
        """Small blocks' summaries are not stored: derive them on read."""
        if row.summary or row.status not in ("completed", "failed") or row.kind == "step":
            return row
        try:
            last = row.last_step
            got = self.conn.execute(
                "SELECT max(step) FROM steps WHERE step BETWEEN ? AND ?", (row.first_step, last)
            ).fetchone()
            if got is None or got[0] is None:
                return row
            answer = self._answer_object(int(got[0]))
            text = summarize(
                self.domain, row.first_step, int(got[0]), answer,
                row.completed_children, row.errors,
            )  # fmt: skip
        except Exception:
            return row
        return _replace(row, summary=text)

    def _step_nodes(self, first: int, last: int) -> list[NodeRow]:
        layout = self.layout
        meta = self._static()
        inflight = set(meta.get("inflight") or [])
        got = {
            r[0]: r
            for r in self.conn.execute(
                "SELECT step, status, attempts, samples, completion_tokens, correct, error, "
                "votes IS NULL AND answer IS NULL FROM steps WHERE step BETWEEN ? AND ?",
                (first, last),
            )
        }
        out = []
        for step in range(first, last + 1):
            r = got.get(step)
            parent = layout.leaf_of(step)
            ordinal = step % layout.fanout if layout.depth else step
            if r is None:
                status = "running" if step in inflight else "pending"
                out.append(NodeRow(layout.step_base + step, parent, "step", ordinal, step, step,
                                   status, 0, None, None, 0, 0, 0, 0, 0, None, None))  # fmt: skip
                continue
            _, status, attempts, samples, tokens, correct, error, _plain = r
            wrong = 1 if (correct == 0 or status != "completed") else 0
            summary = "wrong answer" if correct == 0 else None
            out.append(
                NodeRow(layout.step_base + step, parent, "step", ordinal, step, step, status,
                        attempts, None, None, 0, 0, samples, tokens, wrong, summary, error)
            )  # fmt: skip
        return out

    # --- steps ---------------------------------------------------------------------------

    def _storage(self) -> dict[str, Any]:
        return self._static().get("storage") or {}

    def _input_object(self, step: int, stored: str | None) -> Step:
        domain = self.domain
        if stored is not None:
            return load_step(domain, step, json.loads(stored))
        return canonical_step(domain, step)

    def _answer_object(self, step: int) -> Any:
        row = self.conn.execute(
            "SELECT input, answer, correct FROM steps WHERE step = ?", (step,)
        ).fetchone()
        if row is None:
            return None
        stored_input, stored_answer, correct = row
        if stored_answer is not None:
            return load_answer(self.domain, json.loads(stored_answer))
        if correct == 1:
            return self.domain.truth(self._input_object(step, stored_input))
        return None

    def step(self, step: int) -> StepRow:
        """One step with everything about it (input, answer, votes, red flags), with the
        compact forms expanded. A step not done yet comes back with status pending or
        running and only its input."""
        domain = self.domain
        layout = self.layout
        if not 0 <= step < layout.steps:
            raise StoreError(f"run {self.run_id}: no step {step + 1} (it has {layout.steps:,})")
        row = self.conn.execute(
            f"SELECT {_STEP_COLS} FROM steps WHERE step = ?", (step,)
        ).fetchone()
        if row is None:
            inflight = set(self._static().get("inflight") or [])
            data = None
            if self._storage().get("canonical_inputs") or getattr(
                domain, "independent_steps", False
            ):
                data = dump_step(domain, canonical_step(domain, step))
            status = "running" if step in inflight else "pending"
            return StepRow(step, layout.leaf_of(step), status, data, None, {}, 0, 0, 0, {}, 0,
                           None, None, 0, None, None)  # fmt: skip
        (_, node, status, inp, ans, votes, rounds, samples, valid, flags, tokens, latency,
         wall, attempts, correct, error) = row  # fmt: skip
        step_obj = self._input_object(step, inp)
        input_data = json.loads(inp) if inp is not None else dump_step(domain, step_obj)
        answer_obj = None
        if ans is not None:
            answer_data = json.loads(ans)
            with contextlib.suppress(Exception):
                answer_obj = load_answer(domain, answer_data)
        elif correct == 1:
            answer_obj = domain.truth(step_obj)
            answer_data = dump_answer(domain, answer_obj)
        else:
            answer_data = None
        winner = None
        if answer_obj is not None:
            with contextlib.suppress(Exception):
                winner = describe(domain, domain.key(answer_obj))
        if votes is not None:
            vote_map = {str(k): int(v) for k, v in json.loads(votes).items()}
            if self._storage().get("canonical_inputs") and _simulated_names(vote_map):
                vote_map = self._simulated_votes(step_obj, vote_map, winner)
        elif winner is not None and valid:
            vote_map = {winner: valid}
        else:
            vote_map = {}
        return StepRow(
            step, node, status, input_data, answer_data, vote_map, rounds, samples, valid,
            json.loads(flags) if flags else {}, tokens, latency, wall, attempts,
            None if correct is None else bool(correct), error, winner,
        )  # fmt: skip

    def _simulated_votes(
        self, step: Step, votes: dict[str, int], winner: str | None
    ) -> dict[str, int]:
        """Votes kept by the simulated sampler's names ("=" the truth, "#i" its i-th wrong
        answer) as display keys."""
        domain = self.domain
        wrongs = domain.wrong_answers(step, self.spec.wrong_choices)
        out: dict[str, int] = {}
        for name, n in votes.items():
            if name == "=":
                key = winner or describe(domain, domain.key(domain.truth(step)))
            else:
                key = describe(domain, domain.key(wrongs[int(name[1:])]))
            out[key] = out.get(key, 0) + n
        return out

    def samples(self, step: int) -> list[SampleRow]:
        """The kept samples of a step, every attempt (empty when samples are not kept)."""
        rows = self.conn.execute(
            "SELECT step, attempt, i, key, red_flag, temperature, tokens, latency_ms, text "
            "FROM samples WHERE step = ? ORDER BY attempt, i",
            (step,),
        ).fetchall()
        return [SampleRow(*r) for r in rows]

    def trace_lines(
        self, step: int | None = None, limit: int = 50, *, node: int | None = None
    ) -> list[dict[str, Any]]:
        """The trace lines (the same lines as traces/<run>.jsonl, as dicts) of one step
        (`trace_lines(step, limit)`: a step index), or of the steps under a node
        (`trace_lines(node=node_id, limit=...)`: the latest `limit`)."""
        layout = self.layout
        if node is not None:
            if node >= layout.step_base:
                first = last = node - layout.step_base
            else:
                level, index = layout.level_of(node)
                first, last = layout.steps_of(level, index)
        elif step is not None:
            first = last = step
        else:
            first, last = 0, layout.steps - 1
        sql = _trace_select(self.spec.keeps_samples, _RANGE_WHERE)
        # The latest lines: find where the last `limit` step rows start.
        start = self.conn.execute(
            "SELECT min(step) FROM (SELECT step FROM steps WHERE step BETWEEN ? AND ? "
            "ORDER BY step DESC LIMIT ?)",
            (first, last, max(limit, 1)),
        ).fetchone()[0]
        if start is None:
            return []
        lines = [
            json.loads(r[2]) for r in self.conn.execute(sql, {"ranges": to_json([[start, last]])})
        ]
        return lines[-limit:] if limit > 0 else lines

    # --- export ------------------------------------------------------------------------

    def export_json(self, path: Path, *, steps: bool = False) -> int:
        """Write the tree (root and blocks, with counts, status and summaries; with
        steps=True every step row too) as one JSON document; return nodes written."""
        meta = self.meta()
        nodes = [
            dict(zip(_NODE_COLS.split(", "), r, strict=True))
            for r in self.conn.execute(f"SELECT {_NODE_COLS} FROM nodes ORDER BY id")
        ]
        doc: dict[str, Any] = {
            "run": self.run_id,
            "spec": meta.get("spec"),
            "status": self.status().to_dict(),
            "nodes": nodes,
        }
        if steps:
            doc["steps"] = [asdict(self.step(i)) for i in range(self.layout.steps)
                            if self.conn.execute("SELECT 1 FROM steps WHERE step = ?",
                                                 (i,)).fetchone()]  # fmt: skip
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, ensure_ascii=False, default=str))
        os.replace(tmp, path)
        return len(nodes)


def _replace(row: NodeRow, **changes: Any) -> NodeRow:
    values = {name: getattr(row, name) for name in NodeRow.__slots__}  # type: ignore[attr-defined]
    values.update(changes)
    return NodeRow(**values)


def status_from_meta(run_id: str, meta: dict[str, Any], nodes: dict[str, int]) -> RunStatus:
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
    )


def list_runs() -> list[dict[str, Any]]:
    """Every run, oldest first: id, status (a dead runner's "running" reads "stopped"),
    reason, domain, sampler, steps_done, steps_total, errors, rate, pid, created,
    updated."""
    out = []
    for rid in all_run_ids():
        try:
            conn = connect(db_path(rid), readonly=True)
            try:
                meta = {}
                for key, value in conn.execute("SELECT key, value FROM meta"):
                    with contextlib.suppress(ValueError):
                        meta[key] = json.loads(value)
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


# --- writing ---------------------------------------------------------------------------


@dataclass(slots=True)
class AttemptOut:
    """An earlier, undecided attempt of a step."""

    attempt: int
    status: str
    answer: str | None
    votes: str | None
    rounds: int
    samples: int
    valid: int
    red_flags: str | None
    tokens: int
    latency_ms: float | None
    wall_ms: float | None
    error: str | None


@dataclass(slots=True)
class StepOut:
    """A step's final row, for everything that is not a plain run of simulated steps."""

    step: int
    status: str  # completed | skipped | failed
    input: str | None
    answer: str | None
    votes: str | None
    rounds: int
    samples: int
    valid: int
    red_flags: dict[str, int] | None
    tokens: int
    latency_ms: float | None
    wall_ms: float | None
    attempts: int
    correct: int | None
    error: str | None  # "<reason>: <message>" for skipped and failed steps
    reason: str | None = None  # errors-by-reason key: wrong, undecided, invalid_state, ...
    earlier: list[AttemptOut] = field(default_factory=list)
    sample_rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    runs: list[tuple[int, int, int, int]] = field(default_factory=list)  # plain steps
    # Simulated steps won by the truth, votes not unanimous: (step, rounds, samples, valid,
    # votes JSON, red flags JSON or None).
    mixed: list[tuple[int, int, int, int, str, str | None]] = field(default_factory=list)
    rows: list[StepOut] = field(default_factory=list)
    inflight: list[int] | None = None
    meta: dict[str, Any] | None = None
    deletes: list[int] = field(default_factory=list)  # failed steps to vote again
    elapsed: float | None = None  # active seconds, all sessions
    done: threading.Event | None = None  # set once this batch is committed

    def empty(self) -> bool:
        return not (self.runs or self.mixed or self.rows or self.deletes)


_CLOSE = object()


class StoreWriter:
    """The runner's single writer: a thread with its own connection that commits whatever
    batches have arrived in one transaction, then updates the tree, the totals, the
    `committed` marker file and the trace file.

    Every SQL call releases the GIL while SQLite works, but has to win it back from the
    runner's loop afterwards, so a commit is a fixed handful of statements whatever its
    size: runs of plain steps are expanded by one recursive CTE, other rows arrive as one
    JSON array (json_each), each tree level is one UPDATE."""

    def __init__(self, run_id: str, *, traces: bool = True) -> None:
        self.run_id = run_id
        self.conn = connect(db_path(run_id))
        meta = {}
        for key, value in self.conn.execute("SELECT key, value FROM meta"):
            meta[key] = json.loads(value)
        self.spec = RunSpec.from_dict(meta["spec"])
        d = meta["layout"]
        self.layout = Layout(
            d["steps"], d["fanout"], tuple(d["counts"]), tuple(d["bases"]), d["step_base"]
        )
        self.domain = self.spec.build_domain()  # the writer's own (summaries)
        self.totals: dict[str, Any] = {**new_totals(), **(meta.get("totals") or {})}
        self.committed = int(self.totals["steps_done"])
        self.commits = 0
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._rate: deque[tuple[float, int]] = deque()
        self._marker = os.open(marker_path(run_id), os.O_WRONLY | os.O_CREAT, 0o600)
        self._trace = None
        self._trace_sql = _trace_select(self.spec.keeps_samples, _RANGE_WHERE)
        self._line_head = '{"step":'
        layout = self.layout
        node = f"{layout.bases[0]} + s / {layout.fanout}" if layout.depth else str(ROOT_ID)
        self._node_sql = node
        self._fast_sql = (
            "WITH RECURSIVE r(s, z, rounds, n) AS ("
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
            "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?) "
            "UNION ALL SELECT s + 1, z, rounds, n FROM r WHERE s < z ORDER BY 1) "
            "INSERT INTO steps(step, node, status, rounds, samples, valid, attempts, correct) "
            f"SELECT s, {node}, 'completed', rounds, n, n, 1, 1 FROM r"
        )
        self._mixed_sql = (
            "INSERT INTO steps(step, node, status, rounds, samples, valid, votes, red_flags, "
            "attempts, correct) SELECT s, " + node + ", 'completed', "
            "json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
            "json_extract(value, '$[3]'), json_extract(value, '$[4]'), "
            "json_extract(value, '$[5]'), 1, 1 FROM "
            "(SELECT json_extract(value, '$[0]') AS s, value FROM json_each(?))"
        )
        cols = _STEP_COLS.split(", ")
        self._rows_sql = (
            f"INSERT INTO steps({_STEP_COLS}) SELECT "
            + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(cols)))
            + " FROM json_each(?)"
        )
        if traces and self.spec.traces:
            paths.ensure(paths.traces_dir())
            self._trace = open(trace_path(run_id), "ab")  # noqa: SIM115 (closed in close())
            self._repair_trace(meta.get("trace"))
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
        runs: list[tuple[int, int, int, int]] = []
        mixed: list[tuple[int, int, int, int, str, str | None]] = []
        rows: list[StepOut] = []
        deletes: list[int] = []
        meta: dict[str, Any] = {}
        inflight: list[int] | None = None
        elapsed: float | None = None
        for b in batches:
            runs += b.runs
            mixed += b.mixed
            rows += b.rows
            deletes += b.deletes
            if b.meta:
                meta.update(b.meta)
            if b.inflight is not None:
                inflight = b.inflight
            if b.elapsed is not None:
                elapsed = b.elapsed
        ranges = _merge_ranges(
            [(a, z) for a, z, _, _ in runs] + [(m[0], m[0]) for m in mixed] +
            [(r.step, r.step) for r in rows] + [(s, s) for s in deletes]
        )  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        if deletes:
            self._delete(deletes)
        if runs:
            conn.execute(self._fast_sql, (to_json(runs),))
            for a, z, rounds, samples in runs:
                _count_run(totals, z - a + 1, z, rounds, samples)
        if mixed:
            conn.execute(self._mixed_sql, (to_json(mixed),))
            for m in mixed:
                _count_mixed(totals, m)
        if rows:
            self._insert_rows(rows)
        if ranges:
            self._update_tree(ranges, now, runs)
        if inflight:
            self._mark_running(inflight, now)
        done = int(totals["steps_done"])
        totals["rate"] = self._rate_now(now, done)
        items: dict[str, Any] = {"totals": totals, "updated": now, "heartbeat": now, **meta}
        if inflight is not None:
            items["inflight"] = inflight
        if elapsed is not None:
            items["elapsed_s"] = elapsed
        trace = self._trace
        if trace is not None and ranges:
            items["trace"] = {"offset": trace.tell(), "ranges": ranges}
        meta_set(conn, items)
        conn.execute("COMMIT")
        self.committed = done
        self.commits += 1
        line = f"{done} {int(totals['max_step'])} {now:.3f}".ljust(63) + "\n"
        os.pwrite(self._marker, line.encode(), 0)
        if trace is not None and ranges:
            text = self._batch_trace(runs, mixed, rows)
            if text:
                trace.write(text.encode())
                trace.write(b"\n")
                trace.flush()

    def _delete(self, steps: list[int]) -> None:
        """Take failed steps back out (a resumed run votes them again)."""
        conn = self.conn
        totals = self.totals
        for step in steps:
            row = conn.execute(
                "SELECT status, rounds, samples, valid, completion_tokens, correct, error "
                "FROM steps WHERE step = ?",
                (step,),
            ).fetchone()
            if row is None:
                continue
            status, rounds, samples, valid, tokens, correct, error = row
            totals["steps_done"] -= 1
            totals[status] = totals.get(status, 0) - 1
            totals["samples"] -= samples
            totals["valid"] -= valid
            totals["tokens"] -= tokens
            if correct == 0 or status != "completed":
                totals["errors"] -= 1
                reason = "wrong" if status == "completed" else (error or "error").split(":")[0]
                by = totals["errors_by_reason"]
                by[reason] = by.get(reason, 0) - 1
                if by[reason] <= 0:
                    del by[reason]
            for name, key in (("votes_hist", valid), ("rounds_hist", rounds)):
                hist = totals[name]
                hist[str(key)] = hist.get(str(key), 0) - 1
                if hist[str(key)] <= 0:
                    del hist[str(key)]
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
            _count_row(totals, r)

    def _update_tree(
        self,
        ranges: list[list[int]],
        now: float,
        runs: list[tuple[int, int, int, int]] | None = None,
    ) -> None:
        """Recompute counters and status of every node above the steps in `ranges`, level
        by level. Level-1 blocks wholly inside one run of plain steps are set by
        arithmetic (one UPDATE for all of them); the others get their figures from their
        own step rows (a correlated subquery over a primary-key range), and each higher
        level from its children rows (one UPDATE a level)."""
        conn = self.conn
        layout = self.layout
        top = layout.depth + 1
        lo_step, hi_step = ranges[0][0], ranges[-1][1]
        if not layout.depth:
            conn.execute(_LEAF_UPDATE_RANGE, {"now": now, "lo": ROOT_ID, "hi": ROOT_ID})
            lo = hi = 0
        else:
            f = layout.fanout
            base = layout.bases[0]
            last_step = layout.steps - 1
            whole: list[list[int]] = []
            for a, z, _rounds, n in runs or ():
                b_lo = -(-a // f)
                b_hi = z // f if z == last_step else (z + 1) // f - 1
                if b_lo <= b_hi:
                    whole.append([b_lo, b_hi, n])
            touched = _merge_ranges((a // f, z // f) for a, z in ranges)
            rest = _subtract(touched, [(w[0], w[1]) for w in whole])
            if whole:
                conn.execute(
                    _LEAF_UPDATE_WHOLE,
                    {"now": now, "whole": to_json([[base + a, base + b, n] for a, b, n in whole])},
                )
            if rest:
                conn.execute(
                    _LEAF_UPDATE_LIST,
                    {
                        "now": now,
                        "ids": to_json([base + i for a, b in rest for i in range(a, b + 1)]),
                    },
                )
            lo, hi = lo_step // f, hi_step // f
        summarize_ids: list[tuple[int, int]] = []
        if top == 1 or layout.span(1) >= SUMMARY_MIN_STEPS:
            summarize_ids.append((layout.node_id(1, lo), layout.node_id(1, hi)))
        for level in range(2, top + 1):
            lo //= layout.fanout
            hi //= layout.fanout
            if level == top:
                lo = hi = 0
            lo_id, hi_id = layout.node_id(level, lo), layout.node_id(level, hi)
            conn.execute(_INNER_UPDATE, {"now": now, "lo": lo_id, "hi": hi_id})
            if level == top or layout.span(level) >= SUMMARY_MIN_STEPS:
                summarize_ids.append((lo_id, hi_id))
        if summarize_ids:
            self._summaries(summarize_ids)

    def _summaries(self, id_ranges: list[tuple[int, int]]) -> None:
        """Store the summaries of big blocks (and the root) that completed just now; the
        reader derives the small ones'."""
        conn = self.conn
        where = " OR ".join("n.id BETWEEN ? AND ?" for _ in id_ranges)
        found = conn.execute(
            "SELECT n.id, n.first_step, n.last_step, n.completed_children, n.errors, "
            "s.input, s.answer, s.correct FROM nodes AS n JOIN steps AS s "
            f"ON s.step = n.last_step WHERE ({where}) AND n.summary IS NULL "
            "AND n.status = 'completed'",
            [x for pair in id_ranges for x in pair],
        ).fetchall()
        out = []
        for node_id, first, last, done, errors, inp, ans, correct in found:
            try:
                answer = self._answer(last, inp, ans, correct)
                text = summarize(self.domain, first, last, answer, done, errors)
            except Exception as exc:  # a summary is never worth failing a run over
                text = f"steps {first + 1:,}–{last + 1:,} ({type(exc).__name__})"
            out.append((text, node_id))
        if out:
            conn.executemany("UPDATE nodes SET summary = ? WHERE id = ?", out)

    def _answer(self, step: int, inp: str | None, ans: str | None, correct: int | None) -> Any:
        domain = self.domain
        if ans is not None:
            return load_answer(domain, json.loads(ans))
        if correct == 1:
            step_obj = (
                load_step(domain, step, json.loads(inp))
                if inp is not None
                else canonical_step(domain, step)
            )
            return domain.truth(step_obj)
        return None

    def _mark_running(self, inflight: list[int], now: float) -> None:
        ids = sorted({a for s in inflight for a in self.layout.ancestors(s)})
        self.conn.execute(
            "UPDATE nodes SET status = 'running', started = coalesce(started, ?) "
            f"WHERE id IN ({', '.join('?' * len(ids))}) AND status = 'pending'",
            (now, *ids),
        )

    def _rate_now(self, now: float, done: int) -> float:
        window = self._rate
        window.append((now, done))
        while len(window) > 2 and now - window[1][0] >= 60.0:
            window.popleft()
        t0, d0 = window[0]
        if now - t0 < 0.2:
            return float(self.totals.get("rate") or 0.0)
        return max(done - d0, 0) / (now - t0)

    # --- traces ----------------------------------------------------------------------------

    def _batch_trace(
        self,
        runs: list[tuple[int, int, int, int]],
        mixed: list[tuple[int, int, int, int, str, str | None]],
        rows: list[StepOut],
    ) -> str:
        """The batch's trace lines in step order: plain and mixed simulated steps rendered
        here (the very text SQLite's json_object gives for their rows: tests check it),
        the other rows (and their earlier attempts) by SQL from the committed rows."""
        chunks: list[tuple[int, int, str]] = []
        head = self._line_head
        for a, z, rounds, n in runs:
            tail = _plain_tail(rounds, n)
            sep = tail + "\n" + head
            chunks.append((a, 0, head + sep.join(map(str, range(a, z + 1))) + tail))
        for step, rounds, n, valid, votes, flags in mixed:
            chunks.append((step, 0, f"{head}{step}" + _mixed_tail(rounds, n, valid, votes, flags)))
        if rows:
            got = self.conn.execute(
                f"SELECT json_group_array(json_array(st, at, line)) FROM ({self._trace_sql})",
                {"ranges": to_json(_merge_ranges((r.step, r.step) for r in rows))},
            ).fetchone()[0]
            chunks += [tuple(x) for x in json.loads(got or "[]")]
        if not runs:
            return "\n".join(c[2] for c in chunks)
        chunks.sort(key=lambda c: (c[0], c[1]))
        return "\n".join(c[2] for c in chunks)

    def _trace_text(self, ranges: list[list[int]]) -> str:
        """Every line of `ranges`, by SQL from the committed rows."""
        got = self.conn.execute(
            f"SELECT group_concat(line, char(10)) FROM ({self._trace_sql})",
            {"ranges": to_json(ranges)},
        ).fetchone()
        return got[0] or ""

    def _repair_trace(self, last: dict[str, Any] | None) -> None:
        """After a crash the last committed batch's lines may be missing or half written
        (they are written after its commit): cut the file back to where that batch began
        and write its lines again, from the committed rows."""
        if not last or self._trace is None:
            return
        offset = int(last.get("offset", 0))
        size = self._trace.seek(0, os.SEEK_END)
        if size < offset:
            return  # the file was cut or replaced by someone else: leave it
        self._trace.truncate(offset)
        self._trace.seek(offset)
        text = self._trace_text(last.get("ranges") or [])
        if text:
            self._trace.write(text.encode())
            self._trace.write(b"\n")
            self._trace.flush()


def _mixed_tail(rounds: int, samples: int, valid: int, votes: str, flags: str | None) -> str:
    flag_part = f',"red_flags":{flags}' if flags else ""
    return (
        f',"attempt":1,"status":"completed","rounds":{rounds},"samples":{samples},'
        f'"valid":{valid},"votes":{votes}{flag_part},"correct":1,"tokens":0}}'
    )


def _plain_tail(rounds: int, samples: int) -> str:
    """The rest of a plain simulated step's trace line after its step number."""
    return (
        f',"attempt":1,"status":"completed","rounds":{rounds},"samples":{samples},'
        f'"valid":{samples},"correct":1,"tokens":0}}'
    )


_LEAF_SET = """
UPDATE nodes SET (completed_children, failed_children, samples, tokens, errors, attempts,
                  status, error, started, finished) = (
    SELECT total(s.status = 'completed'), total(s.status <> 'completed'), total(s.samples),
           total(s.completion_tokens), total(s.correct = 0 OR s.status <> 'completed'),
           total(s.attempts),
           CASE WHEN count(*) = 0 THEN nodes.status
                WHEN total(s.status = 'failed') > 0 THEN 'failed'
                WHEN count(*) >= nodes.children THEN 'completed' ELSE 'running' END,
           max(CASE WHEN s.status = 'failed' THEN s.error END),
           CASE WHEN count(*) > 0 THEN coalesce(nodes.started, :now) ELSE nodes.started END,
           CASE WHEN count(*) >= nodes.children AND total(s.status = 'failed') = 0
                THEN coalesce(nodes.finished, :now) END
    FROM steps AS s WHERE s.step BETWEEN nodes.first_step AND nodes.last_step)
"""
_LEAF_UPDATE_RANGE = _LEAF_SET + "WHERE id BETWEEN :lo AND :hi"
_LEAF_UPDATE_LIST = _LEAF_SET + "WHERE id IN (SELECT value FROM json_each(:ids))"
# Level-1 blocks wholly inside one run of plain steps: all completed, n samples each.
_LEAF_UPDATE_WHOLE = """
UPDATE nodes SET completed_children = children, failed_children = 0,
    samples = (last_step - first_step + 1) * r.n, tokens = 0, errors = 0,
    attempts = last_step - first_step + 1, status = 'completed', error = NULL,
    started = coalesce(started, :now), finished = coalesce(finished, :now)
FROM (SELECT json_extract(value, '$[0]') AS lo, json_extract(value, '$[1]') AS hi,
             json_extract(value, '$[2]') AS n FROM json_each(:whole)) AS r
WHERE nodes.id BETWEEN r.lo AND r.hi
"""

_INNER_UPDATE = """
UPDATE nodes SET (completed_children, failed_children, samples, tokens, errors, attempts,
                  status, error, started, finished) = (
    SELECT total(c.status = 'completed'), total(c.status = 'failed'), total(c.samples),
           total(c.tokens), total(c.errors), total(c.attempts),
           CASE WHEN total(c.status = 'failed') > 0 THEN 'failed'
                WHEN total(c.status = 'completed') >= nodes.children THEN 'completed'
                WHEN total(c.status <> 'pending') > 0 THEN 'running' ELSE nodes.status END,
           max(c.error),
           CASE WHEN total(c.status <> 'pending') > 0
                THEN coalesce(nodes.started, min(c.started), :now) ELSE nodes.started END,
           CASE WHEN total(c.status = 'failed') = 0
                 AND total(c.status = 'completed') >= nodes.children
                THEN coalesce(nodes.finished, :now) END
    FROM nodes AS c WHERE c.parent = nodes.id)
WHERE id BETWEEN :lo AND :hi
"""


def _simulated_names(votes: dict[str, int]) -> bool:
    return bool(votes) and all(k == "=" or (k[:1] == "#" and k[1:].isdigit()) for k in votes)


def _subtract(ranges: list[list[int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`ranges` (sorted, disjoint) minus `holes` (sorted, disjoint), as ranges."""
    out: list[tuple[int, int]] = []
    j = 0
    for a, z in ranges:
        start = a
        while j < len(holes) and holes[j][1] < start:
            j += 1
        k = j
        while k < len(holes) and holes[k][0] <= z:
            h0, h1 = holes[k]
            if h0 > start:
                out.append((start, h0 - 1))
            start = max(start, h1 + 1)
            k += 1
        if start <= z:
            out.append((start, z))
    return out


def _merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, z in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if z > out[-1][1]:
                out[-1][1] = z
        else:
            out.append([a, z])
    return out


def _count_run(totals: dict[str, Any], n: int, last: int, rounds: int, samples: int) -> None:
    totals["steps_done"] += n
    totals["completed"] += n
    totals["samples"] += n * samples
    totals["valid"] += n * samples
    hist = totals["votes_hist"]
    key = str(samples)
    hist[key] = hist.get(key, 0) + n
    rh = totals["rounds_hist"]
    key = str(rounds)
    rh[key] = rh.get(key, 0) + n
    if last > totals["max_step"]:
        totals["max_step"] = last


def _count_mixed(totals: dict[str, Any], m: tuple[int, int, int, int, str, str | None]) -> None:
    step, rounds, samples, valid, _, flags = m
    totals["steps_done"] += 1
    totals["completed"] += 1
    totals["samples"] += samples
    totals["valid"] += valid
    hist = totals["votes_hist"]
    hist[str(valid)] = hist.get(str(valid), 0) + 1
    rh = totals["rounds_hist"]
    rh[str(rounds)] = rh.get(str(rounds), 0) + 1
    if flags:
        red = totals["red_flags"]
        for reason, n in json.loads(flags).items():
            red[reason] = red.get(reason, 0) + n
    if step > totals["max_step"]:
        totals["max_step"] = step


def _count_row(totals: dict[str, Any], r: StepOut) -> None:
    totals["steps_done"] += 1
    totals[r.status] = totals.get(r.status, 0) + 1
    totals["samples"] += r.samples
    totals["valid"] += r.valid
    totals["tokens"] += r.tokens
    hist = totals["votes_hist"]
    key = str(r.valid)
    hist[key] = hist.get(key, 0) + 1
    rh = totals["rounds_hist"]
    key = str(r.rounds)
    rh[key] = rh.get(key, 0) + 1
    if r.red_flags:
        flags = totals["red_flags"]
        for reason, n in r.red_flags.items():
            flags[reason] = flags.get(reason, 0) + n
    if r.attempts > 1:
        totals["retried"] += 1
    if r.correct == 0 or r.status != "completed":
        totals["errors"] += 1
        if r.status == "completed":
            totals["wrong"] += 1
        reason = r.reason or ("wrong" if r.status == "completed" else "error")
        by = totals["errors_by_reason"]
        by[reason] = by.get(reason, 0) + 1
    if r.step > totals["max_step"]:
        totals["max_step"] = r.step


def export_json(run_id: str, path: Path, *, steps: bool = False) -> int:
    """Write run `run_id`'s tree (and with steps=True every step) as one JSON document
    (the seed's per-node JSON snapshots, once, on demand); return the nodes written."""
    with RunStore.open(run_id) as store:
        return store.export_json(path, steps=steps)
