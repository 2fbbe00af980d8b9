"""The path prompt (the palette's "Ingest a folder…"): asks for a file or folder; Enter
gives it once it exists, Esc gives None."""

from __future__ import annotations

from pathlib import Path

from textual import getters, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class PathPrompt(ModalScreen[str | None]):
    """Asks for a file or folder; Enter gives it (once it exists), Esc gives None."""

    CSS_PATH = "path_prompt.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    box = getters.query_one("#prompt-box", Vertical)
    path_input = getters.query_one("#path", Input)
    problem = getters.query_one("#prompt-error", Static)

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Input(placeholder="a folder or file to ingest, e.g. ~/src/project", id="path")
            yield Static("", id="prompt-error", markup=False)

    def on_mount(self) -> None:
        self.box.border_title = "Ingest"
        self.box.border_subtitle = "enter ingests · esc cancels"
        self.path_input.focus()

    @on(Input.Submitted, "#path")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            return
        path = Path(text).expanduser()
        if not path.exists():
            self.problem.update(f"no such file or folder: {path}")
            return
        self.dismiss(str(path.resolve()))

    def action_cancel(self) -> None:
        self.dismiss(None)
