"""A gateway over in-process loopback channels, and real simulated runs to act on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nanobot_tui.channels.base import Outbound
from nanobot_tui.channels.gateway import Gateway
from nanobot_tui.channels.loopback import LoopbackChannel
from nanobot_tui.config import GatewayConfig
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig

OWNER = "1001"  # on the config's allow-list
STRANGER = "666"
WAIT_S = 90.0  # only stops a hang


def hanoi_spec(disks: int) -> RunSpec:
    return RunSpec(
        domain="hanoi",
        params={"disks": disks},
        sampler="simulated:0.99",
        vote=VoteConfig(k=3),
        label=f"hanoi{disks}",
    )


@asynccontextmanager
async def running_gateway(
    *channels: LoopbackChannel, config: GatewayConfig | None = None, **options: Any
) -> AsyncIterator[Gateway]:
    """A gateway over `channels` (polling runs every 0.05 s) for the block."""
    gateway = Gateway(list(channels), config or GatewayConfig(), poll_s=0.05, **options)
    task = asyncio.create_task(gateway.run())
    try:
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def reply(channel: LoopbackChannel) -> Outbound:
    return await asyncio.wait_for(channel.next_sent(), WAIT_S)


def telegram_config(**more: object) -> GatewayConfig:
    return GatewayConfig.model_validate({"telegram": {"allow": [OWNER]}, **more})
