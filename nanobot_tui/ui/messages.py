"""What the engine tells the UI. Engine callbacks post these messages to the app (safe from
any thread); the app republishes them on signals that panes subscribe to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

# Types only: the agent's modules load at the first turn, not with the app.
if TYPE_CHECKING:
    from nanobot_tui.engine.agent.delegate import Delegation
    from nanobot_tui.engine.serving.status import ServerEvent


@dataclass(frozen=True)
class EngineState:
    """Where the workbench stands: starting, ready, or failed with the server's log."""

    ready: bool = False
    error: str = ""
    detail: str = ""


@dataclass
class ServerChanged(Message):
    """A model server changed state (starting, loading, ready, restarting, failed...)."""

    event: ServerEvent


@dataclass
class EngineChanged(Message):
    state: EngineState


@dataclass
class DelegationChanged(Message):
    """A delegation started, advanced or ended; None: the chat's session changed."""

    record: Delegation | None
