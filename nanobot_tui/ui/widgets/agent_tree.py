"""The chat session's delegations, as children of the session, in the process tree pane.

    chat · 2026-11-25-1432-ab12
    └── ◐ summarise README.md
            12 s · 3 rounds · 5 calls

The app keeps every Delegation record by id (`app.delegations`) and nudges this widget
through `app.delegation_signal` when one changes (None: the chat moved to another session
and the list was cleared). Two lines each (the pane is a narrow column): the task, then
the numbers. Labels are set in place; nodes are added only for a new delegation. Hidden
until the first one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.text import Text
from textual import getters
from textual.timer import Timer
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import duration, fit, plural, status_icon

if TYPE_CHECKING:  # the agent's modules load at the first turn, not with the app
    from nanobot_tui.engine.agent.delegate import Delegation

TASK_CELLS = 32  # the task on a child's line, at most (the column is narrow)
ERROR_CELLS = 60
TICK_S = 1.0  # how often a running delegation's elapsed time is redrawn
NO_SESSION = "new session"


def root_label(session: str | None) -> Text:
    return Text.assemble(("chat", "bold"), (" · ", "dim"), session or NO_SESSION)


def delegation_label(record: Delegation) -> Text:
    """The status icon and the task, clipped."""
    icon, style = status_icon(record.status)
    return Text.assemble((icon, style), " ", fit(" ".join(record.task.split()), TASK_CELLS))


def numbers_label(record: Delegation) -> Text:
    """Time, rounds, tool calls (what a narrow column cuts last is first); an error in red."""
    rounds = plural(record.rounds, "round")
    calls = plural(record.tool_calls, "call")
    text = Text(f"{duration(record.elapsed_s)} · {rounds} · {calls}", style="dim")
    if record.error:
        text.append(f" · {fit(record.error, ERROR_CELLS)}", "red")
    return text


class AgentTree(Tree[int | None], can_focus=False):
    """See the module note."""

    # Always expanded, nothing to toggle: no arrows, the column is narrow.
    ICON_NODE = ICON_NODE_EXPANDED = ""

    app = getters.app(EngineApp)

    DEFAULT_CSS = """
    AgentTree {
        display: none; height: auto; max-height: 12; padding: 0 1; overflow-x: hidden;
        background: transparent; border-top: solid $primary 30%;
    }
    AgentTree.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(root_label(None), id=id)
        self.guide_depth = 2
        self.auto_expand = False
        self._node_of: dict[int, TreeNode[int | None]] = {}
        self._records: dict[int, Delegation] = {}
        self._shown_session: str | None = None
        self._ticker: Timer | None = None

    def on_mount(self) -> None:
        self._ticker = self.set_interval(TICK_S, self._tick, pause=True)
        self.app.delegation_signal.subscribe(self, self._changed)
        self._changed(None)

    def _changed(self, _record: Delegation | None) -> None:
        self.show(self.app.delegations, self.app.session_name)

    def show(self, delegations: Mapping[int, Delegation], session: str | None) -> None:
        """Bring the tree to `delegations` of `session`: new ones added, changed ones
        relabelled in place, and all removed when the session changed."""
        if session != self._shown_session or any(i not in delegations for i in self._node_of):
            self._shown_session = session
            self.root.set_label(root_label(session))
            self.clear()
            self._node_of.clear()
            self._records.clear()
        for delegation_id in sorted(delegations):
            record = delegations[delegation_id]
            if self._records.get(delegation_id) == record:
                continue
            self._records[delegation_id] = record
            node = self._node_of.get(delegation_id)
            if node is None:
                node = self.root.add(delegation_label(record), delegation_id, expand=True)
                node.add_leaf(numbers_label(record), delegation_id)
                self._node_of[delegation_id] = node
            else:
                node.set_label(delegation_label(record))
                node.children[0].set_label(numbers_label(record))
        self.root.expand()
        self.set_class(bool(self._node_of), "-shown")
        running = any(r.status == "running" for r in self._records.values())
        if self._ticker is not None and running:
            self._ticker.resume()
        elif self._ticker is not None:
            self._ticker.pause()

    def _tick(self) -> None:
        """A running delegation's time goes on between its records."""
        for delegation_id, record in self._records.items():
            if record.status == "running":
                self._node_of[delegation_id].children[0].set_label(numbers_label(record))

    def labels(self) -> list[str]:
        """The lines as plain text, in order (tests read them)."""
        lines = [str(self.root.label)]
        for node in self.root.children:
            lines += [str(node.label), *(str(leaf.label) for leaf in node.children)]
        return lines
