"""The Learning screen (F3, or the palette's "Learning"): what nanobot has learned, live
while runs and the agent go on in the background.

The learning curve (tokens per task and the share that succeeded, task after task, one
series per task type), the L0 hit rates per step type, each task type's budgets and p,
the anomalies, the learned skills and the newest thing of each kind that was learned.
Everything comes from `engine.learning.overview.learned_overview`, read in a thread
worker every REFRESH_S while the screen is open; the screen redraws only when what it
read changed. This module (and plotext with it) is imported when the screen first opens.

Distillation: the app's learning job (ui/learning_job.py) in one line under the status
(its phase and progress, or the offer to train when a step type has enough new verified
examples), and in the details its training set, A/B result and the adapters of the
registry (engine/serving/adapter_registry.py, read with the overview). `l` starts the
job (or resumes a stopped one), `s` stops it; the job runs in a worker, never here.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events, getters, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static
from textual_plotext import PlotextPlot

from nanobot_tui.text import display_name
from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import duration, error_line, fit, human_count, plural, when
from nanobot_tui.ui.widgets.footer import Footer
from nanobot_tui.units import human_bytes

if TYPE_CHECKING:
    from nanobot_tui.engine.learning.history import TaskRecord, TaskTypeSummary
    from nanobot_tui.engine.learning.overview import LearnedOverview
    from nanobot_tui.engine.serving.adapter_registry import AdapterRecord
    from nanobot_tui.ui.learning_job import LearnState

log = logging.getLogger(__name__)

REFRESH_S = 2.0
# The curve draws the task types with the most tasks, at most this many.
MAX_SERIES = 4
# Each series' colour, plotext marker and the sample of it the legend shows: told apart
# by their marks too, not only by colour.
SERIES_LOOK: tuple[tuple[tuple[int, int, int], str, str], ...] = (
    ((0, 175, 255), "braille", "⠉⠒"),
    ((255, 135, 0), "dot", "••"),
    ((95, 215, 95), "+", "++"),
    ((215, 95, 215), "x", "xx"),
)
# Success is the share of a type's last ACCURACY_WINDOW tasks that succeeded.
ACCURACY_WINDOW = 10
# Anomalies listed (the newest); the rest are counted.
MAX_ANOMALIES = 5
NAME_WIDTH = 24
# From this many columns, the details stand in two columns side by side.
WIDE = 110

HOW_LEARNING_HAPPENS = (
    "nanobot learns from its own verified work. A step result that is verified (a known "
    "truth, or a voted winner that passed its checks) is cached, and the same step asked "
    "again is answered from the cache. Every finished task is recorded: after {min} tasks "
    "of a type, its budgets and k come from that history, and a task that costs far more "
    "than the history is flagged as an anomaly. An agent tool sequence that succeeds 3 "
    "times becomes a skill. Start a run or a process (ctrl+p) and watch this screen: it "
    "updates by itself."
)


def read_overview(learning: bool) -> LearnedOverview:
    """Everything learned (engine.learning.overview), off the UI thread."""
    from nanobot_tui.engine.learning.overview import learned_overview

    return learned_overview(learning=learning)


def read_adapters() -> list[AdapterRecord]:
    """The adapters' registry (none when stats.db does not exist: reading creates nothing)."""
    from nanobot_tui.engine.serving.adapter_registry import AdapterRegistry, registry_path

    if not registry_path().is_file():
        return []
    with AdapterRegistry() as registry:
        return registry.list()


def _name(text: str, width: int = NAME_WIDTH) -> str:
    return fit(display_name(text), width)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


# --- the curve --------------------------------------------------------------------------


