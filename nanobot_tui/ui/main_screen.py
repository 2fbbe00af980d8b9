"""The main screen: three columns that panes register into.

Five panes share this screen: chat (centre), hardware meter and vote counters (right),
process tree and volume browser (left). A pane is added by listing it in PANES; columns
with no pane yet are not drawn, so a new pane slots in without reshaping the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header

from nanobot_tui.ui.chat import ChatPane
from nanobot_tui.ui.meter import HardwareMeter
from nanobot_tui.ui.process_tree import ProcessTree
from nanobot_tui.ui.volumes import VolumeBrowser
from nanobot_tui.ui.votes import VoteCounter

Area = Literal["left", "center", "right"]


@dataclass(frozen=True)
class PaneSpec:
    area: Area
    factory: Callable[[], Widget]


PANES: tuple[PaneSpec, ...] = (
    PaneSpec("center", lambda: ChatPane(id="chat")),
    PaneSpec("right", lambda: HardwareMeter(id="meter")),
    PaneSpec("right", lambda: VoteCounter(id="votes")),
    PaneSpec("left", lambda: ProcessTree(id="process")),
    PaneSpec("left", lambda: VolumeBrowser(id="volumes")),
)


class MainScreen(Screen[None]):
    DEFAULT_CSS = """
    MainScreen #columns { height: 1fr; }
    MainScreen #left { width: 1fr; min-width: 30; }
    MainScreen #center { width: 2fr; min-width: 40; }
    MainScreen #right { width: 44; }
    """

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="columns"):
            for area in ("left", "center", "right"):
                panes = [spec for spec in PANES if spec.area == area]
                if panes:
                    with Vertical(id=area):
                        for spec in panes:
                            yield spec.factory()
        yield Footer()
