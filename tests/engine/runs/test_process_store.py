"""The run store: the tree's layout, the compact rows and the read API the process tree
pane and the inspect screen use, trace lines, export, ids."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.runs.store import (
    NodeRow,
    RunNotFound,
    RunStore,
    StepRow,
    list_runs,
    resolve_run_id,
)
from nanobot_tui.engine.runs.store.trace_lines import RANGE_WHERE, trace_select
from nanobot_tui.engine.runs.tree import ROOT_ID, Layout
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.samplers.seeded import SeededSimulatedSampler


def hanoi_spec(disks: int, p: float = 0.99, **kw) -> RunSpec:
    return RunSpec(
        domain="hanoi",
        params={"disks": disks},
        sampler=f"simulated:{p}",
        vote=VoteConfig(k=kw.pop("k", 3)),
        label=f"hanoi{disks}",
        **kw,
    )


@pytest.mark.parametrize(
    ("steps", "fanout", "counts"),
    [
        (1_048_575, 10, (104_858, 10_486, 1_049, 105, 11, 2)),
        (16_383, 10, (1_639, 164, 17, 2)),
        (10, 10, ()),
        (11, 10, (2,)),
        (1_000, 10, (100, 10)),
        (7, 2, (4, 2)),
    ],
)
def test_layout_is_a_consistent_tree(steps: int, fanout: int, counts: tuple[int, ...]) -> None:
    layout = Layout.build(steps, fanout)
    assert layout.counts == counts
    rows = list(layout.block_rows())
    assert [r[0] for r in rows] == list(range(1, layout.nodes + 1))  # ids top-down, dense
    assert layout.step_base == layout.nodes + 1
    by_id = {r[0]: r for r in rows}
    for node_id, parent, _kind, level, ordinal, first, last, children in rows:
        assert layout.level_of(node_id) == (level, layout.level_of(node_id)[1])
        start, count = layout.children_range(*layout.level_of(node_id))
        assert count == children
        if level > 1:  # children are the next level's consecutive ids, covering the span
            kids = [by_id[i] for i in range(start, start + count)]
            assert all(k[1] == node_id for k in kids)
            assert [k[4] for k in kids] == list(range(count))  # ordinals
            assert kids[0][5] == first and kids[-1][6] == last
        if parent is not None:
            assert by_id[parent][5] <= first <= last <= by_id[parent][6]
        assert ordinal < fanout
    for step in {0, steps // 2, steps - 1}:
        chain = layout.ancestors(step)
        assert chain[-1] == ROOT_ID and chain[0] == layout.leaf_of(step)
        assert all(by_id[i][5] <= step <= by_id[i][6] for i in chain)
    assert len(layout.ancestors(0)) == len(counts) + 1  # depth ≈ log_F(steps)


async def finished_run(disks: int = 8, **kw) -> str:
    rid = await start_run(hanoi_spec(disks, **kw))
    status = await execute(rid)
    assert status.status == "completed", status.reason
    return rid


async def test_read_api_of_a_finished_run() -> None:
    rid = await finished_run(8, p=0.9)  # p = 0.9: plenty of non-unanimous and wrong votes
    h = Hanoi(8)
    with RunStore.open(rid, readonly=True) as store:
        st = store.status()
        assert st.status == "completed" and st.steps_done == st.steps_total == 255
        assert st.pid is None and st.rate == 0.0 and st.eta_s == 0.0
        assert st.nodes["completed"] == st.nodes["completed"] and st.nodes["pending"] == 0
        assert sum(st.votes["histogram"].values()) == 255 and st.votes["min"] >= 3
        root = store.root()
        assert isinstance(root, NodeRow) and root.kind == "root" and root.parent is None
        assert root.status == "completed" and root.completed_children == root.children
        assert (root.first_step, root.last_step) == (0, 254)
        assert root.samples == st.samples and root.errors == st.errors
        assert root.summary and "moves 1–255" in root.summary
        # Down to the steps, by pages.
        top = store.children(root.id)
        assert [c.ordinal for c in top] == list(range(root.children))
        assert sum(c.samples for c in top) == root.samples
        block = store.children(top[0].id)[0]
        assert block.kind == "block" and block.summary  # small blocks: derived on read
        steps = store.children(block.id, offset=2, limit=3)
        assert [s.first_step for s in steps] == [2, 3, 4]
        assert all(s.kind == "step" and s.status == "completed" for s in steps)
        node = store.node(steps[0].id)
        assert node == steps[0] and node.step == 2
        # Every step expands to its input, answer, votes and verdict.
        for i, step in enumerate(h.steps()):
            row = store.step(i)
            assert isinstance(row, StepRow) and row.step == i
            assert h.load_step(i, row.input) == step
            assert sum(row.votes.values()) == row.valid and row.rounds >= 1
            if row.correct:
                assert h.load_answer(row.answer) == h.truth(step)
                assert row.winner in row.votes
            else:
                assert row.answer is not None and h.load_answer(row.answer) != h.truth(step)
        assert store.samples(3) == []  # simulated runs keep votes, not samples
        with pytest.raises(store_mod.StoreError):
            store.step(255)


PLAIN = {"step", "attempt", "status", "rounds", "samples", "valid", "correct", "tokens"}


async def test_trace_file_matches_the_store_line_for_line() -> None:
    """The writer renders plain steps' lines itself; they must be the very text SQLite
    renders from the committed rows (which is what a crash repair writes)."""
    rid = await finished_run(9, p=0.8, red_flag_rate=0.05)
    lines = store_mod.trace_path(rid).read_text().splitlines()
    assert len(lines) == 511
    with RunStore.open(rid) as store:
        from_sql = store.conn.execute(
            f"SELECT line FROM ({trace_select(False, RANGE_WHERE)})",
            {"ranges": "[[0, 510]]"},
        ).fetchall()
        assert [r[0] for r in from_sql] == lines
        records = [json.loads(line) for line in lines]
        assert [r["step"] for r in records] == list(range(511))
        assert {r["status"] for r in records} == {"completed"}
        assert any("votes" in r for r in records) and any("red_flags" in r for r in records)
        assert any(set(r) == PLAIN for r in records)  # plain steps: no null fields
        assert store.trace_lines(7, 5) == [records[7]]
        root_tail = store.trace_lines(node=ROOT_ID, limit=4)
        assert root_tail == records[-4:]


async def test_compact_rows_on_disk() -> None:
    """Plain simulated steps are stored as a few integers; the read API restores them."""
    rid = await finished_run(10)
    conn = sqlite3.connect(store_mod.db_path(rid))
    plain = conn.execute(
        "SELECT count(*) FROM steps WHERE input IS NULL AND answer IS NULL AND votes IS NULL"
    ).fetchone()[0]
    total = conn.execute("SELECT count(*), min(step), max(step) FROM steps").fetchone()
    assert total == (1023, 0, 1022)
    assert plain > 900  # p = 0.99, k = 3: ~97 % unanimous
    conn.close()


async def test_ids_by_prefix_and_list_runs() -> None:
    a = await start_run(hanoi_spec(3))
    b = await start_run(hanoi_spec(4))
    assert resolve_run_id(a) == a and resolve_run_id(b[:-1]) == b
    with pytest.raises(RunNotFound, match="no run"):
        resolve_run_id("nope")
    with pytest.raises(RunNotFound, match="ambiguous"):
        resolve_run_id(a[:4])
    runs = {r["id"]: r for r in list_runs()}
    assert runs[a]["status"] == "stopped" and runs[a]["steps_total"] == 7
    assert runs[b]["steps_done"] == 0
    await execute(a)
    assert {r["id"]: r for r in list_runs()}[a]["status"] == "completed"


async def test_a_dead_runners_running_status_reads_stopped() -> None:
    rid = await start_run(hanoi_spec(5))
    conn = store_mod.connect(store_mod.db_path(rid))
    store_mod.meta_set(conn, {"status": "running", "runner": {"pid": 999_999, "created": 1.0}})
    conn.close()
    with RunStore.open(rid) as store:
        st = store.status()
    assert st.status == "stopped" and "resume" in (st.reason or "") and st.pid is None


async def test_export_json(tmp_path: Path) -> None:
    rid = await finished_run(6)
    out = tmp_path / "tree.json"
    with RunStore.open(rid) as store:
        n = store.export_json(out, steps=True)
    doc = json.loads(out.read_text())
    assert n == len(doc["nodes"]) == Layout.build(63, 10).nodes
    assert doc["status"]["status"] == "completed" and len(doc["steps"]) == 63


class SlowSampler(SeededSimulatedSampler):
    """The simulated sampler, taking a millisecond a round (as if it waited on a model)."""

    async def sample(self, step, temperatures, paraphrase=0):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.001)
        return await super().sample(step, temperatures, paraphrase)


async def test_readers_see_a_run_while_it_is_written() -> None:
    """A read-only connection reads a consistent run while the runner writes."""
    rid = await start_run(hanoi_spec(9))
    h = Hanoi(9)
    task = asyncio.create_task(execute(rid, sampler=SlowSampler(h, 0.99, seed=0)))
    seen = []
    while not task.done():
        await asyncio.sleep(0.03)
        with RunStore.open(rid) as store:
            st = store.status()
            root = store.root()
            seen.append((st.steps_done, root.completed_children, st.status))
            assert st.steps_done <= st.steps_total
    assert (await task).status == "completed"
    assert any(s[2] == "running" and 0 < s[0] < 511 for s in seen)
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)  # never goes back


def test_the_process_engine_never_imports_textual() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import nanobot_tui.engine.runs, nanobot_tui.engine.runs.worker\n"
        "import nanobot_tui.cli.runs\n"
        "print(any(m == 'textual' or m.startswith('textual.') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
