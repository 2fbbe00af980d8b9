"""The chat pane as the agent's pane, and the delegations in the process tree pane.

Turns run on the real embedded model (each app starts its own server); the transcript's
drawing is also checked without a model, by replaying a recorded event log through the
pane's `show_event`, as the worker does."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual.widgets import Collapsible, DataTable, Static
from textual.worker import WorkerState

from nanobot_tui.config import AgentConfig, Config, LocalConfig, SlotConfig
from nanobot_tui.engine.agent import delegate
from nanobot_tui.engine.agent.delegate import Delegation
from nanobot_tui.engine.agent.loop import (
    CANCELLED,
    AgentEvent,
    AnswerDelta,
    CallProblem,
    Compacted,
    RoundDone,
    ToolCalls,
    ToolDone,
    TurnDone,
)
from nanobot_tui.engine.agent.sessions import Session, SessionStore
from nanobot_tui.engine.agent.tools.registry import ToolResult
from nanobot_tui.engine.llm.results import ToolCall, Usage
from nanobot_tui.engine.serving.metrics import parse_metrics
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.panes.chat import (
    ChatPane,
    Note,
    UserMessage,
    history_widgets,
    recent_records,
)
from nanobot_tui.ui.screens.sessions import SessionPicker
from nanobot_tui.ui.widgets.agent_tree import AgentTree
from nanobot_tui.ui.widgets.answer import Answer
from nanobot_tui.ui.widgets.prompt import PromptArea
from nanobot_tui.ui.widgets.tool_block import ToolBlock
from tests.conftest import until
from tests.ui.test_app import text_of

TURN_LINE = r"\d+ rounds? · [\d,]+ prompt tokens · "


def model_config(tmp_path: Path, **agent: Any) -> Config:
    """Every slot on the embedded model, one small server; the agent's files in tmp_path."""
    slot = SlotConfig(model="smollm2-135m-instruct", context_size=4096, temperature=0.0)
    settings = AgentConfig(workspace=tmp_path, **agent)
    return Config(local=LocalConfig(main=slot), agent=settings)


def quiet_app() -> NanobotApp:
    """The app with no model servers, for what needs no model: it starts at once."""
    config = Config(local=LocalConfig(main=SlotConfig(model="smollm2-135m-instruct")))
    return NanobotApp(config, workbench=Workbench(config, only_slots=()))


def pane_of(app: NanobotApp) -> ChatPane:
    return app.screen.query_one(ChatPane)


def recorded_events(pane: ChatPane) -> list[AgentEvent]:
    """Every event the pane draws, from now on."""
    seen: list[AgentEvent] = []
    draw = pane.show_event

    async def spy(event: AgentEvent) -> None:
        seen.append(event)
        await draw(event)

    pane.show_event = spy  # type: ignore[method-assign]
    return seen


async def ask(pilot: Any, text: str) -> None:
    pilot.app.screen.query_one("#prompt", PromptArea).value = text
    await pilot.press("enter")


def turn_notes(pane: ChatPane) -> list[str]:
    return [text_of(note) for note in pane.query(Note) if note.has_class("turn")]


def call_lines(pane: ChatPane) -> list[str]:
    return [text_of(block.query_one(".tool-call", Static)) for block in pane.query(ToolBlock)]


# --- a recorded event log, replayed without a model ------------------------------------

