"""Token estimates and compaction, against the real embedded server (SmolLM2-135M).

The server is started with --ctx-size 8192 --parallel 4: each slot holds 2048 tokens,
which is the summariser's window here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nanobot_tui.engine.agent.compaction import (
    CompactionError,
    TokenEstimator,
    compact,
    estimate_tokens,
    mechanical_summary,
    needs_compaction,
)
from nanobot_tui.engine.agent.sessions import Session, SessionStore, summary_range
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from tests.conftest import free_port

SLOT_CONTEXT = 2048
SYSTEM = {"role": "system", "content": "You are nanobot, a helpful assistant. Be brief."}
TOPICS = ["the garden", "the Zephyr launch", "a bread recipe", "the tax forms", "a trip to Porto"]


def conversation(turns: int) -> list[dict[str, Any]]:
    """A long, varied user/assistant exchange with facts worth keeping."""
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        topic = TOPICS[i % len(TOPICS)]
        messages.append(
            {
                "role": "user",
                "content": f"Question {i} about {topic}: the reference number is {1000 + i}. "
                + "Could you look into it and tell me what matters most here? " * 3,
            }
        )
        messages.append(
            {
                "role": "assistant",
                "content": f"Answer {i}: for {topic}, keep reference {1000 + i} in mind. "
                + "The main point is to go step by step and check each result. " * 3,
            }
        )
    return messages


def tool_exchange(call_id: str, content: str) -> list[dict[str, Any]]:
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "read_file", "arguments": json.dumps({"path": f"{call_id}.txt"})},
    }
    return [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": content},
    ]


@pytest.fixture
async def llm(llama_server: str) -> AsyncIterator[LLMClient]:
    async with LLMClient(llama_server) as client:
        yield client


@pytest.fixture
async def dead_llm() -> AsyncIterator[LLMClient]:
    """A client pointed at a port where nothing listens: the summariser is down."""
    async with LLMClient(f"http://127.0.0.1:{free_port()}", retries=0) as client:
        yield client


def session_with(messages: list[dict[str, Any]]) -> Session:
    session = SessionStore().create()
    for message in messages:
        session.append_message(message)
    return session


# --------------------------------------------------------------------------- estimates


async def test_estimates_are_conservative_and_calibrated(llm: LLMClient) -> None:
    estimator = TokenEstimator()
    short = [SYSTEM, *conversation(3)]
    measured = await llm.chat(ChatRequest(short, max_tokens=1))
    uncalibrated = estimate_tokens(short)
    assert uncalibrated >= measured.usage.prompt_tokens  # 3.0 chars/token is pessimistic

    estimator.observe(short, measured.usage.prompt_tokens)
    assert estimator.estimate(short) == measured.usage.prompt_tokens  # known exactly
    assert 2.0 < estimator.chars_per_token < 5.0

    longer = [SYSTEM, *conversation(8)]
    actual = (await llm.chat(ChatRequest(longer, max_tokens=1))).usage.prompt_tokens
    estimate = estimator.estimate(longer)
    assert actual <= estimate <= actual * 1.25, (actual, estimate)

    # A changed prefix (a compaction happened) falls back to the ratio, still conservative.
    changed = [SYSTEM, *conversation(8)[2:]]
    actual = (await llm.chat(ChatRequest(changed, max_tokens=1))).usage.prompt_tokens
    assert actual <= estimator.estimate(changed) <= actual * 1.3


async def test_tools_count_in_the_estimate(llm: LLMClient) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "read_file",
                "description": "Read a text file of the workspace.",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
            },
        }
    ]
    messages = [SYSTEM, {"role": "user", "content": "Read notes.txt please."}]
    request = ChatRequest(messages, tools=tools, max_tokens=1)
    actual = (await llm.chat(request)).usage.prompt_tokens
    assert estimate_tokens(messages, tools) >= actual
    assert estimate_tokens(messages, tools) > estimate_tokens(messages)


def test_needs_compaction() -> None:
    messages = [SYSTEM, *conversation(30)]
    estimate = estimate_tokens(messages)
    assert needs_compaction(messages, estimate + 100, 200)
    assert not needs_compaction(messages, estimate + 300, 200)


# --------------------------------------------------------------------------- compaction


@pytest.mark.timeout(400)  # a few summariser calls; slow when the cores are shared
async def test_compaction_with_the_real_summariser(llm: LLMClient) -> None:
    originals = conversation(12)  # 24 messages, about 2,400 tokens
    session = session_with(originals)
    messages = [SYSTEM, *session.messages()]
    budget = SLOT_CONTEXT - 512
    assert needs_compaction(messages, SLOT_CONTEXT, 512)

    result = await compact(
        messages,
        llm,
        keep_recent=4,
        max_summary_tokens=40,
        budget_tokens=budget,
        summarizer_context=SLOT_CONTEXT,
    )
    assert not result.mechanical and result.error is None
    assert result.calls >= 2  # more than one summariser window of text: a rolling summary
    assert result.summary.strip()
    assert result.tokens_after <= budget < result.tokens_before
    assert estimate_tokens(result.messages) <= budget
    assert not needs_compaction(result.messages, SLOT_CONTEXT, 512)
    assert result.messages[0] == SYSTEM
    assert summary_range(result.messages[1]) == (0, 19)
    assert result.messages[-4:] == originals[-4:]

    assert result.record is not None
    session.append(result.record)
    session.close()
    reopened = Session(session.path)
    assert reopened.all_messages() == originals  # every original stays in the file
    assert [SYSTEM, *reopened.messages()] == result.messages  # resuming gives the same

    # The server agrees that the compacted prompt fits the slot.
    answer = await llm.chat(ChatRequest(result.messages, max_tokens=8))
    assert answer.usage.prompt_tokens <= budget


async def test_a_second_compaction_folds_the_first_summary_in(dead_llm: LLMClient) -> None:
    originals = conversation(10)
    session = session_with(originals)
    first = await compact([SYSTEM, *session.messages()], dead_llm, keep_recent=6,
                          max_summary_tokens=150)  # fmt: skip
    assert first.record is not None and (first.first, first.last) == (0, 13)
    session.append(first.record)
    for message in conversation(3):
        session.append_message(message)
    second = await compact([SYSTEM, *session.messages()], dead_llm, keep_recent=2,
                           max_summary_tokens=150)  # fmt: skip
    assert (second.first, second.last) == (0, 23)
    assert "earlier summary" in second.summary
    session.append(second.record or {})
    assert [SYSTEM, *Session(session.path).messages()] == second.messages
    assert len(Session(session.path).all_messages()) == 26


async def test_summariser_down_falls_back_to_a_mechanical_summary(dead_llm: LLMClient) -> None:
    originals = conversation(20)
    messages = [SYSTEM, *originals]
    budget = SLOT_CONTEXT - 512
    result = await compact(
        messages, dead_llm, keep_recent=4, max_summary_tokens=150, budget_tokens=budget
    )
    assert result.mechanical and result.error
    assert "could not connect" in result.error.lower() or "connect" in result.error.lower()
    assert result.summary.startswith("(Mechanical summary, the memory model failed:")
    # Nothing dropped without a trace: the first and the last summarised messages show.
    assert "- user: Question 0 about the garden" in result.summary
    assert "- assistant: Answer 17" in result.summary
    assert "more messages (see the session file)" in result.summary
    assert estimate_tokens(result.messages) <= budget
    assert result.record is not None and result.record["mechanical"] is True


def test_mechanical_summary_lists_every_message_when_it_can() -> None:
    text = mechanical_summary(conversation(3), 2000, "server down")
    assert text.count("\n- user: Question") == 3 and text.count("\n- assistant: Answer") == 3
    assert "more messages" not in text


@pytest.mark.timeout(300)  # five real summariser calls: slow on busy shared cores
async def test_tool_calls_are_never_split_from_their_results(llm: LLMClient) -> None:
    messages = [
        SYSTEM,
        *conversation(2),
        {"role": "user", "content": "Read both files."},
        *tool_exchange("a", "alpha " * 50)[:1],
    ]
    # one assistant message calls two tools: both results belong with it
    messages[-1]["tool_calls"].append(tool_exchange("b", "")[0]["tool_calls"][0])
    messages += [
        {"role": "tool", "tool_call_id": "a", "content": "alpha " * 50},
        {"role": "tool", "tool_call_id": "b", "content": "beta " * 50},
        {"role": "assistant", "content": "Both read."},
    ]
    for keep in range(1, 5):  # boundaries on each tool result and around them
        result = await compact(messages, llm, keep_recent=keep, max_summary_tokens=16)
        kept = result.messages[2:]
        assert kept[0]["role"] != "tool", keep
        roles = [m["role"] for m in kept]
        if "tool" in roles:
            assert kept[0].get("tool_calls"), keep
            assert roles[:3] == ["assistant", "tool", "tool"], keep

    # Under a tight budget the last tool exchange is the smallest unit that stays.
    tail = messages[:-1]
    result = await compact(
        tail, llm, keep_recent=1, max_summary_tokens=16, budget_tokens=600, summarizer_context=2048
    )
    assert [m["role"] for m in result.messages[2:]] == ["assistant", "tool", "tool"]


async def test_a_message_too_big_alone_is_clipped_with_a_note(dead_llm: LLMClient) -> None:
    pasted = "a very long pasted log line\n" * 800  # ~22,000 characters
    originals = [*conversation(2), {"role": "user", "content": pasted}]
    session = session_with(originals)
    budget = 1500
    result = await compact(
        [SYSTEM, *session.messages()],
        dead_llm,
        keep_recent=1,
        max_summary_tokens=100,
        budget_tokens=budget,
    )
    assert result.clipped == 1
    last = result.messages[-1]["content"]
    assert last.startswith("a very long pasted log line") and len(last) < len(pasted)
    assert f"of {len(pasted)} characters shown" in last
    assert estimate_tokens(result.messages) <= budget
    session.append(result.record or {})
    reopened = Session(session.path)
    assert [SYSTEM, *reopened.messages()] == result.messages
    assert reopened.all_messages()[-1]["content"] == pasted


async def test_a_prompt_that_cannot_fit_says_so(dead_llm: LLMClient) -> None:
    huge_system = {"role": "system", "content": "rules " * 3000}
    with pytest.raises(CompactionError, match="cannot fit in 500 tokens"):
        await compact(
            [huge_system, *conversation(2)],
            dead_llm,
            keep_recent=1,
            max_summary_tokens=50,
            budget_tokens=500,
        )


async def test_nothing_to_summarise_changes_nothing(dead_llm: LLMClient) -> None:
    messages = [SYSTEM, *conversation(1)]
    result = await compact(messages, dead_llm, keep_recent=10, max_summary_tokens=50)
    assert result.record is None and result.messages == messages and result.calls == 0


async def test_summariser_requests_can_carry_extra_fields(llm: LLMClient) -> None:
    """What a thinking memory model needs (llama.cpp's chat_template_kwargs) is sent."""
    sent: list[ChatRequest] = []

    class Recording:
        async def chat(self, request: ChatRequest) -> Any:
            sent.append(request)
            return await llm.chat(request)

    result = await compact(
        [SYSTEM, *conversation(3)],
        Recording(),
        keep_recent=2,
        max_summary_tokens=48,
        summarizer_extra={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert not result.mechanical and result.calls == 1 and result.summary
    assert [(r.temperature, r.max_tokens, r.extra) for r in sent] == [
        (0.2, 48, {"chat_template_kwargs": {"enable_thinking": False}})
    ]
