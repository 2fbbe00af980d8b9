"""The Learning replay screen (`nanobot learned replay ROWS.jsonl`): a learning-curve
benchmark's rows drawn task by task as if it ran live.

Each arm (control, L0, L0+L1, all) is one series in two plots: the samples per task (a
rolling mean) and the share of its tasks solved so far; under them a legend (each arm
told apart by its marker too, not only its colour) and each arm's totals so far. Space
pauses and resumes; q or Esc goes back. The rows file is read in a thread worker; the
CLI reads it once before the app starts, so that a bad file is one line on stderr.

Rows: one JSON object per line, as the benchmark writes them (`REQUIRED`); blank lines
are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static
from textual_plotext import PlotextPlot

from nanobot_tui.errors import UsageError
from nanobot_tui.text import display_name
from nanobot_tui.ui.format import duration, error_line, fit, human_count
from nanobot_tui.ui.screens.learning import SERIES_LOOK, _spread
from nanobot_tui.ui.widgets.footer import Footer

if TYPE_CHECKING:
    from nanobot_tui.config import Config

# The arms in the order the benchmark adds loops; an arm not named here follows them.
ARMS = ("control", "L0", "L0+L1", "all")
# Each row's fields and their types (bool is checked apart: it is an int to Python).
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "task": int, "family": str, "arm": str, "steps": int, "voted_steps": int,
    "samples": int, "tokens": int, "wall_s": (int, float), "solved": bool, "right": int,
    "items": int, "reused": int, "example_uses": int, "k": int,
}  # fmt: skip
# The samples plot shows the mean over an arm's last ROLLING tasks.
ROLLING = 5
DEFAULT_SPEED = 4.0  # tasks per second


@dataclass(frozen=True, slots=True)
class ReplayRow:
    task: int
    family: str
    arm: str
    samples: int
    tokens: int
    wall_s: float
    solved: bool
    reused: int


def _check_row(data: Any) -> str | None:
    """Why `data` is not a row (None: it is one)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    missing = [name for name in REQUIRED if name not in data]
    if missing:
        return f"missing {', '.join(missing)}"
    for name, kind in REQUIRED.items():
        value = data[name]
        if (kind is bool) != isinstance(value, bool) or not isinstance(value, kind):
            return f"{name} is {json.dumps(value)[:40]}, not {_kind_name(kind)}"
    if data["task"] < 0:
        return f"task is {data['task']}, not 0 or more"
    if not data["arm"].strip():
        return "arm is empty"
    return None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", bool: "true or false"}
    return "a number" if isinstance(kind, tuple) else names[kind]


def read_rows(path: Path) -> list[ReplayRow]:
    """The rows of `path`, in file order. UsageError naming the file and line of the
    first bad one, or the file when it cannot be read or holds no row."""
    shown = display_name(str(path))
    try:
        with path.open(encoding="utf-8") as file:
            lines = file.readlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else error_line(exc)
        raise UsageError(f"{shown}: cannot read the rows: {why}") from exc
    rows: list[ReplayRow] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{shown}:{number}: not JSON ({exc.msg})") from exc
        problem = _check_row(data)
        if problem is not None:
            raise UsageError(f"{shown}:{number}: not a learning-curve row: {problem}")
        rows.append(
            ReplayRow(
                task=data["task"],
                family=data["family"],
                arm=data["arm"],
                samples=data["samples"],
                tokens=data["tokens"],
                wall_s=float(data["wall_s"]),
                solved=data["solved"],
                reused=data["reused"],
            )
        )
    if not rows:
        raise UsageError(f"{shown}: no learning-curve rows in it")
    return rows


# --- what is shown at task n -------------------------------------------------------------


@dataclass
class ArmTotals:
    """One arm's rows up to the task shown."""

    tasks: int = 0
    solved: int = 0
    samples: int = 0
    tokens: int = 0
    reused: int = 0
    wall_s: float = 0.0


@dataclass
class ArmSeries:
    """One arm's points up to the task shown: task numbers (1-based), samples per task
    (rolling mean) and % solved so far, and its totals."""

    xs: list[int]
    samples: list[float]
    solved: list[float]
    totals: ArmTotals


