"""A run tree grouped by the domain's groups (a code run's files): the layout's
invariants for any group sizes, the arithmetic layout unchanged, and a durable run of a
grouped toy domain created, interrupted, resumed and read back with its groups' labels;
a run.db from before grouped layouts still opens and resumes."""

from __future__ import annotations

import itertools
import json
import os
import random
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from nanobot_tui.engine.runs import spec as spec_mod
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.recover import recover_run
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import RunStore, StoreError, db_path
from nanobot_tui.engine.runs.store.db import connect, read_meta
from nanobot_tui.engine.runs.tree import ROOT_ID, Layout, groups_of, summarize
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains import registry
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.domains.wordcase import WordCase

# --- the layout ------------------------------------------------------------------------


def check_tree(layout: Layout) -> None:
    """Every invariant a layout keeps, checked against its own block rows."""
    rows = list(layout.block_rows())
    ids = [r[0] for r in rows]
    assert ids == list(range(ROOT_ID, layout.nodes + 1))  # unique, consecutive, top-down
    assert layout.step_base == layout.nodes + 1
    by_id = {r[0]: r for r in rows}
    steps_under: list[int] = []
    for node_id, parent, kind, level, ordinal, first, last, children in rows:
        assert layout.level_of(node_id)[0] == level
        assert layout.steps_of(*layout.level_of(node_id)) == (first, last)
        start, count = layout.children_range(*layout.level_of(node_id))
        assert count == children >= 1 and ordinal < layout.fanout
        if level == 1 or (kind == "root" and not layout.depth):  # children: the steps
            assert (start, count) == (layout.step_base + first, last - first + 1)
            steps_under += range(first, last + 1)
        else:  # children: the next level's consecutive ids, in order, covering the span
            kids = [by_id[i] for i in range(start, start + count)]
            assert [k[1] for k in kids] == [node_id] * count
            assert [k[4] for k in kids] == list(range(count))
            assert kids[0][5] == first and kids[-1][6] == last
            assert all(a[6] + 1 == b[5] for a, b in itertools.pairwise(kids))
        if parent is not None:
            assert by_id[parent][5] <= first <= last <= by_id[parent][6]
    assert steps_under == list(range(layout.steps))  # the leaves partition the steps
    assert by_id[ROOT_ID][3] == layout.depth + 1 and layout.counts[-1:] <= (layout.fanout,)
    for step in range(layout.steps):
        chain = layout.ancestors(step)
        assert chain[0] == layout.leaf_of(step) and chain[-1] == ROOT_ID
        assert all(by_id[a][1] == b for a, b in itertools.pairwise(chain))
        assert all(by_id[i][5] <= step <= by_id[i][6] for i in chain)
        leaf = by_id[chain[0]]
        assert layout.ordinal_of(step) == step - leaf[5]
        assert layout.level_of(layout.step_base + step) == (0, step)


def random_groups(rng: random.Random, n: int) -> list[tuple[str, int]]:
    sizes = [rng.choice([1, 1, 2, 3, 5, 8, 13, 40]) for _ in range(n)]
    return [(f"pkg/mod_{i}.py", size) for i, size in enumerate(sizes)]


