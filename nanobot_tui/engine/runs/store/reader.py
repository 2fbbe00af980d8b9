"""Reading a run's store: `RunStore.open(id)`, a read-only connection that is safe
while the runner writes. The tree (root, blocks, and step nodes synthesised from the
step rows), steps with their compact forms expanded, samples, trace lines and the JSON
export."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.runs.store.db import (
    NODE_COLS,
    NODE_STATUSES,
    STEP_COLS,
    StoreError,
    check_intact,
    connect,
    load_layout,
    read_meta,
    to_json,
)
from nanobot_tui.engine.runs.store.places import db_path, resolve_run_id
from nanobot_tui.engine.runs.store.rows import (
    NodeRow,
    SampleRow,
    StepRow,
    describe,
    row_answer,
    row_input,
    with_summary,
)
from nanobot_tui.engine.runs.store.status import (
    RunStatus,
    committed_mark,
    pid_alive,
    status_from_meta,
)
from nanobot_tui.engine.runs.store.trace_lines import RANGE_WHERE, trace_select
from nanobot_tui.engine.runs.tree import ROOT_ID, Layout, summarize
from nanobot_tui.engine.voting.domains import Domain, Step


class RunStore:
    """A run's store, opened for reading (`RunStore.open(id, readonly=True)`); the
    runner's writes go through `StoreWriter`."""

    def __init__(self, run_id: str, conn: sqlite3.Connection, readonly: bool) -> None:
        self.run_id = run_id
        self.conn = conn
        self.readonly = readonly
        self._meta: dict[str, Any] | None = None
        self._domain: Domain | None = None
        self._spec: RunSpec | None = None
        self._layout: Layout | None = None

    @classmethod
    def open(cls, run_id: str, readonly: bool = True, *, locked: bool = False) -> RunStore:
        """Open a run by id (or unique id prefix); RunNotFound if there is none,
        StoreDamaged if its file is truncated (`locked`: this process holds the run)."""
        rid = resolve_run_id(run_id)
        path = db_path(rid)
        check_intact(rid, path, locked=locked)
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
        self._meta = read_meta(self.conn)
        return self._meta

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
            try:
                self._layout = load_layout(self.conn, self._static()["layout"])
            except StoreError as exc:
                raise StoreError(
                    f"run {self.run_id}: {exc}; `nanobot runs recover {self.run_id}` rebuilds it"
                ) from None
        return self._layout

    @property
    def domain(self) -> Domain:
        if self._domain is None:
            self._domain = self.spec.build_domain()
        return self._domain

    # --- status --------------------------------------------------------------------------

    def status(self) -> RunStatus:
        mark = committed_mark(self.run_id)  # first: see committed_mark
        meta = self.meta()
        return status_from_meta(self.run_id, meta, self._node_counts(meta), mark)

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
            f"SELECT {NODE_COLS} FROM nodes WHERE id = ?", (node_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"run {self.run_id}: no node {node_id}")
        return self._with_summary(self._labelled(NodeRow(*row)))

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
            f"SELECT {NODE_COLS} FROM nodes WHERE id BETWEEN ? AND ? ORDER BY id", (lo, hi)
        ).fetchall()
        return [self._with_summary(self._labelled(NodeRow(*r))) for r in rows]

    def _labelled(self, row: NodeRow) -> NodeRow:
        """A grouped run's block with its label (its group's, or its first and last)."""
        label = self.layout.label_of(row.id)
        return row if label is None else replace(row, label=label)

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
                row.completed_children, row.errors, label=row.label, children=row.children,
            )  # fmt: skip
        except Exception:
            return row
        return with_summary(row, text)

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
            ordinal = layout.ordinal_of(step)
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

    def _answer_object(self, step: int) -> Any:
        row = self.conn.execute(
            "SELECT input, answer, correct FROM steps WHERE step = ?", (step,)
        ).fetchone()
        if row is None:
            return None
        return row_answer(self.domain, step, *row)

    def answers(self) -> Iterator[tuple[int, Any]]:
        """(step, answer) of every completed step with a winner, in step order (a
        simulated step that won with the truth comes back with the truth)."""
        rows = self.conn.execute(
            "SELECT step, input, answer, correct FROM steps WHERE status = 'completed' "
            "ORDER BY step"
        )
        domain = self.domain
        for step, inp, ans, correct in rows:
            answer = row_answer(domain, step, inp, ans, correct)
            if answer is not None:
                yield step, answer

    def step(self, step: int) -> StepRow:
        """One step with everything about it (input, answer, votes, red flags), with the
        compact forms expanded. A step not done yet comes back with status pending or
        running and only its input."""
        domain = self.domain
        layout = self.layout
        if not 0 <= step < layout.steps:
            raise StoreError(f"run {self.run_id}: no step {step + 1} (it has {layout.steps:,})")
        row = self.conn.execute(f"SELECT {STEP_COLS} FROM steps WHERE step = ?", (step,)).fetchone()
        if row is None:
            inflight = set(self._static().get("inflight") or [])
            data = None
            if self._storage().get("canonical_inputs") or domain.independent_steps:
                data = domain.dump_step(domain.step_at(step))
            status = "running" if step in inflight else "pending"
            return StepRow(step, layout.leaf_of(step), status, data, None, {}, 0, 0, 0, {}, 0,
                           None, None, 0, None, None)  # fmt: skip
        (_, node, status, inp, ans, votes, rounds, samples, valid, flags, tokens, latency,
         wall, attempts, correct, error) = row  # fmt: skip
        step_obj = row_input(domain, step, inp)
        input_data = json.loads(inp) if inp is not None else domain.dump_step(step_obj)
        answer_obj = None
        if ans is not None:
            answer_data = json.loads(ans)
            with contextlib.suppress(Exception):
                answer_obj = domain.load_answer(answer_data)
        elif correct == 1:
            answer_obj = domain.truth(step_obj)
            answer_data = domain.dump_answer(answer_obj)
        else:
            answer_data = None
        winner = None
        if answer_obj is not None:
            with contextlib.suppress(Exception):
                winner = describe(domain, domain.key(answer_obj))
        if votes is not None:
            vote_map = {str(k): int(v) for k, v in json.loads(votes).items()}
            if self._storage().get("canonical_inputs") and simulated_names(vote_map):
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
        sql = trace_select(self.spec.keeps_samples, RANGE_WHERE)
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
            dict(zip(NODE_COLS.split(", "), r, strict=True))
            for r in self.conn.execute(f"SELECT {NODE_COLS} FROM nodes ORDER BY id")
        ]
        if self.layout.is_grouped:
            for node in nodes:
                node["label"] = self.layout.label_of(node["id"])
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


def simulated_names(votes: dict[str, int]) -> bool:
    return bool(votes) and all(k == "=" or (k[:1] == "#" and k[1:].isdigit()) for k in votes)
