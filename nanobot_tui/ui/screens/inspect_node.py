"""The inspect screen: one node of a run, everything its store keeps about it.

For a step: its input state, the vote counts per candidate with the winner marked, each
sample (kept for real-model runs), red flags by reason, the result (answer, right or
wrong), timings, tokens and attempts, and its trace lines. For an inner node (a block or
the run's root): the steps it spans, its children's counts, timings, its summary and
error.

Everything is read once, in a thread worker, when the screen opens. The screen is one
scrollable column driven by the keyboard (arrows, page keys, g and G for the top and
the bottom); Esc goes back.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from nanobot_tui.text import printable
from nanobot_tui.ui.format import duration, fit, hbar, millis, plural, status_icon, verdict
from nanobot_tui.ui.screens.page import PageScreen
from nanobot_tui.ui.screens.runs import open_run

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.store import NodeRow, SampleRow, StepRow

TRACE_LINES = 20  # a step's trace lines shown, the latest (one per attempt)
SAMPLE_TEXT = 300  # characters of a sample's reply shown
VOTE_BAR = 20
SECTIONS = ("node", "input", "votes", "flags", "result", "change", "costs", "samples", "trace")


# --- pieces ---------------------------------------------------------------------------


def section(title: str, body: RenderableType) -> Group:
    return Group(Text(title, style="bold underline"), body, Text(""))


def kv_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def compact(value: Any) -> str:
    """A JSON value on one line, `[1, 0, 2]` style, without control sequences."""
    if isinstance(value, str):
        return printable(value)
    try:
        return printable(
            json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)
        )
    except (TypeError, ValueError):
        return printable(repr(value))


def plain_value(value: Any) -> RenderableType:
    """A state or an answer: a dict one key a line, anything else on one line."""
    if isinstance(value, dict):
        table = kv_table()
        for key, item in value.items():
            table.add_row(str(key), Text(compact(item)))
        return table
    return Text("–" if value is None else compact(value))


def node_title(row: NodeRow) -> str:
    if row.kind == "root":
        return "run"
    if row.kind == "step":
        return f"step {row.first_step + 1:,}"
    label = getattr(row, "label", None)
    if label:  # a grouped run's group: a code run's file
        return printable(" ".join(str(label).split()))
    return f"block {row.first_step + 1:,}–{row.last_step + 1:,}"


def status_text(status: str) -> Text:
    icon, style = status_icon(status)
    return Text(f"{icon} {status}", style=style)


# --- sections -------------------------------------------------------------------------


def render_node(row: NodeRow) -> RenderableType:
    """An inner node: span, children, totals, timings, summary, error."""
    table = kv_table()
    table.add_row("status", status_text(row.status))
    steps = row.last_step - row.first_step + 1
    table.add_row("span", f"steps {row.first_step + 1:,}–{row.last_step + 1:,} ({steps:,} steps)")
    children = getattr(row, "children", 0)
    done = Text.assemble(
        (f"{row.completed_children:,}/{children:,} completed", "green"),
        (" · ", "dim"),
        (f"{row.failed_children:,} failed", "bold red" if row.failed_children else "dim"),
    )
    table.add_row("children", done)
    table.add_row("errors", Text(f"{row.errors:,}", style="bold red" if row.errors else "green"))
    table.add_row("attempts", f"{row.attempts:,}")
    table.add_row("samples", f"{row.samples:,}")
    table.add_row("tokens", f"{row.tokens:,}")
    if row.started and row.finished:
        took = duration(max(float(row.finished) - float(row.started), 0.0))
    else:
        took = "running" if row.started else "–"
    table.add_row("took", took)
    table.add_row(
        "summary", Text(printable(str(row.summary))) if row.summary else Text("–", style="dim")
    )
    if row.error:
        table.add_row("error", Text(printable(str(row.error)), style="red"))
    return section(node_title(row), table)


def render_step_node(row: NodeRow, step: StepRow) -> RenderableType:
    table = kv_table()
    table.add_row("status", status_text(step.status))
    table.add_row("index", f"{step.step} (0-based, as the store and the trace count)")
    if row.summary:
        table.add_row("summary", Text(printable(str(row.summary))))
    if step.error or row.error:
        table.add_row("error", Text(printable(str(step.error or row.error)), style="red"))
    return section(node_title(row), table)


def render_input(step: StepRow) -> RenderableType:
    return section("input state", plain_value(step.input))


def winner_of(step: StepRow) -> str | None:
    """The winner's display key; without one recorded, the only leader, if any."""
    if step.winner is not None:
        return str(step.winner)
    ranked = sorted(step.votes.values(), reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0] == ranked[1]):
        return None
    return next(key for key, n in step.votes.items() if n == ranked[0])


