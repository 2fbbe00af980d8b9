"""The vote counter pane, driven through Pilot on real simulated runs of Towers of Hanoi."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from rich.text import Text
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker

from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.maths import k_min
from nanobot_tui.engine.voting.runner import RunSummary, VoteMonitor, run_domain
from nanobot_tui.engine.voting.samplers.simulated import SimulatedSampler
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.format import duration, fit, hbar, probability
from nanobot_tui.ui.panes.votes import (
    CANDIDATE_WIDTH,
    HINT,
    NO_RUN,
    SECTIONS,
    VoteCounter,
    histogram_rows,
    spark,
)
from tests.conftest import until
from tests.ui.palette import run_command
from tests.ui.test_app import small_config

SIZE = (140, 60)


def quiet_app() -> NanobotApp:
    """The app with no model servers: the pane needs none, and it starts at once."""
    config = small_config()
    return NanobotApp(config, workbench=Workbench(config, only_slots=()))


def spy_updates(pane: VoteCounter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the pane's Statics handed new content from now on, in order."""
    updates: list[str] = []
    for static in pane.query(Static):
        original = static.update

        def spy(
            content: Any, *, _id: str | None = static.id, _original: Any = original, **kw: Any
        ) -> None:
            updates.append(str(_id))
            _original(content, **kw)

        monkeypatch.setattr(static, "update", spy)
    return updates


def pane_of(app: NanobotApp) -> VoteCounter:
    return app.screen.query_one(VoteCounter)


def steps_shown(pane: VoteCounter) -> tuple[int, int]:
    match = re.search(r"([\d,]+)/([\d,]+)", pane.shown("header"))
    assert match, pane.shown("header")
    return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


def styles_of(text: Text, part: str) -> set[str]:
    """The styles of the spans that cover `part` of `text`."""
    start = text.plain.index(part)
    return {str(span.style) for span in text.spans if span.start <= start and span.end > start}


async def finished_run() -> tuple[VoteMonitor, RunSummary]:
    """A small simulated run, to completion: Hanoi 6 disks, p=0.9, k=2, some red flags;
    the first seed whose run has an error and a contested last step (so both show)."""
    for seed in range(200):
        domain = Hanoi(6)
        sampler = SimulatedSampler(domain, 0.9, seed=seed, red_flag_rate=0.05)
        monitor = VoteMonitor()
        summary = await run_domain(domain, sampler, VoteConfig(k=2), monitor=monitor)
        if summary.errors and len(monitor.snapshot().candidates) >= 2:
            return monitor, summary
    raise AssertionError("no seed gave an error and a contested last step")


async def test_no_run_then_a_finished_run(monkeypatch) -> None:
    monitor, summary = await finished_run()
    snap = monitor.snapshot()
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        assert pane.border_title == "Votes"
        await until(lambda: pane.shown("header") != "")
        # No run: one line and the hint, the other sections hidden.
        assert pane.shown("header") == f"{NO_RUN}\n{HINT}"
        assert all(not pane.query_one(f"#votes-{n}").display for n in SECTIONS[1:])
        # The pane fits the right column.
        assert pane.outer_size.width == 44

        app.vote_monitor = monitor
        await until(lambda: pane.shown("header").startswith("hanoi-6"))
        await pilot.pause()
        assert all(pane.query_one(f"#votes-{n}").display for n in SECTIONS)
        header = pane.shown("header")
        assert "simulated p=0.9" in header and "SIMULATED" in header
        assert "k=2" in header
        assert steps_shown(pane) == (63, 63) == (summary.steps, summary.total_steps)
        errors = f"{summary.errors} error{'s' if summary.errors != 1 else ''}"
        assert errors in header
        assert "bold red" in styles_of(pane._shown["header"], errors)
        assert "steps/s" in header and "done in" in header

        # The last step's candidates, most votes first, the winner ticked, and the margin.
        step = pane.shown("step").splitlines()
        assert step[0] == f"last step 63 · margin {snap.margin}/2"
        assert len(step) == 1 + len(snap.candidates)
        for line, (text, votes, winner) in zip(step[1:], snap.candidates, strict=True):
            assert line.startswith(("✓ " if winner else "  ") + fit(text, CANDIDATE_WIDTH)[:10])
            assert line.endswith(f" {votes}")
        assert sum(winner for _, _, winner in snap.candidates) == 1

        # Red flags by reason, the histogram, the decay, p and the outcome.
        flags = pane.shown("flags")
        assert flags == f"red flags parse {summary.red_flags['parse']}"
        hist = pane.shown("hist").splitlines()
        assert hist[0].startswith("votes/step → steps")
        assert f"{summary.samples / summary.steps:.2f} samples/step" in hist[0]
        rows = histogram_rows(summary.votes_per_step)
        assert len(hist) == 1 + len(rows)
        for line, (label, count) in zip(hist[1:], rows, strict=True):
            assert line.split()[0] == label and line.split()[-1] == f"{count:,}"
        assert sum(count for _, count in rows) == 63
        decay = pane.shown("decay").splitlines()
        assert decay[0].startswith("undecided after round")
        numbers = " · ".join(
            f"r{r} {n}" for r, n in enumerate(summary.undecided_after_round, start=1)
        )
        assert decay[1] == numbers
        stats = pane.shown("stats")
        assert f"p ≈ {snap.p_estimate:.4f}" in stats
        assert f"p_vote ≈ {probability(snap.p_vote_estimate)}" in stats
        assert "finished · NOT solved ✗" in stats  # a simulated run with an error

        # A finished run is drawn once: later polls read nothing and redraw nothing.
        updates = spy_updates(pane, monkeypatch)
        polls = pane.polls
        await pilot.pause(4 * pane.INTERVAL)
        assert pane.polls == polls and updates == []

        # Back to "no run": the hint again.
        app.vote_monitor = None
        await until(lambda: pane.shown("header").startswith(NO_RUN))
        assert updates == ["votes-header"]


