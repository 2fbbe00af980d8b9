"""The chat pane: the agent's conversation. Answers stream in as Markdown; each tool call
shows as it happens, a compact call line with its result collapsed under it; a dim line
closes each turn (rounds, prompt tokens, time). The prompt takes several lines (Enter
sends, ctrl+j starts a new line, a paste stays whole: widgets/prompt.py). Esc stops a turn,
ctrl+o resumes a saved session, ctrl+n starts a new one.

The agent runs in a worker and hands every event to `show_event`, one at a time, through
a message: a recorded event log replayed through `show_event` draws the same transcript
without a model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import getters, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import WorkerCancelled, WorkerError, WorkerFailed

from nanobot_tui.engine.llm.errors import (
    LLMError,
    LLMTimeout,
    RequestError,
    ResponseFormatError,
    ServerError,
    ServerUnavailable,
)
from nanobot_tui.engine.serving.status import ServerEvent, ServerState
from nanobot_tui.text import printable
from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import RESTART_HINT, duration, fit, plural
from nanobot_tui.ui.messages import EngineState
from nanobot_tui.ui.widgets.prompt import PromptArea
from nanobot_tui.ui.widgets.tool_block import Outcome, ToolBlock

SUMMARY_CELLS = 160  # a compaction's summary on its line, at most
# The agent's loop, its sessions and their picker are imported at the first turn or the
# first pick: the app's first frame needs none of them (tests/test_import_weight.py).
if TYPE_CHECKING:
    from textual.widgets.markdown import MarkdownStream

    from nanobot_tui.engine.agent.loop import AgentEvent, TurnDone
    from nanobot_tui.engine.agent.sessions import Session
    from nanobot_tui.engine.agent.tools.registry import ToolResult
    from nanobot_tui.ui.screens.sessions import PickedSession
    from nanobot_tui.ui.widgets.answer import Answer

# A resumed session shows its last turns, this many messages at most: a Markdown answer or
# a tool block costs a few ms to mount, and thousands would hold the UI up for seconds.
HISTORY_MESSAGES = 120
# What the loop tells the model after a call it could not read (loop.turn writes it).
PROBLEM_NOTE = "Tool call error: "
STOPPED = {"rounds": "tool budget used up", "strikes": "stopped after repeated bad calls"}
CUT = "✂ cut at the token limit"
# The prompt's hint while empty: the longest that fits on its one line.
PLACEHOLDERS = (
    "Ask the agent · Enter sends · ctrl+j new line · Esc stops",
    "Ask the agent · Enter sends · ctrl+j new line",
    "Enter sends · ctrl+j new line · Esc stops",
    "Enter sends · ctrl+j new line",
    "Enter sends",
)

log = logging.getLogger(__name__)


class UserMessage(Static):
    def __init__(self, content: str, **kwargs: Any) -> None:
        super().__init__(printable(content), **kwargs)


def new_answer(markdown: str | None = None) -> Answer:
    """An answer widget; its module (and Markdown under it) is loaded with the first one."""
    from nanobot_tui.ui.widgets.answer import Answer

    return Answer(markdown)


class Note(Static):
    """A one-line remark in the transcript: an unreadable call, a compaction, a turn's end."""

    def __init__(self, content: str, **kwargs: Any) -> None:
        super().__init__(printable(content), **kwargs)


def problem_note(problem: str) -> Note:
    text = f"⚠ the model's tool call could not be read: {problem}"
    return Note(text, classes="problem", markup=False)


def compacted_note(first: int, last: int, summary: str) -> Note:
    short = fit(" ".join(summary.split()), SUMMARY_CELLS)
    return Note(f"⇣ compacted messages {first}–{last}: {short}", classes="compacted", markup=False)


def plain_error(exc: LLMError) -> str:
    """A failed model request as one plain sentence for the chat (the raw text, with its
    URL and the HTTP library's words, goes to the log)."""
    if isinstance(exc, ServerUnavailable):
        return "the model server stopped answering (it may have crashed), so the answer was cut"
    if isinstance(exc, LLMTimeout):
        return "the model took too long to answer, so the answer was cut"
    if isinstance(exc, RequestError):
        return f"the model server refused the request (HTTP {exc.status})"
    if isinstance(exc, ServerError):
        return "the model server failed while answering, so the answer was cut"
    if isinstance(exc, ResponseFormatError):
        return "the model server sent an answer that could not be read"
    return "the model request failed (the log has the details)"


