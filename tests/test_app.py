"""The app driven headless through Pilot, on the real embedded model."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.text import Text
from textual.content import Content
from textual.widgets import Input, Static

from nanobot_tui.config import Config, LocalConfig, SlotConfig
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.chat import Answer, ChatPane, UserMessage
from nanobot_tui.ui.meter import HardwareMeter


def small_config(**main: object) -> Config:
    """Every slot on the embedded model, one small server: quick to start."""
    slot = SlotConfig(model="smollm2-135m-instruct", context_size=2048, temperature=0.0)
    return Config(local=LocalConfig(main=slot.model_copy(update=main)))


async def until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text (Rich tables included)."""
    content = widget.content
    if isinstance(content, str | Text | Content):
        return str(Text.from_markup(content) if isinstance(content, str) else content)
    console = Console(width=80, no_color=True, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


async def ask(pilot, question: str) -> None:
    prompt = pilot.app.screen.query_one("#prompt", Input)
    prompt.value = question
    await pilot.press("enter")


async def test_chat_streams_an_answer_and_shows_servers() -> None:
    app = NanobotApp(small_config())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        status = screen.query_one("#chat-status", Static)
        await until(lambda: app.engine_state.ready)
        await until(lambda: "ready" in text_of(status))
        deltas: list[str] = []
        chat = screen.query_one(ChatPane)
        original = chat._delta

        async def spy(message: ChatPane.Delta) -> None:
            deltas.append(message.text)
            await original(message)

        chat._delta = spy  # type: ignore[method-assign]
        await ask(pilot, "Name three colours.")
        await until(lambda: app.session is not None and len(app.session.history) == 2)
        await pilot.pause()
        answer = app.session.history[1]["content"]
        assert answer.strip()
        assert [text_of(w) for w in screen.query(UserMessage)] == ["› Name three colours."]
        assert screen.query_one(Answer).source == answer
        assert "tok/s" in text_of(status)

        # The meter lists the shared server as ready, with CPU and RAM bars.
        meter = screen.query_one(HardwareMeter)
        await until(lambda: "ready" in text_of(meter.query_one("#meter-servers", Static)))
        servers = text_of(meter.query_one("#meter-servers", Static))
        assert "main+rlm+memory" in servers and "SmolLM2" in servers
        assert "CPU" in text_of(meter.query_one("#meter-hardware", Static))

        # A second turn keeps the history of the first.
        await ask(pilot, "And one more?")
        await until(lambda: len(app.session.history) == 4)
        pids = [s.pid for s in app.workbench.statuses()]
    # Leaving the app stops its servers.
    assert all(s.state == "stopped" for s in app.workbench.statuses())
    assert pids and all(pid is not None for pid in pids)


async def test_escape_stops_a_streaming_answer() -> None:
    app = NanobotApp(small_config())
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.engine_state.ready)
        url = app.workbench.manager.url("main")
        # A long answer: the server is told to ignore end-of-sequence.
        app.session = None
        session = await app.chat_session()
        session.max_tokens = 2000
        await ask(pilot, "Write a very long essay about the sea.")
        # Esc once the first words have arrived.
        await until(lambda: bool(app.screen.query(Answer)) and app.screen.query_one(Answer).source)
        await pilot.press("escape")
        await until(lambda: len(session.history) == 2, timeout=10)
        status = text_of(app.screen.query_one("#chat-status", Static))
        assert "stopped" in status
        # The server stops generating once the stream is closed.
        async with httpx.AsyncClient() as http:

            async def busy() -> bool:
                slots = (await http.get(f"{url}/slots")).json()
                return any(slot["is_processing"] for slot in slots)

            deadline = time.monotonic() + 5
            while await busy():
                assert time.monotonic() < deadline, "server still generating after Esc"
                await asyncio.sleep(0.1)
        partial = session.history[1]["content"]
        assert len(partial) < 8000  # it did not run to the end


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
