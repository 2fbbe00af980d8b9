"""Learned skills: agent turns read back from real session files, crystallised after N
successes, loaded and matched by the agent's own skill loader, counted, demoted, forgotten.

Most sessions are written through the real SessionStore/Session API the way the agent's
loop writes them (no model needed). One test drives the real Agent loop with a scripted
FAKE model (the embedded 135M model cannot be made to call the same tools in the same
order on demand) and real workspace and shell tools, to keep the reader in step with what
the loop really writes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui import paths
from nanobot_tui.engine.agent.loop import Agent
from nanobot_tui.engine.agent.sessions import Session, SessionStore
from nanobot_tui.engine.agent.skills import load_skills, match_skills, skills_prompt
from nanobot_tui.engine.agent.tool_protocol import PromptedTools
from nanobot_tui.engine.agent.tools.registry import ToolRegistry, ToolResult
from nanobot_tui.engine.agent.tools.shell import shell_tool
from nanobot_tui.engine.agent.tools.workspace import Workspace, workspace_tools
from nanobot_tui.engine.learning.skills import (
    LearnedSkillNotFound,
    LearnReport,
    SkillLearner,
    forget_learned_skills,
    list_learned_skills,
    session_turns,
)
from tests.fakes import ScriptedModel

Call = tuple[str, dict[str, Any]]


def count_calls(path: str) -> list[Call]:
    """The recurring sequence: read a file, then count its lines in the shell."""
    return [
        ("read_file", {"path": path, "max_lines": 50}),
        ("shell", {"command": f"wc -l {path}"}),
    ]


def write_turn(
    session: Session,
    task: str,
    calls: Sequence[Call],
    *,
    failing: str | None = None,
    answer: str | None = "Done.",
) -> int:
    """One turn as the loop writes it: the task, each call with its result (the tool named
    `failing` returns an error), the answer (None: no answer yet). Returns its index."""
    index = session.append_message({"role": "user", "content": task})
    for n, (name, arguments) in enumerate(calls):
        call_id = f"call-{index}-{n}"
        function = {"name": name, "arguments": json.dumps(arguments)}
        session.append_message(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": call_id, "type": "function", "function": function}],
            }
        )
        ok = name != failing
        content = "42 lines" if ok else "error: no such file"
        session.append_message(
            {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}
        )
        session.append_tool(ToolResult(call_id, name, arguments, content, ok, 0.01))
    if answer is not None:
        session.append_message({"role": "assistant", "content": answer})
    session.sync()
    return index


def new_session(task: str, calls: Sequence[Call], **kwargs: Any) -> Session:
    session = SessionStore().create()
    write_turn(session, task, calls, **kwargs)
    return session


@pytest.fixture
def learner(nanobot_home: Path) -> SkillLearner:
    return SkillLearner()


def teach_counting(learner: SkillLearner, files: Sequence[str]) -> list[str]:
    """One session per file, each counting its lines; the skills crystallised."""
    learned: list[str] = []
    for name in files:
        session = new_session(f"Count the lines in {name}", count_calls(name))
        learned += learner.observe_session(session).crystallised
    return learned


# --- turns ------------------------------------------------------------------------------


def tool_call(name: str, **arguments: Any) -> str:
    return f"<tool_call>[{json.dumps({'name': name, 'arguments': arguments})}]</tool_call>"


def test_turns_read_back_what_the_real_loop_writes(nanobot_home: Path, tmp_path: Path) -> None:
    """Through the real Agent loop (FAKE model, real read_file and shell tools): a clean
    turn is a success with its calls in order; a tool error, an unreadable call and a
    repeated call each make a turn fail."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("a\nb\nc\n")
    ws = Workspace(work)
    tools = ToolRegistry([*workspace_tools(ws), shell_tool(ws, timeout=30, output_chars=2000)])
    model = ScriptedModel(
        [
            tool_call("read_file", path="notes.txt"),
            tool_call("shell", command="wc -l notes.txt"),
            "notes.txt has 3 lines.",
            tool_call("read_file", path="missing.txt"),
            "There is no such file.",
            "<tool_call>[{not json</tool_call>",
            "Sorry, I answer without tools.",
            tool_call("list_dir", path="."),
            tool_call("list_dir", path="."),
            "One file.",
        ]
    )
    session = SessionStore().create("real-loop")
    agent = Agent(model, tools, session, 8192, "You help.", protocol=PromptedTools())

    async def run(task: str) -> None:
        async for _ in agent.turn(task):
            pass

    for task in ("Count the lines in notes.txt", "Read missing.txt", "Hi", "List the files"):
        asyncio.run(run(task))

    turns = session_turns(SessionStore().open("real-loop"))
    assert [(t.task, t.success) for t in turns] == [
        ("Count the lines in notes.txt", True),
        ("Read missing.txt", False),
        ("Hi", False),
        ("List the files", False),
    ]
    first = turns[0]
    assert first.signature == ("read_file", "shell")
    assert [s.arguments for s in first.steps] == [
        {"path": "notes.txt"},
        {"command": "wc -l notes.txt"},
    ]
    assert first.finished and first.key == "real-loop#0"
    assert turns[1].reason == "tool read_file failed"
    assert turns[2].reason == "an unreadable tool call"
    assert turns[3].reason == "a repeated tool call"


