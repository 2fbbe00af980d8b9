"""The vote counter: the run the app is watching, as MAKER's numbers.

A header (domain, sampler, k, progress, errors, rate), the last step's candidates with
their votes and the margin, red flags by reason, how many samples steps took, how many
steps were still undecided after each round (the decay MAKER reports), and the running
estimates of p and p_vote with the projected finish.

The pane polls `VoteMonitor.snapshot()` with a chained timer (the next poll is scheduled
when the last one is done, so polls never pile up), skips the work while its screen is
covered, and hands a Static new content only when what it would show changed: over SSH a
quiet pane costs nothing.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.text import Text
from textual import getters
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import (
    duration,
    fit,
    hbar,
    pad,
    plural,
    probability,
    progress_bar,
    rate_text,
    screen_shown,
    verdict,
)

if TYPE_CHECKING:
    from nanobot_tui.engine.voting.runner import VoteMonitor, VoteSnapshot

# The right column is 44 wide: a border each side and one column of padding each side.
WIDTH = 40
NO_RUN = "no run"
HINT = "ctrl+p → Run Towers of Hanoi (simulated)"
CANDIDATE_WIDTH = 22  # a Hanoi candidate reads "[1, 0, 2] -> [[...], ...]": the move fits
MAX_CANDIDATES = 3  # the last step's candidates shown, most votes first
HIST_ROWS = 5  # rows of the votes-per-step histogram; the tail is summed into "≥n"
SPARKS = "▁▂▃▄▅▆▇█"
SECTIONS = ("header", "step", "flags", "hist", "decay", "stats")


def spark(values: list[int]) -> str:
    """One block a value, on a log scale (the decay spans orders of magnitude)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    scale = math.log1p(top)
    return "".join(
        " " if v <= 0 else SPARKS[min(7, max(0, round(math.log1p(v) / scale * 7)))] for v in values
    )


def render_idle() -> Text:
    return Text.assemble((NO_RUN, "bold dim"), "\n", (HINT, "dim italic"))


def render_header(snap: VoteSnapshot) -> Text:
    """Domain, sampler (SIMULATED marked), k; progress; errors, rate and ETA."""
    marker = " SIMULATED " if snap.simulated else ""
    name_width = WIDTH - cell_len(snap.domain) - 3 - len(marker) - (1 if marker else 0)
    line1 = Text.assemble(
        (snap.domain, "bold"),
        (" · ", "dim"),
        (fit(snap.sampler, max(name_width, 4)), "dim"),
    )
    if marker:
        line1.append(" ")
        line1.append(marker, "bold black on yellow")
    total = max(snap.steps_total, 0)
    fraction = snap.steps_done / total if total else 0.0
    counts = f"{snap.steps_done:,}/{total:,}" if total else f"{snap.steps_done:,}"
    k = f"k={snap.k}"
    line2 = Text.assemble(
        (k, "bold"),
        "  ",
        progress_bar(fraction, WIDTH - len(k) - 2 - len(counts) - 1),
        " ",
        counts,
    )
    undecided = f" ({snap.undecided:,} undecided)" if snap.undecided else ""
    errors = Text(
        f"{plural(snap.errors, 'error')}{undecided}",
        style="bold red" if snap.errors else "green",
    )
    line3 = Text.assemble(errors, (" · ", "dim"), rate_text(snap.rate))
    if snap.finished:
        line3.append(" · ", "dim")
        line3.append(f"done in {duration(snap.elapsed_s)}")
    elif snap.eta_s is not None:
        line3.append(" · ", "dim")
        line3.append(f"ETA {duration(snap.eta_s)}")
    return Text("\n").join([line1, line2, line3])


