"""The app's actions in the command palette (ctrl+p): start a durable run, resume or pause
the watched one, inspect a node, ingest a folder, setup, help. (Textual's own commands
come with them: Theme, whose choice the app remembers, Keys, Screenshot, Quit.)

Actions that run a `nanobot` command (start, ingest) do it in a subprocess from a thread
worker, like the Process pane's resume and pause: the UI never waits on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Input, Static

from nanobot_tui.ui.panes.process_tree import Entry, ProcessTree, run_nanobot
from nanobot_tui.ui.panes.volumes import VolumeBrowser
from nanobot_tui.ui.screens.inspect_node import InspectScreen

if TYPE_CHECKING:
    from textual.app import App

W = TypeVar("W", bound=Widget)

# The durable run "Start" launches: the simulated sampler needs no model server.
START_ARGS = ("run", "hanoi", "--disks", "20", "--sampler", "simulated:0.99", "--detach")
START_TIMEOUT_S = 60.0
INGEST_TIMEOUT_S = 3600.0


def main_pane(app: App[Any], kind: type[W]) -> W | None:
    """The main screen's pane of this type, whatever screen is on top."""
    for screen in app.screen_stack:
        found = screen.query(kind)
        if found:
            return found.first()
    return None


def commands(app: App[Any], screen: Screen[Any]) -> Iterator[SystemCommand]:
    yield SystemCommand(
        "Start a durable run (Hanoi, simulated)",
        "nanobot " + " ".join(START_ARGS) + "; the Process pane follows it",
        lambda: start_run(app),
    )
    yield SystemCommand(
        "Resume the watched run",
        "resume the Process pane's run from its last durable step (r in the pane)",
        lambda: _with_process(app, "resume"),
    )
    yield SystemCommand(
        "Pause the watched run",
        "pause the Process pane's run; resume goes on from there (p in the pane)",
        lambda: _with_process(app, "pause"),
    )
    yield SystemCommand(
        "Inspect the selected node",
        "votes, samples, red flags and trace of the Process pane's node (enter in the pane)",
        lambda: inspect_selected(app),
    )
    yield SystemCommand(
        "Ingest a folder…",
        "nanobot ingest PATH: a volume the Volumes pane browses and search reads",
        lambda: app.push_screen(PathPrompt(), lambda path: ingest(app, path)),
    )
    yield SystemCommand(
        "Setup…",
        "hardware, tier and models: pick and fetch the models for the three slots",
        lambda: open_setup(app),
    )
    yield SystemCommand(
        "Help: keys and commands",
        "every key by pane, these commands, where the config and keymap live (F1)",
        lambda: app.run_action("help"),
    )


def _with_process(app: App[Any], action: str) -> None:
    pane = main_pane(app, ProcessTree)
    if pane is None or pane.run_id is None:
        app.notify("no run: start one first", severity="warning")
        return
    status = pane.status.status if pane.status is not None else "unknown"
    if not pane.check_action(action, ()):
        app.notify(f"{pane.run_id} is {status}: nothing to {action}", severity="warning")
        return
    getattr(pane, f"action_{action}")()


def inspect_selected(app: App[Any]) -> None:
    """The node under the Process pane's cursor, else the run's root."""
    pane = main_pane(app, ProcessTree)
    if pane is None or pane.run_id is None:
        app.notify("no run to inspect", severity="warning")
        return
    tree = pane.run_tree
    node = tree.cursor_node
    data = node.data if node is not None else None
    entry = data if isinstance(data, Entry) else tree.root.data
    if isinstance(entry, Entry):
        app.push_screen(InspectScreen(pane.run_id, entry.node_id))


def in_background(
    app: App[Any], args: list[str], done: Callable[[str], None], failed: str, timeout: float
) -> None:
    """`nanobot ARGS` in a thread worker; then, on the UI thread, `done(last line)`, or
    a notification titled `failed` with the last line when it did not succeed."""

    def work() -> None:
        result = run_nanobot(args, timeout=timeout)
        lines = [line.strip() for line in result.output.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit {result.returncode}"
        if result.returncode == 0:
            app.call_from_thread(done, last)
        else:
            app.call_from_thread(app.notify, last, title=failed, severity="error")

    app.run_worker(work, thread=True, group="palette", exit_on_error=False,
                   description=f"nanobot {args[0]}")  # fmt: skip


def start_run(app: App[Any]) -> None:
    def started(run_id: str) -> None:  # a detached run prints its id last
        app.attached_run = run_id  # type: ignore[attr-defined]
        app.notify(f"{run_id}: detached; the Process pane follows it", title="run started")

    app.notify("starting a durable Hanoi run…")
    in_background(app, list(START_ARGS), started, "the run did not start", START_TIMEOUT_S)


def ingest(app: App[Any], path: str | None) -> None:
    def ingested(summary: str) -> None:
        app.notify(summary, title="ingested")
        pane = main_pane(app, VolumeBrowser)
        if pane is not None and not pane.is_open:
            pane.action_refresh()

    if path:
        app.notify(f"ingesting {path}…")
        in_background(app, ["ingest", path], ingested, "ingest failed", INGEST_TIMEOUT_S)


def open_setup(app: App[Any]) -> None:
    # Imported on use: the wizard's planning and download code stay out of the first frame.
    from nanobot_tui.ui.screens.setup import SetupScreen

    def done(written: Path | str | None) -> None:
        if written:
            app.notify(
                f"{written}: the servers pick up the new models when nanobot starts again",
                title="config written",
            )

    app.push_screen(SetupScreen(), done)


class PathPrompt(ModalScreen[str | None]):
    """Asks for a file or folder; Enter gives it (once it exists), Esc gives None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    DEFAULT_CSS = """
    PathPrompt { align: center middle; }
    PathPrompt > #prompt-box {
        width: 90%; max-width: 80; height: auto;
        border: round $primary; background: $surface; padding: 0 1;
    }
    PathPrompt #prompt-error { height: auto; color: $text-error; }
    """

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Input(placeholder="a folder or file to ingest, e.g. ~/src/project", id="path")
            yield Static("", id="prompt-error", markup=False)

    def on_mount(self) -> None:
        box = self.query_one("#prompt-box")
        box.border_title = "Ingest"
        box.border_subtitle = "enter ingests · esc cancels"
        self.query_one("#path", Input).focus()

    @on(Input.Submitted, "#path")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            return
        path = Path(text).expanduser()
        if not path.exists():
            self.query_one("#prompt-error", Static).update(f"no such file or folder: {path}")
            return
        self.dismiss(str(path.resolve()))

    def action_cancel(self) -> None:
        self.dismiss(None)
