"""What a model server is doing, as the meter, doctor and `--json` see it, and the events
the manager publishes when that changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class ServerState(StrEnum):
    STARTING = "starting"  # process spawned, not answering yet
    LOADING = "loading"  # answering 503 while the model loads
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot of one server, for the meter, doctor and --json."""

    label: str
    slots: tuple[str, ...]
    model: str
    model_path: str
    state: ServerState
    port: int
    pid: int | None
    tokens_per_s: float  # tokens generated per second over the last sampling interval
    in_flight: int  # requests being processed
    restarts: int
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "slots": list(self.slots),
            "model": self.model,
            "modelPath": self.model_path,
            "state": str(self.state),
            "port": self.port,
            "pid": self.pid,
            "tokensPerSecond": round(self.tokens_per_s, 1),
            "inFlight": self.in_flight,
            "restarts": self.restarts,
            "message": self.message,
        }


@dataclass(frozen=True)
class ServerEvent:
    """Published on every state change; the UI turns it into a message."""

    status: ServerStatus
    message: str


EventSink = Callable[[ServerEvent], None]