def curve_series(curve: list[TaskRecord]) -> dict[str, tuple[list[int], list[int], list[float]]]:
    """Per task type (the MAX_SERIES with the most tasks, in the order they first ran):
    the task numbers (1 = the oldest task shown), its tokens, and the share of its last
    ACCURACY_WINDOW tasks that succeeded."""
    counts: dict[str, int] = {}
    for record in curve:
        counts[record.task_type] = counts.get(record.task_type, 0) + 1
    shown = set(sorted(counts, key=lambda t: -counts[t])[:MAX_SERIES])
    series: dict[str, tuple[list[int], list[int], list[float]]] = {}
    outcomes: dict[str, list[bool]] = {}
    for number, record in enumerate(curve, start=1):
        if record.task_type not in shown:
            continue
        xs, tokens, success = series.setdefault(record.task_type, ([], [], []))
        recent = outcomes.setdefault(record.task_type, [])
        recent.append(record.success)
        window = recent[-ACCURACY_WINDOW:]
        xs.append(number)
        tokens.append(record.tokens)
        success.append(100 * sum(window) / len(window))
    return series


def _spread(low: float, high: float, count: int) -> list[float]:
    """`count` values evenly spaced from `low` to `high` (just `low` when they are equal)."""
    if high <= low or count < 2:
        return [low]
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def draw_curve(cost: PlotextPlot, accuracy: PlotextPlot, curve: list[TaskRecord]) -> Text:
    """Both plots drawn afresh from `curve`; returns their legend (one line)."""
    series = curve_series(curve)
    for plot, title in ((cost, "tokens per task (log)"), (accuracy, "% succeeded, last 10")):
        plot.plt.clear_figure()
        plot.plt.title(title)
    legend = Text()
    for (task_type, (xs, tokens, success)), (color, marker, sample) in zip(
        series.items(), SERIES_LOOK, strict=False
    ):
        # log10 by hand: plotext's own log scale loses the data when a plot is drawn again
        # (a resize). A task that cost no token (every step reused) sits at 1.
        cost.plt.plot(xs, [math.log10(max(t, 1)) for t in tokens], color=color, marker=marker)
        accuracy.plt.plot(xs, success, color=color, marker=marker)
        legend.append(f"{sample} {_name(task_type, 20)}", style="rgb({},{},{})".format(*color))
        legend.append("   ")
    numbers = [x for xs, _, _ in series.values() for x in xs] or [1]
    xticks = sorted({float(round(x)) for x in _spread(min(numbers), max(numbers), 5)})
    logs = [math.log10(max(t, 1)) for _, tokens, _ in series.values() for t in tokens]
    yticks = _spread(min(logs, default=0.0), max(logs, default=0.0), 3)
    cost.plt.yticks(yticks, [human_count(round(10**y)) for y in yticks])
    accuracy.plt.ylim(0, 100)
    accuracy.plt.yticks([0, 50, 100], ["0%", "50%", "100%"])
    for plot in (cost, accuracy):
        plot.plt.xticks(xticks, [f"{x:,.0f}" for x in xticks])
        plot.refresh()
    return legend


# --- the tables ---------------------------------------------------------------------------


def _table(*columns: str) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold dim")
    for i, column in enumerate(columns):
        if i == 0:
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=NAME_WIDTH)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    return table


def _heading(text: str) -> Text:
    return Text(text, style="bold underline")


def results_part(overview: LearnedOverview, now: float) -> list[RenderableType]:
    parts: list[RenderableType] = [_heading("Cached results (L0): hit rate per step type")]
    if not overview.results:
        return [*parts, Text("  none yet", style="dim"), Text("")]
    table = _table("step type", "results", "hits", "rate", "last hit")
    for r in overview.results:
        table.add_row(
            _name(r.step_type), f"{r.results:,}", f"{r.hits:,}/{r.lookups:,}",
            Text(_percent(r.hit_rate), style="bold"), when(r.last_hit, now),
        )  # fmt: skip
    return [*parts, table, Text("")]


def _budget_cells(summary: TaskTypeSummary) -> tuple[str, ...]:
    budget = summary.budget
    if budget is None:
        return ("–", "–", "–", "–", "–")
    p = "–" if budget.p is None else f"{budget.p:.3f}"
    k = "–" if budget.k is None else str(budget.k)
    return (f"{budget.steps:,}", f"{budget.tokens:,}", duration(budget.seconds), p, k)