def test_an_unanswered_last_turn_waits_until_it_is_answered(nanobot_home: Path) -> None:
    learner = SkillLearner(min_successes=1)
    (name,) = teach_counting(learner, ["a.txt"])
    session = SessionStore().create()
    write_turn(session, "Count the lines in b.txt", count_calls("b.txt"), answer=None)
    (turn,) = session_turns(session)
    assert not turn.finished and not turn.success
    # still running: not counted as the failure it would look like
    assert learner.observe_session(session) == LearnReport()
    assert learner.observe_turn(turn) == LearnReport()
    session.append_message({"role": "assistant", "content": "3 lines."})
    (turn,) = session_turns(session)
    assert turn.finished and turn.success
    assert learner.observe_session(session).hits == [name]
    assert (learner.get(name).hits, learner.get(name).failures) == (1, 0)


# --- crystallising ----------------------------------------------------------------------


def test_a_skill_is_crystallised_after_n_successes_and_not_before(learner: SkillLearner) -> None:
    first = new_session("Count the lines in notes.txt", count_calls("notes.txt"))
    assert learner.observe_session(first).crystallised == []
    assert learner.observe_session(first).crystallised == []  # the same turn twice: one
    failed = new_session("Count the lines in gone.txt", count_calls("gone.txt"), failing="shell")
    assert learner.observe_session(failed).crystallised == []  # a failure teaches nothing
    one_call = new_session("Read todo.md", count_calls("todo.md")[:1])
    assert learner.observe_session(one_call).crystallised == []
    second = new_session("Count the lines in todo.md", count_calls("todo.md"))
    assert learner.observe_session(second).crystallised == []
    assert list_learned_skills() == []
    third = new_session("Please count the lines in src/app.py", count_calls("src/app.py"))
    (name,) = learner.observe_session(third).crystallised

    (skill,) = list_learned_skills()
    assert skill.name == name == "count-line"
    assert skill.path == paths.skills_dir() / name / "SKILL.md"
    assert skill.status == "active" and (skill.hits, skill.failures) == (0, 0)
    assert skill.signature == ("read_file", "shell")
    assert skill.slots == ("path",)
    assert skill.origin == (f"{first.name}#0", f"{second.name}#0", f"{third.name}#0")
    text = skill.path.read_text()
    # the varied path is a slot, the constant max_lines is kept, the shell command is a
    # template around the slot
    assert "1. `read_file` path={path}, max_lines=50" in text
    assert '2. `shell` command="wc -l {path}"' in text
    assert '- {path}: "notes.txt", "todo.md", "src/app.py"' in text
    assert "Please count the lines in {path}" in skill.description
    # observed again, the turns count for nothing more
    assert all(learner.observe_session(s) == LearnReport() for s in (first, second, third))


def test_n_is_configurable(nanobot_home: Path) -> None:
    learner = SkillLearner(min_successes=2)
    assert teach_counting(learner, ["a.txt"]) == []
    assert teach_counting(learner, ["b.txt"]) == ["count-line"]
    with pytest.raises(ValueError, match="at least 1"):
        SkillLearner(min_successes=0)


