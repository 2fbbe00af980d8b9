"""The chat pane learns skills from its agent turns: after N successful turns with the same
tool sequence a SKILL.md is written, the app says so once, and the same agent offers the
skill from the next turn on; with learning off nothing is written.

The turns run through the real agent (build_agent, the loop, the workspace tools, the
session files, the learner) on a scripted FAKE model: the embedded 135M model does not
call the same tools in the same order on demand. Only the workbench's client is the fake.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.config import AgentConfig, Config, LearningConfig, LocalConfig, SlotConfig
from nanobot_tui.engine.agent.build import AgentKit, build_agent, open_session
from nanobot_tui.engine.learning.skills import DEFAULT_MIN_SUCCESSES, list_learned_skills
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.panes.chat import ChatPane, Note
from nanobot_tui.ui.widgets.answer import Answer
from nanobot_tui.ui.widgets.prompt import PromptArea
from tests.conftest import until
from tests.fakes import ScriptedModel
from tests.ui.test_app import text_of

SKILLS_HEAD = "Skills that may help with this request:"
MISSING = ["gone-1.txt", "gone-2.txt", "gone-3.txt"]  # read_file fails: a failed turn


def tool_call(name: str, **arguments: Any) -> str:
    """A call the way the prompted tool protocol reads it from the model's text."""
    return f"<tool_call>[{json.dumps({'name': name, 'arguments': arguments})}]</tool_call>"


def reading_turn(name: str) -> list[str]:
    """The FAKE model's replies for one turn: list the folder, read `name`, answer."""
    return [
        tool_call("list_dir", path="."),
        tool_call("read_file", path=name),
        f"{name} says: water the plants.",
    ]


def workspace(tmp_path: Path, names: Sequence[str]) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    for name in names:
        (work / name).write_text("water the plants\n")
    return work


def app_config(work: Path, *, learning: bool) -> Config:
    return Config(
        local=LocalConfig(main=SlotConfig(model="smollm2-135m-instruct")),
        agent=AgentConfig(workspace=work, tool_mode="prompted"),
        learning=LearningConfig(enabled=learning),
    )


def fake_model_app(config: Config) -> NanobotApp:
    """The app with no model server: its chat agent gets the FAKE model."""
    return NanobotApp(config, workbench=Workbench(config, only_slots=()))


