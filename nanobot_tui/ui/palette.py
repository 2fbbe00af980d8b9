"""The app's actions in the command palette (ctrl+p): start a durable run, resume or pause
the watched one, inspect a node, ingest a folder, setup, help. (Textual's own commands
come with them: Theme, whose choice the app remembers, Keys, Screenshot, Quit.)

Start and ingest call the engine (`engine.runs.control.start_detached`,
`engine.context.ingest.ingest`) in a thread worker, and resume and pause go through the
Process pane, which does the same: the UI never waits on a runner starting or a folder
being read. A process whose recipe is left to the main model has it voted on by the
app's own main server, in a worker on the app's loop, and confirmed by the user (screens.
recipe_choice) before it starts. The engine is imported on use: none of it is in the
first frame's way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from textual.app import SystemCommand
from textual.screen import Screen
from textual.widget import Widget

from nanobot_tui.errors import NanobotError
from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import RESTART_SERVERS, error_line
from nanobot_tui.ui.panes.process_tree import ProcessTree
from nanobot_tui.ui.panes.volumes import VolumeBrowser
from nanobot_tui.ui.screens.path_prompt import PathPrompt
from nanobot_tui.ui.screens.process_prompt import AUTO, ProcessPrompt, ProcessRequest
from nanobot_tui.ui.screens.recipe_choice import RecipeChoice
from nanobot_tui.ui.widgets.run_tree import Entry
from nanobot_tui.units import human_bytes

if TYPE_CHECKING:
    from nanobot_tui.engine.context.ingest import IngestReport
    from nanobot_tui.engine.runs.spec import RunSpec
    from nanobot_tui.engine.work.classify import Classification

W = TypeVar("W", bound=Widget)
T = TypeVar("T")

# The durable run "Start" launches: the simulated sampler needs no model server. It is
# what this command line starts, k MAKER's k_min for p over all steps at 95 %.
START_DISKS, START_P, START_TARGET = 20, 0.99, 0.95
START_COMMAND = f"nanobot run hanoi --disks {START_DISKS} --sampler simulated:{START_P} --detach"

log = logging.getLogger(__name__)


def main_pane(app: EngineApp, kind: type[W]) -> W | None:
    """The main screen's pane of this type, whatever screen is on top."""
    for screen in app.screen_stack:
        found = screen.query(kind)
        if found:
            return found.first()
    return None


def commands(app: EngineApp, screen: Screen[Any]) -> Iterator[SystemCommand]:
    yield SystemCommand(
        "Start a durable run (Hanoi, simulated)",
        f"{START_COMMAND}; the Process pane follows it",
        lambda: start_run(app),
    )
    yield SystemCommand(
        "Start a process on a codebase…",
        "nanobot process TASK --on PATH: a recipe over every function, voted, on a snapshot",
        lambda: app.push_screen(ProcessPrompt(), lambda req: start_process(app, req)),
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
        lambda: app.push_screen(PathPrompt(), lambda path: ingest_folder(app, path)),
    )
    yield SystemCommand(
        "Setup…",
        "hardware, tier and models: pick and fetch the models for the three slots",
        lambda: open_setup(app),
    )
    yield SystemCommand(
        RESTART_SERVERS,
        "start again every model server that is down (the Hardware meter shows which)",
        lambda: restart_servers(app),
    )
    yield SystemCommand(
        "Learning: what nanobot has learned",
        "learning curve, cache hit rates, budgets and p, anomalies, skills; live (F3)",
        lambda: app.run_action("learning"),
    )
    yield SystemCommand(
        "Channels: the gateway's Telegram and email",
        "each channel's state, last error, messages in and out; how to start the gateway (F4)",
        lambda: app.run_action("channels"),
    )
    yield SystemCommand(
        "Learn now: train LoRA adapters",
        "nanobot learn in the background, or resume a stopped job; the Learning screen "
        "shows its progress (l there)",
        lambda: learn_now(app),
    )
    yield SystemCommand(
        "Stop learning",
        "stop the learning job; its training saves a checkpoint that Learn now resumes "
        "(s on the Learning screen)",
        lambda: stop_learning(app),
    )
    yield SystemCommand(
        "Help: keys and commands",
        "every key by pane, these commands, where the config and keymap live (F1)",
        lambda: app.run_action("help"),
    )