def test_a_learned_skill_loads_through_the_agents_loader_and_matches_a_similar_task(
    learner: SkillLearner,
) -> None:
    (name,) = teach_counting(learner, ["notes.txt", "todo.md", "app.py"])
    skills = {s.name: s for s in load_skills()}
    loaded = skills[name]
    assert loaded.description == "Learned steps for: Count the lines in {path}"
    assert loaded.body.startswith(f"# {name} (learned)") and "hits:" not in loaded.body

    matched = match_skills(load_skills(), "count the lines in README.md")
    assert [s.name for s in matched] == [name]
    prompt = skills_prompt(matched)
    assert prompt is not None and 'command="wc -l {path}"' in prompt
    assert [s.name for s in learner.offered("how many lines are in setup.cfg? count them")] == [
        name
    ]
    assert match_skills(load_skills(), "write a poem about the sea") == []
    assert learner.offered("hello") == []


def test_a_hand_written_skill_is_not_taken_for_a_learned_one(learner: SkillLearner) -> None:
    folder = paths.ensure(paths.skills_dir() / "count-line")
    (folder / "SKILL.md").write_text("---\nname: count-line\ndescription: mine\n---\nMy way.\n")
    (name,) = teach_counting(learner, ["a.txt", "b.txt", "c.txt"])
    assert name == "count-line-2"  # the user's name and folder are left alone
    assert (folder / "SKILL.md").read_text().endswith("My way.\n")
    assert [s.name for s in list_learned_skills()] == ["count-line-2"]


# --- counting, demoting ----------------------------------------------------------------


def test_hits_and_failures_are_counted_once_per_turn(learner: SkillLearner) -> None:
    before = new_session("Count the lines in old.txt", count_calls("old.txt"), failing="shell")
    (name,) = teach_counting(learner, ["a.txt", "b.txt", "c.txt"])
    # a turn that ran before the skill existed was not offered it: not counted
    assert learner.observe_session(before) == LearnReport()
    hit = new_session("Count the lines in d.txt", count_calls("d.txt"))
    report = learner.observe_session(hit)
    assert report.hits == [name] and report.failures == []
    assert learner.observe_session(hit) == LearnReport()  # observed again: not counted again
    failure = new_session("Count the lines in e.txt", count_calls("e.txt"), failing="read_file")
    assert learner.observe_session(failure).failures == [name]
    other_path = new_session("Count the lines in f.txt", [("shell", {"command": "wc -l f.txt"})])
    other = learner.observe_session(other_path)
    assert other.hits == other.failures == []  # a success another way counts neither
    unrelated = new_session("Write a poem about the sea", [], failing=None, answer="")
    assert learner.observe_session(unrelated).failures == []  # not offered: not counted
    skill = learner.get(name)
    assert (skill.hits, skill.failures) == (1, 1)


def test_a_failing_skill_is_demoted_no_longer_offered_and_can_be_restored(
    learner: SkillLearner,
) -> None:
    (name,) = teach_counting(learner, ["a.txt", "b.txt", "c.txt"])
    learner.observe_session(new_session("Count the lines in h.txt", count_calls("h.txt")))
    for n in range(3):
        failing = new_session(f"Count the lines in x{n}.txt", count_calls("x"), failing="shell")
        report = learner.observe_session(failing)
        assert report.failures == [name]
        # the rule: failures >= 3 and more failures than hits (1 hit here)
        assert report.demoted == ([name] if n == 2 else [])

    skill = learner.get(name)
    assert skill.status == "demoted" and (skill.hits, skill.failures) == (1, 3)
    assert "status: demoted" in skill.path.read_text()
    assert name not in {s.name for s in load_skills()}  # the agent's loader skips it
    assert learner.offered("Count the lines in y.txt") == []
    # a demoted skill is not learned again from new successes of the same sequence
    assert teach_counting(learner, ["p.txt", "q.txt", "r.txt"]) == []
    # and it is no longer counted
    later = new_session("Count the lines in z.txt", count_calls("z.txt"), failing="shell")
    assert learner.observe_session(later).failures == []

    restored = learner.restore(name)
    assert (restored.status, restored.failures, restored.hits) == ("active", 0, 1)
    assert [s.name for s in learner.offered("Count the lines in y.txt")] == [name]
    assert learner.demote(name).status == "demoted"
    assert learner.offered("Count the lines in y.txt") == []


