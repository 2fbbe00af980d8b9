"""Keeping a run's tree up to date: after each commit, the counters, status and timings
of every block above the steps it wrote are recomputed by SQL from the rows below them,
a fixed handful of statements whatever the batch's size, and the summaries of big blocks
that just completed are stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from nanobot_tui.engine.runs.store.db import SUMMARY_MIN_STEPS, to_json
from nanobot_tui.engine.runs.store.rows import row_answer
from nanobot_tui.engine.runs.tree import ROOT_ID, Layout, summarize
from nanobot_tui.engine.voting.domains import Domain

PlainRun = tuple[int, int, int, int]  # first step, last step, rounds, samples


def update_tree(
    conn: sqlite3.Connection,
    layout: Layout,
    domain: Domain,
    ranges: list[list[int]],
    now: float,
    runs: list[PlainRun],
) -> None:
    """Recompute counters and status of every node above the steps in `ranges` (sorted,
    disjoint), level by level, then store the summaries of the big ones."""
    top = layout.depth + 1
    lo, hi = _update_leaves(conn, layout, ranges, now, runs)
    summarize_ids: list[tuple[int, int]] = []
    if top == 1 or layout.span(1) >= SUMMARY_MIN_STEPS:
        summarize_ids.append((layout.node_id(1, lo), layout.node_id(1, hi)))
    for level in range(2, top + 1):
        lo //= layout.fanout
        hi //= layout.fanout
        if level == top:
            lo = hi = 0
        lo_id, hi_id = layout.node_id(level, lo), layout.node_id(level, hi)
        conn.execute(INNER_UPDATE, {"now": now, "lo": lo_id, "hi": hi_id})
        if level == top or layout.span(level) >= SUMMARY_MIN_STEPS:
            summarize_ids.append((lo_id, hi_id))
    if summarize_ids:
        store_summaries(conn, layout, domain, summarize_ids)


def _update_leaves(
    conn: sqlite3.Connection,
    layout: Layout,
    ranges: list[list[int]],
    now: float,
    runs: list[PlainRun],
) -> tuple[int, int]:
    """The level-1 blocks (or the root of a one-level tree) over `ranges`; returns the
    first and last level-1 block index touched. Blocks wholly inside one run of plain
    steps are set by arithmetic (one UPDATE for all of them); the others get their
    figures from their own step rows (a correlated subquery over a primary-key range)."""
    if not layout.depth:
        conn.execute(LEAF_UPDATE_RANGE, {"now": now, "lo": ROOT_ID, "hi": ROOT_ID})
        return 0, 0
    leaf = layout.leaf_index
    base = layout.bases[0]
    whole: list[list[int]] = []
    for a, z, _rounds, n in runs:
        b_lo, b_hi = layout.leaves_within(a, z)
        if b_lo <= b_hi:
            whole.append([b_lo, b_hi, n])
    touched = merge_ranges((leaf(a), leaf(z)) for a, z in ranges)
    rest = subtract(touched, [(w[0], w[1]) for w in whole])
    if whole:
        conn.execute(
            LEAF_UPDATE_WHOLE,
            {"now": now, "whole": to_json([[base + a, base + b, n] for a, b, n in whole])},
        )
    if rest:
        ids = [base + i for a, b in rest for i in range(a, b + 1)]
        conn.execute(LEAF_UPDATE_LIST, {"now": now, "ids": to_json(ids)})
    return leaf(ranges[0][0]), leaf(ranges[-1][1])


def store_summaries(
    conn: sqlite3.Connection, layout: Layout, domain: Domain, id_ranges: list[tuple[int, int]]
) -> None:
    """Store the summaries of big blocks (and the root) that completed just now; the
    reader derives the small ones'."""
    where = " OR ".join("n.id BETWEEN ? AND ?" for _ in id_ranges)
    found = conn.execute(
        "SELECT n.id, n.first_step, n.last_step, n.completed_children, n.errors, "
        "n.children, s.input, s.answer, s.correct FROM nodes AS n JOIN steps AS s "
        f"ON s.step = n.last_step WHERE ({where}) AND n.summary IS NULL "
        "AND n.status = 'completed'",
        [x for pair in id_ranges for x in pair],
    ).fetchall()
    out = []
    for node_id, first, last, done, errors, children, inp, ans, correct in found:
        label = layout.label_of(node_id)
        try:
            answer = row_answer(domain, last, inp, ans, correct)
            text = summarize(
                domain, first, last, answer, done, errors, label=label, children=children
            )
        except Exception as exc:  # a summary is never worth failing a run over
            text = f"steps {first + 1:,}–{last + 1:,} ({type(exc).__name__})"
        out.append((text, node_id))
    if out:
        conn.executemany("UPDATE nodes SET summary = ? WHERE id = ?", out)


def mark_running(conn: sqlite3.Connection, layout: Layout, inflight: list[int], now: float) -> None:
    """The blocks above the steps in flight: running (where they were pending)."""
    ids = sorted({a for s in inflight for a in layout.ancestors(s)})
    conn.execute(
        "UPDATE nodes SET status = 'running', started = coalesce(started, ?) "
        f"WHERE id IN ({', '.join('?' * len(ids))}) AND status = 'pending'",
        (now, *ids),
    )


def subtract(ranges: list[list[int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
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


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, z in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if z > out[-1][1]:
                out[-1][1] = z
        else:
            out.append([a, z])
    return out


LEAF_SET = """
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
LEAF_UPDATE_RANGE = LEAF_SET + "WHERE id BETWEEN :lo AND :hi"
LEAF_UPDATE_LIST = LEAF_SET + "WHERE id IN (SELECT value FROM json_each(:ids))"
# Level-1 blocks wholly inside one run of plain steps: all completed, n samples each.
LEAF_UPDATE_WHOLE = """
UPDATE nodes SET completed_children = children, failed_children = 0,
    samples = (last_step - first_step + 1) * r.n, tokens = 0, errors = 0,
    attempts = last_step - first_step + 1, status = 'completed', error = NULL,
    started = coalesce(started, :now), finished = coalesce(finished, :now)
FROM (SELECT json_extract(value, '$[0]') AS lo, json_extract(value, '$[1]') AS hi,
             json_extract(value, '$[2]') AS n FROM json_each(:whole)) AS r
WHERE nodes.id BETWEEN r.lo AND r.hi
"""

INNER_UPDATE = """
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