def learn_now(app: EngineApp) -> None:
    """Start the learning job in its worker (ui/learning_job.py), or say why not."""
    if not app.learner.start():
        app.notify("a learning job is running already (F3 shows it)", severity="warning")
    else:
        what = "resuming the stopped learning job" if app.learner.state.resumed else "learning"
        app.notify(f"{what}; the Learning screen (F3) shows its progress")


def stop_learning(app: EngineApp) -> None:
    if not app.learner.stop():
        app.notify("no learning job is running", severity="warning")
    else:
        app.notify("stopping the learning job: its training saves a checkpoint")


def _with_process(app: EngineApp, action: str) -> None:
    pane = main_pane(app, ProcessTree)
    if pane is None or pane.run_id is None:
        app.notify("no run: start one first", severity="warning")
        return
    status = pane.status.status if pane.status is not None else "unknown"
    if not pane.check_action(action, ()):
        app.notify(f"{pane.run_id} is {status}: nothing to {action}", severity="warning")
        return
    getattr(pane, f"action_{action}")()


def inspect_selected(app: EngineApp) -> None:
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
        from nanobot_tui.ui.screens.inspect_node import InspectScreen  # on first use

        app.push_screen(InspectScreen(pane.run_id, entry.node_id))


def in_background(
    app: EngineApp, call: Callable[[], T], done: Callable[[T], None], failed: str, what: str
) -> None:
    """`call()` in a thread worker; then, on the UI thread, `done(its result)`, or a
    notification titled `failed` with the one line saying why it did not succeed."""

    def work() -> None:
        try:
            result = call()
        except NanobotError as exc:
            app.call_from_thread(app.notify, str(exc), title=failed, severity="error")
        except Exception as exc:  # a bug must still say something, in one line
            log.exception("%s failed", what)
            problem = f"{type(exc).__name__}: {error_line(exc)}"
            app.call_from_thread(app.notify, problem, title=failed, severity="error")
        else:
            app.call_from_thread(done, result)

    app.run_worker(work, thread=True, group="palette", exit_on_error=False, description=what)


def start_spec() -> RunSpec:
    """The run "Start" creates: as `START_COMMAND` would."""
    from nanobot_tui.engine.runs.spec import RunSpec
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
    from nanobot_tui.engine.voting.domains.hanoi import Hanoi
    from nanobot_tui.engine.voting.maths import k_min

    steps = Hanoi(START_DISKS).total_steps()
    return RunSpec(
        domain="hanoi",
        params={"disks": START_DISKS},
        sampler=f"simulated:{START_P}",
        vote=VoteConfig(k=k_min(START_P, steps, START_TARGET)),
        label=f"hanoi{START_DISKS}",
    )


def start_run(app: EngineApp) -> None:
    def start() -> str:
        from nanobot_tui.engine.runs.control import start_detached

        return start_detached(start_spec())

    def started(run_id: str) -> None:
        app.attached_run = run_id
        app.notify(f"{run_id}: detached; the Process pane follows it", title="run started")

    app.notify("starting a durable Hanoi run…")
    in_background(app, start, started, "the run did not start", "start a durable run")


def start_process(app: EngineApp, request: ProcessRequest | None) -> None:
    """Snapshot the codebase and start the process detached (as `nanobot process ...
    --detach`); the Process pane follows it. None: the prompt was cancelled. A request
    whose recipe is AUTO has the main model choose one first (`choose_recipe`)."""
    if request is None:
        return
    if request.recipe == AUTO:
        choose_recipe(app, request)
        return
    req = request

    def start() -> tuple[str, str]:
        from nanobot_tui.engine.runs.control import start_detached
        from nanobot_tui.engine.runs.spec import Budgets
        from nanobot_tui.engine.work.process import prepare

        plan = prepare(
            req.task,
            Path(req.path),
            req.recipe,
            sampler=req.sampler,
            k=2,
            budgets=Budgets(steps=req.max_steps),
        )
        return start_detached(plan.spec), plan.line()

    def started(result: tuple[str, str]) -> None:
        run_id, line = result
        app.attached_run = run_id
        app.notify(f"{line}; {run_id} detached, the Process pane follows it",
                   title="process started")  # fmt: skip

    app.notify(f"taking a snapshot of {req.path}…")
    in_background(app, start, started, "the process did not start", "start a process")


def main_model_down(app: EngineApp) -> str | None:
    """Why the app's main model cannot answer now, or None when it can."""
    workbench = app.workbench
    if workbench is None or not app.engine_state.ready:
        return app.engine_state.error or "the model servers are still starting"
    if workbench.providers["main"].is_cloud:
        return None
    server = next((s for s in workbench.statuses() if "main" in s.slots), None)
    if server is None:
        return "no model server runs the main slot"
    if server.state != "ready":
        return f"the main model's server is {server.state}"
    return None


