"""`/ask TEXT`: the agent answers, in a session of that chat's own.

Each chat gets its agent session, named after the channel and the chat
("gateway-telegram-123456"), resumed on every question, so a chat keeps its
conversation across questions and gateway restarts (`nanobot sessions` lists them). The
model servers are started on the first question and kept while the gateway runs; one
question is answered at a time (a small local model serves one turn well, not several).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from nanobot_tui.config import Config

if TYPE_CHECKING:
    from nanobot_tui.engine.agent.build import AgentKit
    from nanobot_tui.engine.serving.workbench import Workbench

MAX_TOKENS = 1024


def session_name(channel: str, chat: str) -> str:
    """The chat's session name: only the characters a session name may hold, at most 64."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", chat).strip("._-") or "chat"
    return f"gateway-{channel}-{clean}"[:64]


class AgentAsker:
    def __init__(self, config: Config | None = None, *, max_tokens: int = MAX_TOKENS) -> None:
        self._config = config  # None: the config file, read at the first question
        self.max_tokens = max_tokens
        self._workbench: Workbench | None = None
        self._kits: dict[str, AgentKit] = {}
        self._lock = asyncio.Lock()

    @property
    def serving(self) -> bool:
        """Whether this asker's model servers run."""
        return self._workbench is not None

    async def ask(self, channel: str, chat: str, text: str) -> str:
        """The agent's answer to `text` in the chat's session; NanobotError (one line)
        when the model servers do not start or the session cannot be written."""
        from nanobot_tui.engine.agent.loop import TurnDone

        async with self._lock:
            kit = await self._kit(session_name(channel, chat))
            done: TurnDone | None = None
            async for event in kit.agent.turn(text):
                if isinstance(event, TurnDone):
                    done = event
        if done is None or not done.answer.strip():
            return "the agent gave no answer"
        return done.answer.strip()

    async def _kit(self, name: str) -> AgentKit:
        from nanobot_tui.engine.agent.build import build_agent, open_session

        kit = self._kits.get(name)
        if kit is not None:
            return kit
        workbench = await self._started()
        config = self._loaded()
        session = await asyncio.to_thread(open_session, name)
        kit = await build_agent(workbench, config, session=session, max_tokens=self.max_tokens)
        self._kits[name] = kit
        return kit

    def _loaded(self) -> Config:
        if self._config is None:
            from nanobot_tui.config import load_config

            self._config = load_config()[0]
        return self._config

    async def _started(self) -> Workbench:
        if self._workbench is None:
            from nanobot_tui.engine.serving.workbench import Workbench

            config = await asyncio.to_thread(self._loaded)
            workbench = Workbench(config)
            await workbench.start()
            self._workbench = workbench
        return self._workbench

    async def close(self) -> None:
        """Close the sessions and stop the model servers this asker started."""
        for kit in self._kits.values():
            kit.close()
        self._kits.clear()
        if self._workbench is not None:
            await self._workbench.stop()
            self._workbench = None
