"""The agent's tool loop: ask the model, run the tools it calls, feed the results back,
until it answers, runs out of rounds, or is cancelled.

One turn is an async iterator of events (`AgentEvent`) that the chat pane, `nanobot
agent` and the benchmarks all consume. Every message is appended to the session file as
it happens, so a crash or a cancel never loses what was said, and the conversation in the
file stays well formed: a cancelled tool round still gets one result per call.

Small local models are cheap per round and make mistakes, so the loop never trusts
them: an unreadable call goes back with a precise reason, the same call repeated gets a
nudge, and after a few of either the model is asked to answer without tools. Before
every request the prompt is checked against the slot's context size, and the oldest part
of the conversation is compacted by the memory slot's model when it would not fit.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from nanobot_tui.engine.agent.answer_stream import AnswerStream
from nanobot_tui.engine.agent.compaction import (
    CompactionError,
    TokenEstimator,
    compact,
    needs_compaction,
)
from nanobot_tui.engine.agent.long_message import (
    MESSAGE_SHARE,
    MessageStored,
    ensure_read_tools,
    try_store_message,
)
from nanobot_tui.engine.agent.sessions import Session
from nanobot_tui.engine.agent.tool_protocol import (
    ConstrainedTools,
    NativeTools,
    Parsed,
    PromptedTools,
    ToolProtocol,
)
from nanobot_tui.engine.agent.tools.registry import ToolRegistry, ToolResult
from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.errors import LLMError, StatusError
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, StreamDone, TextDelta, ToolCall, Usage

if TYPE_CHECKING:
    from nanobot_tui.engine.context.micro_tools import ContextStore
    from nanobot_tui.engine.llm.openai import LLMClient

# Unreadable calls or identical repeats in a row before the model must answer without tools.
MAX_STRIKES = 3
# Never ask for fewer new tokens than this when squeezing a request into the window.
MIN_ANSWER_TOKENS = 128
# Compaction keeps the last few messages verbatim and summarises the rest into this many.
KEEP_RECENT = 4
SUMMARY_TOKENS = 300
_NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
# What the model is told in place of an answer that was cut (the session keeps the text).
CANCELLED = "(The user stopped this answer before it was finished.)"
FAILED = "(This answer was cut off: the model server failed.)"
# Times a request the server refused as too long is fitted again, with its count learnt.
FIT_RETRIES = 3
FINAL_NOTE = "Tool budget used up: answer now, from what you have, without calling tools."


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class ToolCalls:
    round: int
    calls: list[ToolCall]
    text: str = ""  # what the model said along with the calls


@dataclass(frozen=True)
class ToolDone:
    result: ToolResult


@dataclass(frozen=True)
class CallProblem:
    """The model tried to call a tool but wrote something that could not be read."""

    round: int
    problem: str


@dataclass(frozen=True)
class Compacted:
    first: int
    last: int
    summary: str
    fallback: bool  # True: a mechanical summary (the memory model failed)
    elapsed_s: float = 0.0  # the summarizer's time, inside the round's wall time


@dataclass(frozen=True)
class RoundDone:
    round: int
    usage: Usage
    wall_s: float  # the whole round: building the prompt, the model, the tools, the session
    model_s: float  # the model call as the client saw it (HTTP included)
    server_s: float | None  # the server's own prompt + generation time, when it says
    tools_s: float  # the tools' own time (wall, concurrent ones overlap)


@dataclass(frozen=True)
class TurnDone:
    answer: str
    rounds: int
    # None: the model answered; "rounds", "strikes": it was made to; "context": the
    # prompt could not be made to fit the slot's window.
    stopped: str | None
    usage: Usage  # summed over the turn's requests
    last_prompt_tokens: int
    cut: bool = False  # the answer stopped at the token limit (max_tokens), not by itself


AgentEvent = (
    AnswerDelta
    | ToolCalls
    | ToolDone
    | CallProblem
    | Compacted
    | RoundDone
    | TurnDone
    | MessageStored
)


# --- the agent --------------------------------------------------------------------------


@dataclass
class Agent:
    client: ChatClient
    tools: ToolRegistry
    session: Session
    context_size: int  # tokens one request may use on this slot
    system_prompt: str
    protocol: ToolProtocol = field(default_factory=NativeTools)
    temperature: float = 0.7
    max_tokens: int = 1024
    max_rounds: int = 500
    summarizer: ChatClient | None = None  # the memory slot; None: this agent's own client
    summary_tokens: int = SUMMARY_TOKENS
    summarizer_context: int = 4096  # the memory slot's window: summary requests must fit
    # Extra system text for a turn (MEMORY.md, matched skills), given the user's message.
    prompt_extras: Callable[[str], list[str]] | None = None
    estimator: TokenEstimator = field(default_factory=TokenEstimator)
    # What the ctx_* tools read through; one is made when a message too long for the
    # window becomes a volume and the agent was built without those tools.
    context: ContextStore | None = None

    def system_message(self, user_text: str, *, with_tools: bool = True) -> dict[str, Any]:
        parts = [self.system_prompt]
        if self.prompt_extras is not None:
            parts += [p for p in self.prompt_extras(user_text) if p]
        if with_tools:
            parts.append(self.protocol.system_text(self.tools.specs()))
        return {"role": "system", "content": "\n\n".join(p for p in parts if p)}

    async def turn(self, user_text: str) -> AsyncGenerator[AgentEvent, None]:
        """Answer one user message, calling tools as the model asks."""
        index = self.session.append_message({"role": "user", "content": user_text})
        state = _Turn(user_text, index)
        try:
            if self.session.volumes():  # messages the model reads with the ctx_* tools
                self.context = ensure_read_tools(self.tools, self.context)
            if (stored := await self._store_if_too_long(state)) is not None:
                yield stored
            while not state.done:
                async with aclosing(self._round(state)) as events:
                    async for event in events:
                        yield event
        finally:
            self.session.sync()

    async def _round(self, state: _Turn) -> AsyncGenerator[AgentEvent, None]:
        """One request and what its reply asks for: the answer (the turn is done), a call
        the model could not write (said back to it), or tool calls, run."""
        state.round_no += 1
        round_no = state.round_no
        final = round_no > self.max_rounds or state.strikes >= MAX_STRIKES
        if final:
            state.stopped = "rounds" if round_no > self.max_rounds else "strikes"
        t0 = time.perf_counter()
        kept: list[dict[str, Any]] = []
        shown: list[str] = []
        result: ChatResult | None = None
        try:
            async for item in self._request(state, final, shown):
                if isinstance(item, ChatResult):
                    result = item
                elif isinstance(item, tuple):
                    kept = item[0]
                else:
                    yield item
        except CompactionError as exc:
            # Nothing to send: the system prompt and the newest message alone do not fit
            # the window. Said, and the session stays as it was.
            answer = f"(Cannot ask the model: {exc})"
            yield AnswerDelta(answer)
            yield TurnDone(answer, round_no, "context", state.total, state.last_prompt)
            state.done = True
            return
        except (asyncio.CancelledError, LLMError) as exc:
            self._record_cut(shown, cancelled=isinstance(exc, asyncio.CancelledError))
            raise
        assert result is not None
        state.total = _add(state.total, result.usage)
        state.last_prompt = result.usage.prompt_tokens
        self.estimator.observe(kept, state.last_prompt, self._request_tools())
        parsed = self.protocol.parse(result.content, result.tool_calls, round_no)
        if final or (not parsed.calls and not parsed.problem):
            answer = _final_answer(parsed, result, final, round_no)
            if not shown and answer:
                yield AnswerDelta(answer)  # held back while it looked like a call
            self.session.append_message({"role": "assistant", "content": answer})
            self.session.sync()
            yield _round_done(round_no, result, t0)
            cut = result.finish_reason == "length"
            yield TurnDone(answer, round_no, state.stopped, state.total, state.last_prompt, cut)
            state.done = True
        elif parsed.problem:
            state.strikes += 1
            self.session.append_message({"role": "assistant", "content": result.content})
            note = f"Tool call error: {parsed.problem}"
            self.session.append_message({"role": "user", "content": note})
            yield CallProblem(round_no, parsed.problem)
            yield _round_done(round_no, result, t0)
        else:
            async for step in self._call_tools(state, parsed, result, t0):
                yield step

    # --- one request ----------------------------------------------------------------------

    async def _request(
        self, state: _Turn, final: bool, shown: list[str]
    ) -> AsyncIterator[
        Compacted | MessageStored | AnswerDelta | ChatResult | tuple[list[dict[str, Any]], int]
    ]:
        """Fit the conversation into the window and ask: the compactions, the answer's
        deltas, the messages as kept (with the answer budget), then the result. When the
        server counts more tokens than the estimate said (or has a smaller window than
        configured) it says so in its refusal: the estimator learns the server's count
        and window, the turn's message becomes a volume if it is now too long for that
        window, and the request is fitted again, a bounded number of times."""
        for attempt in range(FIT_RETRIES + 1):
            kept: list[dict[str, Any]] = []
            sent: list[dict[str, Any]] = []
            max_tokens = self.max_tokens
            async for event in self._fit(state.user_text, final):
                if isinstance(event, Compacted):
                    yield event
                else:
                    kept, sent, max_tokens = event
            yield kept, max_tokens
            try:
                async for item in self._ask(sent, max_tokens, final, shown):
                    yield item
                return
            except StatusError as exc:
                over = context_overflow(exc)
                if over is None or shown:
                    raise
                counted, window = over
                if attempt == FIT_RETRIES:
                    raise CompactionError(
                        f"the server counts {counted or 'more'} tokens for the shortest "
                        f"form of this conversation, more than its window of "
                        f"{window or self.context_size}"
                    ) from exc
                if window:
                    self.context_size = min(self.context_size, window)
                estimate = self.estimator.estimate(kept, self._request_tools())
                if not counted or counted <= estimate:
                    counted = int(estimate * 1.25) + 1
                self.estimator.observe(kept, counted, self._request_tools())
                if (stored := await self._store_if_too_long(state)) is not None:
                    yield stored

    async def _fit(
        self, user_text: str, final: bool
    ) -> AsyncIterator[Compacted | tuple[list[dict[str, Any]], list[dict[str, Any]], int]]:
        """The request's messages (as the session keeps them, and as sent) and its answer
        budget, compacting the session first when the prompt would not leave room for an
        answer in the slot's window."""
        system = self.system_message(user_text, with_tools=not final)
        if final:
            system["content"] += "\n\n" + FINAL_NOTE
        tools = self._request_tools()
        messages = [system, *self.session.messages()]
        reserve = min(self.max_tokens, max(MIN_ANSWER_TOKENS, self.context_size // 4))
        if needs_compaction(
            messages, self.context_size, reserve, tools=tools, estimator=self.estimator
        ):
            t0 = time.perf_counter()
            summarizer = self.summarizer or self.client
            done = await compact(
                messages,
                summarizer,
                keep_recent=KEEP_RECENT,
                max_summary_tokens=self.summary_tokens,
                budget_tokens=self.context_size - reserve,
                tools=tools,
                estimator=self.estimator,
                summarizer_context=self.summarizer_context,
                # Thinking models (Qwen3) would spend the summary's tokens thinking.
                summarizer_extra=_NO_THINKING if _is_llm_client(summarizer) else None,
            )
            if done.record is not None:
                self.session.append(done.record)
                elapsed = time.perf_counter() - t0
                yield Compacted(
                    done.first or 0, done.last or 0, done.summary, done.mechanical, elapsed
                )
            messages = [system, *self.session.messages()]
        room = self.context_size - self.estimator.estimate(messages, tools)
        budget = min(self.max_tokens, max(MIN_ANSWER_TOKENS, room))
        yield messages, self.protocol.wire(messages), budget

    async def _store_if_too_long(self, state: _Turn) -> MessageStored | None:
        """The turn's message as a volume, when it would take more than MESSAGE_SHARE of
        the room the window leaves beside the system prompt, the tools and the answer;
        None when it fits, is stored already, or cannot be stored (then it is clipped to
        fit like any message). The ctx_* tools are added for the model to read it."""
        if state.stored:
            return None
        tools = self._request_tools()
        reserve = min(self.max_tokens, max(MIN_ANSWER_TOKENS, self.context_size // 4))
        system = self.estimator.estimate([self.system_message(state.user_text)], tools)
        tokens = self.estimator.estimate_added([{"role": "user", "content": state.user_text}])
        if tokens <= (self.context_size - reserve - system) * MESSAGE_SHARE:
            return None
        state.stored = True
        stored = await try_store_message(self.session, state.index, state.user_text, tokens)
        if stored is not None:
            self.context = ensure_read_tools(self.tools, self.context)
        return stored

    def _request_tools(self) -> list[dict[str, Any]] | None:
        """The `tools` field of a request (None for prompted tools); the final request
        keeps native specs (with tool_choice none): the history refers to them."""
        return self.protocol.request_tools(self.tools.specs())

    async def _ask(
        self, messages: list[dict[str, Any]], max_tokens: int, final: bool, shown: list[str]
    ) -> AsyncIterator[AnswerDelta | ChatResult]:
        """Stream the model's answer; prose is passed on as it comes, anything that starts
        like a tool call is held back (`shown` collects what was passed on)."""
        specs = self._request_tools()
        request = ChatRequest(
            messages,
            tools=specs or None,
            tool_choice="none" if specs and final else None,
            response_format=None if final else self.protocol.response_format(self.tools.specs()),
            temperature=self.temperature,
            max_tokens=max_tokens,
            stop=None if final else self.protocol.stop() or None,
        )
        text: list[str] = []
        decided: bool | None = None  # True: prose, shown; False: a call, held back
        # A constrained reply is JSON; the text of its {"answer": ...} is readable as it comes.
        answer = AnswerStream() if isinstance(self.protocol, ConstrainedTools) else None
        async with aclosing(self.client.stream_chat(request)) as stream:
            async for event in stream:
                if isinstance(event, TextDelta) and answer is not None:
                    if readable := answer.feed(event.text):
                        shown.append(readable)
                        yield AnswerDelta(readable)
                elif isinstance(event, TextDelta):
                    text.append(event.text)
                    if decided is None:
                        looks = self.protocol.looks_like_call("".join(text))
                        if looks is None:
                            continue
                        decided = not looks
                        if decided:
                            shown.append("".join(text))
                            yield AnswerDelta("".join(text))
                    elif decided:
                        shown.append(event.text)
                        yield AnswerDelta(event.text)
                elif isinstance(event, StreamDone):
                    yield event.result

    # --- tools ----------------------------------------------------------------------------

    async def _call_tools(
        self, state: _Turn, parsed: Parsed, result: ChatResult, t0: float
    ) -> AsyncIterator[AgentEvent]:
        """Run the calls the model asked for and record their results, then end the round;
        the same calls as the round before count as a strike, and their results say so."""
        calls = parsed.calls
        self.session.append_message(_assistant_with_calls(parsed.text, calls))
        yield ToolCalls(state.round_no, calls, parsed.text)
        signature = [(c.name, c.arguments) for c in calls]
        repeated = signature == state.previous
        state.previous = signature
        state.strikes = state.strikes + 1 if repeated else 0
        t_tools = time.perf_counter()
        results = await self._run_tools(calls)
        tools_s = time.perf_counter() - t_tools
        for r in results:
            content = r.content
            if repeated:
                content += "\n(The same call as before, the same result: answer now.)"
            self._append_result(r, content)
            yield ToolDone(r)
        yield _round_done(state.round_no, result, t0, tools_s)

    async def _run_tools(self, calls: list[ToolCall]) -> list[ToolResult]:
        task = asyncio.ensure_future(self.tools.execute_all(calls))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # Cancelled mid-round: every call still gets a result, so the conversation
            # stays valid for the next request (APIs refuse unanswered tool calls).
            task.cancel()
            for call in calls:
                note = "cancelled by the user before it finished"
                self._append_result(ToolResult(call.id, call.name, None, note, False, 0.0), note)
            raise

    def _record_cut(self, shown: list[str], *, cancelled: bool) -> None:
        """An answer stopped by the user or cut by a failure: the session keeps what was
        shown (`partial`, for display) and, so the turns alternate, an assistant message
        that says the answer was cut. The model is given the note, not the partial text,
        which it would otherwise take up and repeat."""
        record: dict[str, Any] = {
            "type": "message",
            "message": {"role": "assistant", "content": CANCELLED if cancelled else FAILED},
        }
        partial = "".join(shown).strip()
        if partial:
            record["partial"] = partial
        self.session.append(record)

    def _append_result(self, result: ToolResult, content: str) -> None:
        self.session.append_message(
            {
                "role": "tool",
                "tool_call_id": result.call_id,
                "name": result.name,
                "content": content,
            }
        )
        self.session.append_tool(result)


# --- helpers ----------------------------------------------------------------------------


@dataclass
class _Turn:
    """Where a turn is: its rounds so far, and what they cost."""

    user_text: str
    index: int  # the user message's record index in the session
    round_no: int = 0
    total: Usage = field(default_factory=Usage)  # summed over the turn's requests
    last_prompt: int = 0
    strikes: int = 0  # unreadable calls or identical repeats in a row
    previous: list[tuple[str, str]] = field(default_factory=list)  # the last round's calls
    stopped: str | None = None
    done: bool = False
    stored: bool = False  # the message is a volume already (or could not be made one)


def _final_answer(parsed: Parsed, result: ChatResult, final: bool, round_no: int) -> str:
    """The turn's answer: the reply's prose; on the final round, whatever the model
    wrote, noting a tool call it still asked for."""
    answer = parsed.text
    if final and parsed.problem:  # not a readable call: take it as prose
        answer = result.content.strip()
    if final and parsed.calls:
        answer = (
            f"{answer}\n(No answer: after {round_no - 1} rounds the model "
            f"still asked for {parsed.calls[0].name}.)"
        ).strip()
    return answer


def _round_done(round_no: int, result: ChatResult, t0: float, tools_s: float = 0.0) -> RoundDone:
    wall = time.perf_counter() - t0
    return RoundDone(
        round_no, result.usage, wall, result.latency_s, _server_seconds(result), tools_s
    )


def _assistant_with_calls(text: str, calls: list[ToolCall]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": text,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
    )


_COUNTED = (
    re.compile(r"request \((\d+) tokens\)"),  # llama.cpp
    re.compile(r"resulted in (\d+) tokens"),  # OpenAI-style APIs
)
_WINDOW = (
    re.compile(r"context size \((\d+) tokens\)"),
    re.compile(r"maximum context length is (\d+)"),
)


def context_overflow(exc: StatusError) -> tuple[int | None, int | None] | None:
    """(tokens the server counted, its window) when `exc` is a refusal of a prompt too
    long for the window (either may be None when unsaid), else None."""
    text = f"{exc.server_message} {exc}"
    lowered = text.lower()
    if exc.status not in (400, 413) or not (
        "context size" in lowered or "context length" in lowered or "too long" in lowered
    ):
        return None

    def number(patterns: tuple[re.Pattern[str], ...]) -> int | None:
        for pattern in patterns:
            if found := pattern.search(text):
                return int(found.group(1))
        return None

    return number(_COUNTED), number(_WINDOW)


def _server_seconds(result: ChatResult) -> float | None:
    t = result.timings
    return (t.prompt_ms + t.predicted_ms) / 1000 if t is not None else None


async def detect_protocol(client: ChatClient, mode: str = "auto") -> ToolProtocol:
    """The protocol `mode` names; for "auto", prompted tools on a llama.cpp server whose
    template cannot render them, native tools everywhere else (cloud APIs, other
    OpenAI-compatible servers)."""
    if mode != "auto":
        named: dict[str, Callable[[], ToolProtocol]] = {
            "native": NativeTools,
            "prompted": PromptedTools,
        }
        return named.get(mode, ConstrainedTools)()
    if _is_llm_client(client):
        try:
            props = await client.props()
        except LLMError:
            return NativeTools()
        caps = props.get("chat_template_caps") or {}
        if caps.get("supports_tools") is False:
            return PromptedTools()
    return NativeTools()


def _is_llm_client(client: object) -> TypeGuard[LLMClient]:
    """Whether `client` is the HTTP client. Imported here, not at the top: the chat pane
    imports this module for its events, and httpx should not weigh on the app's start."""
    from nanobot_tui.engine.llm.openai import LLMClient

    return isinstance(client, LLMClient)