def budgets_part(overview: LearnedOverview) -> list[RenderableType]:
    parts: list[RenderableType] = [_heading("Budgets from history: per task type")]
    typed = [h for h in overview.history if h.records]
    if not typed:
        return [*parts, Text("  no task recorded yet", style="dim"), Text("")]
    table = _table("task type", "tasks", "ok", "steps", "tokens", "time", "p", "k")
    for h in typed:
        ok = _percent(h.successes / h.records)
        table.add_row(_name(h.task_type), f"{h.records:,}", ok, *_budget_cells(h))
    notes = []
    if any(h.budget is None for h in typed):
        notes.append(f"– budgets: the defaults, until a type has {overview.min_records} tasks")
    notes += [
        f"{display_name(h.task_type)}: no k ({h.budget.note})"
        for h in typed
        if h.budget is not None and h.budget.k is None and h.budget.note
    ]
    return [*parts, table, *(Text(n, style="dim") for n in notes), Text("")]


def anomalies_part(overview: LearnedOverview, now: float) -> list[RenderableType]:
    parts: list[RenderableType] = [_heading("Anomalies: costlier than their history")]
    if not overview.anomalies:
        return [*parts, Text("  none", style="dim"), Text("")]
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for anomaly in overview.anomalies[:MAX_ANOMALIES]:
        table.add_row(
            when(anomaly.at, now),
            Text.assemble(
                (display_name(anomaly.task_type), "bold yellow"), f": {anomaly.describe()}"
            ),
        )
    parts.append(table)
    more = len(overview.anomalies) - MAX_ANOMALIES
    if more > 0:
        parts.append(Text(f"  and {plural(more, 'older one')}", style="dim"))
    return [*parts, Text("")]


def skills_part(overview: LearnedOverview) -> list[RenderableType]:
    parts: list[RenderableType] = [_heading("Learned skills")]
    if not overview.skills:
        return [*parts, Text("  none yet", style="dim"), Text("")]
    for s in overview.skills:
        parts.append(
            Text.assemble(
                (_name(s.name), "bold"),
                " ",
                (s.status, "green" if s.status == "active" else "dim"),
                f" · {plural(s.hits, 'hit')} · {plural(s.failures, 'failure')}",
            )
        )
        if s.description:
            parts.append(Text(f"  {display_name(s.description)}", style="dim"))
    return [*parts, Text("")]


LAST_KINDS = {
    "result": "cached result",
    "task": "task recorded",
    "anomaly": "anomaly",
    "skill": "skill",
}


def last_part(overview: LearnedOverview, now: float) -> list[RenderableType]:
    parts: list[RenderableType] = [_heading("Learned last")]
    if not overview.last:
        return [*parts, Text("  nothing yet", style="dim")]
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for item in overview.last:
        table.add_row(
            when(item.at, now),
            Text.assemble(
                f"{LAST_KINDS.get(item.kind, item.kind)} ",
                (_name(item.name), "bold"),
                f": {display_name(item.detail)}",
            ),
        )
    return [*parts, table]


# --- distillation ----------------------------------------------------------------------------