def render_votes(step: StepRow) -> RenderableType:
    votes = step.votes or {}
    rounds = plural(step.rounds, "round")
    if not votes:
        return section(f"votes · {rounds}", Text("no valid votes", style="dim"))
    winner = winner_of(step)
    top = max(votes.values()) or 1
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)  # the winner's tick
    table.add_column(justify="right", no_wrap=True)  # votes
    table.add_column(no_wrap=True)  # bar
    table.add_column(overflow="fold")  # the candidate
    for key, n in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])):
        won = key == winner
        table.add_row(
            Text("✓" if won else " ", style="bold green"),
            f"{n:,}",
            hbar(n / top, VOTE_BAR, "green" if won else "red"),
            Text(printable(key), style="bold" if won else ""),
        )
    counts = sorted(votes.values(), reverse=True)
    margin = counts[0] - (counts[1] if len(counts) > 1 else 0)
    title = (
        f"votes · {sum(counts):,} valid of {step.samples:,} samples · margin {margin} · {rounds}"
    )
    return section(title, table)


def render_flags(step: StepRow) -> RenderableType:
    flags = {reason: n for reason, n in (step.red_flags or {}).items() if n}
    if not flags:
        return section("red flags", Text("none", style="dim"))
    table = kv_table()
    for reason, n in sorted(flags.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(Text(printable(reason), style="yellow"), f"{n:,}")
    return section(f"red flags · {sum(flags.values()):,}", table)


def render_result(step: StepRow) -> RenderableType:
    table = kv_table()
    table.add_row("answer", plain_value(step.answer))
    unchecked = Text("unchecked (no truth to check against)", style="dim")
    table.add_row(
        "verdict", verdict(step.correct, right="✓ correct", wrong="✗ wrong", unknown=unchecked)
    )
    return section("result", table)


def render_change(step: StepRow) -> RenderableType | None:
    """A code step's edit as a diff of the function, before and after (None for steps
    whose input is not a function's source, or that have no answer)."""
    site, answer = step.input, step.answer
    if not (isinstance(site, dict) and isinstance(site.get("source"), str)):
        return None
    if not isinstance(answer, str):
        return None
    path = printable(str(site.get("path", "")))
    first = int(site.get("start") or 1)
    lines = difflib.unified_diff(
        site["source"].splitlines(), answer.splitlines(), f"a/{path}", f"b/{path}", lineterm=""
    )
    text = Text()
    for line in lines:
        if line.startswith("@@"):  # hunk lines counted from the function's first line
            line = _shift_hunk(line, first - 1)
        style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")
        text.append(printable(line) + "\n", style)
    if not text:
        text = Text("no change: the function is kept as it was", style="dim")
    return section("change · the function before and after", text)


def _shift_hunk(line: str, by: int) -> str:
    head, _, tail = line[3:].partition(" @@")
    parts = []
    for part in head.split():  # "-3,4" / "+3,5"
        sign, (number, comma, count) = part[:1], part[1:].partition(",")
        parts.append(f"{sign}{int(number) + by}{comma}{count}")
    return f"@@ {' '.join(parts)} @@{tail}"


def render_costs(step: StepRow) -> RenderableType:
    table = kv_table()
    table.add_row("attempts", f"{step.attempts:,}")
    table.add_row("rounds", f"{step.rounds:,}")
    table.add_row("samples", f"{step.samples:,} ({step.valid:,} valid)")
    table.add_row("tokens", f"{step.completion_tokens:,} completion")
    table.add_row("model time", millis(step.latency_ms))
    table.add_row("wall time", millis(step.wall_ms))
    return section("timings and tokens", table)


def render_samples(samples: list[SampleRow]) -> RenderableType:
    if not samples:
        return section("samples", Text("not kept (a simulated run keeps the votes)", "dim"))
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold dim")
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("answer · reply", overflow="fold", ratio=1)
    table.add_column("flag", no_wrap=True)
    table.add_column("temp", justify="right", no_wrap=True)
    table.add_column("tok", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for sample in samples:
        answer = Text(printable(sample.key) if sample.key is not None else "–", style="bold")
        reply = fit(" ".join((sample.text or "").split()), SAMPLE_TEXT)
        if reply:
            answer.append(f"\n{reply}", "dim")
        table.add_row(
            str(sample.attempt),
            str(sample.i + 1),
            answer,
            Text(printable(sample.red_flag or ""), style="yellow"),
            "–" if sample.temperature is None else f"{sample.temperature:.2f}",
            "–" if sample.tokens is None else f"{sample.tokens:,}",
            millis(sample.latency_ms),
        )
    return section(f"samples · {len(samples):,}", table)


def render_trace(lines: list[dict[str, Any]]) -> RenderableType:
    """The step's trace lines as written to traces/<run>.jsonl (the run id left out)."""
    if not lines:
        return section("trace", Text("no trace lines yet", style="dim"))
    body = Text("\n").join(
        Text(compact({k: v for k, v in line.items() if k != "run"})) for line in lines
    )
    return section(f"trace · {plural(len(lines), 'line')}", body)


# --- the screen -----------------------------------------------------------------------


class InspectScreen(PageScreen):
    """One node of a run, read from its store; Esc goes back."""

    BINDINGS = [
        Binding("escape", "close", "Back", id="inspect.close"),
        Binding("g", "top", "Top", id="inspect.top", show=False),
        Binding("G", "bottom", "Bottom", id="inspect.bottom", show=False),
    ]

    @dataclass
    class Loaded(Message):
        node: NodeRow | None
        step: StepRow | None = None
        samples: list[SampleRow] = field(default_factory=list)
        trace: list[dict[str, Any]] = field(default_factory=list)
        error: str = ""

    def __init__(self, run_id: str, node_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.node_id = node_id
        self.node: NodeRow | None = None
        self.step: StepRow | None = None
        self.loaded = False

    def sections(self) -> Iterable[Static]:
        for name in SECTIONS:
            yield Static("", id=f"inspect-{name}", markup=False)

    def on_mount(self) -> None:
        self.title = f"run {self.run_id}"
        self.sub_title = "reading…"
        self.body.focus()
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="inspect",
          description="read a node")  # fmt: skip
    def load(self) -> None:
        try:
            store = open_run(self.run_id)
            try:
                node = store.node(self.node_id)
                if node.kind == "step":
                    step = store.step(node.first_step)
                    samples = store.samples(node.first_step)
                    trace = store.trace_lines(node.first_step, TRACE_LINES)
                    self.post_message(self.Loaded(node, step, samples, trace))
                else:
                    self.post_message(self.Loaded(node))
            finally:
                store.close()
        except Exception as exc:
            self.post_message(self.Loaded(None, error=" ".join(str(exc).split())))

    def shown(self, name: str) -> Static:
        return self.query_one(f"#inspect-{name}", Static)

    def _set(self, name: str, content: RenderableType | None) -> None:
        static = self.shown(name)
        static.display = content is not None
        if content is not None:
            static.update(content)

    @on(Loaded)
    def _loaded(self, message: Loaded) -> None:
        self.loaded = True
        node, step = message.node, message.step
        self.node, self.step = node, step
        if node is None:
            self.sub_title = "unreadable"
            self._set("node", Text(f"cannot read node {self.node_id}: {message.error}", "red"))
            for name in SECTIONS[1:]:
                self._set(name, None)
            return
        self.sub_title = f"{node_title(node)} · {node.status}"
        if step is None:
            self._set("node", render_node(node))
            for name in SECTIONS[1:]:
                self._set(name, None)
            return
        self._set("node", render_step_node(node, step))
        self._set("input", render_input(step))
        self._set("votes", render_votes(step))
        self._set("flags", render_flags(step))
        self._set("result", render_result(step))
        self._set("change", render_change(step))
        self._set("costs", render_costs(step))
        self._set("samples", render_samples(message.samples))
        self._set("trace", render_trace(message.trace))