async def fake_model_agent(
    app: NanobotApp, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> AgentKit:
    """The app's chat agent, built as the app builds it, on the FAKE model; no server
    runs (the workbench serves no slot)."""
    await until(lambda: app.engine_state.ready)
    assert app.workbench is not None
    monkeypatch.setattr(app.workbench, "client", lambda slot: model)
    session = open_session(None)
    kit = await build_agent(app.workbench, app.config, session=session)
    app.kit, app.session_name = kit, session.name
    return kit


async def ask_and_wait(pilot: Any, pane: ChatPane, text: str) -> None:
    """Send `text` and wait until its turn has ended with a turn line."""
    before = len([n for n in pane.query(Note) if n.has_class("turn")])
    pilot.app.screen.query_one("#prompt", PromptArea).value = text
    await pilot.press("enter")
    await until(
        lambda: not pane.busy and len([n for n in pane.query(Note) if n.has_class("turn")]) > before
    )


async def learning_done(app: NanobotApp) -> None:
    await until(lambda: all(w.is_finished for w in app.workers if w.group == "learn"))


def notifications(app: NanobotApp, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every notification the app raises from now on (the app's own list drops them
    after their timeout)."""
    raised: list[str] = []
    notify = app.notify

    def spy(message: str, **kwargs: Any) -> None:
        raised.append(message)
        notify(message, **kwargs)

    monkeypatch.setattr(app, "notify", spy)
    return raised


async def test_n_successful_turns_teach_a_skill_offered_until_it_fails(
    tmp_path: Path, nanobot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = ["a.txt", "b.txt", "c.txt", "d.txt"]
    work = workspace(tmp_path, files)
    turns = [*files, *MISSING, "a.txt"]
    model = ScriptedModel([reply for name in turns for reply in reading_turn(name)])
    app = fake_model_app(app_config(work, learning=True))
    async with app.run_test(size=(120, 36)) as pilot:
        kit = await fake_model_agent(app, model, monkeypatch)
        raised = notifications(app, monkeypatch)
        pane = app.screen.query_one(ChatPane)
        n = DEFAULT_MIN_SUCCESSES
        for name in files[: n - 1]:
            await ask_and_wait(pilot, pane, f"Read the notes file {name}")
            await learning_done(app)
            assert list_learned_skills() == []  # not before N
        await ask_and_wait(pilot, pane, f"Read the notes file {files[n - 1]}")
        await until(lambda: any(m.startswith("learned a skill") for m in raised))
        await learning_done(app)

        (skill,) = list_learned_skills()
        assert skill.path.is_file() and skill.path.parent.parent == nanobot_home / "skills"
        assert skill.signature == ("list_dir", "read_file")
        assert len(skill.origin) == n
        assert {o.split("#")[0] for o in skill.origin} == {kit.session.name}
        learned = [m for m in raised if m.startswith("learned a skill")]
        assert learned == [f"learned a skill: {skill.name} (from {n} successful turns)"]

        # The same agent, not rebuilt, offers the skill from the next turn on.
        asked = len(model.requests)
        await ask_and_wait(pilot, pane, "Read the notes file d.txt")
        assert app.kit is kit
        assert not any(SKILLS_HEAD in text for text in model.system_texts()[:asked])
        offered = model.system_texts()[asked]
        assert SKILLS_HEAD in offered and f"## {skill.name}" in offered
        await learning_done(app)
        assert list_learned_skills()[0].hits == 1  # that turn used it the same way
        assert [m for m in raised if m.startswith("learned a skill")] == learned

        # Failing where it was offered, more often than it helped: demoted, said once, and
        # the same agent no longer offers it.
        for name in MISSING:
            await ask_and_wait(pilot, pane, f"Read the notes file {name}")
            await learning_done(app)
        (demoted,) = list_learned_skills()
        assert (demoted.status, demoted.failures, demoted.hits) == ("demoted", 3, 1)
        assert [m for m in raised if m.startswith("stopped offering")] == [
            f"stopped offering the learned skill {skill.name}: 3 failures, 1 hit"
        ]
        asked = len(model.requests)
        await ask_and_wait(pilot, pane, "Read the notes file a.txt")
        assert SKILLS_HEAD not in model.system_texts()[asked]
        assert not model.replies


async def test_with_learning_off_nothing_is_written(
    tmp_path: Path, nanobot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = ["a.txt", "b.txt", "c.txt"]
    work = workspace(tmp_path, files)
    model = ScriptedModel([reply for name in files for reply in reading_turn(name)])
    app = fake_model_app(app_config(work, learning=False))
    async with app.run_test(size=(120, 36)) as pilot:
        await fake_model_agent(app, model, monkeypatch)
        raised = notifications(app, monkeypatch)
        pane = app.screen.query_one(ChatPane)
        for name in files:
            await ask_and_wait(pilot, pane, f"Read the notes file {name}")
        await learning_done(app)
        await pilot.pause()
        turn_lines = [text_of(n) for n in pane.query(Note) if n.has_class("turn")]
        assert len(turn_lines) == len(files) and not model.replies  # every turn ran whole
        assert not (nanobot_home / "skills").exists()
        assert not any("skill" in m for m in raised)


async def test_a_failing_learner_leaves_the_turn_alone(
    tmp_path: Path,
    nanobot_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The skills folder is a file: the learner cannot write, the turn still ends answered
    and the log has one line."""
    work = workspace(tmp_path, ["a.txt"])
    model = ScriptedModel(reading_turn("a.txt"))
    nanobot_home.mkdir(parents=True, exist_ok=True)
    (nanobot_home / "skills").write_text("not a folder")
    app = fake_model_app(app_config(work, learning=True))
    async with app.run_test(size=(120, 36)) as pilot:
        await fake_model_agent(app, model, monkeypatch)
        pane = app.screen.query_one(ChatPane)
        with caplog.at_level("WARNING", logger="nanobot_tui.ui.panes.chat"):
            await ask_and_wait(pilot, pane, "Read the notes file a.txt")
            await learning_done(app)
        assert not [n for n in pane.query(Note) if n.has_class("error")]
        assert pane.query(Answer).last().source == "a.txt says: water the plants."
        (record,) = [r for r in caplog.records if r.name == "nanobot_tui.ui.panes.chat"]
        assert record.getMessage().startswith("learning from session ")
        assert "\n" not in record.getMessage()
