"""The main screen: three columns that panes register into.

Five panes share this screen: chat (centre), hardware meter and vote counters (right),
process tree and volume browser (left). A pane is added by listing it in PANES; columns
with no pane yet are not drawn, so a new pane slots in without reshaping the others.

Narrower than NARROW_WIDTH (an 80x24 terminal over SSH; anything under 114 columns) the
screen shows one pane at a time, full size, under a one-line strip of pane names: F2 and
Shift+F2 (or a click on a name) switch panes. The panes stay mounted, so switching keeps
their state. At any width F2 moves the focus to the next pane that takes keys.

The panes' styles live beside this screen, in main.tcss: they are laid out here and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Header, Input, Static, TextArea

from nanobot_tui.ui.panes.chat import ChatPane
from nanobot_tui.ui.panes.meter import HardwareMeter
from nanobot_tui.ui.panes.process_tree import ProcessTree
from nanobot_tui.ui.panes.volumes import VolumeBrowser
from nanobot_tui.ui.panes.votes import VoteCounter
from nanobot_tui.ui.widgets.footer import Footer

Area = Literal["left", "center", "right"]
AREAS: tuple[Area, ...] = ("left", "center", "right")
NARROW_ORDER: tuple[Area, ...] = ("center", "left", "right")  # the strip's order
# Below this many columns, one pane at a time: the three columns' minimum widths (left 30,
# centre 40, right 44, in main.tcss); any narrower and the right column is cut off.
NARROW_WIDTH = 30 + 40 + 44
ATTACH_PANE = "process"  # the pane shown first, when narrow, by `nanobot attach`


@dataclass(frozen=True)
class PaneSpec:
    area: Area
    factory: Callable[[], Widget]  # the widget must have an id
    title: str = ""  # its name in the narrow layout's strip (default: the id)


PANES: tuple[PaneSpec, ...] = (
    PaneSpec("center", lambda: ChatPane(id="chat"), "Chat"),
    PaneSpec("right", lambda: HardwareMeter(id="meter"), "Hardware"),
    PaneSpec("right", lambda: VoteCounter(id="votes"), "Votes"),
    PaneSpec("left", lambda: ProcessTree(id="process"), "Process"),
    PaneSpec("left", lambda: VolumeBrowser(id="volumes"), "Volumes"),
)


class PaneStrip(Static):
    """One line of pane names, the shown one in reverse video (readable in NO_COLOR and
    16 colours); a click on a name shows that pane."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self._spans: list[tuple[int, int, str]] = []  # (first, end) column -> pane id

    def show(self, names: list[tuple[str, str]], active: str) -> None:
        """`names`: (pane id, title) in order."""
        text = Text()
        self._spans = []
        for pane_id, title in names:
            if text:
                text.append(" ")
            start = len(text)
            text.append(f" {title} ", "reverse bold" if pane_id == active else "")
            self._spans.append((start, len(text), pane_id))
        text.append("  F2 next pane", "dim")
        self.update(text)

    def on_click(self, event: events.Click) -> None:
        x = event.x - 1  # the padding
        for start, end, pane_id in self._spans:
            if start <= x < end and isinstance(self.screen, MainScreen):
                self.screen.show_pane(pane_id)


