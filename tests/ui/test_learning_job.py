"""The app's learning job (ui/learning_job.py) and the Learning screen's Distillation part:
started with `l` on the screen, its progress shown while keys still work, stopped with `s`
(a checkpoint), resumed with `l`, and at its end the A/B result and the adapters list; the
"ask" line when a step type has enough new verified examples, and not otherwise; "auto"
starting a job by itself; the palette's "Learn now" and "Stop learning".

Training is done by FAKE trainers (G's `FakeTrainer` from tests/engine/learning/
test_distill_job.py, and `SteppedFakeTrainer` here, which waits for the test before each
step so that a stop lands mid-training): real training does not fit a test. Everything
else is real: learned.db, the job folder and its checkpoint, the registry and, in the one
model test, the A/B test on the embedded model's server."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from textual.widgets import Static

from nanobot_tui.engine.learning.distill import train as training
from nanobot_tui.engine.learning.distill.dataset import TrainingExample
from nanobot_tui.engine.learning.store import learned_path
from nanobot_tui.engine.serving.adapter_registry import AdapterRegistry
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.learning_job import LearnState
from nanobot_tui.ui.screens.learning import LearningScreen, job_line
from nanobot_tui.ui.screens.main import MainScreen
from tests.conftest import until
from tests.engine.learning.test_distill_job import STEP_TYPE, FakeTrainer, add_examples, words
from tests.ui.palette import run_command
from tests.ui.test_app import text_of
from tests.ui.test_learning_screen import opened
from tests.ui.test_process_pane import quiet_app


class SteppedFakeTrainer(FakeTrainer):
    """A FAKE trainer: G's FakeTrainer, each step waiting until the test lets it end
    (`go.release()`) or a stop is asked for, so the test sees a step, presses keys and
    stops mid-way (as real training ends its current step on a stop)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Semaphore(0)

    def __call__(
        self,
        config: training.TrainConfig,
        examples: Sequence[TrainingExample],
        *,
        progress: training.ProgressCallback | None = None,
        stop: threading.Event | None = None,
    ) -> training.TrainResult:
        def step(done: training.Progress) -> None:
            if progress is not None:
                progress(done)
            while not self.go.acquire(timeout=0.05):
                if stop is not None and stop.is_set():
                    return

        return super().__call__(config, examples, progress=step, stop=stop)


def job_text(screen: LearningScreen) -> str:
    job = screen.query_one("#learning-job", Static)
    return text_of(job) if job.display else ""


def distill_text(screen: LearningScreen) -> str:
    part = screen.query_one("#learning-distill", Static)
    return text_of(part) if part.display else ""


async def checked(app: NanobotApp) -> None:
    """A fresh check for due step types, to its end."""
    await until(lambda: not app.learner.checking)
    app.learner.check()
    await until(lambda: not app.learner.checking)


async def test_the_ask_line_appears_only_when_a_type_has_enough_new_examples(
    embedded_model: Path,
) -> None:
    add_examples(words(2, 5))  # below the minimums
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        await checked(app)
        await pilot.pause()
        assert job_text(screen) == "" and app.learner.state.check.due == ()
        assert distill_text(screen) == ""  # no job, no adapter: no Distillation part

        add_examples(words(4, 16))
        await checked(app)
        await until(lambda: "press l" in job_text(screen))
        assert job_text(screen).strip() == (
            f"20 new verified examples of {STEP_TYPE}: press l to train an adapter"
        )
        assert "Distillation" in distill_text(screen) and "no adapters yet" in distill_text(screen)
        assert not app.learner.state.running  # "ask" asks: nothing started

        # With distillation off in the config, nothing is offered.
        app.config.learning.distill = "off"
        await checked(app)
        await pilot.pause()
        assert job_text(screen) == ""


async def test_a_job_starts_from_the_screen_shows_progress_stops_and_resumes(
    embedded_model: Path,
) -> None:
    add_examples(words(4, 16))
    app = quiet_app()
    trainer = SteppedFakeTrainer()
    app.learner.trainer, app.learner.epochs = trainer, 2
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        await until(lambda: "press l" in job_text(screen))
        await pilot.press("l")
        await until(lambda: "step 1/8" in job_text(screen))
        assert job_text(screen).strip() == (
            f"training {STEP_TYPE}: epoch 1/2 · step 1/8 · loss 2.000 · ETA 0.1 s · s stops"
        )
        part = " ".join(distill_text(screen).split())
        assert f"step type {STEP_TYPE} · training" in part
        assert "examples 16 to train, 4 held out (from 20 examples" in part
        assert "training 16 examples · epoch 1/2 · step 1/8 · loss 2.000" in part

        # The UI answers keys while the job waits in its thread: Esc leaves, F3 returns.
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, MainScreen))
        screen = await opened(app, pilot)
        assert app.learner.state.running and "step 1/8" in job_text(screen)

        trainer.go.release()
        await until(lambda: "step 2/8" in job_text(screen))
        await pilot.press("s")  # the step ends; training sees the stop: a checkpoint
        await until(lambda: "stopped: press l to resume" in job_text(screen))
        assert job_text(screen).strip() == f"learning of {STEP_TYPE} stopped: press l to resume"
        assert "checkpoint at step 2/8" in " ".join(distill_text(screen).split())
        [outcome] = app.learner.state.outcomes
        assert (outcome.status, outcome.adapter_id) == ("stopped", None)

        # `l` again resumes from the checkpoint: on at step 3, the same training set.
        await pilot.press("l")
        await until(lambda: "step 3/8" in job_text(screen))
        assert app.learner.state.resumed
        assert [len(call) for call in trainer.calls] == [16, 16]
        pairs = [[(e.messages, e.answer) for e in call] for call in trainer.calls]
        assert pairs[1] == pairs[0]
        await pilot.press("s")
        await until(lambda: not app.learner.state.running)
        assert "step 3/8" in app.learner.state.outcomes[0].reason
    with AdapterRegistry() as registry:
        assert registry.list() == []  # stopped twice: no adapter yet


