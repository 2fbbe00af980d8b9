"""The bus's outbound dispatcher: retries with exponential backoff, giving up, the rate
limit per chat, and a failing chat that holds up no other. The channel is the in-process
loopback channel; its send failures are asked for (fail_sends), not faked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from nanobot_tui.channels.base import Outbound
from nanobot_tui.channels.bus import Bus
from nanobot_tui.channels.loopback import LoopbackChannel
from tests.conftest import until


@pytest.fixture
async def dispatching() -> AsyncIterator[list[Bus]]:
    """Runs the dispatcher of each bus the test appends; cancels them after."""
    buses: list[Bus] = []
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        while True:
            while len(tasks) < len(buses):
                tasks.append(asyncio.create_task(buses[len(tasks)].dispatch()))
            await asyncio.sleep(0.01)

    starter = asyncio.create_task(start())
    yield buses
    starter.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(starter, *tasks, return_exceptions=True)


async def test_a_failed_send_is_retried_with_doubling_backoff(dispatching: list[Bus]) -> None:
    channel = LoopbackChannel(fail_sends=3)
    bus = Bus({"loopback": channel}, retries=4, backoff_s=0.05)
    dispatching.append(bus)
    bus.publish(Outbound("loopback", "c1", "hello"))
    assert (await asyncio.wait_for(channel.next_sent(), 30)).text == "hello"
    assert len(channel.send_attempts) == 4  # three failures, then the send
    gaps = [b - a for a, b in zip(channel.send_attempts, channel.send_attempts[1:], strict=False)]
    for gap, wanted in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert gap >= wanted  # each wait at least its backoff, which doubles
    assert bus.backoff(1) == 0.05 and bus.backoff(3) == 0.2
    assert bus.counters.retried == 3 and bus.counters.sent == 1 and bus.counters.failed == 0


async def test_backoff_is_capped() -> None:
    bus = Bus(backoff_s=1.0, backoff_max_s=5.0)
    assert [bus.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_a_message_is_given_up_after_its_retries_and_others_still_go(
    dispatching: list[Bus],
) -> None:
    channel = LoopbackChannel(fail_sends=3)
    bus = Bus({"loopback": channel}, retries=2, backoff_s=0.02)
    dispatching.append(bus)
    bus.publish(Outbound("loopback", "c1", "lost"))
    await asyncio.wait_for(bus.drained(), 30)
    assert bus.counters.failed == 1 and bus.counters.retried == 2 and channel.sent == []
    bus.publish(Outbound("loopback", "c1", "next"))  # the fourth try: the channel works
    assert (await asyncio.wait_for(channel.next_sent(), 30)).text == "next"


async def test_a_chat_waiting_for_its_retry_holds_up_no_other(dispatching: list[Bus]) -> None:
    channel = LoopbackChannel(fail_sends=1)
    bus = Bus({"loopback": channel}, retries=3, backoff_s=1.0)
    dispatching.append(bus)
    bus.publish(Outbound("loopback", "slow", "first"))  # fails, retried in 1 s
    await until(lambda: bus.counters.retried == 1)
    bus.publish(Outbound("loopback", "other", "second"))
    sent = await asyncio.wait_for(channel.next_sent(), 30)
    assert (sent.chat, sent.text) == ("other", "second")
    assert bus.counters.sent == 1  # "first" is still waiting for its retry
    assert (await asyncio.wait_for(channel.next_sent(), 30)).text == "first"


async def test_the_rate_limit_holds_a_chat_back_in_order_and_not_the_others(
    dispatching: list[Bus],
) -> None:
    channel = LoopbackChannel()
    window = 0.5
    bus = Bus({"loopback": channel}, rate_limit=2, window_s=window)
    dispatching.append(bus)
    started = time.time()
    for n in range(4):
        bus.publish(Outbound("loopback", "busy", f"busy {n}"))
    bus.publish(Outbound("loopback", "quiet", "quiet 0"))
    await asyncio.wait_for(bus.drained(), 30)
    busy = [(at, m.text) for at, m in channel.sent if m.chat == "busy"]
    assert [text for _, text in busy] == ["busy 0", "busy 1", "busy 2", "busy 3"]
    # No more than 2 in any window: the third waited for the first to leave the window
    # (less a little: the window counts from just before the first send).
    assert busy[2][0] - busy[0][0] >= 0.9 * window and busy[3][0] - busy[1][0] >= 0.9 * window
    quiet_at = next(at for at, m in channel.sent if m.chat == "quiet")
    assert quiet_at < busy[2][0]  # the other chat was not held back behind "busy"
    assert bus.counters.delayed >= 1 and bus.counters.sent == 5
    assert started <= busy[0][0]


async def test_a_message_for_a_channel_not_running_is_counted_and_dropped(
    dispatching: list[Bus],
) -> None:
    bus = Bus({})
    dispatching.append(bus)
    bus.publish(Outbound("telegram", "1", "nobody to send it"))
    await asyncio.wait_for(bus.drained(), 30)
    assert bus.counters.no_channel == 1 and bus.counters.sent == 0