SERVER_PY = (
    "server.py (4 lines)\n"
    "   1| import os\n"
    "   2| \n"
    '   3| PORT = int(os.environ.get("PORT", 8080))\n'
    '   4| print(f"listening on {PORT}")'
)
REPLAY_QUESTION = "Which port does the server listen on?"
REPLAY_EVENTS: list[AgentEvent] = [
    ToolCalls(
        1,
        [
            ToolCall("call_1", "ctx_grep", '{"volume": "proj", "pattern": "port"}'),
            ToolCall("call_2", "read_file", '{"path": "server.py"}'),
        ],
    ),
    ToolDone(
        ToolResult(
            "call_1",
            "ctx_grep",
            {"volume": "proj", "pattern": "port"},
            'server.py:3 [3] PORT = int(os.environ.get("PORT", 8080))',
            True,
            0.012,
        )
    ),
    ToolDone(ToolResult("call_2", "read_file", {"path": "server.py"}, SERVER_PY, True, 0.003)),
    RoundDone(1, Usage(900, 30, 930), 0.84, 0.80, 0.70, 0.02),
    ToolCalls(2, [ToolCall("call_3", "ctx_volumes", "{}")]),
    ToolDone(
        ToolResult("call_3", "ctx_volumes", {}, '[{"name": "proj", "lines": 4}]', True, 0.002)
    ),
    ToolCalls(2, [ToolCall("call_4", "ctx_slice", '{"volume": "nope", "start": 1, "end": 5}')]),
    ToolDone(
        ToolResult(
            "call_4",
            "ctx_slice",
            {"volume": "nope", "start": 1, "end": 5},
            "error: no volume named 'nope' (volumes: proj)",
            False,
            0.001,
        )
    ),
    RoundDone(2, Usage(1000, 20, 1020), 0.50, 0.50, 0.40, 0.003),
    CallProblem(3, "arguments are not valid JSON: Expecting ',' delimiter at line 1 column 20"),
    RoundDone(3, Usage(1100, 20, 1120), 0.40, 0.40, 0.30, 0.0),
    Compacted(0, 5, "The user asked which port the server uses; grep found PORT.", False),
    AnswerDelta("The server listens on **port 8080** "),
    AnswerDelta("unless the `PORT` variable is set."),
    RoundDone(4, Usage(600, 15, 615), 0.60, 0.60, 0.50, 0.0),
    TurnDone(
        "The server listens on **port 8080** unless the `PORT` variable is set.",
        4,
        None,
        Usage(3600, 85, 3685),
        600,
    ),
]


async def replay(pane: ChatPane, question: str, events: list[AgentEvent]) -> None:
    await pane.show_user(question)
    for event in events:
        await pane.show_event(event)


async def test_a_replayed_event_log_draws_calls_results_and_notes() -> None:
    app = quiet_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.engine_state.ready)
        pane = pane_of(app)
        await replay(pane, REPLAY_QUESTION, REPLAY_EVENTS)
        await pilot.pause()

        assert [text_of(m) for m in pane.query(UserMessage)] == [f"› {REPLAY_QUESTION}"]
        assert call_lines(pane) == [
            '▸ ctx_grep(volume="proj", pattern="port")',
            '▸ read_file(path="server.py")',
            "▸ ctx_volumes()",
            '▸ ctx_slice(volume="nope", start=1, end=5)',
        ]
        collapsibles = list(pane.query(Collapsible))
        assert all(c.collapsed for c in collapsibles)
        assert [c.title for c in collapsibles] == [
            "✓ 12 ms · 56 B",
            "✓ 3 ms · 125 B",
            "✓ 2 ms · 30 B",
            "✗ error · 1 ms · 45 B",
        ]
        grep, read, volumes, failed = (
            block.query_one(".tool-result", Static).content for block in pane.query(ToolBlock)
        )
        # Code is highlighted with the lexer the file's name says; JSON as JSON.
        assert isinstance(read, Group)
        code = [part for part in read.renderables if isinstance(part, Syntax)]
        assert len(code) == 1 and code[0].lexer is not None
        assert code[0].lexer.name == "Python" and code[0].line_numbers
        assert code[0].code.startswith("import os\n")
        assert isinstance(volumes, Syntax) and volumes.lexer is not None
        assert volumes.lexer.name == "JSON"
        assert isinstance(grep, Text) and isinstance(failed, Text)
        assert {b.has_class("-error") for b in pane.query(ToolBlock)} == {False, True}

        notes = [text_of(note) for note in pane.query(Note)]
        assert notes[0].startswith("⚠ the model's tool call could not be read: arguments")
        assert notes[1].startswith("⇣ compacted messages 0–5: The user asked")
        assert notes[2] == "4 rounds · 3,600 prompt tokens · 2.3 s"
        answers = list(pane.query(Answer))
        assert [a.source for a in answers] == [
            "The server listens on **port 8080** unless the `PORT` variable is set."
        ]
        status = text_of(pane.query_one("#chat-status", Static))
        assert status.endswith("· 4 rounds · 3,600 prompt tokens · 2.3 s")

        # A turn stopped while a call runs: its block says so.
        pane.busy = True
        await pane.show_event(ToolCalls(5, [ToolCall("call_9", "list_dir", "{}")]))
        pane.post_message(ChatPane.TurnEnded(pane.turn, "stopped"))
        await until(lambda: not pane.busy)
        await pilot.pause()
        last = list(pane.query(ToolBlock))[-1]
        assert last.query_one(Collapsible).title == "⊘ cancelled"
        assert "stopped" in text_of(pane.query_one("#chat-status", Static))


