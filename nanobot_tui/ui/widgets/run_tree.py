"""A durable run's tree of nodes, as the Process pane draws it: one line a node, children
added a page at a time, labels set in place.

`RunTree` only draws and moves: the pane reads the store (in its workers) and hands the
rows over. Each tree node holds an `Entry` (the store node and the row its label was
drawn from) or, after a page of children, a `More` leaf that loads the next page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from nanobot_tui.text import printable
from nanobot_tui.ui.format import fit, plural, progress_bar, status_icon

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.store import NodeRow

PAGE = 200  # children loaded at a time
BAR_WIDTH = 5  # the left column is narrow: the counts say it exactly, the bar at a glance
LABEL_CELLS = 48  # a group's label (a file's path), its end kept


# --- labels ---------------------------------------------------------------------------


def span_text(row: NodeRow) -> str:
    """The steps a node covers, numbered from 1 like the header's done/total."""
    first, last = row.first_step + 1, row.last_step + 1
    return f"{first:,}" if first == last else f"{first:,}–{last:,}"


def group_text(label: str, width: int = LABEL_CELLS) -> str:
    """A group's label (a file's path) in `width` cells: its end kept, where the name is;
    a block of groups ("a.py … f.py") keeps both ends."""
    text = " ".join(printable(label).split())
    if len(text) <= width:
        return text
    first, sep, last = text.partition(" … ")
    if sep:  # each end gets half, or what the other end leaves
        room = width - len(sep)
        head = min(len(first), max(room - len(last), room // 2))
        return group_text(first, head) + sep + group_text(last, room - head)
    return "…" + text[len(text) - width + 1 :]


def node_total(row: NodeRow) -> int:
    """Steps under a node."""
    return max(row.last_step - row.first_step + 1, 0)


def children_total(row: NodeRow) -> int:
    """How many children an inner node has."""
    count = getattr(row, "children", None)
    if isinstance(count, int):
        return count
    return node_total(row)


def node_label(row: NodeRow) -> Text:
    """One line, most telling first (the column is narrow and the tree indents): status
    icon; for a step its number, for an inner node done/total children and a bar; errors
    in red; then a group's label (a file's path), a block's span of steps or a step's
    summary."""
    icon, style = status_icon(row.status)
    text = Text.assemble((icon, style), " ")
    if row.kind == "step":
        text.append(f"step {row.first_step + 1:,}", "bold" if row.status == "running" else "")
        if row.attempts > 1:
            text.append(f" ×{row.attempts}", "yellow")
    else:
        done = row.completed_children
        total = children_total(row)
        text.append(f"{done:,}/{total:,} ")
        text.append_text(progress_bar(done / total if total else 0.0, BAR_WIDTH))
    if row.errors:
        text.append(f" {plural(row.errors, 'error')}", "bold red")
    label = getattr(row, "label", None)
    if label:
        text.append(f"  {group_text(str(label))}")
    elif row.kind != "step":
        text.append(f"  {span_text(row)}", "dim")
    elif row.summary:
        text.append(f"  {fit(str(row.summary), 40)}", "dim")
    if row.error and row.status == "failed":
        text.append(f"  {fit(str(row.error), 60)}", "red")
    return text


# --- what a tree node holds -----------------------------------------------------------


@dataclass(slots=True)
class Entry:
    """What a tree node holds: the store node, the row its label was drawn from, and how
    many of its children are in the tree."""

    node_id: Any
    kind: str
    row: NodeRow
    label: Text | None = None  # the label drawn from `row`
    loaded: int | None = None  # children added so far; None: never asked for
    loading: bool = False


@dataclass(frozen=True, slots=True)
class More:
    """The "… more" leaf after a page of children: choosing it loads the next page."""

    parent: Any  # the store node id
    offset: int


RunNode = TreeNode[Entry | More | None]


# --- the widget -----------------------------------------------------------------------


class RunTree(Tree[Entry | More | None]):
    """A Tree whose Enter opens the inspect screen (not expand), with left and right to
    collapse and expand."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Inspect", id="process.inspect"),
        Binding("space", "toggle_node", "Expand", id="process.toggle"),
        Binding("right", "expand", "Expand", id="process.expand", show=False),
        Binding("left", "collapse", "Collapse", id="process.collapse", show=False),
        # Tree's default expands every loaded node; one level at a time is enough here.
        Binding("shift+space", "toggle_node", "Expand", id="process.toggle_alt", show=False),
    ]

    def action_expand(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand and not node.is_expanded:
            node.expand()

    def action_collapse(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None and not (node.parent.is_root and not self.show_root):
            self.move_cursor(node.parent)

    def visible_nodes(self) -> list[RunNode]:
        """The nodes on the lines now on screen."""
        top = self.scroll_offset.y
        height = max(self.scrollable_content_region.height, 1)
        nodes = []
        for line in range(top, top + height):
            node = self.get_node_at_line(line)
            if node is None:
                break
            nodes.append(node)
        return nodes

    def reset_to(self, root: NodeRow) -> RunNode:
        """Start again from a run's root row; returns the tree's root node."""
        self.reset(node_label(root), Entry(root.id, root.kind, root))
        return self.root

    @staticmethod
    def add_page(
        node: RunNode, offset: int, rows: list[NodeRow], by_id: dict[Any, RunNode]
    ) -> None:
        """Add a page of `node`'s children (those from `offset`) that `by_id` (store id ->
        tree node) does not hold yet, and register them there; then a `More` leaf when
        there are more."""
        entry = node.data
        assert isinstance(entry, Entry)
        for row in rows:
            if row.id in by_id:
                continue
            label = node_label(row)
            by_id[row.id] = node.add(
                label, Entry(row.id, row.kind, row, label), allow_expand=row.kind != "step"
            )
        entry.loaded = offset + len(rows)
        if len(rows) == PAGE and entry.loaded < children_total(entry.row):
            left = children_total(entry.row) - entry.loaded
            node.add_leaf(
                Text(f"… {left:,} more: enter loads {min(left, PAGE)}", style="dim italic"),
                More(entry.node_id, entry.loaded),
            )

    @staticmethod
    def relabel(node: RunNode, row: NodeRow) -> bool:
        """Set, in place, the label of a node whose row changed (the line repaints on its
        own; the tree is not rebuilt); whether the label changed."""
        entry = node.data
        if not isinstance(entry, Entry) or row == entry.row:
            return False
        entry.row = row
        label = node_label(row)
        if label == entry.label:
            return False
        entry.label = label
        node.set_label(label)
        return True
