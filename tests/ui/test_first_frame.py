"""What the app leaves until after its first frame: the views hidden at start (the
Process pane's run tree, the Volumes pane's open volume) are mounted when first shown, and
with no config file the hardware is detected when the servers start, not before.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from textual.widgets import OptionList, Tree

import nanobot_tui.engine.serving.workbench as workbench_module
import nanobot_tui.hardware
import nanobot_tui.ui.app as app_module
from nanobot_tui.cli import main as cli
from nanobot_tui.config import Config, default_config, save_config
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.hardware import Tier
from nanobot_tui.paths import config_path
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.panes.process_tree import ProcessTree
from nanobot_tui.ui.panes.volumes import EMPTY_HINT, VolumeBrowser
from nanobot_tui.ui.screens.main import MainScreen
from nanobot_tui.ui.widgets.run_tree import RunTree
from tests.conftest import until
from tests.ui.test_app import small_config
from tests.ui.test_process_pane import hanoi, make_run, quiet_app
from tests.ui.test_volume_pane import open_volume, prompts

SIZE = (140, 44)


async def test_hidden_views_are_mounted_when_first_shown(tmp_path: Path) -> None:
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        screen = app.screen
        process = screen.query_one(ProcessTree)
        volumes = screen.query_one(VolumeBrowser)
        listing = volumes.query_one("#volumes-list", OptionList)
        # Both panes read what they show (no run, no volume): nothing hidden is mounted.
        await until(lambda: process.shown_header() == "no run" and listing.option_count == 1)
        assert prompts(listing) == [EMPTY_HINT]
        assert not screen.query("#process-tree") and not screen.query("#volume-tree")
        assert not screen.query("#volumes-open-view")

        # A run: the pane follows it, in its tree, mounted under the header.
        run_id = await make_run(hanoi(4), steps=5)
        await until(lambda: process.run_id == run_id)
        tree = screen.query_one("#process-tree", RunTree)
        assert tree is process.run_tree and tree.display and tree.root.children
        assert [w.id for w in process.children][:3] == [
            "process-header",
            "process-tree",
            "process-status",
        ]

        # A volume opened: its view is mounted in the switcher, shown, the tree focused.
        (tmp_path / "a.txt").write_text("one\ntwo\n")
        ingest(tmp_path / "a.txt", name="notes")
        listing.focus()
        await pilot.press("r")
        await open_volume(pilot, "notes")
        view = screen.query_one("#volumes-open-view")
        assert view.display and not screen.query_one("#volumes-list-view").display
        assert app.focused is volumes.query_one("#volume-tree", Tree)
        # Back and open again: the same view, not a second one.
        await pilot.press("escape")
        await until(lambda: not volumes.is_open)
        await open_volume(pilot, "notes")
        assert len(screen.query("#volumes-open-view")) == 1


class FakeWorkbench:
    """A fake of the serving layer's Workbench (no model server starts): it records the
    config it was built from."""

    built: list[Config] = []

    def __init__(self, config: Config, **_: Any) -> None:
        FakeWorkbench.built.append(config)
        self.manager = SimpleNamespace(on_event=None)
        self.slots = {"main": SimpleNamespace(display_name="fake")}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_with_no_config_file_the_tier_is_detected_when_the_servers_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []

    def detect() -> SimpleNamespace:
        threads.append(threading.current_thread().name)
        return SimpleNamespace(tier=Tier.BEAST)

    monkeypatch.setattr(nanobot_tui.hardware, "detect", detect)
    monkeypatch.setattr(workbench_module, "Workbench", FakeWorkbench)
    FakeWorkbench.built = []
    # The servers' start is held back: everything up to the main screen needs no tier.
    start_engine = EngineApp.start_engine
    monkeypatch.setattr(EngineApp, "start_engine", lambda app: None)
    app = NanobotApp(None)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        await pilot.pause()
        assert threads == [] and FakeWorkbench.built == []
        assert app.config.ui.theme == Config().ui.theme
        start_engine(app)
        await until(lambda: app.engine_state.ready)
        # Detected once, in the start-up worker's thread, and the workbench got the
        # tier's defaults in the app's own config.
        assert len(threads) == 1 and threads[0] != threading.main_thread().name
        [config] = FakeWorkbench.built
        assert config is app.config and config.local == default_config(Tier.BEAST).local
        assert app.settled_config() is config and len(threads) == 1


async def test_a_given_config_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nanobot_tui.hardware, "detect", lambda: pytest.fail("detected"))
    config = small_config()
    app = NanobotApp(config, workbench=Workbench(config, only_slots=()))
    async with app.run_test(size=SIZE):
        await until(lambda: app.engine_state.ready)
        assert app.settled_config() is config
        assert config.local == small_config().local


def test_the_app_command_passes_no_config_when_there_is_no_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nanobot_tui.hardware, "detect", lambda: pytest.fail("detected"))
    given: list[Config | None] = []

    class FakeApp:
        def __init__(self, config: Config | None) -> None:
            given.append(config)

        def run(self) -> None:
            pass

    monkeypatch.setattr(app_module, "NanobotApp", FakeApp)
    assert cli.main([]) == 0
    save_config(small_config(), config_path())
    assert cli.main([]) == 0
    assert given[0] is None
    assert isinstance(given[1], Config) and given[1].local == small_config().local