class MainScreen(Screen[None]):
    CSS_PATH = "main.tcss"  # this screen's layout and every pane's look

    # Textual's auto-focus takes the first focusable widget, shown or not (a pane hidden by
    # the narrow layout, the Process pane's empty tree): keys would go where nobody sees.
    # on_mount gives the first focus; after that the focus is only moved on purpose.
    AUTO_FOCUS = ""

    BINDINGS = [
        Binding("f2", "next_pane", "Next pane", id="main.next_pane"),
        Binding("shift+f2", "previous_pane", "Previous pane", id="main.previous_pane", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.narrow = False
        self.active_pane = ""  # the pane shown in the narrow layout
        self._panes: list[tuple[PaneSpec, Widget]] = []
        self._last_focus: dict[str, Widget] = {}  # by pane: the focus when it was left

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield PaneStrip(id="pane-strip")
        with Horizontal(id="columns"):
            for area in AREAS:
                panes = [spec for spec in PANES if spec.area == area]
                if panes:
                    with Vertical(id=area):
                        for spec in panes:
                            widget = spec.factory()
                            self._panes.append((spec, widget))
                            yield widget
        yield Footer()

    # --- panes, one at a time when narrow ---------------------------------------------

    def pane_order(self) -> list[tuple[str, str]]:
        """(pane id, title) in the strip's order: chat first, then the side columns."""
        ranked = sorted(self._panes, key=lambda item: NARROW_ORDER.index(item[0].area))
        return [(str(widget.id), spec.title or str(widget.id)) for spec, widget in ranked]

    def on_mount(self) -> None:
        ids = [pane_id for pane_id, _ in self.pane_order()]
        # `nanobot attach RUN` is about the run: its pane comes first when narrow.
        attached = getattr(self.app, "attached_run", None) and ATTACH_PANE in ids
        self.active_pane = ATTACH_PANE if attached else ids[0] if ids else ""
        # The first focus, at any width: the chat's prompt, or the run's pane (its keys in
        # the footer) under `nanobot attach`. Until the run's tree is read that pane has
        # nothing to focus, so the focus is nowhere; the tree takes it when it shows
        # (ProcessTree._show_run).
        self.call_after_refresh(self._focus_pane, self.active_pane)

    def on_screen_resume(self) -> None:
        """Back from another screen: a focused widget hidden meanwhile gives the focus up
        to the pane on screen."""
        focused = self.focused
        if focused is not None and focused not in self.focus_chain:
            self._focus_pane(self.active_pane if self.narrow else self.pane_order()[0][0])

    def on_resize(self, event: events.Resize) -> None:
        self.set_narrow(event.size.width < NARROW_WIDTH)

    def set_narrow(self, narrow: bool) -> None:
        if narrow != self.narrow:
            self.narrow = narrow
            self.set_class(narrow, "-narrow")
            self.query_one(Footer).compact = narrow  # a few more keys fit in 80 columns
            self._lay_out(focus=narrow and not self._focus_in(self.active_pane))
            self.refresh_bindings()

    def show_pane(self, pane_id: str) -> None:
        """Show (narrow) or focus (wide) the pane with this id."""
        if pane_id not in dict(self.pane_order()):
            return
        focused = self.focused
        if focused is not None:
            left = next((p for p, _ in self.pane_order() if self._holds(focused, p)), None)
            if left is not None:
                self._last_focus[left] = focused
        self.active_pane = pane_id
        self._lay_out(focus=True)

    def _lay_out(self, *, focus: bool) -> None:
        for _spec, widget in self._panes:
            widget.display = not self.narrow or widget.id == self.active_pane
        for area in AREAS:
            columns = self.query(f"#{area}")
            if columns:
                panes = [w for spec, w in self._panes if spec.area == area]
                columns.first().display = any(w.display for w in panes)
        if self.narrow:
            self.query_one("#pane-strip", PaneStrip).show(self.pane_order(), self.active_pane)
        if focus:
            self._focus_pane(self.active_pane)

    def _focusable_in(self, pane_id: str) -> Widget | None:
        """The first widget of the pane that can take the focus now (shown, enabled)."""
        return next((w for w in self.focus_chain if self._holds(w, pane_id)), None)

    @staticmethod
    def _holds(widget: Widget, pane_id: str) -> bool:
        return any(node.id == pane_id for node in widget.ancestors_with_self)

    def _focus_pane(self, pane_id: str) -> None:
        """Where the focus was when the pane was left; else where one types (the chat's
        prompt); else the pane's first widget that takes keys; else nowhere."""
        chain = [w for w in self.focus_chain if self._holds(w, pane_id)]
        last = self._last_focus.get(pane_id)
        typing = next((w for w in chain if isinstance(w, Input | TextArea)), None)
        self.set_focus(last if last in chain else typing or (chain[0] if chain else None))

    def _focus_in(self, pane_id: str) -> bool:
        return self.focused is not None and self._holds(self.focused, pane_id)

    def _step(self, delta: int) -> None:
        order = [pane_id for pane_id, _ in self.pane_order()]
        if not order:
            return
        if not self.narrow:
            # Wide: only panes that take keys; start from the one holding the focus.
            order = [p for p in order if self._focusable_in(p) is not None]
            current = next((p for p in order if self._focus_in(p)), None)
        else:
            current = self.active_pane
        index = order.index(current) if current in order else -1 if delta > 0 else 0
        self.show_pane(order[(index + delta) % len(order)])

    def action_next_pane(self) -> None:
        self._step(1)

    def action_previous_pane(self) -> None:
        self._step(-1)