def turn_summary(done: TurnDone, wall_s: float) -> str:
    rounds = plural(done.rounds, "round")
    parts = [rounds, f"{done.usage.prompt_tokens:,} prompt tokens", duration(wall_s)]
    if done.stopped:
        parts.append(STOPPED.get(done.stopped, done.stopped))
    if done.cut:
        parts.append(CUT)
    return " · ".join(parts)


def history_widgets(records: Sequence[dict[str, Any]]) -> list[Widget]:
    """A saved session's transcript: what was said, and its tool calls collapsed."""
    widgets: list[Widget] = []
    blocks: dict[str, ToolBlock] = {}
    messages = [r["message"] for r in records if r["type"] == "message"]
    said = iter(range(len(messages)))
    for record in records:
        kind = record["type"]
        if kind == "compaction" and record.get("first") is not None:
            first, last = record.get("first", 0), record.get("last", 0)
            widgets.append(compacted_note(first, last, str(record.get("summary", ""))))
        elif kind == "tool":
            block = blocks.get(str(record.get("call_id")))
            if block is not None:
                block.finish(
                    Outcome(
                        str(record.get("content", "")),
                        bool(record.get("ok")),
                        record.get("elapsed_s"),
                    )
                )
        elif kind == "message":
            index = next(said)
            following = messages[index + 1] if index + 1 < len(messages) else {}
            message = record["message"]
            if isinstance(record.get("partial"), str):  # a cut answer: what was shown
                message = {**message, "content": f"{record['partial']}\n\n{message['content']}"}
            widgets += _message_widgets(message, following, blocks)
    return widgets


def recent_records(
    records: Sequence[dict[str, Any]], messages: int
) -> tuple[list[dict[str, Any]], int]:
    """The records of the last whole turns that hold at most `messages` messages (the last
    `messages` when one turn holds more), and how many messages come before them."""
    seen = 0
    cut = turn = len(records)
    for index in range(len(records) - 1, -1, -1):
        record = records[index]
        if record["type"] != "message":
            continue
        if seen == messages:
            break
        seen += 1
        cut = index
        content = record["message"].get("content")
        said = isinstance(content, str) and not content.startswith(PROBLEM_NOTE)
        if record["message"].get("role") == "user" and said:
            turn = index
    else:
        return list(records), 0
    begin = turn if turn < len(records) else cut
    earlier = sum(1 for r in records[:begin] if r["type"] == "message")
    return list(records[begin:]), earlier


def _message_widgets(
    message: dict[str, Any], following: dict[str, Any], blocks: dict[str, ToolBlock]
) -> list[Widget]:
    role = message.get("role")
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    if role == "user":
        if text.startswith(PROBLEM_NOTE):
            return [problem_note(text.removeprefix(PROBLEM_NOTE))]
        return [UserMessage(f"› {text}", markup=False)]
    if role == "tool":
        block = blocks.get(str(message.get("tool_call_id")))
        if block is not None and block.running:  # the tool record, when there is one, is exact
            block.finish(Outcome(text, not text.startswith("error")))
        return []
    if role != "assistant":
        return []  # summary notes: their compaction record stands for them
    following_text = following.get("content")
    if isinstance(following_text, str) and following_text.startswith(PROBLEM_NOTE):
        return []  # the unreadable call itself: its problem note says what went wrong
    widgets: list[Widget] = [new_answer(text)] if text.strip() else []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        block = ToolBlock(str(call.get("id")), str(function.get("name")), function.get("arguments"))
        blocks[block.call_id] = block
        widgets.append(block)
    return widgets


