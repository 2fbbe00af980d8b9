"""`nanobot agent` learns skills from its turns: the third successful run with the same
tool sequence writes a SKILL.md and says so in one line on stderr; `--no-learn` and
`learning.enabled: false` leave the skills alone.

The command runs whole in this process (config file, build_agent, the loop, the workspace
tools, the session files, the learner) on a scripted FAKE model: the embedded 135M model
does not call the same tools in the same order on demand. Only the workbench is changed:
it starts no server and hands out the fake as every slot's client.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.config import SlotName
from nanobot_tui.engine.learning.skills import DEFAULT_MIN_SUCCESSES, list_learned_skills
from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.serving import workbench
from tests.ui.test_chat_learns_skills import ScriptedModel, reading_turn, workspace

FILES = [f"notes-{n}.txt" for n in range(DEFAULT_MIN_SUCCESSES)]


def fake_model_workbench(
    model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> list[workbench.Workbench]:
    """Every Workbench the command makes serves `model` (a FAKE) and starts nothing;
    the ones made are listed."""
    made: list[workbench.Workbench] = []

    class FakeModelWorkbench(workbench.Workbench):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        def client(self, slot: SlotName) -> ChatClient:
            return model

    monkeypatch.setattr(workbench, "Workbench", FakeModelWorkbench)
    return made


def write_config(home: Path, work: Path, *, learning: bool = True) -> None:
    home.mkdir(parents=True, exist_ok=True)
    config = {
        "local": {"main": {"model": "smollm2-135m-instruct"}},
        "agent": {"workspace": str(work), "toolMode": "prompted"},
        "learning": {"enabled": learning},
    }
    (home / "config.json").write_text(json.dumps(config), encoding="utf-8")


def run_agent(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    assert cli.main(["agent", *args]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def learned_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "skill" in line]


def test_the_nth_successful_run_learns_a_skill_and_says_so(
    tmp_path: Path,
    nanobot_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = workspace(tmp_path, FILES)
    write_config(nanobot_home, work)
    model = ScriptedModel([reply for name in FILES for reply in reading_turn(name)])
    made = fake_model_workbench(model, monkeypatch)
    for name in FILES[:-1]:
        out, err = run_agent(capsys, "-m", f"Read the notes file {name}")
        assert out.strip() == f"{name} says: water the plants."
        assert learned_lines(err) == []
        assert list_learned_skills() == []
    out, err = run_agent(capsys, "-m", f"Read the notes file {FILES[-1]}")
    assert out.strip() == f"{FILES[-1]} says: water the plants."
    (skill,) = list_learned_skills()
    assert skill.path.is_file() and skill.signature == ("list_dir", "read_file")
    # one session per run: each run is one of the turns it was learned from
    assert len({origin.split("#")[0] for origin in skill.origin}) == len(FILES)
    assert learned_lines(err) == [
        f"learned a skill: {skill.name} (from {len(FILES)} successful turns)"
    ]
    assert len(made) == len(FILES) and not model.replies


@pytest.mark.parametrize("switch", ["--no-learn", "learning.enabled false"])
def test_learning_switched_off_writes_nothing(
    switch: str,
    tmp_path: Path,
    nanobot_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = workspace(tmp_path, FILES)
    write_config(nanobot_home, work, learning=switch == "--no-learn")
    model = ScriptedModel([reply for name in FILES for reply in reading_turn(name)])
    fake_model_workbench(model, monkeypatch)
    flags: Sequence[str] = ["--no-learn"] if switch == "--no-learn" else []
    for name in FILES:
        out, err = run_agent(capsys, "-m", f"Read the notes file {name}", *flags)
        assert out.strip() == f"{name} says: water the plants."
        assert learned_lines(err) == []
    assert not model.replies  # every run went through its whole turn
    assert not (nanobot_home / "skills").exists()


def test_a_failing_learner_still_prints_the_answer(
    tmp_path: Path,
    nanobot_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The skills folder is a file: the learner cannot write; the run still answers and
    exits 0, with one warning line logged (on stderr where no logging is set up)."""
    work = workspace(tmp_path, FILES[:1])
    write_config(nanobot_home, work)
    (nanobot_home / "skills").write_text("not a folder")
    fake_model_workbench(ScriptedModel(reading_turn(FILES[0])), monkeypatch)
    with caplog.at_level("WARNING", logger="nanobot_tui.cli.agent"):
        out, err = run_agent(capsys, "-m", f"Read the notes file {FILES[0]}")
    assert out.strip() == f"{FILES[0]} says: water the plants."
    assert learned_lines(err) == []
    (record,) = [r for r in caplog.records if r.name == "nanobot_tui.cli.agent"]
    message = record.getMessage()
    assert message.startswith("learning from session ") and "NotADirectoryError" in message
    assert "\n" not in message


def test_no_learn_is_documented_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["agent", "--help"])
    assert "--no-learn" in capsys.readouterr().out
