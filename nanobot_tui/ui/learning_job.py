"""The app's learning job: engine/learning/distill/job.py's `LearnJob` run in a thread
worker, its `JobEvent`s marshalled to the UI with `post_message`, and the check for step
types with enough new verified examples to train an adapter on.

One `Learner` per app (`EngineApp.learner`). `start()` runs a job (a new one, or with
`resume` the one a stop left a checkpoint of) on its own event loop in a thread, so
training, the dataset and the A/B test's server never hold the UI up; `stop()` sets the
job's stop event (training ends after its current step with a checkpoint saved). Each
change is published on `signal` as a `LearnState` that the Learning screen shows.

`check()` asks the engine, off the UI thread, which step types a job would train now
(`due_now`) and which stopped jobs wait to be resumed; the config's `learning.distill`
says what then happens: "ask" offers it on the Learning screen, "auto" starts the job
(not after the user stopped one, until they start one again), "off" does nothing. The
app checks when it starts, every CHECK_S, after a job and when the Learning screen
opens. The engine is imported in the workers, never on the app's import.

A server loads its LoRA adapters when it starts, so after a job promotes or demotes one,
or `nanobot adapters on/off/rm` changes the registry, the app's server holds a stale
list: `check_adapters()` (with every check, and every ADAPTERS_CHECK_S) asks the
workbench which servers are stale, and each is restarted with the new list once no
request is in flight (`Workbench.reload_adapters`, tried every RELOAD_POLL_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.message import Message
from textual.signal import Signal

from nanobot_tui.errors import NanobotError
from nanobot_tui.ui.format import error_line

if TYPE_CHECKING:
    from nanobot_tui.config import Config, SlotName
    from nanobot_tui.engine.learning.distill.job import (
        JobEvent,
        LearnJob,
        LearnOutcome,
        LearnSummary,
        Trainer,
    )
    from nanobot_tui.engine.learning.distill.train import Progress
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.ui.engine_app import EngineApp

log = logging.getLogger(__name__)

CHECK_S = 600.0  # how often the app looks for step types due for an adapter
ADAPTERS_CHECK_S = 60.0  # how often it compares its servers' adapters with the registry's
RELOAD_POLL_S = 5.0  # how often a stale server is looked at until it is idle
SLOT: SlotName = "rlm"  # the slot whose model adapters are trained for, as `nanobot learn`'s


@dataclass(frozen=True, slots=True)
class DueType:
    """A step type a learning job would train now: `new` verified examples since its
    model's last adapter of that type (all of them when it has none)."""

    step_type: str
    new: int


@dataclass(frozen=True, slots=True)
class DueCheck:
    due: tuple[DueType, ...] = ()
    stopped: tuple[str, ...] = ()  # step types with a stopped job to resume


@dataclass(frozen=True, slots=True)
class LearnState:
    """What the learning job is doing, or did last."""

    running: bool = False
    stopping: bool = False  # stop asked for, the job not yet ended
    resumed: bool = False  # the job goes on from a checkpoint
    step_type: str = ""
    phase: str = ""  # JobEvent.phase: dataset, base, train, serve, ab, done
    message: str = ""  # the last event's
    dataset: str = ""  # the training set's counts, as the job said them
    train: Progress | None = None  # the last training step
    ab_done: int = 0
    ab_total: int = 0
    ab_on: str = ""  # what the A/B test runs on: "fresh" or "heldout" (JobEvent.on)
    outcomes: tuple[LearnOutcome, ...] = ()  # of the last job that ended
    line: str = ""  # that job in one line
    error: str = ""  # why the last job failed
    check: DueCheck = field(default_factory=DueCheck)

    @property
    def resumable(self) -> bool:
        """A stopped job waits: the next start resumes it."""
        return bool(self.check.stopped) or any(o.status == "stopped" for o in self.outcomes)


@dataclass
class LearnNews(Message):
    """From the job's thread to the app: one event, the job's end, or a check's result."""

    event: JobEvent | None = None
    summary: LearnSummary | None = None
    error: str | None = None
    check: DueCheck | None = None
    ended: bool = False
    # From `check_adapters`: {slot: the adapters its server should load} for each stale one.
    stale_adapters: dict[SlotName, tuple[Path, ...]] | None = None


