"""The runs list: every durable run with its status, progress, errors and last update;
Enter picks one for the process tree pane to watch, Esc keeps the current one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import RUN_STYLES, plural, when

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.store import RunStore

COLUMNS = ("run", "status", "progress", "errors", "updated")


# The run store is imported on first use, in a worker: the app's first frame never waits
# for it.


def open_run(run_id: str) -> RunStore:
    """A run's store, read-only (safe while its runner writes)."""
    from nanobot_tui.engine.runs.store import RunStore

    return RunStore.open(run_id, readonly=True)


def read_runs() -> list[dict[str, Any]]:
    """Every run, as the store lists them."""
    from nanobot_tui.engine.runs.store import list_runs

    return list_runs()


def progress(run: dict[str, Any]) -> str:
    done = int(run.get("steps_done") or 0)
    total = int(run.get("steps_total") or 0)
    if not total:
        return f"{done:,}"
    return f"{done:,}/{total:,} ({100 * done / total:.0f}%)"


def run_cells(run: dict[str, Any], now: float | None = None) -> tuple[Text | str, ...]:
    status = str(run.get("status") or "?")
    errors = int(run.get("errors") or 0)
    return (
        Text(str(run.get("id")), style="bold"),
        Text(status, style=RUN_STYLES.get(status, "")),
        progress(run),
        Text(f"{errors:,}", style="bold red" if errors else "green"),
        when(run.get("updated") or run.get("created"), now),
    )


class RunsScreen(ModalScreen[str | None]):
    """Pick a run: Enter picks the highlighted one, Esc goes back without picking."""

    CSS_PATH = "runs.tcss"
    BINDINGS = [
        Binding("escape", "cancel", "Back", id="runs.cancel"),
        Binding("ctrl+r", "reload", "Reload", id="runs.reload"),
    ]

    @dataclass
    class Listed(Message):
        runs: list[dict[str, Any]]
        error: str = ""

    def __init__(self, current: str | None = None) -> None:
        super().__init__()
        self.current = current
        self.runs: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-box"):
            table: DataTable[Text | str] = DataTable(
                id="runs-table", cursor_type="row", zebra_stripes=True
            )
            yield table
            yield Static("loading runs…", id="runs-status", markup=False)

    def on_mount(self) -> None:
        box = self.query_one("#runs-box")
        box.border_title = "Runs"
        box.border_subtitle = "enter watches · esc back"
        table = self.query_one("#runs-table", DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        table.focus()
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-list",
          description="list runs")  # fmt: skip
    def load(self) -> None:
        try:
            runs = read_runs()
        except Exception as exc:
            self.post_message(self.Listed([], " ".join(str(exc).split())))
        else:
            self.post_message(self.Listed(runs))

    @on(Listed)
    def _listed(self, message: Listed) -> None:
        # Newest first.
        self.runs = sorted(
            message.runs, key=lambda run: float(run.get("created") or 0.0), reverse=True
        )
        table = self.query_one("#runs-table", DataTable)
        table.clear()
        now = time.time()
        for run in self.runs:
            table.add_row(*run_cells(run, now), key=str(run.get("id")))
        ids = [str(run.get("id")) for run in self.runs]
        if self.current in ids:
            table.move_cursor(row=ids.index(self.current))
        status = self.query_one("#runs-status", Static)
        if message.error:
            status.update(f"cannot list runs: {message.error}")
        elif not self.runs:
            status.update("no runs yet: nanobot run hanoi --disks N --detach")
        else:
            status.update(plural(len(self.runs), "run"))

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.dismiss(str(event.row_key.value))

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_reload(self) -> None:
        self.load()


def pick_run(app: EngineApp) -> None:
    """Open the runs list; the run picked becomes the app's `attached_run`, which the
    process tree pane follows."""

    def picked(run_id: str | None) -> None:
        if run_id:
            app.attached_run = run_id

    app.push_screen(RunsScreen(current=app.attached_run), picked)
