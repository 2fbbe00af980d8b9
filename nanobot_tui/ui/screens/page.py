"""A page: a full screen to read, the header, one column the keyboard scrolls, the footer.

The help screen and the inspect screen are pages. Each names the Statics its column holds
(`sections`), fills them on mount, and declares its own keys (the ids are its own, for the
keymap) for the actions here: close, top and bottom.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual import getters
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Static

from nanobot_tui.ui.widgets.footer import Footer


class PageScreen(Screen[None]):
    """See the module note."""

    CSS_PATH = "page.tcss"

    body = getters.query_one("#page-body", VerticalScroll)

    def sections(self) -> Iterable[Static]:
        """The Statics of the column, top to bottom."""
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="page-body", can_focus=True):
            yield from self.sections()
        yield Footer()

    def action_close(self) -> None:
        self.dismiss()

    def action_top(self) -> None:
        self.body.scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.body.scroll_end(animate=False)
