"""What a channel is and the messages it carries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nanobot_tui.errors import NanobotError, UsageError


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message that arrived on a channel."""

    channel: str  # "telegram" | "email" | ...
    sender: str  # who sent it: a Telegram user id, or the email address (lower case)
    chat: str  # where to answer: a Telegram chat id, or the email address
    text: str  # the command text ("/status", "/watch RUN", "status" from an email)
    at: float  # time.time()
    thread: str | None = None  # email: the Message-ID it answers, to keep threads


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to send."""

    channel: str
    chat: str
    text: str
    subject: str | None = None  # email subject
    attachments: tuple[Path, ...] = ()  # email attachments (the exported tree)
    thread: str | None = None  # email: keep per-run threads ("run:<RUN_ID>")


class ChannelError(NanobotError):
    """A channel that failed, or a send that failed (the dispatcher retries); one line."""


class GatewayError(UsageError):
    """A gateway request that cannot be done as asked (a bad --notify, an unknown pairing
    code, a gateway already running); one line."""


Deliver = Callable[[Inbound], Awaitable[None]]


class Channel(Protocol):
    name: str

    async def run(self, deliver: Deliver) -> None:
        """Receive until cancelled, handing each message to `deliver`; raises ChannelError
        when the channel fails (the gateway restarts it with backoff)."""
        ...

    async def send(self, message: Outbound) -> None:
        """Send one message; ChannelError on failure."""
        ...

    async def check(self) -> str:
        """One line: reachable, or why not (for `nanobot doctor`)."""
        ...
