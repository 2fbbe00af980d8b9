"""Keep a conversation inside the slot's context: estimate its tokens, and when it nears
the limit, have the memory slot's model summarise the oldest part.

Estimates are calibrated and conservative. The loop tells the estimator what the server
counted for its last request (`observe`); a later estimate takes that count for the same
leading messages and estimates only what was added, at the measured characters per
token (3.0 before any measurement), with a margin and a per-message allowance for the
chat template's role markers.

`compact` replaces everything between the system prompt and the last `keep_recent`
messages by one summary note (see sessions.summary_message), never separating an
assistant message with tool calls from the tool results that answer it. Nothing is
dropped without a summary: when the summariser fails, a mechanical one (the first line
of each message) takes its place, and says so. A message too big to fit even alone is
clipped, with a note (a user's message that big is made a volume before it gets here:
see long_message.py). The originals stay in the session file; the returned record, once
appended to the session, makes `Session.messages()` give the same compacted list.

Record indices: the messages passed are the prompt's leading system messages (not part
of the session), then `Session.messages()` and any newer messages already appended to
the session. A summary note stands for the records it names; every other message is one
record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nanobot_tui.engine.agent.sessions import clip_content, now_ts, summary_message, summary_range
from nanobot_tui.engine.llm.errors import LLMError
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult
from nanobot_tui.errors import NanobotError

DEFAULT_CHARS_PER_TOKEN = 3.0
# Measured on SmolLM2's ChatML template: "<|im_start|>user\n...<|im_end|>\n" costs 5-6
# tokens besides the text; the reply's "<|im_start|>assistant\n" primer about 3.
PER_MESSAGE_TOKENS = 6
PRIMER_TOKENS = 3
# Templates wrap tool definitions in instructions of their own.
TOOLS_OVERHEAD_TOKENS = 150
SAFETY = 1.1  # estimated (not measured) tokens are inflated by this much
MIN_CALIBRATION_TOKENS = 200  # smaller prompts are mostly template: no ratio from them
# Never above 4: a ratio learnt on prose would underestimate code pasted next.
RATIO_BOUNDS = (1.0, 4.0)
# The summariser's window is filled at this many characters per token at most (its
# tokenizer may differ from the main model's, so no calibration is borrowed).
SUMMARIZER_CHARS_PER_TOKEN = 2.5
SUMMARIZER_PROMPT_TOKENS = 150
MESSAGE_SHARE = 0.5  # one message takes at most this share of a summariser piece
MIN_CLIP_CHARS = 200
MECHANICAL_LINE_CHARS = (40, 160)  # characters of each message's first line
REASON_CHARS = 100

SUMMARY_SYSTEM = "You write short, faithful summaries of conversations."
SUMMARY_PROMPT = (
    "Summarise this part of a conversation between a user and an assistant in a few "
    "sentences. Keep names, numbers, file names, decisions and open questions exactly "
    "as written.\n\n{transcript}"
)
UPDATE_PROMPT = (
    "Here is a summary of a conversation so far:\n{summary}\n\nThe conversation went on "
    "as follows:\n\n{transcript}\n\nWrite one updated summary of the whole conversation "
    "in a few sentences. Keep names, numbers, file names and decisions exactly."
)

Message = Mapping[str, Any]


class Summarizer(Protocol):
    async def chat(self, request: ChatRequest) -> ChatResult: ...


class CompactionError(NanobotError):
    """The conversation cannot be made to fit; the message is one line."""


# --------------------------------------------------------------------------- estimates


def message_chars(message: Message) -> int:
    """The characters of a message that reach the template: text, tool calls, ids."""
    total = len(str(message.get("role", "")))
    content = message.get("content")
    if isinstance(content, str):
        total += len(content)
    elif content is not None:
        total += len(json.dumps(content, ensure_ascii=False))
    for key in ("tool_calls", "name", "tool_call_id", "reasoning_content"):
        value = message.get(key)
        if value:
            total += len(value) if isinstance(value, str) else len(json.dumps(value))
    return total


def _tools_chars(tools: Sequence[Mapping[str, Any]] | None) -> int:
    return len(json.dumps(list(tools), ensure_ascii=False)) if tools else 0


def _fingerprint(value: Any) -> int:
    return hash(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str))


class TokenEstimator:
    """Prompt token estimates, calibrated by the server's own counts."""

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        self.chars_per_token = chars_per_token
        self._prints: list[int] = []
        self._tools_print: int | None = None
        self._prompt_tokens = 0

    def observe(
        self,
        messages: Sequence[Message],
        prompt_tokens: int,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """The server counted `prompt_tokens` for a request with these messages (usage
        figures): remember the count and learn the characters-per-token ratio."""
        if prompt_tokens <= 0:
            return
        self._prints = [_fingerprint(m) for m in messages]
        self._tools_print = _fingerprint(list(tools)) if tools else None
        self._prompt_tokens = prompt_tokens
        overhead = PER_MESSAGE_TOKENS * len(messages) + PRIMER_TOKENS
        overhead += TOOLS_OVERHEAD_TOKENS if tools else 0
        content_tokens = prompt_tokens - overhead
        if content_tokens >= MIN_CALIBRATION_TOKENS:
            chars = sum(message_chars(m) for m in messages) + _tools_chars(tools)
            low, high = RATIO_BOUNDS
            self.chars_per_token = min(high, max(low, chars / content_tokens))

    def estimate_added(self, messages: Sequence[Message]) -> int:
        """Tokens that these messages add to a prompt, by the ratio (never measured)."""
        chars = sum(message_chars(m) for m in messages)
        return math.ceil(chars / self.chars_per_token * SAFETY) + PER_MESSAGE_TOKENS * len(messages)

    def estimate(
        self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> int:
        """Prompt tokens of a request with these messages (and tools)."""
        n = len(self._prints)
        tools_print = _fingerprint(list(tools)) if tools else None
        if (
            n
            and len(messages) >= n
            and tools_print == self._tools_print
            and [_fingerprint(m) for m in messages[:n]] == self._prints
        ):
            return self._prompt_tokens + self.estimate_added(messages[n:])
        tools_tokens = 0
        if tools:
            tools_tokens = TOOLS_OVERHEAD_TOKENS + math.ceil(
                _tools_chars(tools) / self.chars_per_token * SAFETY
            )
        return self.estimate_added(messages) + tools_tokens + PRIMER_TOKENS


def estimate_tokens(
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    estimator: TokenEstimator | None = None,
) -> int:
    return (estimator or TokenEstimator()).estimate(messages, tools)


def needs_compaction(
    messages: Sequence[Message],
    context_size: int,
    reserve_tokens: int,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    estimator: TokenEstimator | None = None,
) -> bool:
    """Whether the prompt plus `reserve_tokens` (the answer's room) would overflow."""
    return estimate_tokens(messages, tools, estimator=estimator) + reserve_tokens > context_size


# --------------------------------------------------------------------------- compaction


@dataclass(frozen=True)
class Compaction:
    messages: list[dict[str, Any]]  # the new conversation, prompt included
    record: dict[str, Any] | None  # append it to the session; None when nothing changed
    summary: str
    first: int | None  # the message records the summary stands for
    last: int | None
    summarized: int  # messages of the given list that the summary replaced
    clipped: int  # messages clipped to fit
    mechanical: bool  # the summariser failed and the summary is mechanical
    error: str | None  # why it failed
    calls: int  # summariser requests made
    tokens_before: int
    tokens_after: int


def _prompt_length(messages: Sequence[Message]) -> int:
    """Leading system messages that are the prompt (not summary notes)."""
    n = 0
    while n < len(messages) and messages[n].get("role") == "system":
        if summary_range(dict(messages[n])) is not None:
            break
        n += 1
    return n


def _record_ranges(body: Sequence[Message]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    following = 0
    for message in body:
        span = summary_range(dict(message))
        if span is None:
            span = (following, following)
        ranges.append(span)
        following = span[1] + 1
    return ranges


def _back_to_unit(body: Sequence[Message], cut: int) -> int:
    """Move a cut back so the kept part does not start with tool results (their
    assistant tool-call message stays with them)."""
    while 0 < cut < len(body) and body[cut].get("role") == "tool":
        cut -= 1
    return cut


def _forward_to_unit(body: Sequence[Message], cut: int) -> int:
    while cut < len(body) and body[cut].get("role") == "tool":
        cut += 1
    return cut


def _text_of(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _transcript_line(message: Message, limit: int) -> str:
    role = str(message.get("role", "?"))
    span = summary_range(dict(message))
    text = _text_of(message)
    if span is not None:
        text = text.split("\n", 1)[1] if "\n" in text else ""
        line = f"Summary of the conversation before: {text}"
    elif role == "tool":
        line = f"Tool result ({message.get('name') or message.get('tool_call_id', '')}): {text}"
    else:
        line = f"{role.capitalize()}: {text}"
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            line += f"\n{role.capitalize()} called {function.get('name')}"
            line += f"({function.get('arguments', '')})"
    line = line.strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _pieces(lines: list[str], limit: int) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 2 > limit:
            pieces.append("\n\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 2
    if current:
        pieces.append("\n\n".join(current))
    return pieces


async def _summarise(
    client: Summarizer,
    lines: list[str],
    piece_chars: int,
    max_tokens: int,
    extra: Mapping[str, Any] | None,
) -> tuple[str, int]:
    """A rolling summary: the first piece is summarised, each next piece updates it."""
    summary = ""
    calls = 0
    for piece in _pieces(lines, piece_chars):
        if summary:
            prompt = UPDATE_PROMPT.format(summary=summary, transcript=piece)
        else:
            prompt = SUMMARY_PROMPT.format(transcript=piece)
        request = [
            {"role": "system", "content": SUMMARY_SYSTEM},
            {"role": "user", "content": prompt},
        ]
        result = await client.chat(
            ChatRequest(request, temperature=0.2, max_tokens=max_tokens, extra=extra)
        )
        calls += 1
        text = result.content.strip()
        if not text:
            raise LLMError("the memory model answered with an empty summary")
        summary = text
    return summary, calls


def mechanical_summary(body: Sequence[Message], max_chars: int, reason: str) -> str:
    """The first line of each message, clipped, within `max_chars`; when there are too
    many messages for a line each, the first and the last ones and a count of those in
    between."""
    reason = reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"
    head = f"(Mechanical summary, the memory model failed: {reason}. First lines of the messages:)"
    entries: list[tuple[str, str]] = []
    for message in body:
        text = _text_of(message)
        if summary_range(dict(message)) is not None:
            # An earlier summary is the only trace of what it replaced: it keeps up to a
            # third of the room, on one line.
            text = text.split("\n", 1)[1] if "\n" in text else ""
            text = " / ".join(x.strip() for x in text.splitlines() if x.strip())
            entries.append(("earlier summary", text))
            continue
        role = str(message.get("role", "?"))
        if not text.strip() and message.get("tool_calls"):
            names = [(c.get("function") or {}).get("name") for c in message["tool_calls"]]
            text = "called " + ", ".join(str(n) for n in names)
        first_line = next((x.strip() for x in text.splitlines() if x.strip()), "")
        entries.append((role, first_line))
    low, high = MECHANICAL_LINE_CHARS
    room = max_chars - len(head)
    per_line = max(low, min(high, room // max(1, len(entries)) - 16))

    def clipped(role: str, text: str) -> str:
        limit = max(per_line, room // 3) if role == "earlier summary" else per_line
        return f"- {role}: {text if len(text) <= limit else text[: limit - 1] + '…'}"

    lines = [clipped(role, text) for role, text in entries]

    def joined(parts: list[str]) -> str:
        return "\n".join([head, *parts])

    if len(joined(lines)) > max_chars:
        # Too many for a line each: keep both ends, count the middle.
        for keep in range(len(lines) - 1, -1, -1):
            front, back = lines[: (keep + 1) // 2], lines[len(lines) - keep // 2 :]
            middle = len(lines) - len(front) - len(back)
            marker = f"- ... {middle} more messages (see the session file)"
            if len(joined([*front, marker, *back])) <= max_chars or keep == 0:
                lines = [*front, marker, *back]
                break
    return joined(lines)[:max_chars]


async def compact(
    messages: Sequence[Message],
    summarizer_client: Summarizer,
    *,
    keep_recent: int,
    max_summary_tokens: int,
    budget_tokens: int | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    estimator: TokenEstimator | None = None,
    summarizer_context: int = 4096,
    summarizer_extra: Mapping[str, Any] | None = None,
) -> Compaction:
    """Summarise the oldest part of `messages` (all after the system prompt except the
    last `keep_recent`). With `budget_tokens` (the slot's context size less the room for
    the answer) more is summarised, and oversized messages clipped, until the estimate
    fits; CompactionError when even the prompt, the summary and one clipped message
    cannot fit. `summarizer_context` is the memory slot's window; `summarizer_extra` goes
    into each summariser request's body (for a thinking model on llama.cpp, say
    {"chat_template_kwargs": {"enable_thinking": False}})."""
    est = estimator or TokenEstimator()
    msgs = [dict(m) for m in messages]
    tokens_before = est.estimate(msgs, tools)
    p = _prompt_length(msgs)
    prompt, body = msgs[:p], msgs[p:]
    ranges = _record_ranges(body)
    fit = _Fit(prompt, est, tools, budget_tokens)
    cut = _cut(body, keep_recent, fit, summary_tokens=max_summary_tokens + PER_MESSAGE_TOKENS + 30)
    first: int | None = None
    last: int | None = None
    summary = _Summary()
    new_body: list[dict[str, Any]] = list(body)
    if cut > 0:
        first, last = ranges[0][0], ranges[cut - 1][1]
        summary = await _summarize_part(
            body[:cut],
            summarizer_client,
            est,
            max_summary_tokens,
            summarizer_context,
            summarizer_extra,
        )
        new_body = [summary_message(first, last, summary.text), *body[cut:]]
    offset = 1 if cut > 0 else 0
    clipped = _clip_to_fit(new_body, offset, fit)
    clips = {ranges[cut + k - offset][0]: n for k, n in clipped.items()}
    new_messages = [*prompt, *new_body]
    record: dict[str, Any] | None = None
    if cut > 0 or clips:
        record = {"type": "compaction", "summary": summary.text, "first": first, "last": last}
        if summary.mechanical:
            record["mechanical"] = True
        if clips:
            record["clipped"] = sorted(clips.items())
        record["ts"] = now_ts()
    return Compaction(
        messages=new_messages,
        record=record,
        summary=summary.text,
        first=first,
        last=last,
        summarized=cut,
        clipped=len(clips),
        mechanical=summary.mechanical,
        error=summary.error,
        calls=summary.calls,
        tokens_before=tokens_before,
        tokens_after=est.estimate(new_messages, tools),
    )


@dataclass(frozen=True)
class _Fit:
    """What a compacted conversation must fit: its prompt, and the budget (None: no
    budget, only `keep_recent` counts) as the estimator counts."""

    prompt: list[dict[str, Any]]
    est: TokenEstimator
    tools: Sequence[Mapping[str, Any]] | None
    budget: int | None

    def tokens(self, body: Sequence[Message]) -> int:
        return self.est.estimate([*self.prompt, *body], self.tools)


def _cut(body: list[dict[str, Any]], keep_recent: int, fit: _Fit, summary_tokens: int) -> int:
    """Where the kept part of `body` starts: body[:cut] is summarised. The last unit (the
    last message, or an assistant tool-call message with its results) is always kept."""
    last_unit = _back_to_unit(body, len(body) - 1) if body else 0
    cut = min(last_unit, _back_to_unit(body, max(0, len(body) - max(0, keep_recent))))
    if fit.budget is not None:
        while (
            cut < last_unit and fit.tokens(body[cut:]) + (summary_tokens if cut else 0) > fit.budget
        ):
            cut = min(last_unit, _forward_to_unit(body, cut + 1))
    return cut


@dataclass(frozen=True)
class _Summary:
    text: str = ""
    mechanical: bool = False  # the summariser failed: the first line of each message
    error: str | None = None  # why it failed
    calls: int = 0  # summariser requests made


async def _summarize_part(
    part: list[dict[str, Any]],
    client: Summarizer,
    est: TokenEstimator,
    max_summary_tokens: int,
    summarizer_context: int,
    extra: Mapping[str, Any] | None,
) -> _Summary:
    """The summary of `part` by the memory model, or a mechanical one when it fails."""
    summary_chars = int(max_summary_tokens * est.chars_per_token / SAFETY)
    piece_chars = max(
        1000,
        int(
            (summarizer_context - 2 * max_summary_tokens - SUMMARIZER_PROMPT_TOKENS)
            * SUMMARIZER_CHARS_PER_TOKEN
        ),
    )
    limit = max(200, int(piece_chars * MESSAGE_SHARE))
    lines = [_transcript_line(m, limit) for m in part]
    try:
        text, calls = await _summarise(client, lines, piece_chars, max_summary_tokens, extra)
    except LLMError as exc:
        error = str(exc).splitlines()[0][:200] if str(exc) else "error"
        return _Summary(mechanical_summary(part, summary_chars, error), True, error)
    if len(text) > summary_chars:
        text = text[: summary_chars - 1] + "…"
    return _Summary(text, calls=calls)


def _clip_to_fit(new_body: list[dict[str, Any]], offset: int, fit: _Fit) -> dict[int, int]:
    """Still too big: clip the largest kept messages of `new_body` from `offset` on (never
    a summary note), each from its original text so the session can redo the same clip.
    Returns {index in new_body: characters kept}."""
    clips: dict[int, int] = {}
    originals = {k: new_body[k] for k in range(offset, len(new_body))}
    shown = {
        k: len(m["content"])
        for k, m in originals.items()
        if isinstance(m.get("content"), str) and summary_range(m) is None
    }
    while fit.budget is not None:
        total = fit.tokens(new_body)
        if total <= fit.budget:
            break
        candidates = [(n, k) for k, n in shown.items() if n > MIN_CLIP_CHARS]
        if not candidates:
            raise CompactionError(
                f"the conversation cannot fit in {fit.budget} tokens: after summarising "
                f"and clipping it still needs about {total} (the system prompt about "
                f"{fit.est.estimate(fit.prompt, fit.tools)})"
            )
        size, k = max(candidates)
        over = total - fit.budget + 40  # the clip note's own tokens
        keep_chars = max(MIN_CLIP_CHARS, size - int(over * fit.est.chars_per_token) - 1)
        new_body[k] = clip_content(originals[k], keep_chars)
        shown[k] = keep_chars
        clips[k] = keep_chars
    return clips


__all__ = [
    "DEFAULT_CHARS_PER_TOKEN",
    "Compaction",
    "CompactionError",
    "TokenEstimator",
    "compact",
    "estimate_tokens",
    "mechanical_summary",
    "message_chars",
    "needs_compaction",
]
