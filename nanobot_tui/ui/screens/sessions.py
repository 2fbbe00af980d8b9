"""The session picker (ctrl+o in the chat): the saved agent sessions, the most recent
first; Enter resumes one, ctrl+n starts a new one, Esc closes. The sessions folder is
read in a thread: a long history never holds the UI up."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from nanobot_tui.engine.agent.sessions import SessionError, SessionInfo, SessionStore
from nanobot_tui.ui.format import fit

TITLE_CELLS = 40
HINT = "enter resumes · ctrl+n new session · esc closes"


@dataclass(frozen=True)
class PickedSession:
    """What the picker chose: a session to resume, or (name None) a new one."""

    name: str | None


def updated_text(info: SessionInfo) -> str:
    """2026-11-25T14:32:07Z -> 2026-11-25 14:32 (UTC, as the file says)."""
    return info.updated[:16].replace("T", " ")


class SessionPicker(ModalScreen[PickedSession | None]):
    CSS_PATH = "sessions.tcss"
    BINDINGS = [
        Binding("escape", "close", "Close", id="sessions.close"),
        Binding("ctrl+n", "new_session", "New session", id="chat.new"),
    ]

    def __init__(self, current: str | None = None) -> None:
        super().__init__()
        self.current = current
        self.infos: list[SessionInfo] = []
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            table: DataTable[str | Text] = DataTable(id="sessions", cursor_type="row")
            yield table
            yield Static("reading the sessions…", id="picker-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one("#picker", Vertical).border_title = "Sessions"
        table = self.query_one("#sessions", DataTable)
        table.add_columns("", "session", "updated", "msgs", "title")
        table.focus()
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False, group="sessions",
          description="list the sessions")  # fmt: skip
    def _read(self) -> None:
        try:
            infos, problem = SessionStore().list(), ""
        except (OSError, SessionError) as exc:
            infos, problem = [], f"cannot list the sessions: {exc}"
        self.app.call_from_thread(self._fill, infos, problem)

    def _fill(self, infos: list[SessionInfo], problem: str) -> None:
        self.infos = infos
        table = self.query_one("#sessions", DataTable)
        for info in infos:
            mark = Text("●", style="bold green") if info.name == self.current else ""
            # Text, not str: a DataTable reads str cells as markup, and titles are user text.
            title = Text(fit(info.title, TITLE_CELLS)) if info.title else Text("(empty)", "dim")
            table.add_row(
                mark,
                Text(info.name),
                Text(updated_text(info)),
                Text(str(info.messages)),
                title,
                key=info.name,
            )
        current = next((i for i, info in enumerate(infos) if info.name == self.current), 0)
        if infos:
            table.move_cursor(row=current)
        hint = problem or (HINT if infos else "no sessions yet · ctrl+n new session · esc closes")
        self.query_one("#picker-hint", Static).update(hint)
        self.loaded = True

    @on(DataTable.RowSelected, "#sessions")
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.dismiss(PickedSession(event.row_key.value))

    def action_new_session(self) -> None:
        self.dismiss(PickedSession(None))

    def action_close(self) -> None:
        self.dismiss(None)
