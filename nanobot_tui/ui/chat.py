"""The chat pane: streamed Markdown answers from the main slot, cancellable with Esc."""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from nanobot_tui.engine.llm import LLMError, StreamDone, TextDelta
from nanobot_tui.engine.servers import ServerEvent, ServerState
from nanobot_tui.ui.messages import EngineState

if TYPE_CHECKING:
    from nanobot_tui.ui.app import NanobotApp


class UserMessage(Static):
    pass


class Answer(Markdown):
    pass


class ChatPane(Vertical):
    BINDINGS = [
        Binding("escape", "stop_answer", "Stop answer", id="chat.stop"),
        Binding("ctrl+l", "clear_chat", "Clear chat", id="chat.clear"),
    ]

    DEFAULT_CSS = """
    ChatPane { border: round $primary 50%; border-title-color: $text-primary; }
    ChatPane #transcript { height: 1fr; padding: 0 1; }
    ChatPane UserMessage { color: $text-accent; margin: 1 0 0 0; text-style: bold; }
    ChatPane Answer { margin: 0; padding: 0; background: transparent; }
    ChatPane #chat-status { height: 1; padding: 0 1; color: $text-muted; }
    ChatPane #prompt { border: tall $primary 30%; }
    ChatPane #prompt:focus { border: tall $primary; }
    """

    class Delta(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Finished(Message):
        def __init__(self, summary: str) -> None:
            super().__init__()
            self.summary = summary

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._stream: MarkdownStream | None = None
        self._answer: Answer | None = None

    @property
    def nanobot(self) -> NanobotApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")
        yield Static("starting the model servers…", id="chat-status")
        yield Input(placeholder="Ask the main model · Enter sends · Esc stops", id="prompt")

    def on_mount(self) -> None:
        self.border_title = "Chat"
        self.query_one("#prompt", Input).focus()
        self.nanobot.server_signal.subscribe(self, self._server_changed)
        self.nanobot.engine_signal.subscribe(self, self._engine_changed)

    # engine state

    def _status(self, text: str) -> None:
        self.query_one("#chat-status", Static).update(text)

    def _server_changed(self, event: ServerEvent) -> None:
        status = event.status
        if "main" in status.slots and status.state is not ServerState.READY:
            self._status(f"main · {status.model} · {status.message}")

    def _engine_changed(self, state: EngineState) -> None:
        if state.ready:
            workbench = self.nanobot.workbench
            name = workbench.slots["main"].display_name if workbench else "model"
            self._status(f"main · {name} · ready")
        elif state.error:
            self._status(f"[b red]model servers failed:[/] {state.error}")
            if state.detail:
                self._transcript_add(Static(state.detail, markup=False, classes="error"))

    # turns

    def _transcript_add(self, widget: Static | Markdown) -> None:
        transcript = self.query_one("#transcript", VerticalScroll)
        transcript.mount(widget)
        transcript.scroll_end(animate=False)

    @on(Input.Submitted, "#prompt")
    async def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self._answer is not None:
            self.notify("An answer is still streaming: Esc stops it.", severity="warning")
            return
        event.input.clear()
        self._transcript_add(UserMessage(f"› {text}", markup=False))
        self._answer = Answer()
        self._transcript_add(self._answer)
        self._stream = Markdown.get_stream(self._answer)
        self.answer(text)

    @work(exclusive=True, group="chat", exit_on_error=False, description="stream an answer")
    async def answer(self, text: str) -> None:
        """Stream one answer; deltas come back to the pane as messages."""
        try:
            session = await self.nanobot.chat_session()
        except RuntimeError as exc:
            self.post_message(self.Finished(f"[red]cannot answer:[/] {exc}"))
            return
        summary = ""
        try:
            async with aclosing(session.stream(text)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        self.post_message(self.Delta(event.text))
                    elif isinstance(event, StreamDone):
                        result = event.result
                        tps = result.timings.predicted_per_second if result.timings else 0.0
                        summary = (
                            f"{result.usage.completion_tokens} tokens · {tps:.0f} tok/s · "
                            f"{result.latency_s:.1f} s"
                        )
        except LLMError as exc:
            summary = f"[red]error:[/] {exc}"
        finally:
            self.post_message(self.Finished(summary or "[i]stopped[/]"))

    @on(Delta)
    async def _delta(self, message: Delta) -> None:
        if self._stream is not None and message.text:
            await self._stream.write(message.text)
            self.query_one("#transcript", VerticalScroll).scroll_end(animate=False)

    @on(Finished)
    async def _finished(self, message: Finished) -> None:
        if self._stream is not None:
            await self._stream.stop()
        self._stream = None
        self._answer = None
        if message.summary:
            workbench = self.nanobot.workbench
            name = workbench.slots["main"].display_name if workbench else "model"
            self._status(f"main · {name} · {message.summary}")

    def action_stop_answer(self) -> None:
        self.workers.cancel_group(self, "chat")

    async def action_clear_chat(self) -> None:
        self.action_stop_answer()
        await self.query_one("#transcript", VerticalScroll).remove_children()
        if self.nanobot.session is not None:
            self.nanobot.session.clear()
