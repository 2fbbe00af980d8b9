"""An in-process channel: a pair of queues. Tests and benchmarks talk to the gateway
through it the way a person would through Telegram (`say`, then read `sent`), with the
whole gateway real behind it.

Its failures are asked for, not faked: `fail_sends` sends raise ChannelError before one
goes through, and `fail_runs` runs raise ChannelError at their start (the gateway then
restarts it), so the bus's retries and the gateway's restarts can be exercised.
"""

from __future__ import annotations

import asyncio
import time

from nanobot_tui.channels.base import ChannelError, Deliver, Inbound, Outbound


class LoopbackChannel:
    def __init__(self, name: str = "loopback", *, fail_sends: int = 0, fail_runs: int = 0) -> None:
        self.name = name
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()  # what people say to nanobot
        self.outbox: asyncio.Queue[Outbound] = asyncio.Queue()  # what nanobot sent
        self.sent: list[tuple[float, Outbound]] = []  # (time.time(), message), in order
        self.send_attempts: list[float] = []  # time.monotonic() of every send tried
        self.fail_sends = fail_sends
        self.fail_runs = fail_runs
        self.runs = 0  # how many times `run` was started

    def say(self, sender: str, text: str, chat: str | None = None) -> None:
        """A message from `sender` in `chat` (their own chat by default)."""
        message = Inbound(self.name, sender, chat or sender, text, time.time())
        self.inbox.put_nowait(message)

    async def next_sent(self) -> Outbound:
        """The next message nanobot sends (waits for it)."""
        return await self.outbox.get()

    async def run(self, deliver: Deliver) -> None:
        self.runs += 1
        if self.fail_runs > 0:
            self.fail_runs -= 1
            raise ChannelError(f"{self.name}: failed at start, as asked ({self.fail_runs} more)")
        while True:
            await deliver(await self.inbox.get())

    async def send(self, message: Outbound) -> None:
        self.send_attempts.append(time.monotonic())
        if self.fail_sends > 0:
            self.fail_sends -= 1
            raise ChannelError(f"{self.name}: send failed, as asked")
        self.sent.append((time.time(), message))
        self.outbox.put_nowait(message)

    async def check(self) -> str:
        return f"{self.name}: in-process, always reachable"
