"""SVG snapshots of each screen at 120x36 and at 80x24: the main screen with a run under
way, the inspect screen, the volume browser, the recipe confirmation. (The setup screen's
are in test_setup_screen.py.)

What would change from one run to the next is pinned: the runs have fixed ids and seeds
and their clock-dependent values are set in their stores; the volume is ingested from a
fixed folder; the hardware meter reads a fixed sample (FixedHardwareSampler); the app
runs no model server. Before a picture of the main screen, the test waits until each pane
shown has drawn what it reads in the background (`settled`), never for a fixed time.
Update with `pytest tests/ui/test_screens_snapshot.py --snapshot-update`, then look at the
SVGs."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import OptionList, Static

from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.runs.store import db_path
from nanobot_tui.engine.work.classify import Classification
from nanobot_tui.hardware import HardwareSample
from nanobot_tui.ui.panes import meter
from nanobot_tui.ui.panes.meter import HardwareMeter
from nanobot_tui.ui.panes.process_tree import ProcessTree
from nanobot_tui.ui.panes.volumes import VolumeBrowser
from nanobot_tui.ui.panes.votes import VoteCounter
from nanobot_tui.ui.screens.inspect_node import InspectScreen
from nanobot_tui.ui.screens.main import MainScreen
from nanobot_tui.ui.screens.recipe_choice import RecipeChoice
from tests.conftest import until
from tests.ui.test_app import text_of
from tests.ui.test_process_pane import fixed_run, hanoi, make_run, quiet_app, watching

SIZES = [(120, 36), (80, 24)]
MAIN_RUN = "snapshot-main-hanoi10"
# A fixed path: the volume browser shows where a volume was ingested from.
VOLUME_SOURCE = Path("/tmp/nanobot-snapshot-volume")
GIB = 2**30


class FixedHardwareSampler:
    """Stands in for HardwareSampler: the same CPU, RAM and no GPU on every machine."""

    def sample(self) -> HardwareSample:
        return HardwareSample(
            cpu_percent=12.0,
            per_cpu=(12.0, 12.0),
            ram_used=3 * GIB,
            ram_total=16 * GIB,
            gpus=(),
            at=0.0,
        )

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def fixed_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meter, "HardwareSampler", FixedHardwareSampler)


def main_run() -> str:
    """A run stopped a third of the way by a step budget, its elapsed time pinned."""
    asyncio.run(make_run(hanoi(10, seed=2), steps=333, run_id=MAIN_RUN))
    with sqlite3.connect(db_path(MAIN_RUN)) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'elapsed_s'", (json.dumps(42.0),))
    return MAIN_RUN


def snapshot_volume() -> str:
    shutil.rmtree(VOLUME_SOURCE, ignore_errors=True)
    (VOLUME_SOURCE / "src" / "app").mkdir(parents=True)
    (VOLUME_SOURCE / "docs").mkdir()
    (VOLUME_SOURCE / "README.md").write_text("# Project\n\nA small project.\n")
    (VOLUME_SOURCE / "docs" / "guide.md").write_text("# Guide\n\n" + "Some words.\n" * 40)
    (VOLUME_SOURCE / "src" / "app" / "main.py").write_text(
        "def main() -> None:\n    print('hello')\n" * 30
    )
    (VOLUME_SOURCE / "src" / "app" / "util.py").write_text("VALUE = 1\n" * 120)
    ingest(VOLUME_SOURCE, name="project")
    return "project"


async def on_main(app: Any) -> MainScreen:
    await until(lambda: isinstance(app.screen, MainScreen))
    return app.screen


async def settled(screen: MainScreen) -> None:
    """Until each pane shown draws what it reads in the background: the process and votes
    panes their first poll, the volumes pane its list, the meter its first sample and the
    servers, the chat its status once the (empty) workbench is up."""
    process = screen.query_one(ProcessTree)
    votes = screen.query_one(VoteCounter)
    volumes = screen.query_one(VolumeBrowser)
    hardware = screen.query_one(HardwareMeter)
    chat = screen.query_one("#chat")
    drawn = [
        (process, lambda: process.shown_header() != ""),
        (votes, lambda: votes.shown("header") != ""),
        (volumes, lambda: volumes.query_one("#volumes-list", OptionList).option_count > 0),
        (hardware, lambda: "CPU" in text_of(hardware.hardware)),
        (hardware, lambda: "no model servers" in text_of(hardware.servers)),
        (chat, lambda: "ready" in text_of(chat.query_one("#chat-status", Static))),
    ]
    await until(lambda: all(check() for pane, check in drawn if pane.display))


@pytest.mark.parametrize("size", SIZES, ids=["120x36", "80x24"])
def test_main_screen_with_a_run(snap_compare: Any, size: tuple[int, int]) -> None:
    run_id = main_run()
    app = quiet_app(attach_run=run_id)

    async def ready(pilot: Any) -> None:
        screen = await on_main(app)
        pane = screen.query_one(ProcessTree)
        await watching(pane, run_id)
        pane.run_tree.focus()
        await pilot.press("space")  # the first block, open
        await until(lambda: len(pane.run_tree.root.children[0].children) == 10)
        await settled(screen)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=["120x36", "80x24"])
def test_inspect_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    run_id, node_id = fixed_run()
    app = quiet_app(attach_run=run_id)

    async def ready(pilot: Any) -> None:
        await on_main(app)
        await app.push_screen(InspectScreen(run_id, node_id))
        await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=["120x36", "80x24"])
def test_volume_browser(snap_compare: Any, size: tuple[int, int]) -> None:
    name = snapshot_volume()
    app = quiet_app()

    async def ready(pilot: Any) -> None:
        screen = await on_main(app)
        screen.show_pane("volumes")
        pane = screen.query_one(VolumeBrowser)
        await until(lambda: [v["name"] for v in pane.volumes] == [name])
        pane.open_volume(name)
        await until(lambda: pane.is_open)
        await settled(screen)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=["120x36", "80x24"])
def test_recipe_choice_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    app = quiet_app()
    voted = Classification(
        recipe="fstrings", decided=True, votes={"fstrings": 3, "instruction": 1}, samples=4
    )

    async def ready(pilot: Any) -> None:
        screen = await on_main(app)
        await settled(screen)
        await app.push_screen(RecipeChoice("use f-strings instead of % formatting", voted))
        await until(lambda: isinstance(app.screen, RecipeChoice) and app.screen.is_mounted)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=ready)