class Replay:
    """The rows, by task: `upto(n)` is what the screen shows after n tasks."""

    def __init__(self, rows: list[ReplayRow]) -> None:
        self.rows = sorted(rows, key=lambda r: r.task)  # stable: file order within a task
        self.tasks = sorted({row.task for row in rows})
        known = [arm for arm in ARMS if any(row.arm == arm for row in rows)]
        others = [row.arm for row in rows if row.arm not in ARMS]
        self.arms = known + list(dict.fromkeys(others))

    @property
    def total(self) -> int:
        return len(self.tasks)

    def upto(self, shown: int) -> dict[str, ArmSeries]:
        """Each arm's series over the first `shown` tasks (0: none yet)."""
        last = self.tasks[shown - 1] if shown > 0 else -1
        number = {task: i for i, task in enumerate(self.tasks, start=1)}
        series = {arm: ArmSeries([], [], [], ArmTotals()) for arm in self.arms}
        seen: dict[str, list[int]] = {arm: [] for arm in self.arms}
        for row in self.rows:
            if row.task > last:
                break
            arm = series[row.arm]
            totals = arm.totals
            totals.tasks += 1
            totals.solved += row.solved
            totals.samples += row.samples
            totals.tokens += row.tokens
            totals.reused += row.reused
            totals.wall_s += row.wall_s
            seen[row.arm].append(row.samples)
            recent = seen[row.arm][-ROLLING:]
            arm.xs.append(number[row.task])
            arm.samples.append(sum(recent) / len(recent))
            arm.solved.append(100 * totals.solved / totals.tasks)
        return series


def look(index: int) -> tuple[tuple[int, int, int], str, str]:
    """An arm's colour, plotext marker and legend sample (the Learning screen's)."""
    return SERIES_LOOK[index % len(SERIES_LOOK)]


def draw(
    samples: PlotextPlot, solved: PlotextPlot, series: dict[str, ArmSeries], total: int
) -> Text:
    """Both plots drawn afresh; returns the legend (one line)."""
    for plot, title in ((samples, f"samples per task (mean of {ROLLING})"),
                        (solved, "% solved so far")):  # fmt: skip
        plot.plt.clear_figure()
        plot.plt.title(title)
    legend = Text()
    for index, (arm, points) in enumerate(series.items()):
        color, marker, sample = look(index)
        if points.xs:
            samples.plt.plot(points.xs, points.samples, color=color, marker=marker)
            solved.plt.plot(points.xs, points.solved, color=color, marker=marker)
        legend.append(
            f"{sample} {fit(display_name(arm), 12)}", style="rgb({},{},{})".format(*color)
        )
        legend.append("   ")
    # The x axis spans the whole benchmark from the start: the lines grow into it.
    xticks = sorted({float(round(x)) for x in _spread(1, max(total, 1), 5)})
    values = [v for points in series.values() for v in points.samples]
    top = max(values, default=1.0)
    for plot in (samples, solved):
        plot.plt.xlim(1, max(total, 2))
        plot.plt.xticks(xticks, [f"{x:,.0f}" for x in xticks])
    samples.plt.ylim(0, top * 1.1 or 1)
    yticks = _spread(0, top, 3)
    samples.plt.yticks(yticks, [human_count(round(y)) for y in yticks])
    solved.plt.ylim(0, 100)
    solved.plt.yticks([0, 50, 100], ["0%", "50%", "100%"])
    samples.refresh()
    solved.refresh()
    return legend


def totals_table(series: dict[str, ArmSeries]) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold dim")
    table.add_column("arm", no_wrap=True, max_width=14)
    for column in ("tasks", "solved", "samples", "tokens", "reused", "time"):
        table.add_column(column, justify="right", no_wrap=True)
    for index, (arm, points) in enumerate(series.items()):
        color, _, sample = look(index)
        t = points.totals
        rate = f" {100 * t.solved / t.tasks:.0f}%" if t.tasks else ""
        table.add_row(
            Text(f"{sample} {fit(display_name(arm), 10)}", style="rgb({},{},{})".format(*color)),
            f"{t.tasks:,}", f"{t.solved:,}{rate}", f"{t.samples:,}", human_count(t.tokens),
            f"{t.reused:,}", duration(t.wall_s),
        )  # fmt: skip
    return table