def test_more_hits_than_failures_keep_a_skill(learner: SkillLearner) -> None:
    (name,) = teach_counting(learner, ["a.txt", "b.txt", "c.txt"])
    for n in range(3):
        learner.observe_session(new_session(f"Count the lines in h{n}", count_calls(f"h{n}")))
    for n in range(3):
        failing = new_session(f"Count the lines in x{n}", count_calls("x"), failing="shell")
        assert learner.observe_session(failing).demoted == []
    failing = new_session("Count the lines in x9", count_calls("x"), failing="shell")
    assert learner.observe_session(failing).demoted == [name]  # 4 failures > 3 hits


def test_the_users_verdict_beats_the_inferred_outcome(learner: SkillLearner) -> None:
    (name,) = teach_counting(learner, ["a.txt", "b.txt", "c.txt"])
    session = new_session("Count the lines in d.txt", count_calls("d.txt"))
    assert learner.observe_session(session).hits == [name]
    report = learner.mark_turn(session, 0, success=False)  # the answer was wrong
    assert report.failures == [name]
    assert (learner.get(name).hits, learner.get(name).failures) == (0, 1)
    with pytest.raises(LearnedSkillNotFound, match="no turn at message 7"):
        learner.mark_turn(session, 7, success=True)


# --- listing, forgetting ----------------------------------------------------------------


def test_forget_removes_only_learned_skills(learner: SkillLearner) -> None:
    mine = paths.ensure(paths.skills_dir() / "release")
    (mine / "SKILL.md").write_text("---\nname: release\ndescription: Cut a release.\n---\n")
    (counting,) = teach_counting(learner, ["a.txt", "b.txt", "c.txt"])
    calls: list[Call] = [("list_dir", {"path": "."}), ("read_file", {"path": "x"})]
    for folder in ("docs", "src", "tests"):
        learner.observe_session(new_session(f"Show the readme in {folder}", calls))
    names = [s.name for s in list_learned_skills()]
    assert counting in names and len(names) == 2
    other = next(n for n in names if n != counting)

    with pytest.raises(LearnedSkillNotFound, match="written by hand"):
        forget_learned_skills(["release", counting])
    assert len(list_learned_skills()) == 2  # an error removes nothing
    with pytest.raises(LearnedSkillNotFound, match="no learned skill named 'nope'"):
        learner.forget(["nope"])

    assert learner.forget([counting]) == [counting]
    assert [s.name for s in list_learned_skills()] == [other]
    learner.demote(other)
    assert forget_learned_skills() == [other]  # demoted ones too
    assert list_learned_skills() == []
    assert [s.name for s in load_skills()] == ["release"]
    assert (mine / "SKILL.md").is_file()


def test_one_value_used_twice_is_one_slot_and_an_absent_argument_an_optional_one(
    learner: SkillLearner,
) -> None:
    state = paths.skills_dir() / ".learned" / "state.json"
    paths.ensure(state.parent)
    state.write_text("{not json")  # a damaged state loses what was pending, nothing more
    for n, path in enumerate(["a.py", "lib/b.py", "c.py"]):
        read: dict[str, Any] = {"path": path, "max_lines": 20} if n == 1 else {"path": path}
        calls: list[Call] = [
            ("read_file", read),
            ("edit_file", {"path": path, "old": "TODO", "new": "DONE"}),
        ]
        learner.observe_session(new_session(f"Mark the TODO in {path} as done", calls))
    (skill,) = list_learned_skills()
    assert skill.slots == ("path", "max_lines")
    text = skill.path.read_text()
    assert "1. `read_file` path={path}, max_lines={max_lines}" in text
    assert '2. `edit_file` path={path}, old="TODO", new="DONE"' in text
    assert "- {max_lines} (optional): 20" in text
    assert json.loads(state.read_text())["seen"]  # written whole again
