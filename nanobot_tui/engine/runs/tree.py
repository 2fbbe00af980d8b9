"""The shape of a run's process tree: steps grouped into blocks, level by level.

A run of N steps with fan-out F is a tree of depth about log_F(N): a level-1 block holds
F consecutive steps, a level-2 block F level-1 blocks (F^2 steps), and so on until at
most F blocks are left; those are the root's children (for N <= F the root holds the
steps itself). Blocks are aligned: level-j block b covers steps [b F^j, (b+1) F^j), so a
block reads "moves 1,000-1,999", never an odd slice.

A grouped run (a domain whose `groups()` names its steps' groups: a code run's files,
each holding its functions' steps) has the groups as its level-1 blocks, of any sizes
and labelled (the file's path); the levels above group the groups F at a time, as
above, until at most F are left. Only level 1 differs: its blocks' first steps are
`offsets` (found by bisection), everything above is the same arithmetic.

Everything about the layout is arithmetic, so nothing has to be looked up to place a
step: ids are numbered top-down, level by level (root = 1, then the top level's blocks,
..., then the level-1 blocks), and a step's own node id is `step_base + step`. The
store creates the block rows up front (measured: 116,510 rows for a 20-disk Hanoi run in
about 0.3 s) and synthesises step nodes from the `steps` table when read, so a million
steps cost no extra rows.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
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
    # A grouped run's level-1 blocks: their first steps, then `steps` (one more entry
    # than there are groups), and their labels. Empty: blocks of `fanout` steps.
    offsets: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()
    widest: int = 0  # a grouped run's largest group, in steps

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
        return cls._numbered(steps, fanout, counts)

    @classmethod
    def grouped(cls, groups: Sequence[tuple[str, int]], fanout: int) -> Layout:
        """Level-1 blocks of the given (label, steps) groups, in step order; the levels
        above group them `fanout` at a time. ValueError for an empty group or none."""
        if fanout < 2:
            raise ValueError(f"fanout must be at least 2, got {fanout}")
        if not groups:
            raise ValueError("a grouped run needs at least one group")
        offsets = [0]
        for label, size in groups:
            if size < 1:
                raise ValueError(f"group {label!r} has {size} steps; a group needs one")
            offsets.append(offsets[-1] + size)
        counts = [len(groups)]
        n = len(groups)
        while n > fanout:
            n = -(-n // fanout)
            counts.append(n)
        plain = cls._numbered(offsets[-1], fanout, counts)
        widest = max(size for _, size in groups)
        labels = tuple(str(label) for label, _ in groups)
        return cls(plain.steps, fanout, plain.counts, plain.bases, plain.step_base,
                   tuple(offsets), labels, widest)  # fmt: skip

    @classmethod
    def _numbered(cls, steps: int, fanout: int, counts: list[int]) -> Layout:
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

    @property
    def is_grouped(self) -> bool:
        return bool(self.offsets)

    def span(self, level: int) -> int:
        """Steps covered by one block of `level` (level 0: a step); in a grouped run the
        most a block of that level can cover."""
        if self.offsets and level > 0:
            return self.widest * self.fanout ** (level - 1)
        return self.fanout**level

    def leaf_index(self, step: int) -> int:
        """Index, within level 1, of the block that holds `step` (0 when the root holds
        the steps)."""
        if self.offsets:
            return bisect_right(self.offsets, step) - 1
        return step // self.fanout if self.counts else 0

    def leaf_steps(self, index: int) -> tuple[int, int]:
        """(first, last) step of level-1 block `index`."""
        if self.offsets:
            return self.offsets[index], self.offsets[index + 1] - 1
        first = index * self.fanout
        return first, min(first + self.fanout, self.steps) - 1

    def leaves_within(self, first: int, last: int) -> tuple[int, int]:
        """(lo, hi): the level-1 blocks that lie wholly inside steps first..last are lo..hi
        (none when lo > hi)."""
        lo, hi = self.leaf_index(first), self.leaf_index(last)
        if self.leaf_steps(lo)[0] != first:
            lo += 1
        if self.leaf_steps(hi)[1] != last:
            hi -= 1
        return lo, hi

    def leaf_of(self, step: int) -> int:
        """Node id of the block (or root) that holds `step`."""
        return self.bases[0] + self.leaf_index(step) if self.counts else ROOT_ID

    def ordinal_of(self, step: int) -> int:
        """A step's position among its siblings."""
        if not self.counts:
            return step
        return step - self.leaf_steps(self.leaf_index(step))[0]

    def label_of(self, node_id: int) -> str | None:
        """In a grouped run, a block's label: a level-1 block's is its group's (a file's
        path), a higher block's its first and last group's ("a.py … f.py"). None for the
        root, steps, and every node of a run without groups."""
        if not self.labels or node_id == ROOT_ID or node_id >= self.step_base:
            return None
        level, index = self.level_of(node_id)
        if level == 1:
            return self.labels[index]
        width = self.fanout ** (level - 1)
        first = self.labels[index * width]
        last = self.labels[min((index + 1) * width, self.counts[0]) - 1]
        return first if first == last else f"{first} … {last}"

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
        if level == 0:
            return index, index
        # Level-1 blocks index * F^(level-1) ... are under it.
        width = self.fanout ** (level - 1)
        lo = index * width
        hi = min(lo + width, self.counts[0]) - 1
        return self.leaf_steps(lo)[0], self.leaf_steps(hi)[1]

    def children_count(self, level: int, index: int) -> int:
        if level == 0:
            return 0
        if level > self.depth:
            return self.counts[-1] if self.counts else self.steps
        if level == 1:
            first, last = self.leaf_steps(index)
            return last - first + 1
        return min((index + 1) * self.fanout, self.counts[level - 2]) - index * self.fanout

    def children_range(self, level: int, index: int) -> tuple[int, int]:
        """(first id, count) of the children of the node at (level, index): children are
        consecutive ids, in order."""
        count = self.children_count(level, index)
        if level > self.depth:
            return self.node_id(level - 1, 0), count
        if level == 1:
            return self.node_id(0, self.leaf_steps(index)[0]), count
        return self.node_id(level - 1, index * self.fanout), count

    def ancestors(self, step: int) -> list[int]:
        """Ids of every node above `step`, nearest first, root last."""
        out = []
        index = self.leaf_index(step)
        for level in range(1, self.depth + 1):
            out.append(self.bases[level - 1] + index)
            index //= self.fanout
        out.append(ROOT_ID)
        return out

    def block_rows(self) -> Iterator[tuple[Any, ...]]:
        """(id, parent, kind, level, ordinal, first_step, last_step, children) for the root
        and every block, top-down."""
        top = self.depth + 1
        yield (ROOT_ID, None, "root", top, 0, 0, self.steps - 1, self.children_count(top, 0))
        f = self.fanout
        n = self.steps
        offsets = self.offsets
        for level in range(self.depth, 0, -1):
            base = self.bases[level - 1]
            parent_base = self.bases[level] if level < self.depth else None
            below = self.counts[level - 2] if level > 1 else 0
            span = f**level
            width = f ** (level - 1)  # level-1 blocks (or steps) under one child
            for index in range(self.counts[level - 1]):
                if offsets:  # a grouped run: level-1 blocks index * width, ...
                    lo = index * width
                    first = offsets[lo]
                    last = offsets[min(lo + width, self.counts[0])] - 1
                else:
                    first = index * span
                    last = min(first + span, n) - 1
                if level == 1:
                    children = last - first + 1
                else:
                    children = min((index + 1) * f, below) - index * f
                parent = ROOT_ID if parent_base is None else parent_base + index // f
                yield (base + index, parent, "block", level, index % f, first, last, children)

    def group_rows(self) -> Iterator[tuple[int, int, str]]:
        """A grouped run's (first step, level-1 index, label) of each group."""
        for index, label in enumerate(self.labels):
            yield self.offsets[index], index, label

    def to_dict(self, *, groups: bool = True) -> dict[str, Any]:
        """The layout as JSON-safe data. A grouped run's groups ([label, steps] each) are
        in it, or with groups=False only their number (the store keeps them in a table,
        out of the meta rows every status read parses)."""
        out: dict[str, Any] = {
            "steps": self.steps,
            "fanout": self.fanout,
            "counts": list(self.counts),
            "bases": list(self.bases),
            "step_base": self.step_base,
        }
        if self.offsets:
            out["groups"] = self.group_list() if groups else len(self.labels)
        return out

    def group_list(self) -> list[list[Any]]:
        """A grouped run's [label, steps] of each group, in step order."""
        return [
            [label, self.offsets[i + 1] - self.offsets[i]] for i, label in enumerate(self.labels)
        ]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        """The layout `to_dict` wrote (a run's meta row "layout"); runs from before
        grouped layouts have no "groups" and load as they always did."""
        groups = d.get("groups")
        if groups is None:
            return cls(
                d["steps"], d["fanout"], tuple(d["counts"]), tuple(d["bases"]), d["step_base"]
            )
        if not isinstance(groups, list):
            raise ValueError("this layout's groups are kept apart: read them with the store")
        layout = cls.grouped([(str(g[0]), int(g[1])) for g in groups], d["fanout"])
        if (layout.steps, list(layout.counts)) != (d["steps"], list(d["counts"])):
            raise ValueError("a grouped layout whose groups do not add up to its steps")
        return layout