@pytest.mark.parametrize("seed", range(12))
def test_grouped_layout_invariants_for_random_group_sizes(seed: int) -> None:
    rng = random.Random(seed)
    fanout = rng.choice([2, 3, 10])
    groups = random_groups(rng, rng.choice([1, 2, fanout, fanout + 1, 37, 120]))
    layout = Layout.grouped(groups, fanout)
    assert layout.is_grouped and layout.steps == sum(n for _, n in groups)
    assert layout.counts[0] == len(groups) and layout.depth >= 1
    check_tree(layout)
    # Level 1 is the groups, labelled, in order; nothing else has a label.
    level1 = [r for r in layout.block_rows() if r[3] == 1]
    assert [(layout.label_of(r[0]), r[7]) for r in level1] == groups
    assert layout.label_of(ROOT_ID) is None and layout.label_of(layout.step_base) is None
    # A block above the groups is named by its first and last group.
    for node_id, _, _, level, _, first, last, _ in layout.block_rows():
        if 1 < level <= layout.depth:
            a, z = groups[layout.leaf_index(first)][0], groups[layout.leaf_index(last)][0]
            assert layout.label_of(node_id) == (a if a == z else f"{a} … {z}")
    # Blocks wholly inside a range of steps: exactly the groups it covers whole.
    for _ in range(20):
        a = rng.randrange(layout.steps)
        z = rng.randrange(a, layout.steps)
        lo, hi = layout.leaves_within(a, z)
        inside = [i for i, r in enumerate(level1) if a <= r[5] and r[6] <= z]
        assert list(range(lo, hi + 1)) == inside
    # JSON round trips, with the groups inline or (as the store keeps them) counted.
    assert Layout.from_dict(layout.to_dict()) == layout
    assert layout.to_dict(groups=False)["groups"] == len(groups)
    with pytest.raises(ValueError, match="kept apart"):
        Layout.from_dict(layout.to_dict(groups=False))


@pytest.mark.parametrize(("steps", "fanout"), [(1, 10), (10, 10), (11, 10), (7, 2), (1000, 10)])
def test_the_arithmetic_layout_is_unchanged(steps: int, fanout: int) -> None:
    layout = Layout.build(steps, fanout)
    check_tree(layout)
    assert not layout.is_grouped and layout.label_of(ROOT_ID) is None
    # A run's stored layout from before grouped layouts: the same keys, the same tree.
    old = {"steps": steps, "fanout": fanout, "counts": list(layout.counts),
           "bases": list(layout.bases), "step_base": layout.step_base}  # fmt: skip
    assert layout.to_dict() == old and Layout.from_dict(old) == layout
    for step in range(steps):  # blocks of `fanout` consecutive steps, as always
        assert layout.leaf_of(step) == (
            layout.bases[0] + step // fanout if layout.depth else ROOT_ID
        )


def test_fixed_ids_of_the_arithmetic_layout() -> None:
    """The ids a 1,000-step run at fan-out 10 has always had (stored runs hold them)."""
    layout = Layout.build(1000, 10)
    assert (layout.counts, layout.bases, layout.step_base) == ((100, 10), (12, 2), 112)
    assert layout.ancestors(999) == [111, 11, ROOT_ID]
    assert layout.children_range(2, 3) == (42, 10) and layout.steps_of(2, 3) == (300, 399)


def test_bad_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="needs one"):
        Layout.grouped([("a.py", 2), ("b.py", 0)], 10)
    with pytest.raises(ValueError, match="at least one group"):
        Layout.grouped([], 10)


def test_a_groups_summary_names_its_label() -> None:
    text = summarize(WordCase(count=3), 4, 9, None, 7, 0, label="nanobot_tui/x.py", children=9)
    assert text == "nanobot_tui/x.py: 7 of 9 done"
    assert summarize(WordCase(count=3), 0, 9, None, 9, 2) == "steps 1–10: 9 done (2 errors)"
    assert groups_of(Hanoi(3)) is None and groups_of(WordCase(count=3)) is None


# --- a grouped toy domain, run durably ----------------------------------------------------

GROUPS = [("pkg/a.py", 3), ("pkg/b.py", 12), ("pkg/sub/c.py", 1), ("pkg/sub/d.py", 5),
          ("pkg/e.py", 2), ("pkg/f.py", 4), ("pkg/sub/g.py", 7)]  # fmt: skip


class GroupedWords(WordCase):
    """Test-only: word case whose words come in groups, as a code run's functions come
    in files."""

    def __init__(self, groups: list[tuple[str, int]]) -> None:
        super().__init__(count=sum(n for _, n in groups), seed=7)
        self._groups = groups

    def groups(self) -> list[tuple[str, int]] | None:
        return list(self._groups)


class GroupedHanoi(Hanoi):
    """Test-only: Hanoi's moves in groups (steps strictly in order, runs of plain steps)."""

    def groups(self) -> list[tuple[str, int]] | None:
        return [(f"moves/{i}", n) for i, n in enumerate([1, 9, 20, 3, 30])]