def render_step(snap: VoteSnapshot) -> Text:
    """The last step's candidates: a bar and the votes each, the winner ticked."""
    # Steps are numbered from 1 here, like the "done/total" count above.
    last = snap.candidates_step
    title = Text.assemble(
        ("last step ", "bold"),
        ("–" if last is None else f"{last + 1:,}", "bold"),
        (" · margin ", "dim"),
        (f"{snap.margin}", "bold green" if snap.margin >= snap.k else "bold yellow"),
        (f"/{snap.k}", "dim"),
    )
    if not snap.candidates:
        return Text.assemble(title, "\n", ("no votes yet", "dim"))
    top = max(votes for _, votes, _ in snap.candidates) or 1
    votes_w = max(len(str(votes)) for _, votes, _ in snap.candidates)
    text_w = min(max(cell_len(text) for text, _, _ in snap.candidates), CANDIDATE_WIDTH)
    bar_w = WIDTH - 2 - text_w - 1 - 1 - votes_w
    more = len(snap.candidates) - MAX_CANDIDATES
    if more > 0:
        title.append(f" · +{more}", "dim")
    lines = [title]
    for text, votes, winner in snap.candidates[:MAX_CANDIDATES]:
        lines.append(
            Text.assemble(
                ("✓ " if winner else "  ", "bold green"),
                (pad(text, text_w), "bold" if winner else ""),
                " ",
                hbar(votes / top, bar_w, "green" if winner else "red"),
                " ",
                pad(str(votes), votes_w, right=True),
            )
        )
    return Text("\n").join(lines)


def render_flags(snap: VoteSnapshot) -> Text:
    flags = {reason: n for reason, n in snap.red_flags.items() if n}
    title = Text("red flags ", style="bold")
    if not flags:
        return Text.assemble(title, ("none", "dim"))
    parts = [
        Text.assemble((reason, "yellow"), f" {n:,}")
        for reason, n in sorted(flags.items(), key=lambda item: (-item[1], item[0]))
    ]
    return Text.assemble(title, Text(" · ", style="dim").join(parts))


def histogram_rows(histogram: dict[int, int], rows: int = HIST_ROWS) -> list[tuple[str, int]]:
    """(label, steps) rows, smallest vote counts first; the tail summed as "≥n"."""
    keys = sorted(n for n, count in histogram.items() if count)
    if len(keys) <= rows:
        return [(str(n), histogram[n]) for n in keys]
    head, tail = keys[: rows - 1], keys[rows - 1 :]
    return [(str(n), histogram[n]) for n in head] + [
        (f"≥{tail[0]}", sum(histogram[n] for n in tail))
    ]


def render_histogram(snap: VoteSnapshot) -> Text:
    title = Text("votes/step → steps", style="bold")
    if snap.steps_done:
        title.append(f"  ({snap.samples / snap.steps_done:.2f} samples/step)", "dim")
    rows = histogram_rows(snap.votes_histogram)
    if not rows:
        return Text.assemble(title, "\n", ("none yet", "dim"))
    label_w = max(cell_len(label) for label, _ in rows)
    count_w = max(len(f"{count:,}") for _, count in rows)
    bar_w = WIDTH - label_w - 1 - 1 - count_w
    top = max(count for _, count in rows) or 1
    lines = [title]
    for label, count in rows:
        lines.append(
            Text.assemble(
                (pad(label, label_w, right=True), "dim"),
                " ",
                hbar(count / top, bar_w, "cyan"),
                " ",
                pad(f"{count:,}", count_w, right=True),
            )
        )
    return Text("\n").join(lines)


def render_decay(snap: VoteSnapshot) -> Text:
    """Steps still undecided after round 1, 2, ...: a log sparkline and the numbers."""
    title = Text("undecided after round", style="bold")
    values = list(snap.undecided_after_round)
    if not values:
        return Text.assemble(title, "\n", ("none yet", "dim"))
    numbers = Text()
    for r, value in enumerate(values, start=1):
        piece = f"{'' if r == 1 else ' · '}r{r} {value:,}"
        if cell_len(numbers.plain + piece) > WIDTH - 2:
            numbers.append(" …", "dim")
            break
        numbers.append(piece, "dim" if value == 0 else "")
    return Text.assemble(title, " ", (spark(values[: WIDTH - 22]), "magenta"), "\n", numbers)