def choose_recipe(app: EngineApp, request: ProcessRequest) -> None:
    """The main model votes on the recipe for the request's task (as `nanobot process`
    without --recipe does), on the app's loop where the servers' clients live; the user
    confirms or changes it (RecipeChoice), then the process starts. With the main model
    down, or the vote failing, the prompt opens again with the request's values."""
    workbench = app.workbench
    why = main_model_down(app)
    if workbench is None or why is not None:
        app.notify(f"the main model cannot choose the recipe ({why}): pick one",
                   severity="warning")  # fmt: skip
        reopen_prompt(app, request)
        return
    slot = workbench.slots["main"]

    async def vote() -> None:
        from nanobot_tui.engine.work.classify import classify

        name = f"{slot.provider} main: {slot.display_name}"
        try:
            result = await classify(request.task, workbench.client("main"), name)
        except Exception as exc:  # a server gone mid-vote: say so, keep the request
            if isinstance(exc, NanobotError):
                problem = str(exc)
            else:
                log.exception("classify a task failed")
                problem = f"{type(exc).__name__}: {error_line(exc)}"
            app.notify(f"{problem}: pick a recipe", title="no recipe chosen", severity="error")
            reopen_prompt(app, request)
            return
        confirm_recipe(app, request, result)

    app.notify(f"{slot.display_name} is voting on the recipe for the task…",
               title="choosing a recipe")  # fmt: skip
    app.run_worker(vote(), group="palette", exit_on_error=False, description="choose a recipe")


def reopen_prompt(app: EngineApp, request: ProcessRequest) -> None:
    app.push_screen(ProcessPrompt(request), lambda req: start_process(app, req))


def confirm_recipe(app: EngineApp, request: ProcessRequest, result: Classification) -> None:
    """Show `result` for the request's task; the recipe the user confirms starts it, Esc
    starts nothing."""

    def chosen(recipe: str | None) -> None:
        if recipe is not None:
            start_process(app, replace(request, recipe=recipe))

    app.push_screen(RecipeChoice(request.task, result), chosen)


def ingest_summary(report: IngestReport) -> str:
    """What an ingest made, in one line (the first line `nanobot ingest` prints)."""
    return (
        f"volume {report.name}: {report.files} files, {report.lines:,} lines, "
        f"{human_bytes(report.bytes)}, ~{report.est_tokens:,} tokens"
    )


def ingest_folder(app: EngineApp, path: str | None) -> None:
    """Ingest `path` (None: the prompt was cancelled) as a volume; the Volumes pane lists
    it when done."""
    if not path:
        return
    folder = path

    def run() -> str:
        from nanobot_tui.engine.context.ingest import ingest

        return ingest_summary(ingest(folder))

    def ingested(summary: str) -> None:
        app.notify(summary, title="ingested")
        pane = main_pane(app, VolumeBrowser)
        if pane is not None and not pane.is_open:
            pane.action_refresh()

    app.notify(f"ingesting {folder}…")
    in_background(app, run, ingested, "ingest failed", "ingest a folder")


def restart_servers(app: EngineApp) -> None:
    """Every model server that is down, started again (on the app's loop, where the
    servers' manager lives)."""
    workbench = app.workbench
    if workbench is None or not app.engine_state.ready:
        why = app.engine_state.error or "they are still starting"
        app.notify(f"the model servers are not running: {why}", severity="warning")
        return

    async def restart() -> None:
        try:
            labels = await workbench.restart()
        except NanobotError as exc:
            app.notify(str(exc), title="the restart failed", severity="error")
            return
        if labels:
            app.notify(f"restarted: {', '.join(labels)}", title="model servers")
        else:
            app.notify("no model server is down", title="model servers")

    app.notify("restarting the model servers that are down…")
    app.run_worker(restart(), group="palette", exit_on_error=False, description="restart servers")


def open_setup(app: EngineApp) -> None:
    # Imported on use: the wizard's planning and download code stay out of the first frame.
    from nanobot_tui.ui.screens.setup import SetupScreen

    def done(written: Path | str | None) -> None:
        if written:
            app.notify(
                f"{written}: the servers pick up the new models when nanobot starts again",
                title="config written",
            )

    app.push_screen(SetupScreen(), done)
