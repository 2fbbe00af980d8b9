"""Keys: every binding has an id a keymap can rebind, the user's keymap from the config
(bad entries warned about, never fatal), the help screen (F1 or ?), and the palette's
actions: start, resume, inspect, ingest, setup, help."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.binding import Binding
from textual.widgets import Input, Static

from nanobot_tui.engine.runs.control import RunError, cancel_run
from nanobot_tui.engine.runs.store import RunStore, list_runs
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.keymap import check_keymap, declaring_classes, nanobot_bindings
from nanobot_tui.ui.panes.process_tree import ProcessTree
from nanobot_tui.ui.panes.volumes import VolumeBrowser
from nanobot_tui.ui.screens.help import HelpScreen, key_sections, palette_commands
from nanobot_tui.ui.screens.inspect_node import InspectScreen
from nanobot_tui.ui.screens.main import MainScreen
from nanobot_tui.ui.screens.path_prompt import PathPrompt
from nanobot_tui.ui.screens.setup import SetupScreen
from nanobot_tui.ui.widgets.prompt import PromptArea
from tests.conftest import until
from tests.engine.runs.runner_hold import HANG_GUARD_S
from tests.ui.palette import run_command
from tests.ui.test_app import small_config
from tests.ui.test_process_pane import (
    hanoi,
    make_run,
    quiet_app,
    shows,
    stored_status,
    watching,
)

SIZE = (120, 36)


def keyed_app(keymap: dict[str, str]) -> NanobotApp:
    config = small_config()
    config.ui.keymap = keymap
    return NanobotApp(config, workbench=Workbench(config, only_slots=()))


def plain(widget: Static) -> str:
    console = Console(width=160, no_color=True, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


async def started(app: NanobotApp) -> None:
    await until(lambda: isinstance(app.screen, MainScreen))


def test_every_binding_nanobot_declares_has_an_id_that_means_one_thing() -> None:
    """The keymap rebinds by id: a binding without one could not be rebound, and one id
    on two different actions would rebind both. (One action offered in two places, like
    "new session" in the chat and in the session picker, may share its id.)"""
    seen: dict[str, tuple[str, str]] = {}
    for cls in declaring_classes():
        for binding in Binding.make_bindings(cls.__dict__["BINDINGS"]):
            assert binding.id, f"{cls.__qualname__}: {binding.key} -> {binding.action} has no id"
            meaning = (binding.action, binding.description)
            first = seen.setdefault(binding.id, meaning)
            assert first == meaning, f"{binding.id}: {first} and, in {cls.__qualname__}, {meaning}"
    for expected in ("app.quit", "app.help", "chat.stop", "main.next_pane", "process.resume"):
        assert expected in seen


def test_check_keymap_keeps_good_entries_and_explains_bad_ones() -> None:
    known = set(nanobot_bindings())
    usable, warnings = check_keymap(
        {"app.quit": "ctrl+x", "chat.stop": "escape, ctrl+g", "app.qiut": "f9", "app.help": ""},
        known,
    )
    assert usable == {"app.quit": "ctrl+x", "chat.stop": "escape,ctrl+g"}
    assert warnings[0].startswith("keymap: no binding has the id 'app.qiut' (known here: ")
    assert "app.quit" in warnings[0]
    assert warnings[1] == "keymap: app.help: not a key: '' (e.g. 'ctrl+x' or 'f5')"


async def test_a_keymap_rebinds_quit_and_the_footer_and_help_show_it() -> None:
    app = keyed_app({"app.quit": "ctrl+x", "nope.nothing": "f9"})
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.pause()
        # The unknown id: a warning on screen, nothing else.
        notes = [n.message for n in app._notifications]
        assert any("no binding has the id 'nope.nothing'" in note for note in notes)
        assert "ctrl+x" in app.active_bindings and "ctrl+q" not in app.active_bindings
        sections = dict(key_sections(app))
        assert ("^x", "Quit") in sections["Everywhere"]
        await pilot.press("ctrl+q")  # the old key does nothing now
        await pilot.pause()
        assert app.is_running
        await pilot.press("ctrl+x")
        await until(lambda: not app.is_running)


async def test_help_screen_lists_keys_by_pane_commands_and_files() -> None:
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        # In the chat's prompt, ? is a character; F1 opens the help from anywhere.
        await pilot.press("question_mark")
        assert app.screen.query_one("#prompt", PromptArea).value == "?"
        await pilot.press("f1")
        await until(lambda: isinstance(app.screen, HelpScreen))
        keys = plain(app.screen.query_one("#help-keys", Static))
        for title in ("Everywhere", "Main screen", "Chat", "Process", "Volumes", "Setup"):
            assert f"\n{title}\n" in f"\n{keys}", title
        for line in ("f1 ?", "Next pane", "Stop answer", "Resume", "Search", "Inspect"):
            assert line in keys, line
        palette = plain(app.screen.query_one("#help-palette", Static))
        for command in ("Start a durable run", "Ingest a folder…", "Setup…", "Theme"):
            assert command in palette
        files = plain(app.screen.query_one("#help-files", Static))
        assert "config.json" in files and "ui.keymap" in files and "themes" in files
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, MainScreen))
        # With the focus off the prompt, ? opens it too.
        app.screen.set_focus(None)
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("q")
        await until(lambda: isinstance(app.screen, MainScreen))


async def test_palette_offers_the_apps_actions() -> None:
    app = quiet_app()
    async with app.run_test(size=SIZE):
        await started(app)
        titles = [title for title, _ in palette_commands(app)]
    for title in (
        "Start a durable run (Hanoi, simulated)",
        "Resume the watched run",
        "Pause the watched run",
        "Inspect the selected node",
        "Pick a run…",
        "Ingest a folder…",
        "Setup…",
        "Theme",
        "Help: keys and commands",
    ):
        assert title in titles, title


async def test_palette_starts_a_durable_run_the_process_pane_follows() -> None:
    app = quiet_app()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(app)
            await run_command(pilot, "Start a durable run")
            await until(lambda: app.attached_run is not None)
            pane = app.screen.query_one(ProcessTree)
            await watching(pane, str(app.attached_run))
            assert pane.status is not None and pane.status.domain.startswith("hanoi")
            assert [run["id"] for run in list_runs()] == [app.attached_run]
    finally:
        if app.attached_run:
            cancel_started(app.attached_run)


def cancel_started(run_id: str) -> None:
    """Cancel a run whose runner may still be starting ("just started; try again" until
    it holds the run); a run that ended meanwhile has nothing to cancel."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        try:
            cancel_run(run_id)
            return
        except RunError as exc:
            if "just started" not in str(exc):
                return
        assert time.monotonic() < deadline, f"run {run_id} never let itself be cancelled"
        time.sleep(0.05)


