"""The chat pane during and after a turn, with a scripted FAKE agent (no model server):
what a failure shows, the status line, and the live indicator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

from textual.containers import VerticalScroll
from textual.widgets import Static

from nanobot_tui.engine.agent.loop import (
    AgentEvent,
    AnswerDelta,
    RoundDone,
    ToolCalls,
    ToolDone,
    TurnDone,
)
from nanobot_tui.engine.agent.tools.registry import ToolResult
from nanobot_tui.engine.llm.errors import ServerUnavailable
from nanobot_tui.engine.llm.results import ToolCall, Usage
from nanobot_tui.engine.serving.status import ServerEvent, ServerState, ServerStatus
from nanobot_tui.ui.panes.chat import Note
from tests.conftest import until
from tests.ui.test_app import text_of
from tests.ui.test_chat_agent import ask, pane_of, quiet_app

RAW = (
    "http://127.0.0.1:41234/v1/chat/completions: connection lost "
    "(httpx.RemoteProtocolError: peer closed connection without sending complete message body)"
)


class FakeAgent:
    """FAKE agent: each turn runs `script`, a function that yields events."""

    def __init__(self, script: Callable[[str], AsyncIterator[AgentEvent]]) -> None:
        self.script = script

    def turn(self, text: str) -> AsyncIterator[AgentEvent]:
        return self.script(text)


def with_fake_agent(app: Any, script: Callable[[str], AsyncIterator[AgentEvent]]) -> None:
    kit = SimpleNamespace(agent=FakeAgent(script), session=SimpleNamespace(name="fake"))

    async def agent_kit() -> Any:
        return kit

    app.agent_kit = agent_kit


def server_event(state: ServerState, message: str) -> ServerEvent:
    status = ServerStatus(
        "main", ("main",), "smollm2", "/m.gguf", state, 1, None, 0.0, 0, 1, message
    )
    return ServerEvent(status, message)


async def test_a_server_crash_mid_answer_says_one_plain_sentence_and_the_status_recovers() -> None:
    async def crashing(text: str) -> AsyncIterator[AgentEvent]:
        yield AnswerDelta("Once upon a time")
        await asyncio.sleep(0)
        raise ServerUnavailable(RAW)

    app = quiet_app()
    with_fake_agent(app, crashing)
    async with app.run_test(size=(120, 36)) as pilot:
        pane = pane_of(app)
        await ask(pilot, "tell me a story")
        await until(lambda: not pane.busy)
        await pilot.pause()
        note = [text_of(n) for n in pane.query(Note)][-1]
        assert "httpx" not in note and "http://" not in note and "\n" not in note
        assert "model server stopped answering" in note
        status = pane.query_one("#chat-status", Static)
        # The supervisor restarts the server: loading, then ready again.
        app.server_signal.publish(server_event(ServerState.LOADING, "loading…"))
        await pilot.pause()
        assert "loading" in text_of(status)
        app.server_signal.publish(server_event(ServerState.READY, "ready"))
        await pilot.pause()
        assert "loading" not in text_of(status) and text_of(status).endswith("ready")


async def test_an_answer_after_a_long_transcript_is_scrolled_into_view() -> None:
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        pane = pane_of(app)
        for i in range(30):
            await pane.show_user(f"question {i}")
            await pane.show_event(AnswerDelta(f"answer {i}\n\n" + "more text. " * 30))
            await pane.show_event(TurnDone(f"answer {i}", 1, None, Usage(10, 5, 15), 10))
        await pane.show_user("the last question")
        long_answer = "\n\n".join(f"Paragraph {k}: " + "words " * 40 for k in range(12))
        # Arriving whole, as an answer held back until its end did.
        await pane.show_event(AnswerDelta(long_answer))
        await pane.show_event(TurnDone(long_answer, 1, None, Usage(10, 5, 15), 10))
        await pilot.pause()
        await pilot.pause(0.3)
        transcript = pane.query_one("#transcript", VerticalScroll)
        assert transcript.max_scroll_y > 0
        assert transcript.scroll_y == transcript.max_scroll_y


async def test_the_status_line_shows_what_a_turn_is_doing_and_a_cut_answer_is_marked() -> None:
    gates = [asyncio.Event() for _ in range(4)]

    async def script(text: str) -> AsyncIterator[AgentEvent]:
        await gates[0].wait()
        yield ToolCalls(1, [ToolCall("c1", "read_file", '{"path": "a.txt"}')])
        await gates[1].wait()
        yield ToolDone(ToolResult("c1", "read_file", {"path": "a.txt"}, "text", True, 0.01))
        yield RoundDone(1, Usage(10, 5, 15), 0.1, 0.1, None, 0.01)
        await gates[2].wait()
        for word in ["Once ", "upon ", "a "]:
            yield AnswerDelta(word)
        await gates[3].wait()
        yield RoundDone(2, Usage(10, 3, 13), 0.1, 0.1, None, 0.0)
        yield TurnDone("Once upon a", 2, None, Usage(20, 8, 28), 10, cut=True)

    app = quiet_app()
    with_fake_agent(app, script)
    async with app.run_test(size=(120, 36)) as pilot:
        pane = pane_of(app)
        status = pane.query_one("#chat-status", Static)
        await ask(pilot, "read a.txt")
        expected = ["thinking…", "calling tool read_file", "thinking…", "writing… · 3 tokens"]
        for gate, shown in zip(gates, expected, strict=True):
            await until(lambda shown=shown: text_of(status).endswith(shown), timeout=10)
            gate.set()
        await until(lambda: not pane.busy)
        await pilot.pause()
        assert "cut at the token limit" in [text_of(n) for n in pane.query(Note)][-1]
        assert "cut at the token limit" in text_of(status)
