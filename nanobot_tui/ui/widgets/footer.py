"""Textual's Footer, minus its leak: the key widgets it replaces are let go.

The footer recomposes on every focus change and every refresh of the bindings (a pane
switch, a run's state changing): its old keys are removed and new ones mounted, each
data-bound to the footer's `compact`. Textual drops a watcher whose widget has closed
only when the watched value next changes, and `compact` changes only when the terminal
crosses the narrow width: until then every key ever shown stays alive through the
footer's watcher list, with its styles and rendered strips. An app whose panes were
switched every few seconds grew by megabytes an hour that way (benchmarks/app_memory.py).
"""

from __future__ import annotations

from textual.dom import DOMNode
from textual.widgets import Footer as TextualFooter


def prune_watchers(node: DOMNode) -> int:
    """Drop the watchers on `node`'s reactives that belong to widgets since removed;
    returns how many were dropped."""
    watchers: dict[str, list[tuple[object, object]]] = getattr(node, "__watchers", {})
    dropped = 0
    for entries in watchers.values():
        alive = [
            (owner, callback)
            for owner, callback in entries
            if not (isinstance(owner, DOMNode) and (owner._closing or owner._closed))
        ]
        dropped += len(entries) - len(alive)
        entries[:] = alive
    return dropped


class Footer(TextualFooter):
    """The footer; after each recompose the watchers of the keys it removed are dropped.
    (Same name as Textual's, so the stylesheets' `Footer` rules apply unchanged.)"""

    async def recompose(self) -> None:
        await super().recompose()
        prune_watchers(self)