class ChatPane(Vertical):
    BINDINGS = [
        Binding("escape", "stop_answer", "Stop answer", id="chat.stop"),
        Binding("ctrl+o", "sessions", "Sessions", id="chat.sessions"),
        Binding("ctrl+n", "new_session", "New session", id="chat.new"),
    ]
    ALLOW_MAXIMIZE = True

    app = getters.app(EngineApp)
    transcript = getters.query_one("#transcript", VerticalScroll)
    prompt = getters.query_one("#prompt", PromptArea)
    status_line = getters.query_one("#chat-status", Static)

    @dataclass
    class EventArrived(Message):
        """One agent event of turn `turn`."""

        turn: int
        event: AgentEvent

    @dataclass
    class TurnEnded(Message):
        """The worker is done with turn `turn`; `note` says why when it was not answered."""

        turn: int
        note: str = ""

    @dataclass
    class SessionOpened(Message):
        turn: int
        name: str

    @dataclass
    class HistoryRead(Message):
        turn: int
        name: str
        records: list[dict[str, Any]]
        error: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Bumped by every turn and every change of session: messages from an older one
        # (a cancelled worker's last events) are dropped.
        self.turn = 0
        self.busy = False  # a turn is running
        self._stream: MarkdownStream | None = None
        self._answer: Answer | None = None
        self._answered = False  # the current answer widget got text
        self._blocks: dict[str, ToolBlock] = {}  # this turn's calls by id
        self._wall_s = 0.0  # this turn's rounds, summed
        self._tokens = 0  # answer tokens streamed in this turn

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")
        yield Static("starting the model servers…", id="chat-status", markup=False)
        yield PromptArea(placeholders=PLACEHOLDERS, id="prompt")

    def on_mount(self) -> None:
        self._title(self.app.session_name)
        self.app.server_signal.subscribe(self, self._server_changed)
        self.app.engine_signal.subscribe(self, self._engine_changed)

    def _title(self, session: str | None) -> None:
        self.border_title = f"Chat · {session or 'new session'}"

    # --- engine state -----------------------------------------------------------------

    def _status(self, text: str | Text) -> None:
        self.status_line.update(text)

    def _main_name(self) -> str:
        workbench = self.app.workbench
        return workbench.slots["main"].display_name if workbench else "model"

    def _server_changed(self, event: ServerEvent) -> None:
        status = event.status
        if "main" not in status.slots:
            return
        if status.state is ServerState.FAILED:  # down: say how to bring it back
            self._status(f"main · {status.model} · {status.message} · {RESTART_HINT}")
        elif status.state is not ServerState.READY:
            self._status(f"main · {status.model} · {status.message}")
        elif not self.busy:  # back after a restart: "loading…" is over
            self._status(f"main · {self._main_name()} · ready")

    def _engine_changed(self, state: EngineState) -> None:
        if state.ready:
            if not self.busy:  # a turn's live indicator stays
                self._status(f"main · {self._main_name()} · ready")
        elif state.error:
            self._status(Text.assemble(("model servers failed: ", "bold red"), state.error))
            if state.detail:
                self.transcript.mount(Note(state.detail, markup=False, classes="error"))

    # --- turns ------------------------------------------------------------------------

    @on(PromptArea.Submitted, "#prompt")
    async def _submitted(self, event: PromptArea.Submitted) -> None:
        text = event.value.strip()  # the whole text: its inner newlines are kept
        if not text:
            return
        if self.busy:
            self.notify("The agent is still working: Esc stops it.", severity="warning")
            return
        event.prompt.clear()
        await self.show_user(text)
        self.busy = True
        self.turn += 1
        self._working("thinking…")
        self.run_turn(text, self.turn)

    @work(exclusive=True, group="agent", exit_on_error=False, description="agent turn")
    async def run_turn(self, text: str, turn: int) -> None:
        """One turn of the agent; its events come back to the pane as messages."""
        from nanobot_tui.engine.agent.sessions import SessionError

        note = "stopped"
        kit = None
        try:
            kit = await self.app.agent_kit()
            self.post_message(self.SessionOpened(turn, kit.session.name))
            async with aclosing(kit.agent.turn(text)) as events:
                async for event in events:
                    self.post_message(self.EventArrived(turn, event))
            note = ""
        except (RuntimeError, SessionError) as exc:
            note = f"cannot answer: {exc}"
        except LLMError as exc:
            log.warning("agent turn failed: %s", exc)  # the raw text, for the log
            note = plain_error(exc)
        except Exception as exc:  # a bug must still end the turn with one line, not silence
            log.exception("agent turn failed")
            note = f"error: {type(exc).__name__}: {' '.join(str(exc).split())}"
        finally:
            self.post_message(self.TurnEnded(turn, note))
            if kit is not None and self.app.config.learning.enabled:
                self._learn_from(kit.session)

    @work(thread=True, exit_on_error=False, group="learn", description="learn from a turn")
    def _learn_from(self, session: Session) -> None:
        """Learned skills from the session's finished turns (file I/O and fsync, so off
        the UI thread); each skill learned or demoted is announced once. A failure here
        never touches the chat: one line in the log."""
        from nanobot_tui.engine.learning.skills import SkillLearner

        try:
            learner = SkillLearner()
            # records() copies the session's list: a next turn appending meanwhile on
            # the UI thread only adds an unfinished turn, which is not judged yet.
            lines = learner.announce(learner.observe_session(session))
        except Exception as exc:
            why = " ".join(str(exc).split())
            name = type(exc).__name__
            log.warning("learning from session %s skipped: %s: %s", session.name, name, why)
            return
        for line in lines:
            self.app.call_from_thread(
                self.app.notify, printable(line), title="Skills", markup=False
            )

    @on(EventArrived)
    async def _event_arrived(self, message: EventArrived) -> None:
        if message.turn == self.turn:
            await self.show_event(message.event)

    @on(SessionOpened)
    def _session_opened(self, message: SessionOpened) -> None:
        if message.turn == self.turn:
            self._title(message.name)

    @on(TurnEnded)
    async def _turn_ended(self, message: TurnEnded) -> None:
        if message.turn != self.turn:
            return
        self.busy = False
        self._tokens = 0
        await self._end_answer()
        cancelled = Outcome("cancelled by the user before it finished", False, cancelled=True)
        for block in self._blocks.values():
            if block.running:
                block.finish(cancelled)
        self._blocks.clear()
        if message.note:
            self._status(f"main · {self._main_name()} · {message.note}")
            style = "turn" if message.note == "stopped" else "error"
            await self._add(Note(f"⊘ {message.note}", classes=style, markup=False))

    async def show_user(self, text: str) -> None:
        """The user's message, as the transcript shows it."""
        await self._add(UserMessage(f"› {text}", markup=False))

    def _working(self, doing: str) -> None:
        """The status line during a turn: what the agent is doing now."""
        tokens = f" · {plural(self._tokens, 'token')}" if self._tokens else ""
        self._status(f"main · {self._main_name()} · {doing}{tokens}")

    def _track(self, event: AgentEvent) -> None:
        """Keep the live indicator up to date with a turn's event."""
        from nanobot_tui.engine.agent.loop import (
            AnswerDelta,
            CallProblem,
            Compacted,
            RoundDone,
            ToolCalls,
            ToolDone,
        )

        if isinstance(event, AnswerDelta):
            self._tokens += 1  # a streamed delta is one token on the servers used here
            self._working("writing…")
        elif isinstance(event, ToolCalls):
            names = ", ".join(dict.fromkeys(call.name for call in event.calls))
            self._working(f"calling tool {names}")
        elif isinstance(event, (CallProblem, RoundDone)) or (
            isinstance(event, ToolDone) and not any(b.running for b in self._blocks.values())
        ):
            self._working("thinking…")
        elif isinstance(event, Compacted):
            self._working("compacted the conversation, thinking…")

    async def show_event(self, event: AgentEvent) -> None:
        """Draw one agent event: the worker's, or one of a replayed event log."""
        from nanobot_tui.engine.agent.loop import (
            AnswerDelta,
            CallProblem,
            Compacted,
            RoundDone,
            ToolCalls,
            ToolDone,
            TurnDone,
        )

        if isinstance(event, AnswerDelta):
            await self._write_answer(event.text)
        elif isinstance(event, ToolCalls):
            answered = await self._end_answer()
            widgets: list[Widget] = []
            if event.text.strip() and not answered:
                widgets.append(new_answer(event.text))
            for call in event.calls:
                block = ToolBlock(call.id, call.name, call.arguments)
                self._blocks[call.id] = block
                widgets.append(block)
            await self._add(*widgets)
        elif isinstance(event, ToolDone):
            await self._tool_done(event.result)
        elif isinstance(event, CallProblem):
            await self._end_answer()
            await self._add(problem_note(event.problem))
        elif isinstance(event, Compacted):
            await self._add(compacted_note(event.first, event.last, event.summary))
        elif isinstance(event, RoundDone):
            self._wall_s += event.wall_s
        elif isinstance(event, TurnDone):
            await self._end_answer()
            summary = turn_summary(event, self._wall_s)
            self._wall_s = 0.0
            await self._add(Note(summary, classes="turn", markup=False))
            self._status(f"main · {self._main_name()} · {summary}")
            self._tokens = 0
        if not isinstance(event, TurnDone):
            self._track(event)

    async def _tool_done(self, result: ToolResult) -> None:
        block = self._blocks.get(result.call_id)
        if block is None:  # a log that starts mid-round
            block = ToolBlock(result.call_id, result.name, result.arguments)
            self._blocks[result.call_id] = block
            await self._add(block)
        block.finish(Outcome(result.content, result.ok, result.elapsed_s, result.truncated))

    async def _write_answer(self, text: str) -> None:
        if self._answer is None:
            self._answer = new_answer()
            self._answered = False
            await self._add(self._answer)
            self._stream = self._answer.stream()
        if text and self._stream is not None:
            self._answered = True
            await self._stream.write(text)
            self.transcript.scroll_end(animate=False)

    async def _end_answer(self) -> bool:
        """Close the answer being streamed; whether it showed any text."""
        answered = self._answer is not None and self._answered
        if self._stream is not None:
            await self._stream.stop()
        self._stream = None
        self._answer = None
        self._answered = False
        return answered

    async def _add(self, *widgets: Widget) -> None:
        if widgets:
            await self.transcript.mount_all(widgets)
            self.transcript.scroll_end(animate=False)

    def action_stop_answer(self) -> None:
        """Stop the running turn; the loop itself gives cancelled tool calls a result."""
        self.workers.cancel_group(self, "agent")

    # --- sessions ---------------------------------------------------------------------

    def action_sessions(self) -> None:
        from nanobot_tui.ui.screens.sessions import SessionPicker

        picker = SessionPicker(current=self.app.session_name)
        self.app.push_screen(picker, self._picked)

    async def _picked(self, picked: PickedSession | None) -> None:
        if picked is not None:
            await self.open_session(picked.name)

    async def action_new_session(self) -> None:
        await self.open_session(None)

    async def open_session(self, name: str | None) -> None:
        """Go on in session `name` (its past messages shown) or, None, a new one. A turn
        still running is stopped first."""
        await self._stop_turn()
        self.turn += 1
        self.busy = False
        self._blocks.clear()
        self._wall_s = 0.0
        await self._end_answer()
        self.app.use_session(name)
        self._title(name)
        await self.transcript.remove_children()
        if name is not None:
            self._status(f"reading session {name}…")
            self._read_history(name, self.turn)
        else:
            self._status(f"main · {self._main_name()} · new session")

    async def _stop_turn(self) -> None:
        for worker in self.workers.cancel_group(self, "agent"):
            with suppress(WorkerCancelled, WorkerFailed, WorkerError):
                await worker.wait()

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-history",
          description="read a session")  # fmt: skip
    def _read_history(self, name: str, turn: int) -> None:
        from nanobot_tui.engine.agent.sessions import SessionError, SessionStore

        try:
            session = SessionStore().open(name)
        except SessionError as exc:
            self.post_message(self.HistoryRead(turn, name, [], str(exc)))
            return
        self.post_message(self.HistoryRead(turn, name, session.records(), ""))

    @on(HistoryRead)
    async def _history_read(self, message: HistoryRead) -> None:
        if message.turn != self.turn:
            return
        if message.error:
            self._status(message.error)
            return
        records, earlier = recent_records(message.records, HISTORY_MESSAGES)
        widgets = history_widgets(records)
        if earlier:
            note = f"… {earlier:,} earlier messages are in the session file"
            widgets.insert(0, Note(note, classes="turn", markup=False))
        await self._add(*widgets)
        said = sum(1 for r in message.records if r["type"] == "message")
        self._status(f"main · {self._main_name()} · resumed {message.name} · {said} messages")
