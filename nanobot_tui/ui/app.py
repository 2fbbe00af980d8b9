"""The nanobot app: the main screen over a Workbench of model servers.

`EngineApp` (ui/engine_app.py) holds the engine; this class adds the screens, the themes,
the user's keymap, the command palette and watching the terminal for a hang-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable
from typing import Unpack

from textual import constants, events, on, work
from textual.app import SystemCommand
from textual.binding import Binding
from textual.driver import Driver
from textual.screen import Screen
from textual.theme import Theme

from nanobot_tui import __version__, paths
from nanobot_tui.config import Config
from nanobot_tui.ui import hangup, palette, themes
from nanobot_tui.ui.engine_app import EngineApp, EngineOptions
from nanobot_tui.ui.keymap import apply_keymap
from nanobot_tui.ui.screens.main import MainScreen

# How often the terminal is checked for a hang-up that came without a SIGHUP.
HANGUP_POLL_S = 1.0


class NanobotApp(EngineApp):
    TITLE = "nanobot"
    SUB_TITLE = f"local-first AI workbench · {__version__}"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("f1", "help", "Help", id="app.help"),
        Binding("question_mark", "help", "Help", id="app.help_alt", show=False),
        # Not in the footer, which is full at 80 columns: help (F1) and the palette list it.
        Binding("f3", "learning", "Learning", id="app.learning", show=False),
        Binding("f4", "channels", "Channels", id="app.channels", show=False),
        # Textual's Keys panel (palette: Keys) has no key of its own to close it. Only
        # while it is shown (check_action): otherwise Esc goes on to the focused widget.
        Binding(
            "escape",
            "hide_help_panel",
            "Close the keys panel",
            id="app.hide_keys",
            show=False,
            priority=True,
        ),
    ]

    def __init__(self, config: Config | None, **options: Unpack[EngineOptions]) -> None:
        """`config` None: there is no config file (see EngineApp)."""
        super().__init__(config, **options)
        # Warnings for the first frame: theme files and keymap entries that were skipped.
        self.startup_warnings: list[str] = []
        loaded = themes.load_themes()
        for theme in loaded.themes:
            self.register_theme(theme)
        self.startup_warnings += loaded.warnings
        self.theme, problem = themes.starting_theme(self.config, self.available_themes)
        if problem:
            self.startup_warnings.append(problem)
        self._remembered_theme = self.theme
        self.startup_warnings += apply_keymap(self, self.config.ui.keymap)
        if self.no_color:  # NO_COLOR: greys, but never a text as dark as its background
            self._filters = themes.readable_no_color(self._filters)
        self.terminal_gone = False

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        # Paint first, then start the servers: the first frame should not wait on them.
        self.call_after_refresh(self.start_engine)
        for warning in self.startup_warnings:
            self.notify(warning, severity="warning", timeout=10)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._watch_terminal()

    @on(events.DescendantFocus)
    def _no_blinking_cursor(self, event: events.DescendantFocus) -> None:
        """A blinking cursor repaints its input twice a second (about 2 KB/s over SSH, all
        an idle app would send): cursors stay lit instead."""
        if getattr(event.widget, "cursor_blink", False):
            event.widget.cursor_blink = False  # type: ignore[attr-defined]

    # --- themes and help ----------------------------------------------------------------

    def _theme_changed(self, theme: Theme) -> None:
        """A theme picked (the palette's Theme command): remembered in the config."""
        if theme.name != self._remembered_theme:
            self._remembered_theme = theme.name
            self._save_theme(theme.name)

    @work(thread=True, group="config", exit_on_error=False, description="save the theme")
    def _save_theme(self, name: str) -> None:
        # With no config file, the tier's defaults are written with the theme.
        problem = themes.remember_theme(name, self.settled_config())
        if problem:
            self.call_from_thread(self.notify, problem, severity="warning")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "hide_help_panel":
            return bool(self.screen.query("HelpPanel"))
        return super().check_action(action, parameters)

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        """The palette's Screenshot: into the Downloads folder, or NANOBOT_HOME/screenshots
        where there is none (Textual's own would fail to write it)."""
        if path is None:
            from platformdirs import user_downloads_path  # only a screenshot needs it

            downloads = user_downloads_path()
            folder = downloads if downloads.is_dir() else paths.ensure(paths.screenshots_dir())
            path = str(folder)
        return super().deliver_screenshot(filename, path, time_format)

    def action_help(self) -> None:
        from nanobot_tui.ui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_learning(self) -> None:
        from nanobot_tui.ui.screens.learning import open_learning  # on first use

        open_learning(self)

    def action_channels(self) -> None:
        from nanobot_tui.ui.screens.channels import open_channels  # on first use

        open_channels(self)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette.commands(self, screen)
        yield SystemCommand(
            "Run Towers of Hanoi (simulated)",
            "20 disks (1,048,575 steps), simulated sampler p=0.99, k by calibration; "
            "watch the Votes pane",
            lambda: self.start_demo_run(20),
        )
        yield SystemCommand(
            "Pick a run…",
            "the durable runs, with status and progress; the Process pane watches the one picked",
            self._pick_run,
        )

    def _pick_run(self) -> None:
        from nanobot_tui.ui.screens.runs import pick_run  # on first use

        pick_run(self)

    # --- the terminal going away ------------------------------------------------------

    def get_driver_class(self) -> type[Driver]:
        base = super().get_driver_class()
        if constants.DRIVER is not None or not hasattr(base, "run_input_thread"):
            return base  # a driver chosen by environment, or not the Linux/macOS one
        return hangup.hangup_driver_class(base, self.hang_up)

    def _watch_terminal(self) -> None:
        if self.is_headless:
            return
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.hang_up)
        fd = hangup.stdin_fd()
        if fd is not None:
            self.set_interval(HANGUP_POLL_S, lambda: self._check_terminal(fd))

    def _check_terminal(self, fd: int) -> None:
        if hangup.terminal_hung_up(fd):
            self.hang_up()

    def hang_up(self) -> None:
        """The terminal is gone (callable from any thread): stop the servers and exit,
        writing nothing more. A detached run goes on; it has its own session."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._hung_up)

    def _hung_up(self) -> None:
        if not self.terminal_gone:
            self.terminal_gone = True
            self.call_later(self.action_quit)

    async def action_quit(self) -> None:
        await self.stop_engine()
        self.exit()

    async def on_unmount(self) -> None:
        if not self.is_headless:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.stop_engine()