def job_line(state: LearnState) -> Text | None:
    """The learning job in one line: what it does, why it failed, or what `l` would do;
    None when there is nothing to say."""
    kind = display_name(state.step_type) if state.step_type else ""
    if state.running:
        if state.stopping and state.phase in ("serve", "ab", "done"):
            # The job stops only while training: a test under way goes on to its end.
            return Text("stop asked for: the A/B test under way goes on to its end",
                        style="yellow")  # fmt: skip
        if state.stopping:
            return Text("stopping the learning job: its training saves a checkpoint…",
                        style="yellow")  # fmt: skip
        if state.phase == "train" and state.train is not None:
            t = state.train
            return Text.assemble(
                ("training ", "bold"), (kind, "bold"),
                f": epoch {t.epoch}/{t.epochs} · step {t.step}/{t.steps} · loss {t.loss:.3f}"
                f" · ETA {duration(t.eta_s)} · s stops",
            )  # fmt: skip
        if state.phase == "ab" and state.ab_total:
            return Text(f"A/B test of {kind}'s adapter: {state.ab_done}/{state.ab_total} "
                        f"{'fresh' if state.ab_on == 'fresh' else 'held-out'} steps")  # fmt: skip
        return Text(f"{kind}: {state.message}" if kind else state.message)
    if state.error:
        return Text(f"learning job failed: {state.error}", style="red")
    check = state.check
    if check.stopped:
        kinds = ", ".join(display_name(t) for t in check.stopped)
        return Text.assemble(("learning of ", "yellow"), (kinds, "bold yellow"),
                             (" stopped: press l to resume", "yellow"))  # fmt: skip
    if check.due:
        first = check.due[0]
        more = f" (and {plural(len(check.due) - 1, 'more type')})" if len(check.due) > 1 else ""
        return Text.assemble(
            f"{first.new:,} new verified examples of ", (display_name(first.step_type), "bold"),
            f"{more}: press l to train an adapter",
        )  # fmt: skip
    if state.line:
        return Text(f"last learning job: {state.line}", style="dim")
    return None


def ab_text(ab: dict[str, Any] | None) -> Text:
    """An A/B result: p of the base and of the adapter with their 95 % intervals, and
    the verdict."""
    if not ab:
        return Text("not tested", style="dim")
    (bl, bh), (al, ah) = ab["base_ci"], ab["adapter_ci"]
    verdict = str(ab["verdict"])
    style = {"better": "bold green", "worse": "bold red"}.get(verdict, "bold")
    return Text.assemble(
        f"p base {ab['p_base']:.2f} [{bl:.2f}, {bh:.2f}] vs adapter {ab['p_adapter']:.2f} "
        f"[{al:.2f}, {ah:.2f}] on {ab['n']}: ",
        (verdict, style),
    )


ADAPTER_STATUS_STYLE = {"promoted": "green", "candidate": "", "off": "dim", "demoted": "red"}


def distill_part(state: LearnState, adapters: list[AdapterRecord]) -> list[RenderableType]:
    """The Distillation part: the job (phase, training set, progress, A/B) and the adapters;
    nothing when there is neither a job nor an adapter nor anything to offer. (The job's
    headline is the line under the status, `job_line`: not repeated here.)"""
    line = job_line(state)
    if line is None and not adapters and not state.outcomes:
        return []
    parts: list[RenderableType] = [_heading("Distillation: LoRA adapters (l learns, s stops)")]
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    if state.running and state.step_type:
        phase = PHASES.get(state.phase, state.phase)
        grid.add_row("step type", Text.assemble((display_name(state.step_type), "bold"),
                                                f" · {phase}"))  # fmt: skip
    if state.dataset:
        grid.add_row("examples", state.dataset)
    if state.train is not None:
        t = state.train
        eta = f" · ETA {duration(t.eta_s)}" if state.running else ""
        grid.add_row(
            "training",
            f"{t.examples} examples · epoch {t.epoch}/{t.epochs} · step {t.step}/{t.steps} · "
            f"loss {t.loss:.3f} · {duration(t.elapsed_s)} of training{eta}",
        )
    for outcome in state.outcomes:
        if outcome.ab is not None:
            grid.add_row(f"A/B {fit(display_name(outcome.step_type), 12)}", ab_text(outcome.ab))
            grid.add_row("", Text(f"adapter {outcome.adapter_id} {outcome.status}", style="bold"))
        elif outcome.status == "stopped":
            checkpoint = outcome.reason.split(";")[0]  # the rest tells the CLI's way on
            grid.add_row("stopped", f"{display_name(outcome.step_type)}: {checkpoint}; l resumes")
    parts.append(grid)
    if adapters:
        table = _table("step type", "id", "status", "data", "A/B", "size")
        for a in adapters:
            verdict = (
                "–" if a.ab is None
                else f"{a.ab['p_base']:.2f}→{a.ab['p_adapter']:.2f} {a.ab['verdict']}"
            )  # fmt: skip
            table.add_row(
                _name(a.step_type, 20), str(a.id),
                Text(a.status, style=ADAPTER_STATUS_STYLE.get(a.status, "")),
                f"{a.train_examples}+{a.heldout}", verdict, human_bytes(a.bytes),
            )  # fmt: skip
        parts.append(table)
    else:
        parts.append(Text("  no adapters yet", style="dim"))
    return [*parts, Text("")]