async def test_polls_only_when_visible_and_redraws_only_changes(monkeypatch) -> None:
    # A run that has begun but voted nothing yet: every poll reads the same figures.
    domain = Hanoi(3)
    monitor = VoteMonitor()
    monitor.begin(domain.name, "simulated p=0.9", True, 2, domain.total_steps())
    app = quiet_app()
    app.vote_monitor = monitor
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await until(lambda: pane.shown("header").startswith("hanoi-3"))
        assert steps_shown(pane) == (0, 7)
        assert "no votes yet" in pane.shown("step")
        assert pane.shown("flags") == "red flags none"
        updates = spy_updates(pane, monkeypatch)
        polls = pane.polls
        await until(lambda: pane.polls >= polls + 3)
        assert updates == []  # polled, nothing changed, nothing redrawn

        # Covered by another screen: no polls at all.
        await app.push_screen(Screen())
        await pilot.pause()
        polls = pane.polls
        await pilot.pause(4 * pane.INTERVAL)
        assert pane.polls == polls
        app.pop_screen()
        await until(lambda last=polls: pane.polls > last)
        # The pane is never polled faster than four times a second.
        start, began = pane.polls, time.monotonic()
        await pilot.pause(1.0)
        assert (pane.polls - start) <= 4 * (time.monotonic() - began) + 1


@pytest.mark.timeout(300)  # a million simulated steps: slow when other jobs share the cores
async def test_palette_runs_a_simulated_hanoi_the_pane_follows(monkeypatch) -> None:
    app = quiet_app()
    workers: list[Worker] = []
    start = app.start_demo_run

    def spy(*args, **kwargs) -> Worker:
        workers.append(start(*args, **kwargs))
        return workers[-1]

    monkeypatch.setattr(app, "start_demo_run", spy)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await until(lambda: pane.shown("header").startswith(NO_RUN))
        await run_command(pilot, "Run Towers of Hanoi")
        await until(lambda: app.vote_monitor is not None)
        # Steps shown at each poll while the run goes, until it is over.
        seen: list[int] = []
        polls = pane.polls
        deadline = time.monotonic() + 240  # a hang guard only
        while not pane.shown("stats").count("finished"):
            assert time.monotonic() < deadline, "run did not finish"
            await until(lambda last=polls: pane.polls > last)
            polls = pane.polls
            if pane.shown("header").startswith("hanoi-"):
                seen.append(steps_shown(pane)[0])
        total = 2**20 - 1
        assert steps_shown(pane) == (total, total)
        running = [n for n in seen if 0 < n < total]
        assert len(running) >= 2, seen  # the pane moved while the run went
        assert running == sorted(running) and running[0] < running[-1]
        header = pane.shown("header")
        assert header.startswith("hanoi-20 · simulated p=0.99") and "SIMULATED" in header
        assert f"k={k_min(0.99, total, 0.95)}" in header  # the k calibration picks
        assert "0 errors" in header
        assert "finished · solved ✓" in pane.shown("stats")
        [worker] = workers
        assert worker.group == "run" and "simulated" in worker.description
        await worker.wait()
        summary = worker.result
        assert summary is not None and summary.solved and summary.steps == total


def test_formatting_helpers() -> None:
    assert [duration(s) for s in (0.0001, 0.04, 0.42, 12.4, 245, 3723, 2 * 86400 + 3723)] == [
        "<1 ms",
        "40 ms",
        "0.4 s",
        "12 s",
        "4:05",
        "1:02:03",
        "2d 01:02:03",
    ]
    assert [probability(x) for x in (None, 0.9357, 0.99999904, 1.0)] == [
        "–",
        "0.9357",
        "1−9.6e-07",
        "1.0000",
    ]
    # The histogram keeps a few rows, smallest vote counts first, the tail summed.
    histogram = {3: 980, 4: 30, 5: 8, 6: 2, 7: 1, 9: 1, 12: 1}
    assert histogram_rows(histogram, rows=5) == [
        ("3", 980),
        ("4", 30),
        ("5", 8),
        ("6", 2),
        ("≥7", 3),
    ]
    assert histogram_rows({2: 5, 4: 0}) == [("2", 5)]
    # Bars in eighths: any count shows, the largest fills the width.
    assert hbar(1 / 1000, 10, "").plain == "▏" + " " * 9
    assert hbar(1.0, 10, "").plain == "█" * 10
    assert hbar(0.0, 4, "").plain == "    "
    assert fit("[1, 0, 2] -> [[3], [], [2, 1]]", 12) == "[1, 0, 2] -…"
    # Undecided steps fall by orders of magnitude: a log sparkline still shows the tail.
    assert spark([41524, 824, 10, 0]) == "█▅▃ "
