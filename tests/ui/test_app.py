"""The app driven headless through Pilot, on the real embedded model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text
from textual.content import Content
from textual.widgets import Static

from nanobot_tui.config import Config, LocalConfig, SlotConfig
from nanobot_tui.engine.agent.loop import AgentEvent, AnswerDelta
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.panes.chat import ChatPane, Note, UserMessage
from nanobot_tui.ui.panes.meter import HardwareMeter
from nanobot_tui.ui.widgets.answer import Answer
from nanobot_tui.ui.widgets.prompt import PromptArea
from tests.conftest import until


def small_config(**main: object) -> Config:
    """Every slot on the embedded model, one small server: quick to start."""
    slot = SlotConfig(model="smollm2-135m-instruct", context_size=2048, temperature=0.0)
    return Config(local=LocalConfig(main=slot.model_copy(update=main)))


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text (Rich tables included)."""
    content = widget.content
    if isinstance(content, str | Text | Content):
        return str(Text.from_markup(content) if isinstance(content, str) else content)
    console = Console(width=80, no_color=True, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


async def ask(pilot, question: str) -> None:
    prompt = pilot.app.screen.query_one("#prompt", PromptArea)
    prompt.value = question
    await pilot.press("enter")


def turn_lines(chat: ChatPane) -> list[str]:
    """The dim lines that close the agent's turns."""
    return [text_of(note) for note in chat.query(Note) if note.has_class("turn")]


@pytest.mark.model
async def test_chat_streams_an_answer_and_shows_servers() -> None:
    config = small_config()
    config.agent.max_rounds = 1  # a small model may loop on tools: keep the turn short
    app = NanobotApp(config)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        status = screen.query_one("#chat-status", Static)
        await until(lambda: app.engine_state.ready)
        await until(lambda: "ready" in text_of(status))
        deltas: list[str] = []
        chat = screen.query_one(ChatPane)
        original = chat.show_event

        async def spy(event: AgentEvent) -> None:
            if isinstance(event, AnswerDelta):
                deltas.append(event.text)
            await original(event)

        chat.show_event = spy  # type: ignore[method-assign]
        await ask(pilot, "Name three colours.")
        await until(lambda: len(turn_lines(chat)) == 1 and not chat.busy)
        await pilot.pause()
        assert app.kit is not None
        said = app.kit.session.all_messages()
        assert said[0] == {"role": "user", "content": "Name three colours."}
        answer = said[-1]["content"]
        assert said[-1]["role"] == "assistant" and answer.strip()
        assert [text_of(w) for w in screen.query(UserMessage)] == ["› Name three colours."]
        assert deltas and screen.query(Answer).last().source.strip() == answer.strip()
        assert "prompt tokens" in text_of(status)
        assert chat.border_title == f"Chat · {app.kit.session.name}"

        # The meter lists the shared server as ready, with CPU and RAM bars.
        meter = screen.query_one(HardwareMeter)
        await until(lambda: "ready" in text_of(meter.query_one("#meter-servers", Static)))
        servers = text_of(meter.query_one("#meter-servers", Static))
        assert "main+rlm+memory" in servers and "SmolLM2" in servers
        assert "CPU" in text_of(meter.query_one("#meter-hardware", Static))

        # A second turn goes on in the same session.
        await ask(pilot, "And one more?")
        await until(lambda: len(turn_lines(chat)) == 2 and not chat.busy)
        asked = [m["content"] for m in app.kit.session.all_messages() if m["role"] == "user"]
        assert asked == ["Name three colours.", "And one more?"]
        pids = [s.pid for s in app.workbench.statuses()]
    # Leaving the app stops its servers.
    assert all(s.state == "stopped" for s in app.workbench.statuses())
    assert pids and all(pid is not None for pid in pids)


@pytest.mark.model
async def test_a_server_that_cannot_start_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    config = Config(local=LocalConfig(main=SlotConfig(path=broken, context_size=1024)))
    app = NanobotApp(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: bool(app.engine_state.error))
        await pilot.pause()
        status = text_of(app.screen.query_one("#chat-status", Static))
        assert "model servers failed" in status
        assert "exited with code" in status
        await ask(pilot, "hello?")
        await until(
            lambda: "cannot answer" in text_of(app.screen.query_one("#chat-status", Static))
        )