# --- groups and summaries ------------------------------------------------------------


def groups_of(domain: Domain) -> list[tuple[str, int]] | None:
    """The domain's groups of steps ((label, steps) in step order), or None: the hook is
    optional, a domain without it is laid out in blocks of `fanout`."""
    hook = getattr(domain, "groups", None)
    groups = hook() if callable(hook) else None
    return None if groups is None else [(str(label), int(n)) for label, n in groups]


def summarize(
    domain: Domain,
    first: int,
    last: int,
    answer: Any,
    done: int,
    errors: int,
    *,
    label: str | None = None,
    children: int = 0,
) -> str:
    """A parent's short summary of its children: for a labelled group (a file) its label
    and how many of its `children` are done, for Hanoi the state after the block's last
    move, otherwise counts. Never raw data beyond one state."""
    span = f"{first + 1:,}–{last + 1:,}"
    tail = f" ({errors:,} error{'s' if errors != 1 else ''})" if errors else ""
    if label is not None:
        return f"{label}: {done:,} of {children:,} done{tail}"
    if isinstance(answer, HanoiAnswer):
        state = answer.next_state
        if isinstance(domain, Hanoi) and last == domain.total_steps() - 1 and state == domain.goal:
            return f"moves {span}: solved, all disks on peg 2{tail}"
        return f"moves {span}: state {state_text(state)}{tail}"
    return f"steps {span}: {done:,} done{tail}"