def test_replayed_chat_pane_snapshot(snap_compare: Any) -> None:
    """The pane with tool blocks, one result opened, at 120x36; the same on every machine:
    the events are recorded, times included."""
    app = quiet_app()

    async def draw(pilot: Any) -> None:
        await until(lambda: app.engine_state.ready)
        pane = pane_of(app)
        app.screen.maximize(pane)
        await replay(pane, REPLAY_QUESTION, REPLAY_EVENTS)
        list(pane.query(ToolBlock))[1].query_one(Collapsible).collapsed = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 36), run_before=draw)


# --- saved sessions ---------------------------------------------------------------------


def saved_session(name: str) -> Session:
    """A session with a tool call, as the agent writes one."""
    session = SessionStore().create(name)
    session.append_message({"role": "user", "content": "What is in notes.txt?"})
    call = {"name": "read_file", "arguments": '{"path": "notes.txt"}'}
    session.append_message(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
        }
    )
    content = "notes.txt: buy milk"
    result = ToolResult("call_1", "read_file", {"path": "notes.txt"}, content, True, 0.004)
    session.append_message(
        {"role": "tool", "tool_call_id": "call_1", "name": "read_file", "content": result.content}
    )
    session.append_tool(result)
    session.append_message({"role": "assistant", "content": "It says: **buy milk**."})
    session.close()
    return session


def test_history_reads_back_problems_and_compactions() -> None:
    session = SessionStore().create("bumpy")
    session.append_message({"role": "user", "content": "hi"})
    session.append_message({"role": "assistant", "content": "<tool_call>[{oops"})
    session.append_message({"role": "user", "content": "Tool call error: not valid JSON"})
    session.append_message({"role": "assistant", "content": "Hello."})
    session.append({"type": "compaction", "summary": "greetings", "first": 0, "last": 2})
    widgets = history_widgets(session.records())
    session.close()
    kinds = [type(w).__name__ for w in widgets]
    assert kinds == ["UserMessage", "Note", "Answer", "Note"]
    assert "could not be read: not valid JSON" in str(widgets[1].content)
    assert str(widgets[3].content).startswith("⇣ compacted messages 0–2: greetings")


def test_a_long_session_shows_its_last_whole_turns() -> None:
    session = SessionStore().create("long")
    for n in range(3):
        session.append_message({"role": "user", "content": f"question {n}"})
        session.append_message({"role": "assistant", "content": "thinking", "tool_calls": []})
        session.append_message({"role": "assistant", "content": f"answer {n}"})
    records = session.records()
    session.close()
    # Five messages fit: the last whole turn (three), not a turn cut in two.
    tail, earlier = recent_records(records, 5)
    assert earlier == 6
    assert [r["message"]["content"] for r in tail] == ["question 2", "thinking", "answer 2"]
    assert recent_records(records, 9) == (records, 0)
    # One turn longer than the limit: its last messages.
    tail, earlier = recent_records(records, 2)
    assert earlier == 7 and [r["message"]["content"] for r in tail] == ["thinking", "answer 2"]