async def test_palette_resume_and_inspect_act_on_the_process_pane() -> None:
    stopped = await make_run(hanoi(6), steps=20)
    app = quiet_app(attach_run=stopped)
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        pane = app.screen.query_one(ProcessTree)
        await watching(pane, stopped)
        # Resume: a detached runner takes the run up and finishes it.
        await run_command(pilot, "Resume the watched run")
        await shows(pane, "completed")
        assert stored_status(stopped) == "completed"
        # Pause: the run is not running, so nothing is asked of the runner.
        await run_command(pilot, "Pause the watched run")
        await until(lambda: any("nothing to pause" in n.message for n in app._notifications))
        assert stored_status(stopped) == "completed"
        # Inspect: the node under the cursor (the first block).
        await run_command(pilot, "Inspect the selected node")
        await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)
        with RunStore.open(stopped) as store:
            first = store.children(store.root().id)[0]
        assert app.screen.node_id == first.id


async def test_palette_ingests_a_folder_and_the_volumes_pane_shows_it(tmp_path: Path) -> None:
    source = tmp_path / "notes"
    source.mkdir()
    (source / "a.md").write_text("# A\n\nalpha beta gamma\n")
    (source / "b.txt").write_text("delta\n" * 50)
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await run_command(pilot, "Ingest a folder…")
        await until(lambda: isinstance(app.screen, PathPrompt))
        field = app.screen.query_one("#path", Input)
        field.value = str(tmp_path / "missing")
        await pilot.press("enter")
        await pilot.pause()
        error = str(app.screen.query_one("#prompt-error", Static).content)
        assert error == f"no such file or folder: {tmp_path / 'missing'}"
        field.value = str(source)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, MainScreen))
        pane = app.screen.query_one(VolumeBrowser)
        await until(lambda: [v["name"] for v in pane.volumes] == ["notes"])
        assert pane.volumes[0]["files"] == 2