def render_stats(snap: VoteSnapshot, now: float | None = None) -> Text:
    """p and p_vote estimates; the projected finish (or how the run ended)."""
    line1 = Text.assemble(
        ("p ≈ ", "dim"),
        (probability(snap.p_estimate), "bold"),
        ("  p_vote ≈ ", "dim"),
        (probability(snap.p_vote_estimate), "bold"),
    )
    if snap.finished:
        outcome = verdict(
            snap.solved,
            right="finished · solved ✓",
            wrong="finished · NOT solved ✗",
            unknown=Text("finished", style="bold"),
        )
        if snap.stopped:
            outcome.append(f"\nstopped: {snap.stopped}", "yellow")
        return Text.assemble(line1, "\n", outcome)
    if snap.eta_s is None:
        return Text.assemble(line1, "\n", ("finish ≈ –", "dim"))
    at = time.localtime((time.time() if now is None else now) + snap.eta_s)
    return Text.assemble(
        line1,
        "\n",
        ("finish ≈ ", "dim"),
        (time.strftime("%H:%M:%S", at), "bold"),
        (f" (in {duration(snap.eta_s)})", "dim"),
    )


RENDERERS = {
    "header": render_header,
    "step": render_step,
    "flags": render_flags,
    "hist": render_histogram,
    "decay": render_decay,
    "stats": render_stats,
}


class VoteCounter(Vertical):
    """Polls the watched run's monitor at most four times a second and redraws only the
    sections whose text changed. With no run, or once the run is over, a poll costs an
    attribute read: no snapshot, no redraw."""

    INTERVAL = 0.25

    app = getters.app(EngineApp)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: dict[str, Text] = {}
        self._watching: VoteMonitor | None = None
        self._idle: bool | None = None  # None: nothing drawn yet
        self._settled = False  # the watched run is finished and fully drawn
        self.polls = 0  # snapshots taken (tests read it)

    def compose(self) -> ComposeResult:
        for name in SECTIONS:
            yield Static(id=f"votes-{name}")

    def on_mount(self) -> None:
        self.border_title = "Votes"
        self.poll()

    def poll(self) -> None:
        """One poll; the next one is scheduled when this one is done, so they never pile
        up. Nothing is read while another screen covers this one."""
        try:
            if screen_shown(self):
                self._refresh_from_monitor()
        finally:
            if self.is_attached:
                self.set_timer(self.INTERVAL, self.poll)

    def _refresh_from_monitor(self) -> None:
        monitor = self.app.vote_monitor
        if monitor is not self._watching:
            self._watching = monitor
            self._shown.clear()  # another run: draw everything afresh
            self._settled = False
        if monitor is None:
            self._show_idle()
            return
        if self._settled:
            return
        snap = monitor.snapshot()
        self.polls += 1
        self._show_run(snap)
        self._settled = snap.finished

    def _show_idle(self) -> None:
        if self._idle is True:
            return
        self._idle = True
        for name in SECTIONS[1:]:
            self.query_one(f"#votes-{name}", Static).display = False
        self._set("header", render_idle())

    def _show_run(self, snap: VoteSnapshot) -> None:
        if self._idle is not False:
            self._idle = False
            for name in SECTIONS[1:]:
                self.query_one(f"#votes-{name}", Static).display = True
        for name in SECTIONS:
            self._set(name, RENDERERS[name](snap))

    def _set(self, name: str, text: Text) -> None:
        """Hand the Static its text only when it differs from what it shows."""
        if self._shown.get(name) != text:
            self._shown[name] = text
            # A line too long for a narrower column is cut, never wrapped into the next.
            text.no_wrap = True
            text.overflow = "ellipsis"
            self.query_one(f"#votes-{name}", Static).update(text)

    def shown(self, name: str) -> str:
        """The plain text a section shows ("" when hidden or not drawn yet)."""
        text = self._shown.get(name)
        return "" if text is None else text.plain