async def test_auto_starts_the_job_by_itself_and_the_palette_stops_it(
    embedded_model: Path,
) -> None:
    add_examples(words(4, 16))
    app = quiet_app()
    app.config.learning.distill = "auto"
    trainer = SteppedFakeTrainer()
    app.learner.trainer, app.learner.epochs = trainer, 1
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        await until(lambda: app.learner.state.train is not None)  # started on its own
        await run_command(pilot, "Stop learning")
        await until(lambda: not app.learner.state.running)
        assert [o.status for o in app.learner.state.outcomes] == ["stopped"]
        # Stopped by the user, it is not started again on its own; "Learn now" resumes it.
        await until(lambda: app.learner.state.check.stopped == (STEP_TYPE,))
        await checked(app)
        await pilot.pause()
        assert app.learner.state.running is False
        await run_command(pilot, "Learn now: train LoRA adapters")
        await until(lambda: app.learner.state.running and app.learner.state.resumed)
        await run_command(pilot, "Stop learning")
        await until(lambda: not app.learner.state.running)


async def test_closing_the_app_stops_the_job_with_a_checkpoint(embedded_model: Path) -> None:
    add_examples(words(4, 16))
    app = quiet_app()
    trainer = SteppedFakeTrainer()
    app.learner.trainer, app.learner.epochs = trainer, 2
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        await until(lambda: "press l" in job_text(screen))
        await pilot.press("l")
        await until(lambda: app.learner.state.train is not None)
    # The app closed mid-step: training stopped and saved its checkpoint, for `l` later.
    checkpoint = training.job_folder(STEP_TYPE) / "checkpoint.pt"
    await until(lambda: checkpoint.is_file())
    assert checkpoint.read_text() == "1"  # the fake's checkpoint: its step


def test_the_job_line_while_a_stop_is_under_way() -> None:
    state = LearnState(running=True, stopping=True, step_type=STEP_TYPE, phase="train")
    line = job_line(state)
    assert line is not None
    assert line.plain == "stopping the learning job: its training saves a checkpoint…"


async def test_a_job_with_nothing_to_learn_or_without_the_extra_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        app.learner.trainer = FakeTrainer()  # no training happens: nothing to train on
        await pilot.press("l")
        await until(lambda: "last learning job: " in job_text(screen))
        assert job_text(screen).strip() == (
            f"last learning job: nothing learned: no verified examples in {learned_path()}"
        )

        # Without the learn extra (a module of it missing), the job fails in one line.
        monkeypatch.setattr(training, "_EXTRA_MODULES", ("torch", "nanobot_absent_module"))
        app.learner.trainer = None
        await pilot.press("l")
        await until(lambda: job_text(screen).startswith("learning job failed: "))
        line = job_text(screen).strip()
        assert line == (
            "learning job failed: training an adapter needs the optional 'learn' extra "
            f"(nanobot_absent_module not installed): {training.LEARN_EXTRA_HINT}"
        )


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_a_finished_job_shows_its_ab_result_and_the_adapters_list(
    embedded_model: Path,
) -> None:
    add_examples(words(4, 16))
    app = quiet_app()
    app.learner.trainer, app.learner.epochs = FakeTrainer(strength=0.05), 1
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(app, pilot)
        await until(lambda: "press l" in job_text(screen))
        await pilot.press("l")
        await until(lambda: not app.learner.state.running, timeout=240)
        state = app.learner.state
        assert state.error == "", state.error
        [outcome] = state.outcomes
        assert outcome.status == "candidate" and outcome.ab is not None  # random: not better
        ab = outcome.ab
        result = (
            f"p base {ab['p_base']:.2f} [{ab['base_ci'][0]:.2f}, {ab['base_ci'][1]:.2f}] vs "
            f"adapter {ab['p_adapter']:.2f} [{ab['adapter_ci'][0]:.2f}, "
            f"{ab['adapter_ci'][1]:.2f}] on 4"
        )
        # The state ends before the screen has drawn it (a message away): wait for the text.
        await until(lambda: result in " ".join(distill_text(screen).split()))
        part = " ".join(distill_text(screen).split())
        assert f"{result}: {ab['verdict']}" in part, part
        assert f"adapter {outcome.adapter_id} candidate" in part
        # The adapters list, from the registry, read with the overview.
        await until(lambda: screen.adapters != [])
        with AdapterRegistry() as registry:
            [record] = registry.list()
        part = " ".join(distill_text(screen).split())
        assert f"{STEP_TYPE} {record.id} candidate 16+4" in part
        # Trained on every example there is: nothing new to offer, the job's line instead.
        await until(lambda: not app.learner.checking)
        assert app.learner.state.check.due == ()
        assert (
            job_text(screen)
            .strip()
            .startswith(f"last learning job: {STEP_TYPE}: adapter {record.id} candidate (p ")
        )