async def test_palette_opens_setup_and_esc_comes_back() -> None:
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await run_command(pilot, "Setup…")
        await until(lambda: isinstance(app.screen, SetupScreen))
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, MainScreen))


async def test_f1_opens_help_over_another_screen_and_f1_goes_back() -> None:
    run_id = await make_run(hanoi(5), steps=10)
    app = quiet_app(attach_run=run_id)
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        with RunStore.open(run_id) as store:
            node = store.root().id
        await app.push_screen(InspectScreen(run_id, node))
        await until(lambda: isinstance(app.screen, InspectScreen))
        await pilot.press("f1")
        await until(lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("f1")  # F1 again closes it
        await until(lambda: isinstance(app.screen, InspectScreen))


@pytest.mark.parametrize(
    "keys", ["notakey", "ctrl+notakey", "ctl+x", "f99", "escape,nokey", "ctrl+ctrl+x"]
)
def test_a_key_name_textual_does_not_know_is_refused(keys: str) -> None:
    """`"app.quit": "notakey"` once disabled quitting for good: a key nothing can press."""
    usable, warnings = check_keymap({"app.quit": keys}, set(nanobot_bindings()))
    assert usable == {}
    assert warnings == [f"keymap: app.quit: not a key: {keys!r} (e.g. 'ctrl+x' or 'f5')"]


@pytest.mark.parametrize(
    "keys", "ctrl+x f5 escape question_mark ? shift+f2 alt+enter a ctrl+shift+up space plus".split()
)
def test_key_names_textual_knows_are_kept(keys: str) -> None:
    usable, warnings = check_keymap({"app.quit": keys}, set(nanobot_bindings()))
    assert (usable, warnings) == ({"app.quit": keys}, [])


async def test_a_keymap_naming_no_real_key_keeps_the_default_quit() -> None:
    app = keyed_app({"app.quit": "notakey"})
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert any("not a key: 'notakey'" in note for note in notes)
        await pilot.press("ctrl+q")
        await until(lambda: not app.is_running)


async def test_the_keys_panel_closes_with_escape_and_escape_still_reaches_the_chat() -> None:
    from textual.widgets import HelpPanel

    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await run_command(pilot, "Keys")
        await until(lambda: bool(app.screen.query(HelpPanel)))
        await pilot.press("escape")
        await until(lambda: not app.screen.query(HelpPanel))
        # No panel: Esc is the focused widget's again (the chat's "stop", a no-op here).
        assert isinstance(app.screen, MainScreen)
        prompt = app.screen.query_one("#prompt", PromptArea)
        prompt.value = "kept"
        await pilot.press("escape")
        await pilot.pause()
        assert prompt.value == "kept" and isinstance(app.screen, MainScreen)


@pytest.mark.parametrize("downloads", [False, True])
async def test_the_screenshot_command_saves_even_without_a_downloads_folder(
    downloads: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nanobot_home: Path
) -> None:
    home = tmp_path / "user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DOWNLOAD_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))  # no user-dirs.dirs
    if downloads:
        (home / "Downloads").mkdir()
    folder = home / "Downloads" if downloads else nanobot_home / "screenshots"
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await run_command(pilot, "Screenshot")
        await until(lambda: any("screenshot" in n.message.lower() for n in app._notifications))
        await until(lambda: folder.is_dir() and any(folder.glob("*.svg")))
        notes = [n.message for n in app._notifications]
        assert any("Saved screenshot to" in note and str(folder) in note for note in notes), notes
