"""The nanobot app: the main screen over a Workbench of model servers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.signal import Signal
from textual.worker import Worker

from nanobot_tui import __version__
from nanobot_tui.config import Config
from nanobot_tui.engine.chat import ChatSession
from nanobot_tui.engine.domains.hanoi import Hanoi
from nanobot_tui.engine.maker import k_min
from nanobot_tui.engine.runner import RunSummary, VoteMonitor, run_domain
from nanobot_tui.engine.servers import ServerError, ServerEvent
from nanobot_tui.engine.simulated import SimulatedSampler
from nanobot_tui.engine.voting import VoteConfig
from nanobot_tui.engine.workbench import Workbench
from nanobot_tui.ui.main_screen import MainScreen
from nanobot_tui.ui.messages import EngineChanged, EngineState, ServerChanged
from nanobot_tui.ui.runs import pick_run


class NanobotApp(App[None]):
    TITLE = "nanobot"
    SUB_TITLE = f"local-first AI workbench · {__version__}"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True)]

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
        self.session: ChatSession | None = None
        # The voted run the vote counter pane watches (None: no run yet).
        self.vote_monitor: VoteMonitor | None = None
        self.engine_state = EngineState()
        self.server_signal: Signal[ServerEvent] = Signal(self, "server")
        self.engine_signal: Signal[EngineState] = Signal(self, "engine")
        self._engine_settled = asyncio.Event()
        self.theme = config.ui.theme if config.ui.theme in self.available_themes else self.theme

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        # Paint first, then start the servers: the first frame should not wait on them.
        self.call_after_refresh(self.start_engine)

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
        except ServerError as exc:
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

    async def chat_session(self) -> ChatSession:
        """The session on the main slot, once the servers are up; RuntimeError if they
        could not start."""
        await self._engine_settled.wait()
        if not self.engine_state.ready or self.workbench is None:
            raise RuntimeError(self.engine_state.error or "the model servers are not running")
        if self.session is None:
            self.session = ChatSession(
                self.workbench.client("main"), temperature=self.workbench.temperature("main")
            )
        return self.session

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
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
        await self.stop_engine()

    async def stop_engine(self) -> None:
        self.workers.cancel_group(self, "engine")
        if self.workbench is not None:
            await self.workbench.stop()
