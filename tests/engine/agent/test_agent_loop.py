"""The agent's tool loop: against the real embedded server where the model's behaviour can
be pinned (prompted tools, constrained replies, compaction, delegation), and against a
scripted FAKE model for what small models get wrong in ways a real one cannot be made to
repeat on demand (unreadable calls, repeats, unknown tools, a cancel mid-round)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.config import Config, LocalConfig, SlotConfig
from nanobot_tui.engine.agent.build import build_agent, open_session
from nanobot_tui.engine.agent.delegate import Delegation, delegate_tool
from nanobot_tui.engine.agent.loop import (
    CANCELLED,
    Agent,
    AgentEvent,
    AnswerDelta,
    CallProblem,
    Compacted,
    ToolCalls,
    ToolDone,
    TurnDone,
    detect_protocol,
)
from nanobot_tui.engine.agent.sessions import SessionStore
from nanobot_tui.engine.agent.tool_protocol import (
    ConstrainedTools,
    NativeTools,
    PromptedTools,
)
from nanobot_tui.engine.agent.tools.context import context_tools
from nanobot_tui.engine.agent.tools.registry import Tool, ToolRegistry
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.micro_tools import ContextStore
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, StreamDone, TextDelta, Usage
from nanobot_tui.engine.serving.workbench import Workbench
from tests.conftest import until
from tests.engine.context.trees import write_tree

# --- a scripted FAKE model ----------------------------------------------------------------


class ScriptedModel:
    """FAKE model: replies from a script, one per request, and records each request.
    With a `delay`, each reply waits that long first; `answering` is set when it starts to."""

    def __init__(self, replies: Sequence[str], *, delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.delay = delay
        self.answering = asyncio.Event()

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Any]:
        messages = request.messages
        self.requests.append({"messages": list(messages), **request.options()})
        reply = self.replies.pop(0) if self.replies else "done"
        if self.delay:
            self.answering.set()
            await asyncio.sleep(self.delay)
        yield TextDelta(reply)
        chars = sum(len(str(m.get("content") or "")) for m in messages)
        yield StreamDone(
            ChatResult(
                choices=[Choice(content=reply, finish_reason="stop")],
                usage=Usage(prompt_tokens=chars // 3, completion_tokens=5, total_tokens=0),
                timings=None,
                latency_s=0.001,
                model="fake",
                raw={},
            )
        )

    async def chat(self, request: ChatRequest) -> ChatResult:
        async for event in self.stream_chat(request):
            if isinstance(event, StreamDone):
                return event.result
        raise AssertionError("unreachable")


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>[{json.dumps({'name': name, 'arguments': arguments})}]</tool_call>"


def echo_registry(
    seen: list[dict[str, Any]] | None = None, slow_started: asyncio.Event | None = None
) -> ToolRegistry:
    """`echo`, and `slow`, which sets `slow_started` and then takes a minute."""

    def echo(args: dict[str, Any]) -> str:
        if seen is not None:
            seen.append(args)
        return f"echo: {args['text']}"

    async def slow(args: dict[str, Any]) -> str:
        if slow_started is not None:
            slow_started.set()
        await asyncio.sleep(60)
        return "slow done"

    return ToolRegistry(
        [
            Tool(
                "echo",
                "Echo the text.",
                {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                },
                echo,
            ),
            Tool("slow", "Take a while.", {"type": "object", "properties": {}}, slow),
        ]
    )


def agent_on(client: Any, tools: ToolRegistry, *, name: str = "test", **kwargs: Any) -> Agent:
    session = SessionStore().create(name)
    kwargs.setdefault("protocol", PromptedTools())
    return Agent(
        client=client,
        tools=tools,
        session=session,
        context_size=kwargs.pop("context_size", 4096),
        system_prompt="You are a test agent.",
        **kwargs,
    )


async def collect(agent: Agent, text: str) -> list[AgentEvent]:
    return [event async for event in agent.turn(text)]


def done_of(events: list[AgentEvent]) -> TurnDone:
    last = events[-1]
    assert isinstance(last, TurnDone)
    return last


# --- the protocols ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>[{"name": "echo", "arguments": {"text": "a"}}]</tool_call>',
        '<tool_call>[{"name": "echo", "arguments": {"text": "a"}}]',  # stop string removed
        '<tool_call>{"name": "echo", "arguments": {"text": "a"}}</tool_call>',
        '<tool_call>\n```json\n[{"name": "echo", "parameters": {"text": "a"}}]\n```',
        '{"name": "echo", "arguments": {"text": "a"}}',
        '```json\n{"name": "echo", "arguments": {"text": "a"}}\n```',
    ],
)
def test_prompted_calls_are_read_in_their_usual_forms(text: str) -> None:
    parsed = PromptedTools().parse(text, [], 3)
    assert parsed.problem is None
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [("echo", {"text": "a"})]
    assert parsed.calls[0].id == "call_3_0"


def test_prompted_unreadable_calls_become_problems_and_prose_stays_prose() -> None:
    tools = PromptedTools()
    bad = tools.parse('Let me look. <tool_call>[{"name": "echo", "arguments": {text}]', [], 1)
    assert bad.calls == [] and bad.text == "Let me look."
    assert bad.problem is not None and "not valid JSON" in bad.problem
    assert "needs a" in (tools.parse('<tool_call>[{"tool": "x"}]', [], 1).problem or "")
    assert tools.parse("Paris is the capital.", [], 1).text == "Paris is the capital."
    # A JSON answer that is not a call is prose, not a failed call.
    assert tools.parse('{"name": "Ada", "age": 36', [], 1).calls == []


def test_prompted_wire_turns_calls_and_results_into_text_turns() -> None:
    history = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "echo", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "echo", "content": "one"},
    ]
    wired = PromptedTools().wire(history)
    assert [m["role"] for m in wired] == ["user", "assistant", "user"]
    assert wired[1]["content"].startswith("<tool_call>[")
    assert wired[2]["content"] == '<tool_response name="echo">\none\n</tool_response>'
    native = NativeTools().wire(history)
    assert "name" not in native[2] and native[2]["tool_call_id"] == "c1"


def test_prompted_streaming_holds_back_what_starts_like_a_call() -> None:
    tools = PromptedTools()
    assert tools.looks_like_call("  <tool") is None
    assert tools.looks_like_call("<tool_call>[") is True
    assert tools.looks_like_call("Hello") is False


def test_constrained_replies_have_a_schema_per_tool() -> None:
    specs = echo_registry().specs()
    response_format = ConstrainedTools().response_format(specs)
    assert response_format is not None
    choices = response_format["json_schema"]["schema"]["anyOf"]
    assert choices[0]["required"] == ["answer"]
    assert {c["properties"]["tool"]["const"] for c in choices[1:]} == {"echo", "slow"}
    parsed = ConstrainedTools().parse('{"tool": "echo", "arguments": {"text": "x"}}', [], 2)
    assert parsed.calls[0].name == "echo"
    assert ConstrainedTools().parse('{"answer": "42"}', [], 2).text == "42"
    assert ConstrainedTools().parse('{"tool": "ec', [], 2).problem


# --- the loop with a scripted FAKE model ----------------------------------------------------


async def test_a_call_runs_and_its_result_feeds_the_answer() -> None:
    seen: list[dict[str, Any]] = []
    model = ScriptedModel([call("echo", text="ping"), "The tool said ping."])
    agent = agent_on(model, echo_registry(seen))
    events = await collect(agent, "use echo")
    assert seen == [{"text": "ping"}]
    done = done_of(events)
    assert done.answer == "The tool said ping." and done.rounds == 2 and done.stopped is None
    # The second request carried the result, as a user turn in the prompted form.
    assert "echo: ping" in model.requests[1]["messages"][-1]["content"]
    assert model.requests[0]["stop"] == ["</tool_call>"]
    roles = [m["role"] for m in agent.session.messages()]
    assert roles == ["user", "assistant", "tool", "assistant"]


async def test_malformed_and_unknown_calls_go_back_to_the_model_never_crash() -> None:
    model = ScriptedModel(
        [
            '<tool_call>[{"name": "echo", "arguments": {"text": }]',  # bad JSON
            call("nope", x=1),  # unknown tool
            call("echo", text=5),  # wrong type
            "All right.",
        ]
    )
    agent = agent_on(model, echo_registry())
    events = await collect(agent, "go")
    problems = [e for e in events if isinstance(e, CallProblem)]
    assert len(problems) == 1 and "not valid JSON" in problems[0].problem
    results = [e.result for e in events if isinstance(e, ToolDone)]
    assert [r.ok for r in results] == [False, False]
    assert "unknown tool 'nope'" in results[0].content and "echo" in results[0].content
    assert "text" in results[1].content and "string" in results[1].content
    assert done_of(events).answer == "All right."


async def test_repeated_calls_are_nudged_then_the_model_must_answer() -> None:
    model = ScriptedModel([call("echo", text="a")] * 10 + ["Final words."])
    agent = agent_on(model, echo_registry())
    events = await collect(agent, "loop forever")
    done = done_of(events)
    assert done.stopped == "strikes"
    assert done.rounds == 5  # 1 call, 3 repeats (strikes), then the final request
    last = model.requests[-1]
    assert "tools" not in last and "stop" not in last
    assert "answer now" in last["messages"][0]["content"]
    assert "same call as before" in agent.session.messages()[-2]["content"]


async def test_the_round_cap_forces_an_answer_without_tools() -> None:
    model = ScriptedModel([call("echo", text=str(i)) for i in range(3)] + ["Stopped."])
    agent = agent_on(model, echo_registry(), max_rounds=3)
    done = done_of(await collect(agent, "go"))
    assert done.stopped == "rounds" and done.rounds == 4 and done.answer == "Stopped."
    # A model that still writes a call when told to answer: said so, not shown raw.
    model = ScriptedModel([call("echo", text=str(i)) for i in range(5)])
    events = await collect(agent_on(model, echo_registry(), name="t2", max_rounds=3), "go")
    assert done_of(events).answer == "(No answer: after 3 rounds the model still asked for echo.)"
    assert not [e for e in events if isinstance(e, AnswerDelta) and "<tool_call>" in e.text]


async def cancelled_turn(agent: Agent, text: str, started: asyncio.Event) -> list[dict[str, Any]]:
    """A turn cancelled once `started` is set, and the live conversation its session kept."""
    task = asyncio.create_task(collect(agent, text))
    await until(lambda: started.is_set() or task.done())
    assert not task.done(), "the turn ended before the cancel"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return SessionStore().open("test").messages()


async def test_a_cancel_mid_round_leaves_a_result_for_every_call() -> None:
    model = ScriptedModel([call("slow")])
    started = asyncio.Event()
    agent = agent_on(model, echo_registry(slow_started=started))
    messages = await cancelled_turn(agent, "go slow", started)
    assert messages[-1]["role"] == "tool" and "cancelled" in messages[-1]["content"]
    assert messages[-2]["tool_calls"][0]["id"] == messages[-1]["tool_call_id"]


# --- the real embedded server ---------------------------------------------------------------


def small_config(**agent: Any) -> Config:
    slot = {"model": "smollm2-135m-instruct", "contextSize": 2048}
    config = Config(
        local=LocalConfig(
            main=SlotConfig(**slot),
            rlm=SlotConfig(**slot, parallel=2),
            memory=SlotConfig(**slot),
        )
    )
    for key, value in agent.items():
        setattr(config.agent, key, value)
    return config


@pytest.mark.model
async def test_hello_with_every_default_tool_costs_under_1000_prompt_tokens(
    tmp_path: Path,
) -> None:
    config = small_config(workspace=tmp_path)
    async with Workbench(config) as workbench:
        protocol = await detect_protocol(workbench.client("main"))
        assert isinstance(protocol, PromptedTools)  # SmolLM2's template renders no tools
        kit = await build_agent(workbench, config, session=open_session(None), max_tokens=16)
        try:
            names = kit.agent.tools.names()
            assert {"read_file", "ctx_grep", "memory_update", "recall", "delegate"} <= set(names)
            assert "shell" not in names
            done = done_of(await collect(kit.agent, "hello"))
        finally:
            kit.close()
    assert 0 < done.last_prompt_tokens < 1000, done.last_prompt_tokens
    assert done.answer.strip()


async def test_constrained_replies_make_the_small_model_call_a_ctx_tool(
    llama_server: str, tmp_path: Path
) -> None:
    notes = {"notes.md": "The staging server is bluefin on port 8443.\n"}
    ingest(write_tree(tmp_path / "proj", notes), "proj")
    with ContextStore() as store:
        tools = ToolRegistry(
            [t for t in context_tools(store) if t.name in {"ctx_grep", "ctx_volumes"}]
        )
        async with LLMClient(llama_server) as client:
            agent = agent_on(
                client, tools, protocol=ConstrainedTools(), max_rounds=1, temperature=0.0
            )
            agent.max_tokens = 64
            events = await collect(agent, "Which port does staging use? Grep volume proj.")
    calls = [e for e in events if isinstance(e, ToolCalls)]
    assert len(calls) == 1 and calls[0].calls[0].name in {"ctx_grep", "ctx_volumes"}
    results = [e.result for e in events if isinstance(e, ToolDone)]
    assert len(results) == 1  # well formed by construction; ok depends on its arguments
    done = done_of(events)
    assert done.stopped == "rounds" and done.rounds == 2 and done.answer.strip()
    assert [m["role"] for m in agent.session.messages()] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


async def test_a_long_session_is_compacted_and_every_prompt_fits(llama_server: str) -> None:
    async with LLMClient(llama_server) as client:
        agent = agent_on(
            client, ToolRegistry(), context_size=768, summarizer=client, summary_tokens=48
        )
        agent.max_tokens = 24
        filler = "The quick brown fox jumps over the lazy dog. " * 8
        for i in range(8):
            agent.session.append_message({"role": "user", "content": f"Note {i}: {filler}"})
            agent.session.append_message({"role": "assistant", "content": f"Noted {i}."})
        events = await collect(agent, "What was note 7 about?")
    compacted = [e for e in events if isinstance(e, Compacted)]
    assert compacted and compacted[0].summary.strip()
    done = done_of(events)
    assert done.last_prompt_tokens + agent.max_tokens <= 768
    # The originals stay in the file; the live conversation holds the summary instead.
    assert len(agent.session.all_messages()) == 18
    assert len(agent.session.messages()) < 18


async def test_delegation_runs_a_subagent_on_its_own_session(llama_server: str) -> None:
    store = SessionStore()
    seen: list[Delegation] = []
    async with LLMClient(llama_server) as rlm:

        def subagent(d: Delegation) -> Agent:
            return Agent(
                client=rlm,
                tools=echo_registry(),
                session=store.create(d.session),
                context_size=2048,
                system_prompt="You are a helper.",
                protocol=PromptedTools(),
                max_tokens=24,
                max_rounds=2,
            )

        tool = delegate_tool(subagent, session_prefix="parent", on_change=seen.append)
        model = ScriptedModel([call("delegate", task="Say the word blue."), "Done."])
        agent = agent_on(model, ToolRegistry([tool]))
        events = await collect(agent, "delegate it")
    result = next(e.result for e in events if isinstance(e, ToolDone))
    assert result.ok and result.content.startswith("Subagent (")
    assert seen[0].status == "running" and seen[-1].status == "completed"
    assert seen[-1].rounds >= 1 and seen[-1].session == "parent-sub1"
    child = store.open("parent-sub1").messages()
    assert child[0] == {"role": "user", "content": "Say the word blue."}
    assert child[-1]["role"] == "assistant"


async def test_a_cancel_while_the_model_answers_keeps_the_turns_alternating() -> None:
    model = ScriptedModel(["never shown"], delay=60)
    messages = await cancelled_turn(
        agent_on(model, echo_registry()), "a slow answer", model.answering
    )
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[-1]["content"] == CANCELLED
