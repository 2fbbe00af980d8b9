"""The nanobot app: the main screen over a Workbench of model servers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable

from textual import constants, events, on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.driver import Driver
from textual.screen import Screen
from textual.signal import Signal
from textual.theme import Theme
from textual.worker import Worker

from nanobot_tui import __version__
from nanobot_tui.config import Config
from nanobot_tui.engine.agent.build import AgentKit, build_agent, open_session
from nanobot_tui.engine.agent.delegate import Delegation
from nanobot_tui.engine.serving.manager import ServerEvent, ServerStartError
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.maths import k_min
from nanobot_tui.engine.voting.runner import RunSummary, VoteMonitor, run_domain
from nanobot_tui.engine.voting.samplers.simulated import SimulatedSampler
from nanobot_tui.ui import hangup as terminal
from nanobot_tui.ui import palette, themes
from nanobot_tui.ui.keymap import apply_keymap
from nanobot_tui.ui.messages import EngineChanged, EngineState, ServerChanged
from nanobot_tui.ui.screens.main import MainScreen
from nanobot_tui.ui.screens.runs import pick_run
from nanobot_tui.ui.widgets.agent_tree import DelegationChanged

# How often the terminal is checked for a hang-up that came without a SIGHUP.
HANGUP_POLL_S = 1.0


class NanobotApp(App[None]):
    TITLE = "nanobot"
    SUB_TITLE = f"local-first AI workbench · {__version__}"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("f1", "help", "Help", id="app.help"),
        Binding("question_mark", "help", "Help", id="app.help_alt", show=False),
    ]

    def __init__(
        self,
        config: Config,
        *,
        workbench: Workbench | None = None,
        attach_run: str | None = None,
    ) -> None:
        """`workbench` is built from `config` unless given (tests and benchmarks pass one);
        `attach_run` is the durable run the process tree pane shows (None: the most recent
        run, if any)."""
        super().__init__()
        self.config = config
        self.attached_run: str | None = attach_run
        self.workbench: Workbench | None = workbench
        # The chat agent, built at the first turn; `session_name` is the session it goes on
        # in (None: a new one, named when the agent is built).
        self.kit: AgentKit | None = None
        self.session_name: str | None = None
        self._kit_lock = asyncio.Lock()
        # The chat session's delegations to subagents, by id, for the process tree pane.
        self.delegations: dict[int, Delegation] = {}
        self.delegation_signal: Signal[Delegation | None] = Signal(self, "delegation")
        # The voted run the vote counter pane watches (None: no run yet).
        self.vote_monitor: VoteMonitor | None = None
        self.engine_state = EngineState()
        self.server_signal: Signal[ServerEvent] = Signal(self, "server")
        self.engine_signal: Signal[EngineState] = Signal(self, "engine")
        self._engine_settled = asyncio.Event()
        # Warnings for the first frame: theme files and keymap entries that were skipped.
        self.startup_warnings: list[str] = []
        loaded = themes.load_themes()
        for theme in loaded.themes:
            self.register_theme(theme)
        self.startup_warnings += loaded.warnings
        self.theme, problem = themes.starting_theme(config, self.available_themes)
        if problem:
            self.startup_warnings.append(problem)
        self._remembered_theme = self.theme
        self.startup_warnings += apply_keymap(self, config.ui.keymap)
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
        problem = themes.remember_theme(name, self.config)
        if problem:
            self.call_from_thread(self.notify, problem, severity="warning")

    def action_help(self) -> None:
        from nanobot_tui.ui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # --- the terminal going away ------------------------------------------------------

    def get_driver_class(self) -> type[Driver]:
        base = super().get_driver_class()
        if constants.DRIVER is not None or not hasattr(base, "run_input_thread"):
            return base  # a driver chosen by environment, or not the Linux/macOS one
        return terminal.hangup_driver_class(base, self.hang_up)

    def _watch_terminal(self) -> None:
        if self.is_headless:
            return
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.hang_up)
        fd = terminal.stdin_fd()
        if fd is not None:
            self.set_interval(HANGUP_POLL_S, lambda: self._check_terminal(fd))

    def _check_terminal(self, fd: int) -> None:
        if terminal.terminal_hung_up(fd):
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

    @work(exclusive=True, group="engine", exit_on_error=False, description="start servers")
    async def start_engine(self) -> None:
        try:
            if self.workbench is None:
                # Planning reads GGUF headers and may run `llama-server --version`: off the loop.
                self.workbench = await asyncio.to_thread(
                    Workbench, self.config, on_event=self._server_event
                )
            else:
                self.workbench.manager.on_event = self._server_event
            await self.workbench.start()
        except ServerStartError as exc:
            self.post_message(EngineChanged(EngineState(error=str(exc), detail=exc.log_tail)))
        else:
            self.post_message(EngineChanged(EngineState(ready=True)))

    def _server_event(self, event: ServerEvent) -> None:
        self.post_message(ServerChanged(event))

    @on(ServerChanged)
    def _server_changed(self, message: ServerChanged) -> None:
        self.server_signal.publish(message.event)

    @on(EngineChanged)
    def _engine_changed(self, message: EngineChanged) -> None:
        self.engine_state = message.state
        self._engine_settled.set()
        self.engine_signal.publish(message.state)

    async def agent_kit(self) -> AgentKit:
        """The chat agent, built once the servers are up (on `session_name`, or a new
        session); RuntimeError if they could not start."""
        await self._engine_settled.wait()
        if not self.engine_state.ready or self.workbench is None:
            raise RuntimeError(self.engine_state.error or "the model servers are not running")
        async with self._kit_lock:
            if self.kit is None:
                session = await asyncio.to_thread(open_session, self.session_name)
                try:
                    self.kit = await build_agent(
                        self.workbench,
                        self.config,
                        session=session,
                        on_delegation=self.note_delegation,
                    )
                except BaseException:
                    session.close()
                    raise
                self.session_name = session.name
            return self.kit

    def use_session(self, name: str | None) -> None:
        """Go on in session `name` (None: a new one) from the next turn. No turn may be
        running: the agent is closed and built again for that session."""
        self.close_agent()
        self.session_name = name
        self.delegations.clear()
        self.delegation_signal.publish(None)

    def close_agent(self) -> None:
        if self.kit is not None:
            kit, self.kit = self.kit, None
            kit.close()

    def note_delegation(self, record: Delegation) -> None:
        """A delegation started, advanced or ended (the agent calls this; any thread)."""
        self.post_message(DelegationChanged(record))

    @on(DelegationChanged)
    def _delegation_changed(self, message: DelegationChanged) -> None:
        record = message.record
        if record is not None:
            if not record.session.startswith(f"{self.session_name}-sub"):
                return  # a late word from the session the chat just left
            self.delegations[record.id] = record
        self.delegation_signal.publish(record)

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
            lambda: pick_run(self),
        )

    def start_demo_run(self, disks: int = 10, p: float = 0.99) -> Worker[RunSummary]:
        """Solve Towers of Hanoi with voting on the SIMULATED sampler (right with
        probability p), k the smallest that reaches 95 % over all steps; the vote
        counter pane watches it. A new run replaces one still going."""
        domain = Hanoi(disks)
        sampler = SimulatedSampler(domain, p)
        cfg = VoteConfig(k=k_min(p, domain.total_steps(), 0.95))
        monitor = VoteMonitor()
        self.vote_monitor = monitor

        async def run() -> RunSummary:
            try:
                summary = await run_domain(domain, sampler, cfg, monitor=monitor)
            except Exception as exc:
                self.notify(f"{domain.name}: {exc}", title="Run failed", severity="error")
                raise
            outcome = "solved" if summary.solved else "NOT solved"
            self.notify(
                f"{summary.domain}: {summary.steps:,} steps, {summary.errors} errors, "
                f"{outcome} (k={summary.k}, {summary.sampler})",
                title="Run finished",
                severity="information" if summary.solved else "warning",
            )
            return summary

        return self.run_worker(
            run(),
            name="demo-run",
            group="run",
            exclusive=True,
            exit_on_error=False,
            description=f"Hanoi {disks} disks, simulated p={p}, k={cfg.k}",
        )

    async def action_quit(self) -> None:
        await self.stop_engine()
        self.exit()

    async def on_unmount(self) -> None:
        if not self.is_headless:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.stop_engine()

    async def stop_engine(self) -> None:
        self.workers.cancel_group(self, "engine")
        self.close_agent()
        if self.workbench is not None:
            await self.workbench.stop()