PHASES = {
    "dataset": "building the training set",
    "base": "preparing the base model",
    "train": "training",
    "serve": "starting the server",
    "ab": "A/B test",
    "done": "done",
}


def render_details(overview: LearnedOverview, now: float) -> tuple[RenderableType, RenderableType]:
    """The two halves of the details: side by side on a wide screen, else one above the
    other (the order reads the same either way)."""
    kept = f"kept in {display_name(str(overview.path))} and the skills folder"
    return (
        Group(*results_part(overview, now), *budgets_part(overview)),
        Group(
            *anomalies_part(overview, now),
            *skills_part(overview),
            *last_part(overview, now),
            Text(""),
            Text(kept, style="dim"),
        ),
    )


def summary_line(overview: LearnedOverview) -> str:
    tasks = sum(h.records for h in overview.history)
    types = sum(1 for h in overview.history if h.records)
    cached = sum(r.results for r in overview.results)
    hits = sum(r.hits for r in overview.results)
    lookups = sum(r.lookups for r in overview.results)
    anomalies = len(overview.anomalies)
    parts = [
        f"learning {'on' if overview.learning else 'off'}",
        f"{plural(tasks, 'task')} ({plural(types, 'type')})",
        f"{cached:,} cached, {_percent(hits / lookups if lookups else None)} hits",
        f"{anomalies:,} {'anomaly' if anomalies == 1 else 'anomalies'}",
        plural(len(overview.skills), "skill"),
    ]
    return " · ".join(parts)


def empty_text(overview: LearnedOverview) -> Text:
    where = display_name(str(overview.path))
    state = "does not exist yet" if not overview.exists else "holds nothing yet"
    text = Text.assemble(
        ("Nothing has been learned yet.", "bold"),
        f" ({where} {state}, and there are no learned skills.)\n\n",
        HOW_LEARNING_HAPPENS.format(min=overview.min_records),
    )
    if not overview.learning:
        text.append(
            '\n\nLearning is off in the config ("learning": {"enabled": false}).',
            style="bold yellow",
        )
    return text


# --- the screen -----------------------------------------------------------------------------


