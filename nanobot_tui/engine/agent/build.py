"""Assemble the agent from a running Workbench and the config: the chat pane, `nanobot
agent` and the benchmarks all get the same agent from here.

main answers; rlm runs delegated sub-tasks; memory summarises (compaction and
ctx_summarize). The prompt is kept small on purpose: a short system prompt, the tools,
and MEMORY.md or a skill only when there is one and it matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nanobot_tui.config import Config, SlotName
from nanobot_tui.engine.agent.delegate import DelegationSink, delegate_tool
from nanobot_tui.engine.agent.loop import Agent, detect_protocol
from nanobot_tui.engine.agent.memory import MemoryFile, Scratchpad, memory_prompt, memory_tools
from nanobot_tui.engine.agent.recall import SessionRecall, recall_tool
from nanobot_tui.engine.agent.sessions import Session, SessionNotFound, SessionStore
from nanobot_tui.engine.agent.skills import load_skills, match_skills, skills_prompt
from nanobot_tui.engine.agent.tool_protocol import ToolProtocol
from nanobot_tui.engine.agent.tools.defaults import default_tools
from nanobot_tui.engine.agent.tools.registry import ToolRegistry
from nanobot_tui.engine.agent.tools.workspace import Workspace
from nanobot_tui.engine.context.micro_tools import ContextStore
from nanobot_tui.engine.serving.workbench import Workbench

SYSTEM_PROMPT = (
    "You are nanobot, a local assistant. Answer briefly. Use a tool when the answer "
    "needs files, volumes or memory; answer from its result."
)
SUBAGENT_PROMPT = (
    "You are a nanobot helper. Do the task with the tools, then reply with a short result."
)


@dataclass
class AgentKit:
    """An agent and what it holds open."""

    agent: Agent
    session: Session
    store: ContextStore

    def close(self) -> None:
        self.store.close()
        self.session.close()


def open_session(name: str | None, sessions: SessionStore | None = None) -> Session:
    """The session called `name` (resumed when it exists, made when not); a new one with
    a timestamped name when `name` is None."""
    sessions = sessions or SessionStore()
    if name is None:
        return sessions.create()
    try:
        return sessions.open(name)
    except SessionNotFound:
        return sessions.create(name)


async def build_agent(
    workbench: Workbench,
    config: Config,
    *,
    session: Session,
    on_delegation: DelegationSink | None = None,
    max_tokens: int = 1024,
) -> AgentKit:
    settings = config.agent
    workspace = Workspace((settings.workspace or Path.cwd()).expanduser())
    store = ContextStore(summarizer=workbench.client("memory"))
    protocols: dict[SlotName, ToolProtocol] = {}
    for slot in ("main", "rlm"):
        protocols[slot] = await detect_protocol(workbench.client(slot), settings.tool_mode)
    memory = MemoryFile()
    recall = SessionRecall(current=session.name)
    learning = config.learning.enabled  # off: learned skills are not offered either

    def registry(for_session: Session) -> ToolRegistry:
        tools = default_tools(
            workspace,
            store,
            shell=settings.shell,
            shell_timeout=settings.shell_timeout,
            output_chars=settings.tool_output_chars,
        )
        for tool in memory_tools(memory, Scratchpad.for_session(for_session.path)):
            tools.add(tool)
        tools.add(recall_tool(recall))
        return tools

    def extras(user_text: str) -> list[str]:
        # Skills are read on every call: one learned or demoted mid-session counts from
        # the next turn on. Reading them costs less than matching them (about 5 ms for
        # 200 skills, matching about 9 ms), so no cache.
        return [
            memory_prompt(memory) or "",
            skills_prompt(match_skills(load_skills(learned=learning), user_text)) or "",
        ]

    def agent_for(slot: SlotName, for_session: Session, prompt: str) -> Agent:
        return Agent(
            client=workbench.client(slot),
            tools=registry(for_session),
            session=for_session,
            context_size=workbench.slots[slot].context_size,
            system_prompt=prompt,
            protocol=protocols[slot],
            temperature=workbench.temperature(slot),
            max_tokens=max_tokens,
            max_rounds=settings.max_rounds,
            summarizer=workbench.client("memory"),
            summarizer_context=workbench.slots["memory"].context_size,
            prompt_extras=extras,
            context=store,
        )

    sessions = SessionStore()
    prefix = f"{session.name}-sub"
    earlier = sum(1 for info in sessions.list() if info.name.startswith(prefix))
    main = agent_for("main", session, SYSTEM_PROMPT)
    main.tools.add(
        delegate_tool(
            lambda d: agent_for("rlm", sessions.create(d.session), SUBAGENT_PROMPT),
            session_prefix=session.name,
            on_change=on_delegation,
            first=earlier + 1,
        )
    )
    return AgentKit(main, session, store)
