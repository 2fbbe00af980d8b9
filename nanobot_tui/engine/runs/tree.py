"""The shape of a run's process tree: steps grouped into blocks of `fanout`, level by level.

A run of N steps with fan-out F is a tree of depth about log_F(N): a level-1 block holds
F consecutive steps, a level-2 block F level-1 blocks (F^2 steps), and so on until at
most F blocks are left; those are the root's children (for N <= F the root holds the
steps itself). Blocks are aligned: level-j block b covers steps [b F^j, (b+1) F^j), so a
block reads "moves 1,000-1,999", never an odd slice.

Everything about the layout is arithmetic, so nothing has to be looked up to place a
step: ids are numbered top-down, level by level (root = 1, then the top level's blocks,
..., then the level-1 blocks), and a step's own node id is `step_base + step`. The
store creates the block rows up front (measured: 116,510 rows for a 20-disk Hanoi run in
about 0.3 s) and synthesises step nodes from the `steps` table when read, so a million
steps cost no extra rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nanobot_tui.engine.voting.domains import Domain
from nanobot_tui.engine.voting.domains.hanoi import Hanoi, HanoiAnswer, state_text

ROOT_ID = 1


@dataclass(frozen=True, slots=True)
class Layout:
    steps: int
    fanout: int
    counts: tuple[int, ...]  # blocks per level, level 1 (holding steps) first
    bases: tuple[int, ...]  # first node id of each level, level 1 first
    step_base: int  # node id of step 0

    @classmethod
    def build(cls, steps: int, fanout: int) -> Layout:
        if steps < 1:
            raise ValueError(f"a run needs at least one step, got {steps}")
        if fanout < 2:
            raise ValueError(f"fanout must be at least 2, got {fanout}")
        counts: list[int] = []
        n = steps
        while n > fanout:
            n = -(-n // fanout)
            counts.append(n)
        # Ids top-down: root 1, then the top level, ..., level 1 last.
        bases = [0] * len(counts)
        next_id = ROOT_ID + 1
        for level in range(len(counts), 0, -1):
            bases[level - 1] = next_id
            next_id += counts[level - 1]
        return cls(steps, fanout, tuple(counts), tuple(bases), next_id)

    # --- levels ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Block levels (the root not counted)."""
        return len(self.counts)

    @property
    def nodes(self) -> int:
        """Rows in the nodes table: the root and every block."""
        return 1 + sum(self.counts)

    def span(self, level: int) -> int:
        """Steps covered by one block of `level` (level 0: a step)."""
        return self.fanout**level

    def leaf_of(self, step: int) -> int:
        """Node id of the block (or root) that holds `step`."""
        return self.bases[0] + step // self.fanout if self.counts else ROOT_ID

    def level_of(self, node_id: int) -> tuple[int, int]:
        """(level, index within the level) of a node id: level 0 for steps, depth + 1 for
        the root. ValueError for an id outside the tree."""
        if node_id == ROOT_ID:
            return self.depth + 1, 0
        if self.step_base <= node_id < self.step_base + self.steps:
            return 0, node_id - self.step_base
        for level in range(1, self.depth + 1):
            base = self.bases[level - 1]
            if base <= node_id < base + self.counts[level - 1]:
                return level, node_id - base
        raise ValueError(f"no node {node_id} in this run")

    def node_id(self, level: int, index: int) -> int:
        if level == 0:
            return self.step_base + index
        if level > self.depth:
            return ROOT_ID
        return self.bases[level - 1] + index

    def steps_of(self, level: int, index: int) -> tuple[int, int]:
        """(first, last) step covered by the node at (level, index)."""
        if level > self.depth:
            return 0, self.steps - 1
        span = self.span(level)
        first = index * span
        return first, min(first + span, self.steps) - 1

    def children_count(self, level: int, index: int) -> int:
        if level == 0:
            return 0
        if level > self.depth:
            return self.counts[-1] if self.counts else self.steps
        first, last = self.steps_of(level, index)
        span = self.span(level - 1)
        return -(-(last - first + 1) // span)

    def children_range(self, level: int, index: int) -> tuple[int, int]:
        """(first id, count) of the children of the node at (level, index): children are
        consecutive ids, in order."""
        count = self.children_count(level, index)
        if level > self.depth:
            return self.node_id(level - 1, 0), count
        return self.node_id(level - 1, index * self.fanout), count

    def ancestors(self, step: int) -> list[int]:
        """Ids of every node above `step`, nearest first, root last."""
        out = []
        index = step
        for level in range(1, self.depth + 1):
            index //= self.fanout
            out.append(self.bases[level - 1] + index)
        out.append(ROOT_ID)
        return out

    def block_rows(self) -> Iterator[tuple[Any, ...]]:
        """(id, parent, kind, level, ordinal, first_step, last_step, children) for the root
        and every block, top-down."""
        top = self.depth + 1
        yield (ROOT_ID, None, "root", top, 0, 0, self.steps - 1, self.children_count(top, 0))
        f = self.fanout
        for level in range(self.depth, 0, -1):
            base = self.bases[level - 1]
            span = f**level
            child_span = f ** (level - 1)
            parent_base = self.bases[level] if level < self.depth else None
            n = self.steps
            for index in range(self.counts[level - 1]):
                first = index * span
                last = min(first + span, n) - 1
                parent = ROOT_ID if parent_base is None else parent_base + index // f
                children = -(-(last - first + 1) // child_span)
                yield (base + index, parent, "block", level, index % f, first, last, children)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "fanout": self.fanout,
            "counts": list(self.counts),
            "bases": list(self.bases),
            "step_base": self.step_base,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        """The layout `to_dict` wrote (a run's meta row "layout")."""
        return cls(d["steps"], d["fanout"], tuple(d["counts"]), tuple(d["bases"]), d["step_base"])


# --- summaries -------------------------------------------------------------------------


def summarize(domain: Domain, first: int, last: int, answer: Any, done: int, errors: int) -> str:
    """A parent's short summary of its children: for Hanoi the state after the block's
    last move, otherwise counts. Never raw data beyond one state."""
    span = f"{first + 1:,}–{last + 1:,}"
    tail = f" ({errors:,} error{'s' if errors != 1 else ''})" if errors else ""
    if isinstance(answer, HanoiAnswer):
        state = answer.next_state
        if isinstance(domain, Hanoi) and last == domain.total_steps() - 1 and state == domain.goal:
            return f"moves {span}: solved, all disks on peg 2{tail}"
        return f"moves {span}: state {state_text(state)}{tail}"
    return f"steps {span}: {done:,} done{tail}"