# --- the screen ----------------------------------------------------------------------------


class LearningReplayScreen(Screen[None]):
    """A benchmark's rows replayed task by task; see the module note."""

    CSS_PATH = "learning_replay.tcss"
    BINDINGS = [
        Binding("space", "pause", "Pause/resume", id="replay.pause"),
        Binding("escape,q", "close", "Back", id="replay.close"),
    ]

    @dataclass
    class Loaded(Message):
        rows: list[ReplayRow] | None
        error: str = ""

    def __init__(self, path: Path, speed: float = DEFAULT_SPEED) -> None:
        """`speed`: tasks shown per second."""
        super().__init__()
        self.path = path
        self.speed = speed
        self.replay: Replay | None = None
        self.shown = 0  # tasks shown so far
        self.paused = False
        self.error = ""
        self.totals: dict[str, ArmTotals] = {}  # each arm's totals as shown

    @property
    def done(self) -> bool:
        return self.replay is not None and self.shown >= self.replay.total

    def compose(self) -> ComposeResult:
        with Vertical(id="replay-box"):
            yield Static("reading the rows…", id="replay-status", markup=False)
            with Horizontal(id="replay-plots"):
                yield PlotextPlot(id="replay-samples")
                yield PlotextPlot(id="replay-solved")
            yield Static(id="replay-legend")
            yield Static(id="replay-totals")
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#replay-box")
        box.border_title = "Learning replay"
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="replay-read",
          description="read the learning-curve rows")  # fmt: skip
    def load(self) -> None:
        try:
            rows = read_rows(self.path)
        except Exception as exc:  # the file changed since the CLI read it
            self.post_message(self.Loaded(None, error_line(exc)))
        else:
            self.post_message(self.Loaded(rows))

    @on(Loaded)
    def _loaded(self, message: Loaded) -> None:
        if message.rows is None:
            self.error = message.error
            self.query_one("#replay-status", Static).update(Text(message.error, style="red"))
            return
        self.replay = Replay(message.rows)
        self.show()
        self.set_interval(1 / self.speed, self.step, name="replay")

    def step(self) -> None:
        """One more task, unless paused or at the end."""
        if self.paused or self.done or self.replay is None:
            return
        self.shown += 1
        self.show()

    def status_text(self) -> Text:
        total = self.replay.total if self.replay is not None else 0
        text = Text.assemble(
            f"replay of {display_name(self.path.name)}: ", (f"task {self.shown}/{total}", "bold")
        )
        if self.done:
            text.append(" · done", style="green")
        elif self.paused:
            text.append(" · paused (space resumes)", style="yellow")
        return text

    def show(self) -> None:
        if self.replay is None:
            return
        series = self.replay.upto(self.shown)
        self.query_one("#replay-status", Static).update(self.status_text())
        legend = draw(
            self.query_one("#replay-samples", PlotextPlot),
            self.query_one("#replay-solved", PlotextPlot),
            series,
            self.replay.total,
        )
        self.query_one("#replay-legend", Static).update(legend)
        self.query_one("#replay-totals", Static).update(totals_table(series))
        self.totals = {arm: points.totals for arm, points in series.items()}

    def action_pause(self) -> None:
        if self.done:
            return
        self.paused = not self.paused
        self.query_one("#replay-status", Static).update(self.status_text())

    def action_close(self) -> None:
        self.dismiss(None)


class LearningReplayApp(App[None]):
    """The app `nanobot learned replay` opens: the replay screen alone (no model server
    starts); leaving the screen leaves the app. Given the config, in the user's theme."""

    TITLE = "nanobot"

    def __init__(
        self, path: Path, speed: float = DEFAULT_SPEED, config: Config | None = None
    ) -> None:
        super().__init__()
        self.path = path
        self.speed = speed
        if config is not None:
            from nanobot_tui.ui import themes

            for theme in themes.load_themes().themes:  # a bad theme file is skipped
                self.register_theme(theme)
            self.theme = themes.starting_theme(config, self.available_themes)[0]
            if self.no_color:
                self._filters = themes.readable_no_color(self._filters)

    def on_mount(self) -> None:
        self.push_screen(LearningReplayScreen(self.path, self.speed), lambda _: self.exit())
