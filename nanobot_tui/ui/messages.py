"""What the engine tells the UI. Engine callbacks post these messages to the app (safe from
any thread); the app republishes them on signals that panes subscribe to."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from nanobot_tui.engine.serving.manager import ServerEvent


@dataclass(frozen=True)
class EngineState:
    """Where the workbench stands: starting, ready, or failed with the server's log."""

    ready: bool = False
    error: str = ""
    detail: str = ""


class ServerChanged(Message):
    """A model server changed state (starting, loading, ready, restarting, failed...)."""

    def __init__(self, event: ServerEvent) -> None:
        super().__init__()
        self.event = event


class EngineChanged(Message):
    def __init__(self, state: EngineState) -> None:
        super().__init__()
        self.state = state