class LearningScreen(Screen[None]):
    """What nanobot has learned, refreshed every REFRESH_S while open; Esc closes it. A
    full screen, not a modal one: the app's keys (F1 help, F3 back, ctrl+q) work on it."""

    CSS_PATH = "learning.tcss"
    engine_app = getters.app(EngineApp)
    BINDINGS = [
        Binding("escape", "close", "Back", id="learning.close"),
        Binding("l", "learn", "Learn", id="learning.learn"),
        Binding("s", "stop_learning", "Stop learning", id="learning.stop"),
    ]

    @dataclass
    class Read(Message):
        overview: LearnedOverview | None
        error: str = ""
        adapters: list[AdapterRecord] | None = None

    def __init__(self, learning: bool = True) -> None:
        """`learning`: whether the config has learning on (the app's config says)."""
        super().__init__()
        self.learning = learning
        self.overview: LearnedOverview | None = None
        self.loaded = False  # the first read has been shown
        self._shown_minute = -1
        self.adapters: list[AdapterRecord] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="learning-box"):
            yield Static("reading what was learned…", id="learning-status", markup=False)
            yield Static(id="learning-job", markup=False)
            with Horizontal(id="learning-plots"):
                yield PlotextPlot(id="learning-cost")
                yield PlotextPlot(id="learning-accuracy")
            yield Static(id="learning-legend")
            with VerticalScroll(id="learning-details"):
                yield Static(id="learning-distill")
                with Container(id="learning-columns"):
                    yield Static(id="learning-text")
                    yield Static(id="learning-more")
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#learning-box")
        box.border_title = "Learning"
        box.border_subtitle = "live"
        self.query_one("#learning-plots").display = False
        self.query_one("#learning-legend").display = False
        self.query_one("#learning-details", VerticalScroll).focus()
        learner = self.engine_app.learner
        learner.signal.subscribe(self, self._job_changed)
        self._job_changed(learner.state)
        learner.check()
        self.load()
        self.set_interval(REFRESH_S, self._tick)

    # --- the learning job ------------------------------------------------------------------

    def _job_changed(self, state: LearnState) -> None:
        line = job_line(state)
        job = self.query_one("#learning-job", Static)
        job.display = line is not None
        if line is not None:
            job.update(line)
        part = distill_part(state, self.adapters)
        distill = self.query_one("#learning-distill", Static)
        distill.display = bool(part)
        distill.update(Group(*part))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        running = self.engine_app.learner.state.running
        if action == "learn":
            return None if running else True  # shown, greyed, while a job runs
        if action == "stop_learning":
            return running
        return True

    def action_learn(self) -> None:
        learner = self.engine_app.learner
        if learner.start() and learner.state.resumed:
            self.notify("resuming the stopped learning job")

    def action_stop_learning(self) -> None:
        self.engine_app.learner.stop()

    def _tick(self) -> None:
        if self.is_current:  # not while another screen (the help) covers it
            self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="learning-read",
          description="read what was learned")  # fmt: skip
    def load(self) -> None:
        try:
            overview = read_overview(self.learning)
        except Exception as exc:  # a damaged learned.db, a bad config: one line
            self.post_message(self.Read(None, error_line(exc)))
            return
        try:
            adapters: list[AdapterRecord] | None = read_adapters()
        except Exception:  # a damaged stats.db: the adapters stay as last read
            log.warning("cannot read the adapters' registry", exc_info=True)
            adapters = None
        self.post_message(self.Read(overview, adapters=adapters))

    @on(Read)
    def _read(self, message: Read) -> None:
        status = self.query_one("#learning-status", Static)
        if message.overview is None:
            status.update(Text(f"cannot read what was learned: {message.error}", style="red"))
            self.loaded = True
            return
        if message.adapters is not None and message.adapters != self.adapters:
            self.adapters = message.adapters
            self._job_changed(self.engine_app.learner.state)
        now = time.time()
        minute = int(now // 60)  # "3 min ago" goes stale: redraw once a minute regardless
        if message.overview == self.overview and minute == self._shown_minute:
            return
        changed_curve = self.overview is None or message.overview.curve != self.overview.curve
        self.overview, self._shown_minute = message.overview, minute
        self.show(message.overview, now, changed_curve)
        self.loaded = True

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")

    def show(self, overview: LearnedOverview, now: float, draw: bool = True) -> None:
        status = self.query_one("#learning-status", Static)
        plots = self.query_one("#learning-plots")
        legend = self.query_one("#learning-legend", Static)
        text = self.query_one("#learning-text", Static)
        more = self.query_one("#learning-more", Static)
        curve = bool(overview.curve) and not overview.empty
        plots.display = legend.display = curve
        more.display = not overview.empty
        if overview.empty:
            status.update(Text(summary_line(overview), style="dim"))
            text.update(empty_text(overview))
            return
        status.update(summary_line(overview))
        if draw and curve:
            legend.update(
                draw_curve(
                    self.query_one("#learning-cost", PlotextPlot),
                    self.query_one("#learning-accuracy", PlotextPlot),
                    overview.curve,
                )
            )
        left, right = render_details(overview, now)
        text.update(left)
        more.update(right)

    def action_close(self) -> None:
        self.dismiss(None)


def open_learning(app: EngineApp) -> None:
    """Show the Learning screen (closing it when it is already on top)."""
    if isinstance(app.screen, LearningScreen):
        app.screen.dismiss(None)
        return
    app.push_screen(LearningScreen(learning=app.config.learning.enabled))