@pytest.mark.model
async def test_a_session_resumed_from_the_picker_shows_its_past_and_goes_on(
    tmp_path: Path,
) -> None:
    SessionStore().create("older").close()
    saved_session("notes-chat")
    app = NanobotApp(model_config(tmp_path, max_rounds=2))
    async with app.run_test(size=(120, 36)) as pilot:
        pane = pane_of(app)
        await pilot.press("ctrl+o")
        await until(lambda: isinstance(app.screen, SessionPicker) and app.screen.loaded)
        picker = app.screen
        assert isinstance(picker, SessionPicker)
        assert [info.name for info in picker.infos] == ["notes-chat", "older"]
        table = picker.query_one("#sessions", DataTable)
        table.move_cursor(row=table.get_row_index("notes-chat"))
        await pilot.press("enter")
        await until(lambda: bool(pane.query(Answer)))
        await pilot.pause()

        assert app.session_name == "notes-chat"
        assert pane.border_title == "Chat · notes-chat"
        assert [text_of(m) for m in pane.query(UserMessage)] == ["› What is in notes.txt?"]
        assert call_lines(pane) == ['▸ read_file(path="notes.txt")']
        block = pane.query_one(ToolBlock).query_one(Collapsible)
        assert block.collapsed and block.title == "✓ 4 ms · 19 B"
        assert [a.source for a in pane.query(Answer)] == ["It says: **buy milk**."]

        # The next turn goes on in that session, streamed, and ends with its status line.
        events = recorded_events(pane)
        await until(lambda: app.engine_state.ready)
        await ask(pilot, "hello")
        await until(lambda: bool(turn_notes(pane)) and not pane.busy)
        await pilot.pause()
        assert app.kit is not None and app.kit.session.name == "notes-chat"
        deltas = [e.text for e in events if isinstance(e, AnswerDelta)]
        done = [e for e in events if isinstance(e, TurnDone)]
        assert len(deltas) >= 2 and len(done) == 1
        assert pane.query(Answer).last().source.strip() == done[0].answer.strip()
        notes = turn_notes(pane)
        assert len(notes) == 1
        assert re.match(TURN_LINE, notes[0]), notes[0]
        assert notes[0] in text_of(pane.query_one("#chat-status", Static))
        said = [m["content"] for m in SessionStore().open("notes-chat").all_messages()]
        assert said[-2:] == ["hello", done[0].answer]

        # ctrl+n: a new session, an empty transcript.
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.session_name is None and app.kit is None
        assert not pane.query(UserMessage) and pane.border_title == "Chat · new session"


# --- turns on the model -----------------------------------------------------------------


@pytest.mark.model
async def test_constrained_tool_calls_show_as_blocks(tmp_path: Path) -> None:
    """Held to the JSON schema with one tool round, the model's first reply is a call and
    its second an answer without tools."""
    (tmp_path / "todo.md").write_text("- buy milk\n")
    app = NanobotApp(model_config(tmp_path, tool_mode="constrained", max_rounds=1))
    async with app.run_test(size=(120, 36)) as pilot:
        pane = pane_of(app)
        events = recorded_events(pane)
        await until(lambda: app.engine_state.ready)
        await ask(pilot, "List the files in the workspace.")
        await until(lambda: bool(turn_notes(pane)) and not pane.busy, timeout=110)
        await pilot.pause()

        calls = [c for e in events if isinstance(e, ToolCalls) for c in e.calls]
        results = [e.result for e in events if isinstance(e, ToolDone)]
        assert calls and len(results) == len(calls)
        blocks = list(pane.query(ToolBlock))
        assert [b.call_id for b in blocks] == [c.id for c in calls]
        for block, call, result in zip(blocks, calls, results, strict=True):
            line = text_of(block.query_one(".tool-call", Static))
            assert line.startswith(f"▸ {call.name}(")
            collapsible = block.query_one(Collapsible)
            assert collapsible.collapsed
            assert collapsible.title.startswith("✓ " if result.ok else "✗ error · ")
        assert turn_notes(pane)[0].startswith("2 rounds · ")


LONG_ANSWER = 3000  # tokens: room for a long answer, far more than Esc lets through


async def tokens_predicted(url: str, headers: dict[str, str]) -> float:
    """Tokens the model server has generated so far, cancelled requests' included."""
    async with httpx.AsyncClient(headers=headers) as http:
        metrics = parse_metrics((await http.get(f"{url}/metrics")).text)
    return metrics.get("llamacpp:tokens_predicted_total", 0.0)


