"""The Learning screen (F3, or the palette's "Learning"), over a real learned.db that the
engine filled (ResultCache.put/get, TaskHistory.record) and a skill the SkillLearner
crystallised: the hit rates, the budgets and p, the anomaly, the skill and the curve's
plots; it follows new tasks while it is open; the empty state; a damaged learned.db; and
SVG snapshots at 120x36 and 80x24 (update with `pytest tests/ui/test_learning_screen.py
--snapshot-update`, then look at the SVGs).

For the snapshots, what would change from one run to the next is pinned: NANOBOT_HOME is
a fixed folder, every stored time is set to a fixed moment long past (shown as a date, in
UTC), and the app runs no model server."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.containers import VerticalScroll
from textual.widgets import Static
from textual_plotext import PlotextPlot

from nanobot_tui.engine.learning import skills
from nanobot_tui.engine.learning.history import MIN_RECORDS, TaskHistory
from nanobot_tui.engine.learning.reuse import ResultCache
from nanobot_tui.engine.learning.store import LearningStore, learned_path
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.screens.help import key_sections, palette_commands
from nanobot_tui.ui.screens.learning import LearningScreen, curve_series
from nanobot_tui.ui.screens.main import MainScreen
from tests.conftest import until
from tests.test_import_weight import FIRST_FRAME, loaded_after
from tests.ui.palette import run_command
from tests.ui.test_app import small_config, text_of
from tests.ui.test_process_pane import quiet_app

SIZES = [(120, 36), (80, 24)]
SNAPSHOT_HOME = Path("/tmp/nanobot-snapshot-learning")
# 2026-01-02 03:04 UTC: every stored time is pinned a minute apart from here.
PINNED = 1767323040.0
RECIPE, DOMAIN = "recipe:fstrings", "domain:wordcase"
# The plot's own module, and plotext: only once the screen opens.
LAZY = ("nanobot_tui.ui.screens.learning", "textual_plotext", "plotext")


def fill() -> dict[str, Any]:
    """What a few days of use leave: L0 results of two step types, some reused; 23 recipe
    tasks getting cheaper (the last one, far costlier, an anomaly) and 8 domain tasks; one
    learned skill. Returns what the engine itself says of it, for the assertions."""
    with LearningStore() as store:
        cache = ResultCache(store)
        for word in ("cat", "dog", "owl", "elk"):
            cache.put("wordcase", word, word.upper(), fingerprint="fp", model="m",
                      verified_by="truth")  # fmt: skip
        cache.put("code:fstrings", {"f": "x"}, {"f": "y"}, fingerprint="fp", model="m",
                  verified_by="voted+checked")  # fmt: skip
        for word in ("cat", "cat", "dog", "bee"):  # 3 hits, 1 miss: 75 %
            cache.get("wordcase", word, fingerprint="fp", model="m")
        cache.get("code:fstrings", {"f": "z"}, fingerprint="fp", model="m")  # a miss: 0 %
        history = TaskHistory(store)
        for i in range(22):
            history.record(RECIPE, kind="recipe", steps=40 - i, tokens=4000 - 120 * i,
                           seconds=30.0 - i, samples_per_step=3.0, p=0.97,
                           success=i % 7 != 3)  # fmt: skip
        for i in range(8):
            history.record(DOMAIN, kind="domain", steps=12, tokens=900 + 10 * i, seconds=4.0,
                           samples_per_step=2.0, p=None, success=i != 1)  # fmt: skip
        recorded = history.record(RECIPE, kind="recipe", steps=400, tokens=60_000,
                                  seconds=600.0, samples_per_step=3.0, p=0.9,
                                  success=False)  # fmt: skip
        assert recorded.anomaly is not None
        budget = history.budget(RECIPE)
        assert budget is not None and history.budget(DOMAIN) is None
    learner = skills.SkillLearner()
    for i in range(skills.DEFAULT_MIN_SUCCESSES):
        steps = (
            skills.ToolStep("read_file", {"path": f"notes{i}.txt"}),
            skills.ToolStep("ctx_length", {"volume": f"notes{i}"}),
        )
        learner.observe_turn(skills.AgentTurn(
            session=f"s{i}", index=0, task=f"count the lines of notes{i}.txt", steps=steps,
            success=True, reason="answered", ts="2026-01-02T03:00:00",
        ))  # fmt: skip
    [skill] = skills.list_learned_skills()
    return {"anomaly": recorded.anomaly, "budget": budget, "skill": skill}


def pin_times() -> None:
    """Every stored time set to a fixed moment long past (the screen shows it as a date)."""
    with sqlite3.connect(learned_path()) as conn:
        conn.execute("UPDATE task_history SET finished = ? + 60 * id", (PINNED,))
        conn.execute("UPDATE anomalies SET at = ? + 60 * history_id", (PINNED,))
        conn.execute("UPDATE step_results SET created = ?, last_hit = CASE WHEN last_hit "
                     "IS NULL THEN NULL ELSE ? + 3000 END", (PINNED, PINNED))  # fmt: skip
    for skill in skills.list_learned_skills():
        text = skill.path.read_text()
        skill.path.write_text(re.sub(r"(?m)^created: .*$", "created: 2026-01-02T03:55:00.000Z",
                                     text))  # fmt: skip


async def opened(app: NanobotApp, pilot: Any) -> LearningScreen:
    """F3 on the main screen, until the Learning screen shows its first read."""
    await until(lambda: isinstance(app.screen, MainScreen))
    await pilot.press("f3")
    await until(lambda: isinstance(app.screen, LearningScreen) and app.screen.loaded)
    assert isinstance(app.screen, LearningScreen)
    return app.screen


def details(screen: LearningScreen) -> str:
    """Both columns of the details, one after the other."""
    more = screen.query_one("#learning-more", Static)
    shown = [screen.query_one("#learning-text", Static)] + ([more] if more.display else [])
    return "\n".join(text_of(part) for part in shown)


def status(screen: LearningScreen) -> str:
    return text_of(screen.query_one("#learning-status", Static))


async def test_the_screen_shows_hit_rates_budgets_the_anomaly_skills_and_the_curve() -> None:
    seeded = fill()
    app = quiet_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await opened(app, pilot)
        assert status(screen) == (
            "learning on · 31 tasks (2 types) · 5 cached, 60% hits · 1 anomaly · 1 skill"
        )
        text = details(screen)
        # L0: per step type, its results, hits, lookups and hit rate.
        assert re.search(r"wordcase\s+4\s+3/4\s+75%", text), text
        assert re.search(r"code:fstrings\s+1\s+0/1\s+0%", text), text
        # Budgets and p from the history, as the engine computes them; none before 20.
        budget = seeded["budget"]
        assert re.search(
            rf"{RECIPE}\s+23\s+83%\s+{budget.steps:,}\s+{budget.tokens:,}\s+\S+( \S+)?\s+"
            rf"{budget.p:.3f}\s+{budget.k}\b",
            text,
        ), text
        assert re.search(rf"{DOMAIN}\s+8\s+88%\s+–\s+–\s+–\s+–\s+–", text), text
        assert f"– budgets: the defaults, until a type has {MIN_RECORDS} tasks" in text
        # The anomaly, as the engine describes it.
        assert f"{RECIPE}: {seeded['anomaly'].describe()}" in " ".join(text.split())
        # The skill, with its status and counters.
        skill = seeded["skill"]
        assert f"{skill.name} active · 0 hits · 0 failures\n  {skill.description}" in text
        # What was learned last: the newest task first (it was recorded after the results).
        last = text[text.index("Learned last") :]
        assert "task recorded" in last and "failed, 60,000 tokens" in last
        assert "cached result" in last and "anomaly" in last and "skill" in last
        # The curve: both plots drawn, with a series per task type.
        assert screen.query_one("#learning-plots").display
        cost = screen.query_one("#learning-cost", PlotextPlot)
        accuracy = screen.query_one("#learning-accuracy", PlotextPlot)
        assert screen.overview is not None
        series = curve_series(screen.overview.curve)
        assert set(series) == {RECIPE, DOMAIN}
        xs, tokens, success = series[RECIPE]
        assert len(xs) == 23 and tokens[0] == 4000 and tokens[-1] == 60_000
        assert success[-1] == pytest.approx(80.0)  # its last 10: task 17 and the last failed
        for plot, title in ((cost, "tokens per task"), (accuracy, "% succeeded, last 10")):
            drawn = plot.plt.uncolorize(plot.plt.build())
            assert title in drawn
            # The first type's line in braille dots, the second's in bullets.
            assert re.search("[\u2801-\u28ff]", drawn) and "•" in drawn
        # Drawn again at another size (plotext's own log scale lost its data there).
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert re.search("[\u2801-\u28ff]", cost.plt.uncolorize(cost.plt.build()))
        legend = text_of(screen.query_one("#learning-legend", Static))
        assert legend.split() == ["⠉⠒", RECIPE, "••", DOMAIN]


async def test_the_screen_follows_new_tasks_while_it_is_open() -> None:
    fill()
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        assert "31 tasks (2 types)" in status(screen)
        with LearningStore() as store:  # as a runner in another process would
            TaskHistory(store).record("recipe:newtype", kind="recipe", steps=3, tokens=77,
                                      seconds=1.0, samples_per_step=1.0, p=None,
                                      success=True)  # fmt: skip
        await until(lambda: "32 tasks (3 types)" in status(screen))
        assert "recipe:newtype" in details(screen)
        assert screen.overview is not None and "recipe:newtype" in curve_series(
            screen.overview.curve
        )


async def test_the_palette_opens_it_f3_toggles_it_and_escape_closes_it() -> None:
    app = quiet_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        titles = [title for title, _ in palette_commands(app)]
        assert "Learning: what nanobot has learned" in titles
        assert ("f3", "Learning") in dict(key_sections(app))["Everywhere"]  # the help lists it
        await run_command(pilot, "Learning: what nanobot has learned")
        await until(lambda: isinstance(app.screen, LearningScreen) and app.screen.loaded)
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, MainScreen))
        screen = await opened(app, pilot)
        assert screen.query_one("#learning-details", VerticalScroll).has_focus
        await pilot.press("f3")
        await until(lambda: isinstance(app.screen, MainScreen))


async def test_the_empty_state_says_how_learning_happens_and_creates_nothing() -> None:
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        text = " ".join(details(screen).split())
        assert text.startswith(
            f"Nothing has been learned yet. ({learned_path()} does not exist yet, and there "
            "are no learned skills.)"
        )
        assert f"after {MIN_RECORDS} tasks of a type, its budgets and k come from" in text
        assert "Learning is off" not in text
        assert not screen.query_one("#learning-plots").display
        assert status(screen).startswith("learning on · 0 tasks (0 types)")
    assert not learned_path().exists()  # reading created no learned.db


async def test_the_empty_state_says_when_learning_is_off() -> None:
    with LearningStore():  # an empty learned.db: "holds nothing yet"
        pass
    config = small_config()
    config.learning.enabled = False
    from nanobot_tui.engine.serving.workbench import Workbench

    app = NanobotApp(config, workbench=Workbench(config, only_slots=()))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        text = " ".join(details(screen).split())
        assert f"({learned_path()} holds nothing yet" in text
        assert 'Learning is off in the config ("learning": {"enabled": false}).' in text
        assert status(screen).startswith("learning off")


async def test_a_damaged_learned_db_is_one_line_and_left_untouched() -> None:
    path = learned_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not sqlite" * 500)
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        line = status(screen)
        assert line.startswith("cannot read what was learned: ")
        assert "not a readable SQLite database" in line and "\n" not in line.strip()
    assert path.read_bytes() == b"not sqlite" * 500


def test_the_app_imports_the_screen_and_plotext_only_when_it_opens() -> None:
    assert loaded_after("import nanobot_tui.ui.app", LAZY) == []
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", FIRST_FRAME.format(watched=LAZY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[]]


@pytest.fixture
def snapshot_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fixed NANOBOT_HOME (the screen shows learned.db's path) and UTC dates."""
    shutil.rmtree(SNAPSHOT_HOME, ignore_errors=True)
    SNAPSHOT_HOME.mkdir(parents=True)
    monkeypatch.setenv("NANOBOT_HOME", str(SNAPSHOT_HOME))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield SNAPSHOT_HOME
    monkeypatch.undo()
    time.tzset()
    shutil.rmtree(SNAPSHOT_HOME, ignore_errors=True)


@pytest.mark.parametrize("size", SIZES, ids=["120x36", "80x24"])
def test_learning_screen(snap_compare: Any, size: tuple[int, int], snapshot_home: Path) -> None:
    fill()
    pin_times()
    app = quiet_app()

    async def ready(pilot: Any) -> None:
        await opened(app, pilot)

    assert snap_compare(app, terminal_size=size, run_before=ready)


def test_learning_screen_empty(snap_compare: Any, snapshot_home: Path) -> None:
    app = quiet_app()

    async def ready(pilot: Any) -> None:
        await opened(app, pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)
