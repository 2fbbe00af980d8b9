"""The message bus: inbound and outbound queues and the one outbound dispatcher.

Every message to send goes through `Bus.publish`. The dispatcher sends them in order per
chat, at most `rate_limit` per chat in any `window_s` (a message over the limit waits
its turn; other chats go on), and retries a send that raised ChannelError with
exponential backoff (`backoff_s`, doubling up to `backoff_max_s`) before giving up after
`retries` retries. A failing chat never holds up the others: its message waits in its
own lane until its retry is due.

Per channel the bus also keeps its traffic (messages in and out, the last send that was
given up on, the time of the last of each) for the gateway's state file; `on_change` is
called after each change of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from nanobot_tui.channels.base import Channel, ChannelError, Inbound, Outbound

log = logging.getLogger(__name__)

Lane = tuple[str, str]  # (channel, chat)


@dataclass
class BusCounters:
    received: int = 0  # inbound messages
    published: int = 0  # outbound messages handed to the bus
    sent: int = 0  # outbound messages a channel accepted
    retried: int = 0  # sends tried again after a ChannelError
    failed: int = 0  # messages given up on after every retry
    delayed: int = 0  # messages held back by the rate limit
    no_channel: int = 0  # messages for a channel the gateway does not run

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ChannelTraffic:
    """One channel's messages, for the app's Channels screen and `gateway status`."""

    messages_in: int = 0
    messages_out: int = 0
    send_failures: int = 0  # messages given up on after every retry
    last_in: float | None = None  # time.time()
    last_out: float | None = None
    last_send_error: str | None = None  # the last give-up's one-line reason

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Pending:
    message: Outbound
    attempts: int = 0
    not_before: float = 0.0  # a retry's due time (monotonic)
    counted_delay: bool = False


class Bus:
    def __init__(
        self,
        channels: Mapping[str, Channel] | None = None,
        *,
        rate_limit: int = 20,
        window_s: float = 60.0,
        retries: int = 4,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.channels: dict[str, Channel] = dict(channels or {})
        self.inbound: asyncio.Queue[Inbound] = asyncio.Queue()
        self.outbound: asyncio.Queue[Outbound] = asyncio.Queue()
        self.rate_limit = rate_limit
        self.window_s = window_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.counters = BusCounters()
        self.traffic: dict[str, ChannelTraffic] = {name: ChannelTraffic() for name in self.channels}
        self.on_change: Callable[[], None] | None = None
        self._lanes: dict[Lane, deque[_Pending]] = {}
        self._sent_at: dict[Lane, deque[float]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    async def deliver(self, message: Inbound) -> None:
        """What a channel calls with each message it receives."""
        self.counters.received += 1
        traffic = self._traffic(message.channel)
        traffic.messages_in += 1
        traffic.last_in = time.time()
        self._changed()
        await self.inbound.put(message)

    def _traffic(self, channel: str) -> ChannelTraffic:
        return self.traffic.setdefault(channel, ChannelTraffic())

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def publish(self, message: Outbound) -> None:
        """Queue a message to send (never blocks: the outbound queue is unbounded)."""
        self.counters.published += 1
        self._idle.clear()
        self.outbound.put_nowait(message)

    async def drained(self) -> None:
        """Wait until every published message was sent or given up on."""
        await self._idle.wait()

    def backoff(self, attempt: int) -> float:
        """The wait before retry `attempt` (1, 2, ...): backoff_s doubling, capped."""
        return float(min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s))

    # --- the dispatcher --------------------------------------------------------------

    async def dispatch(self) -> None:
        """Send what is published, until cancelled."""
        while True:
            self._take_new()
            lane = self._ready_lane(time.monotonic())
            if lane is not None:
                await self._send_head(lane)
                continue
            if not self._lanes and self.outbound.empty():
                self._idle.set()
            wait = self._next_due(time.monotonic())
            try:
                message = await asyncio.wait_for(self.outbound.get(), timeout=wait)
            except TimeoutError:
                continue
            self._enqueue(message)

    def _take_new(self) -> None:
        while not self.outbound.empty():
            self._enqueue(self.outbound.get_nowait())

    def _enqueue(self, message: Outbound) -> None:
        self._lanes.setdefault((message.channel, message.chat), deque()).append(_Pending(message))

    def _window(self, lane: Lane, now: float) -> deque[float]:
        sent = self._sent_at.setdefault(lane, deque())
        while sent and sent[0] <= now - self.window_s:
            sent.popleft()
        return sent

    def _due(self, lane: Lane, now: float) -> float:
        """When the lane's first message may go (monotonic time)."""
        head = self._lanes[lane][0]
        due = head.not_before
        sent = self._window(lane, now)
        if len(sent) >= self.rate_limit:
            due = max(due, sent[0] + self.window_s)
        return due

    def _ready_lane(self, now: float) -> Lane | None:
        best: tuple[float, Lane] | None = None
        for lane in self._lanes:
            due = self._due(lane, now)
            if due <= now and (best is None or due < best[0]):
                best = (due, lane)
            elif due > now and not self._lanes[lane][0].counted_delay:
                head = self._lanes[lane][0]
                if head.not_before <= now:  # held back by the rate limit, not by a retry
                    head.counted_delay = True
                    self.counters.delayed += 1
        return best[1] if best else None

    def _next_due(self, now: float) -> float | None:
        if not self._lanes:
            return None
        return max(min(self._due(lane, now) for lane in self._lanes) - now, 0.0)

    async def _send_head(self, lane: Lane) -> None:
        queue = self._lanes[lane]
        pending = queue[0]
        channel = self.channels.get(lane[0])
        if channel is None:
            log.warning("no channel %r for a message to %s", lane[0], lane[1])
            self.counters.no_channel += 1
            self._pop(lane)
            return
        self._window(lane, time.monotonic()).append(time.monotonic())
        try:
            await channel.send(pending.message)
        except Exception as exc:  # a channel's bug must not end the dispatcher either
            if not isinstance(exc, ChannelError):
                log.exception("%s: send raised", lane[0])
            pending.attempts += 1
            if pending.attempts > self.retries:
                log.warning("%s: gave up on a message to %s: %s", lane[0], lane[1], exc)
                self.counters.failed += 1
                traffic = self._traffic(lane[0])
                traffic.send_failures += 1
                traffic.last_send_error = " ".join(str(exc).split()) or type(exc).__name__
                self._changed()
                self._pop(lane)
                return
            self.counters.retried += 1
            pending.not_before = time.monotonic() + self.backoff(pending.attempts)
            return
        self.counters.sent += 1
        traffic = self._traffic(lane[0])
        traffic.messages_out += 1
        traffic.last_out = time.time()
        self._changed()
        self._pop(lane)

    def _pop(self, lane: Lane) -> None:
        queue = self._lanes[lane]
        queue.popleft()
        if not queue:
            del self._lanes[lane]
