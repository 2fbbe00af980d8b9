"""The app's hold on the engine: the Workbench of model servers, the chat agent and its
session, the delegations it makes, the voted run the Votes pane watches and the durable
run the Process pane follows, and the signals the panes subscribe to.

`NanobotApp` (ui/app.py) builds on this class with the screens, themes, keys and the
command palette. The panes and widgets reach the app through `getters.app(EngineApp)`:
typed, and without importing ui/app.py, which imports every pane through the main screen
(panes never import each other, even through a chain).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, TypedDict

from textual import events, on, work
from textual.app import App
from textual.signal import Signal
from textual.worker import Worker

from nanobot_tui.ui.learning_job import CHECK_S, Learner, LearnNews
from nanobot_tui.ui.messages import DelegationChanged, EngineChanged, EngineState, ServerChanged

# The engine (model servers, HTTP client, agent, voting) is imported where it is first
# used, after the first frame: tests/test_import_weight.py keeps it off the app's import.
if TYPE_CHECKING:
    from nanobot_tui.config import Config
    from nanobot_tui.engine.agent.build import AgentKit
    from nanobot_tui.engine.agent.delegate import Delegation
    from nanobot_tui.engine.serving.status import ServerEvent
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.engine.voting.runner import RunSummary, VoteMonitor


class EngineOptions(TypedDict, total=False):
    """What `EngineApp` takes besides the config, for subclasses to pass on."""

    workbench: Workbench | None
    attach_run: str | None


class EngineApp(App[None]):
    """See the module note."""

    def __init__(
        self,
        config: Config | None,
        *,
        workbench: Workbench | None = None,
        attach_run: str | None = None,
    ) -> None:
        """`config` None: there is no config file, and the detected hardware tier's
        defaults apply (see `settled_config`). `workbench` is built from the config unless
        given (tests and benchmarks pass one); `attach_run` is the durable run the process
        tree pane shows (None: the most recent run, if any)."""
        super().__init__()
        # The tier's defaults wait for their first use: detecting the hardware takes a
        # moment (NVML, nvidia-smi), and the first frame needs nothing of it.
        self._tier_pending = config is None
        self._config_lock = threading.Lock()
        if config is None:
            from nanobot_tui.config import Config

            config = Config()
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
        # The learning job (LoRA adapters) and the check for step types due for one.
        self.learner = Learner(self)

    # --- the model servers ------------------------------------------------------------

    @work(exclusive=True, group="engine", exit_on_error=False, description="start servers")
    async def start_engine(self) -> None:
        from nanobot_tui.engine.serving.manager import ServerStartError

        try:
            if self.workbench is None:
                # Planning reads GGUF headers and may run `llama-server --version`: off the
                # loop, and so is importing the serving layer.
                self.workbench = await asyncio.to_thread(self._new_workbench)
            else:
                self.workbench.manager.on_event = self._server_event
            await self.workbench.start()
        except ServerStartError as exc:
            self.post_message(EngineChanged(EngineState(error=str(exc), detail=exc.log_tail)))
        else:
            self.post_message(EngineChanged(EngineState(ready=True)))

    def _new_workbench(self) -> Workbench:
        from nanobot_tui.engine.serving.workbench import Workbench

        return Workbench(self.settled_config(), on_event=self._server_event)

    def settled_config(self) -> Config:
        """The config, with the detected hardware tier's defaults filled in on the first
        call when there was no config file (any thread; detection takes a moment, so not
        on the UI's loop: the start-up worker calls this first)."""
        with self._config_lock:
            if self._tier_pending:
                from nanobot_tui.config import default_config
                from nanobot_tui.hardware import detect

                self.config.local = default_config(detect().tier).local
                self._tier_pending = False
        return self.config

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

    async def stop_engine(self) -> None:
        self.learner.close()  # its training saves a checkpoint that `l` resumes
        self.workers.cancel_group(self, "engine")
        self.close_agent()
        if self.workbench is not None:
            await self.workbench.stop()

    # --- the learning job --------------------------------------------------------------

    @on(events.Mount)
    def _check_learning(self) -> None:
        self.call_after_refresh(self.learner.check)
        self.set_interval(CHECK_S, self.learner.check)

    @on(LearnNews)
    def _learn_news(self, message: LearnNews) -> None:
        self.learner.news(message)

    # --- the chat agent ---------------------------------------------------------------

    async def agent_kit(self) -> AgentKit:
        """The chat agent, built once the servers are up (on `session_name`, or a new
        session); RuntimeError if they could not start."""
        await self._engine_settled.wait()
        if not self.engine_state.ready or self.workbench is None:
            raise RuntimeError(self.engine_state.error or "the model servers are not running")
        async with self._kit_lock:
            if self.kit is None:
                from nanobot_tui.engine.agent.build import build_agent, open_session

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

    # --- a voted run in this process --------------------------------------------------

    def start_demo_run(self, disks: int = 10, p: float = 0.99) -> Worker[RunSummary]:
        """Solve Towers of Hanoi with voting on the SIMULATED sampler (right with
        probability p), k the smallest that reaches 95 % over all steps; the vote
        counter pane watches it. A new run replaces one still going."""
        from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
        from nanobot_tui.engine.voting.domains.hanoi import Hanoi
        from nanobot_tui.engine.voting.maths import k_min
        from nanobot_tui.engine.voting.runner import VoteMonitor, run_domain
        from nanobot_tui.engine.voting.samplers.simulated import SimulatedSampler

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