@pytest.mark.model
async def test_escape_cancels_a_running_turn(tmp_path: Path) -> None:
    app = NanobotApp(model_config(tmp_path, max_rounds=1))
    async with app.run_test(size=(120, 36)) as pilot:
        pane = pane_of(app)
        kit = await app.agent_kit()
        kit.agent.max_tokens = LONG_ANSWER
        url = app.workbench.manager.url("main")  # type: ignore[union-attr]
        key = app.workbench.manager.auth_headers  # type: ignore[union-attr]
        before = await tokens_predicted(url, key)
        await ask(pilot, "Count from 1 to 1000, one number per line.")
        await until(lambda: bool(pane.query(Answer)) and bool(pane.query(Answer).last().source))
        workers = [w for w in app.workers if w.group == "agent"]
        assert workers and workers[0].is_running, "the answer ended before Esc could stop it"
        worker = workers[0]
        await pilot.press("escape")
        await until(lambda: not pane.busy)
        await pilot.pause()
        assert worker.state == WorkerState.CANCELLED
        assert "stopped" in text_of(pane.query_one("#chat-status", Static))
        assert [text_of(n) for n in pane.query(Note)][-1] == "⊘ stopped"
        # The stream was closed: the server stopped generating before the answer's end (a
        # server that went on would go idle only after all LONG_ANSWER tokens).
        async with httpx.AsyncClient(headers=key) as http:
            while any(s["is_processing"] for s in (await http.get(f"{url}/slots")).json()):
                await asyncio.sleep(0.1)
        assert await tokens_predicted(url, key) - before < LONG_ANSWER
        # The question is kept, and an assistant note that the answer was stopped (what
        # had been shown is kept apart, for display, not given back to the model): the
        # turns still alternate and the next one can go on.
        said = kit.session.all_messages()
        assert said[-2] == {"role": "user", "content": "Count from 1 to 1000, one number per line."}
        assert said[-1] == {"role": "assistant", "content": CANCELLED}
        shown = pane.query(Answer).last().source.strip()
        assert shown and kit.session.records()[-1]["partial"] == shown


# --- delegations in the process tree pane -----------------------------------------------


async def test_the_agent_tree_shows_the_sessions_delegations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The clock a running delegation's time is read from, pinned: the tree shows the same
    # time however long it takes to draw.
    now = [1_700_000_000.0]
    monkeypatch.setattr(delegate, "time", SimpleNamespace(time=lambda: now[0]))
    app = quiet_app()
    async with app.run_test(size=(140, 44)) as pilot:
        tree = app.screen.query_one("#agent-tree", AgentTree)
        assert not tree.display
        app.use_session("demo")
        started = now[0] - 5
        task = "Summarise README.md and list every command it mentions, with its flags"
        app.note_delegation(Delegation(1, task, "demo-sub1", started=started))
        await until(lambda: tree.display)
        await pilot.pause()
        root, task_line, numbers = tree.labels()
        assert root == "chat · demo"
        assert task_line == "◐ Summarise README.md and list ev…"
        assert numbers == "5.0 s · 0 rounds · 0 calls"
        # While it runs, its time goes on between records: the tree redraws it each tick.
        now[0] += 2
        await until(lambda: tree.labels()[2] == "7.0 s · 0 rounds · 0 calls")
        node = tree.root.children[0]

        first = Delegation(1, task, "demo-sub1", started=started)
        app.note_delegation(
            replace(first, status="completed", rounds=3, tool_calls=5, finished=started + 12)
        )
        second = Delegation(2, "check the tests", "demo-sub2", started=started)
        app.note_delegation(
            replace(second, status="failed", rounds=1, error="model down", finished=started + 1)
        )
        # A late record from a session the chat has left is not shown.
        app.note_delegation(Delegation(7, "old work", "elsewhere-sub7"))
        await until(lambda: len(tree.root.children) == 2)
        await pilot.pause()
        assert tree.root.children[0] is node  # relabelled in place
        assert tree.labels() == [
            "chat · demo",
            "● Summarise README.md and list ev…",
            "12 s · 3 rounds · 5 calls",
            "✗ check the tests",
            "1.0 s · 1 round · 0 calls · model down",
        ]
        assert sorted(app.delegations) == [1, 2]

        # Another session: its own (no) delegations.
        app.use_session("next")
        await pilot.pause()
        assert not tree.display and tree.labels() == ["chat · next"]