def due_now(settled: Callable[[], Config], slot: SlotName = SLOT) -> DueCheck:
    """The step types a `LearnJob` on `slot` would train now, and the stopped jobs
    (job.py's `due_step_types`). `settled()` gives the app's config, asked only when
    something was learned: with no config file it detects the hardware, which the app
    does once, when its servers start. Blocking: call it in a thread."""
    from nanobot_tui.engine.learning.distill.job import due_step_types, nothing_learned

    if nothing_learned():
        return DueCheck()
    due, stopped = due_step_types(settled(), slot)
    return DueCheck(tuple(DueType(t, n) for t, n in due), tuple(stopped))


class Learner:
    """See the module's docstring. `trainer` replaces train.py's trainer (a test's fake);
    `epochs` the job's default."""

    def __init__(self, app: EngineApp) -> None:
        self.app = app
        self.state = LearnState()
        self.signal: Signal[LearnState] = Signal(app, "learn")
        self.trainer: Trainer | None = None
        self.epochs: int | None = None
        self._stop = threading.Event()
        self._checking = False
        self._held = False  # the user stopped a job: "auto" starts none until they do
        # The running job's loop and task, for `close` to cancel (any thread).
        self._job_loop: asyncio.AbstractEventLoop | None = None
        self._job_task: asyncio.Task[Any] | None = None
        self._adapters_timer = False  # check_adapters' interval is set (on the first check)
        self._reloading: set[SlotName] = set()  # servers waiting to be idle for a restart

    @property
    def checking(self) -> bool:
        """A check for due step types is under way."""
        return self._checking

    @property
    def mode(self) -> str:
        learning = self.app.config.learning
        return learning.distill if learning.enabled else "off"

    # --- the job ------------------------------------------------------------------------

    def start(self) -> bool:
        """Run a job (resuming a stopped one if there is one); False when one runs."""
        if self.state.running:
            return False
        self._held = False
        resume = self.state.resumable
        self._stop = threading.Event()
        self._set(
            running=True, stopping=False, resumed=resume, step_type="", phase="",
            message="resuming the stopped job" if resume else "looking for examples to train on",
            dataset="", train=None, ab_done=0, ab_total=0, error="",
        )  # fmt: skip
        what = "resume the learning job" if resume else "learning job"
        self.app.run_worker(
            lambda: self._run(resume, self._stop),
            thread=True, group="learn", exit_on_error=False, description=what,
        )  # fmt: skip
        return True

    def stop(self) -> bool:
        """Ask the running job to stop (its training saves a checkpoint); False if none."""
        if not self.state.running:
            return False
        self._stop.set()
        self._held = True
        if not self.state.stopping:
            self._set(stopping=True)
        return True

    def close(self) -> None:
        """The app closes: training stops with a checkpoint (the stop event) and the rest
        of the job (an A/B test, its server) is cancelled rather than waited for."""
        self._stop.set()
        loop, task = self._job_loop, self._job_task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the job's loop has just closed
                loop.call_soon_threadsafe(task.cancel)

    def _run(self, resume: bool, stop: threading.Event) -> None:
        """The job, on an event loop of its own in this worker thread."""
        from nanobot_tui.engine.learning.distill.job import LearnJob

        def said(event: JobEvent) -> None:
            self.app.post_message(LearnNews(event=event))

        job = LearnJob(
            self.app.settled_config(), epochs=self.epochs, resume=resume, slot=SLOT,
            progress=said, stop=stop, trainer=self.trainer,
        )  # fmt: skip
        try:
            summary = asyncio.run(self._job(job))
        except asyncio.CancelledError:
            self.app.post_message(LearnNews(error="cancelled: the app closed", ended=True))
        except NanobotError as exc:
            self.app.post_message(LearnNews(error=str(exc), ended=True))
        except Exception as exc:  # a bug must still say something, in one line
            log.exception("learning job failed")
            problem = f"{type(exc).__name__}: {error_line(exc)}"
            self.app.post_message(LearnNews(error=problem, ended=True))
        else:
            self.app.post_message(LearnNews(summary=summary, ended=True))

    async def _job(self, job: LearnJob) -> LearnSummary:
        self._job_loop = asyncio.get_running_loop()
        self._job_task = asyncio.current_task()
        try:
            return await job.run()
        finally:
            self._job_loop = self._job_task = None

    # --- what is due --------------------------------------------------------------------

    def check(self) -> None:
        """Look, in a thread worker, for step types due for an adapter and stopped jobs
        (and for servers whose adapters are stale, `check_adapters`)."""
        self.check_adapters()
        if not self._adapters_timer:
            self._adapters_timer = True
            self.app.set_interval(ADAPTERS_CHECK_S, self.check_adapters)
        if self.mode == "off":
            if self.state.check != DueCheck():
                self._set(check=DueCheck())  # turned off: nothing is offered any more
            return
        if self._checking:
            return
        self._checking = True
        self.app.run_worker(
            self._check, thread=True, group="learn-check", exit_on_error=False,
            description="look for step types to train adapters for",
        )  # fmt: skip

    def _check(self) -> None:
        try:
            found = due_now(self.app.settled_config)
        except NanobotError as exc:  # a remote slot, no model: nothing to offer
            log.info("no learning job to offer: %s", exc)
            found = DueCheck()
        except Exception:
            log.exception("looking for step types to train failed")
            found = DueCheck()
        self.app.post_message(LearnNews(check=found))

    # --- servers whose adapters changed ---------------------------------------------------

    def check_adapters(self) -> None:
        """Ask, in a thread worker, which of the app's servers load adapters that are no
        longer the registry's promoted ones; `news` restarts them when idle."""
        bench = self.app.workbench
        if bench is None or not self.app.engine_state.ready:
            return
        self.app.run_worker(
            lambda: self._check_adapters(bench), thread=True, group="learn-adapters",
            exclusive=True, exit_on_error=False, description="compare the servers' adapters",
        )  # fmt: skip

    def _check_adapters(self, bench: Workbench) -> None:
        try:
            stale = bench.stale_adapters()
        except Exception:  # a registry that cannot be read: the servers keep theirs
            log.exception("comparing the servers' LoRA adapters failed")
            return
        if stale:
            self.app.post_message(LearnNews(stale_adapters=stale))

    async def _reload_when_idle(self, slot: SlotName, adapters: tuple[Path, ...]) -> None:
        """Restart `slot`'s server with `adapters` as soon as it has no request in flight."""
        from nanobot_tui.engine.serving.manager import ServerStartError

        try:
            while (bench := self.app.workbench) is not None:
                if await bench.reload_adapters(slot, adapters):
                    log.info("slot %s: server restarted with %d LoRA adapter(s)",
                             slot, len(adapters))  # fmt: skip
                    return
                await asyncio.sleep(RELOAD_POLL_S)
        except ServerStartError as exc:
            log.warning("slot %s: restart with the new LoRA adapters failed: %s", slot, exc)
        finally:
            self._reloading.discard(slot)

    # --- on the UI thread ---------------------------------------------------------------

    def news(self, news: LearnNews) -> None:
        """A `LearnNews` the app received: the state changes and is published."""
        if news.stale_adapters:
            for slot, adapters in news.stale_adapters.items():
                if slot not in self._reloading:
                    self._reloading.add(slot)
                    self.app.run_worker(
                        self._reload_when_idle(slot, adapters), group=f"learn-reload-{slot}",
                        exit_on_error=False, description=f"restart {slot} with new adapters",
                    )  # fmt: skip
            return
        if news.check is not None:
            self._checking = False
            self._set(check=news.check)
            if (
                self.mode == "auto"
                and not self.state.running
                and not self._held
                and (news.check.due or news.check.stopped)
            ):
                self.start()
            return
        if news.event is not None:
            self._event(news.event)
        if news.ended:
            summary = news.summary
            self._set(
                running=False, stopping=False, error=news.error or "",
                outcomes=tuple(summary.outcomes) if summary is not None else (),
                line=summary.line() if summary is not None else "",
                check=DueCheck(),  # what was due has changed: until the check says
            )  # fmt: skip
            self.check()

    def _event(self, event: JobEvent) -> None:
        changes: dict[str, Any] = {
            "step_type": event.step_type, "phase": event.phase, "message": event.message,
        }  # fmt: skip
        if event.phase == "dataset":
            changes.update(dataset=event.message, train=None, ab_done=0, ab_total=0, ab_on="")
        if event.train is not None:
            changes["train"] = event.train
        if event.phase == "ab":
            changes.update(ab_done=event.done, ab_total=event.total, ab_on=event.on)
        self._set(**changes)

    def _set(self, **changes: Any) -> None:
        self.state = dataclasses.replace(self.state, **changes)
        self.signal.publish(self.state)