def _grouped_words(params: registry.Params) -> Any:
    return GroupedWords([(str(a), int(b)) for a, b in params["groups"]])


@pytest.fixture
def grouped_domains(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The toy domains, registered for this test only."""
    kinds = {
        "grouped-words": registry.DomainKind(
            "grouped-words", (), _grouped_words, lambda p: "grouped-words"
        ),
        "grouped-hanoi": registry.DomainKind(
            "grouped-hanoi", (), lambda p: GroupedHanoi(6), lambda p: "grouped-hanoi"
        ),
    }
    monkeypatch.setattr(registry, "DOMAINS", {**registry.DOMAINS, **kinds})
    monkeypatch.setattr(spec_mod, "NAMES", (*spec_mod.NAMES, *kinds))
    yield


def grouped_spec(domain: str, **kw: Any) -> RunSpec:
    params = {"groups": GROUPS} if domain == "grouped-words" else {}
    return RunSpec(domain, params, "simulated:0.9", VoteConfig(k=2), seed=3, label=domain, **kw)


def tree_of(store: RunStore) -> list[tuple[int, str | None, str | None, int]]:
    """(level, label, summary, children) of every block, top-down and in order."""
    out = []
    todo = [store.root()]
    while todo:
        node = todo.pop(0)
        out.append((node.level, node.label, node.summary, node.children))
        if node.level > 1:
            todo += store.children(node.id)
    return out


@pytest.mark.parametrize(("domain", "fanout"), [("grouped-words", 3), ("grouped-hanoi", 2)])
async def test_a_grouped_run_interrupted_resumed_and_read_back(
    grouped_domains: None, domain: str, fanout: int
) -> None:
    spec = grouped_spec(domain, fanout=fanout)
    groups = groups_of(spec.build_domain())
    assert groups is not None
    total = sum(n for _, n in groups)
    rid = await start_run(spec)
    with RunStore.open(rid) as store:
        meta = store.meta()
        assert meta["layout"]["groups"] == len(groups)  # the labels are not in meta
        layout = store.layout
        assert layout.is_grouped and list(layout.labels) == [g for g, _ in groups]
    # Interrupted by a budget part-way, in the middle of a group, then resumed.
    stopped = await execute(rid, budgets=Budgets(steps=total // 2))
    assert stopped.status == "stopped" and 0 < stopped.steps_done < total
    with RunStore.open(rid) as store:
        level1 = [n for n in (store.node(i) for i in range(2, store.layout.step_base))
                  if n.level == 1]  # fmt: skip
        assert [n.label for n in level1] == [g for g, _ in groups]
        assert {n.status for n in level1} >= {"completed", "pending"}
    done = await execute(rid)
    assert done.status == "completed" and done.steps_done == total
    with RunStore.open(rid) as store:
        layout = store.layout
        blocks = tree_of(store)
        files = [b for b in blocks if b[0] == 1]
        assert [(label, n) for _, label, _, n in files] == groups
        for (_, label, summary, _), (_, size) in zip(files, groups, strict=True):
            assert summary is not None and summary.startswith(f"{label}: ")
            assert f" of {size} done" in summary
        # Higher levels group the groups `fanout` at a time, named by their first and
        # last group, up to the root.
        assert blocks[0][1] is None
        names = {g for g, _ in groups}
        for level, label, _, _ in blocks[1:]:
            ends = str(label).split(" … ")
            assert level == 1 or (len(ends) <= 2 and set(ends) <= names)
        if domain == "grouped-words":  # 7 files, 3 at a time
            assert [label for level, label, _, _ in blocks if level == 2] == [
                "pkg/a.py … pkg/sub/c.py", "pkg/sub/d.py … pkg/f.py", "pkg/sub/g.py",
            ]  # fmt: skip
        assert blocks[0][3] <= fanout and len(files) == len(groups)
        # Every step sits under its group, in order; its row names that group's block.
        first = 0
        for index, (group, size) in enumerate(groups):
            leaf = layout.node_id(1, index)
            kids = store.children(leaf)
            assert [k.first_step for k in kids] == list(range(first, first + size))
            assert [k.ordinal for k in kids] == list(range(size))
            assert all(k.parent == leaf and k.status == "completed" for k in kids)
            assert store.step(first + size - 1).node == leaf
            assert store.node(leaf).label == group
            first += size
        root = store.root()
        assert root.completed_children == root.children and root.status == "completed"
        assert store.trace_lines(node=layout.node_id(1, 1), limit=100)
    doc_path = db_path(rid).with_name("tree.json")
    with RunStore.open(rid) as store:
        store.export_json(doc_path)
    labels = [n.get("label") for n in json.loads(doc_path.read_text())["nodes"] if n["level"] == 1]
    assert labels == [g for g, _ in groups]


async def test_a_run_db_from_before_grouped_layouts_opens_and_resumes() -> None:
    """An old run.db: its meta layout without groups, and no step_groups table."""
    spec = RunSpec("hanoi", {"disks": 6}, "simulated:0.95", VoteConfig(k=2), seed=1,
                   label="hanoi6")  # fmt: skip
    rid = await start_run(spec)
    await execute(rid, budgets=Budgets(steps=20))
    conn = connect(db_path(rid))
    try:
        meta = read_meta(conn)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "step_groups" not in tables  # only grouped runs have it
        assert set(meta["layout"]) == {"steps", "fanout", "counts", "bases", "step_base"}
    finally:
        conn.close()
    with RunStore.open(rid) as store:
        assert store.layout == Layout.build(63, 10) and not store.layout.is_grouped
        assert store.root().label is None
        top = store.children(ROOT_ID)
        assert [(n.first_step, n.last_step) for n in top] == [
            (i * 10, min(i * 10 + 9, 62)) for i in range(7)
        ]
        assert top[0].summary and top[0].summary.startswith("moves 1–10")
    done = await execute(rid)
    assert done.status == "completed" and done.steps_done == 63
    with sqlite3.connect(db_path(rid)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "step_groups" not in tables  # opened and resumed as it was


@pytest.mark.parametrize("share", [0.9, 0.5])
async def test_a_damaged_grouped_store_is_recovered_with_its_groups(
    grouped_domains: None, share: float
) -> None:
    groups = random_groups(random.Random(5), 200)
    spec = RunSpec("grouped-words", {"groups": groups}, "simulated:0.9", VoteConfig(k=2),
                   seed=3, label="grouped-words", keep_samples=True)  # fmt: skip
    rid = await start_run(spec)
    await execute(rid, budgets=Budgets(steps=sum(n for _, n in groups) // 2))
    path = db_path(rid)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.truncate(path, int(path.stat().st_size * share))
    got = recover_run(rid)
    assert got.recovered > 0
    with RunStore.open(rid) as store:
        layout = store.layout
        assert layout == Layout.grouped(groups, spec.fanout)
        assert [store.node(layout.node_id(1, i)).label for i in (0, 199)] == [
            groups[0][0],
            groups[199][0],
        ]
    done = await execute(rid)
    assert done.status == "completed" and done.steps_done == layout.steps


async def test_a_grouped_store_whose_groups_are_lost_takes_them_from_its_domain(
    grouped_domains: None,
) -> None:
    spec = grouped_spec("grouped-words")
    rid = await start_run(spec)
    await execute(rid, budgets=Budgets(steps=10))
    path = db_path(rid)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'step_groups'"
        ).fetchone()[0]
    with open(path, "r+b") as f:  # the groups' page overwritten: garbage, not a b-tree
        f.seek((root - 1) * page)
        f.write(b"\xff" * page)
    with RunStore.open(rid) as store, pytest.raises(StoreError, match="runs recover"):
        store.layout  # noqa: B018 - reading it is the point
    assert recover_run(rid).recovered == 10
    with RunStore.open(rid) as store:
        assert list(store.layout.labels) == [g for g, _ in GROUPS]
    done = await execute(rid)
    assert done.status == "completed"
