"""The gateway on this machine: messages per second through the bus, commands per second
answered end to end, and the latency from a run's milestone (its store write) to the
message leaving on a channel.

Run: python -m benchmarks.gateway_bus [--messages 50000] [--commands 2000] [--milestones 40]
     [--json]

All through the in-process loopback channel (channels/loopback.py: two queues), so what
is measured is nanobot's own cost, not Telegram's or an SMTP server's:
  bus:        `--messages` outbound messages over 100 chats (no rate limit in the way)
              published at once; messages/s from the first publish until the bus drained.
  commands:   `--commands` "/help" from an allowed sender (rate limit 10,000 a minute),
              one after another, each waited for: the inbound queue, the allow-list, the
              handler, the dispatcher.
  milestones: a real simulated run (hanoi, 63 steps, stopped after 10) watched by a loopback
              chat (rate limit 10,000 a minute); its status is written to its store
              (`record_status`: paused, then stopped, alternately) and the time until the
              "paused"/"stopped" milestone is sent is taken, `--milestones` times, at the
              gateway's default poll of 1 s and at 0.1 s. Each write comes at a random
              point between two looks, so the latency is about half the poll interval
              plus one look at the store.
A private NANOBOT_HOME in a temporary folder is used and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from typing import Any


def _stats_ms(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1e3, 1),
        "p90_ms": round(statistics.quantiles(samples, n=10)[-1] * 1e3, 1),
        "max_ms": round(max(samples) * 1e3, 1),
    }


async def bench_bus(messages: int) -> dict[str, Any]:
    from nanobot_tui.channels.base import Outbound
    from nanobot_tui.channels.bus import Bus
    from nanobot_tui.channels.loopback import LoopbackChannel

    channel = LoopbackChannel()
    bus = Bus({"loopback": channel}, rate_limit=messages + 1)
    task = asyncio.create_task(bus.dispatch())
    started = time.perf_counter()
    for n in range(messages):
        bus.publish(Outbound("loopback", f"chat{n % 100}", f"message {n}"))
    await bus.drained()
    seconds = time.perf_counter() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert bus.counters.sent == messages
    return {"messages": messages, "seconds": round(seconds, 3), "per_s": round(messages / seconds)}


async def bench_commands(commands: int) -> dict[str, Any]:
    from nanobot_tui.channels.gateway import Gateway
    from nanobot_tui.channels.loopback import LoopbackChannel
    from nanobot_tui.config import GatewayConfig

    channel = LoopbackChannel("telegram")
    config = GatewayConfig.model_validate(
        {"telegram": {"allow": ["1"]}, "rateLimitPerMinute": 10_000}
    )
    gateway = Gateway([channel], config, write_state=False)
    task = asyncio.create_task(gateway.run())
    times: list[float] = []
    for _ in range(commands):
        began = time.perf_counter()
        channel.say("1", "/help")
        await channel.next_sent()
        times.append(time.perf_counter() - began)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    total = sum(times)
    return {"commands": commands, "per_s": round(commands / total), **_stats_ms(times)}


async def bench_milestones(count: int, poll_s: float) -> dict[str, Any]:
    from nanobot_tui.channels.gateway import Gateway
    from nanobot_tui.channels.loopback import LoopbackChannel
    from nanobot_tui.channels.subscriptions import Subscriptions, Target
    from nanobot_tui.config import GatewayConfig
    from nanobot_tui.engine.runs.control import record_status
    from nanobot_tui.engine.runs.durable import execute, start_run
    from nanobot_tui.engine.runs.spec import Budgets, RunSpec
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig

    spec = RunSpec(domain="hanoi", params={"disks": 6}, sampler="simulated:0.99",
                   vote=VoteConfig(k=3), label="bench")  # fmt: skip
    rid = await start_run(spec)
    await execute(rid, budgets=Budgets(steps=10))
    Subscriptions().subscribe(rid, Target("loopback", "me"))
    channel = LoopbackChannel()
    config = GatewayConfig(rate_limit_per_minute=10_000)  # 20 a minute would hold them back
    gateway = Gateway([channel], config, poll_s=poll_s, write_state=False)
    task = asyncio.create_task(gateway.run())
    await channel.next_sent()  # the run's first look: "stopped (budget)"
    latencies: list[float] = []
    rng = random.Random(0)
    for n in range(count):
        await asyncio.sleep(rng.uniform(0, poll_s))  # anywhere between two looks
        status = "paused" if n % 2 == 0 else "stopped"
        await asyncio.to_thread(record_status, rid, status, "benchmark")
        written = time.time()
        sent = await channel.next_sent()
        assert f": {status} (benchmark)" in sent.text, sent.text
        latencies.append(channel.sent[-1][0] - written)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {"poll_s": poll_s, "milestones": count, **_stats_ms(latencies)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "bus": await bench_bus(args.messages),
        "commands": await bench_commands(args.commands),
        "milestones": [
            await bench_milestones(args.milestones, 1.0),
            await bench_milestones(args.milestones, 0.1),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--milestones", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="nanobot-bench-gateway-")
    os.environ["NANOBOT_HOME"] = home
    try:
        result = asyncio.run(main_async(args))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(home)
    if args.json:
        print(json.dumps(result))
        return
    bus, cmds = result["bus"], result["commands"]
    print(f"bus: {bus['messages']:,} messages in {bus['seconds']} s: {bus['per_s']:,}/s")
    print(
        f"commands (/help, one at a time): {cmds['per_s']:,}/s, median {cmds['median_ms']} ms, "
        f"p90 {cmds['p90_ms']} ms"
    )
    for m in result["milestones"]:
        print(
            f"milestone latency (store write -> send) at poll {m['poll_s']} s: median "
            f"{m['median_ms']} ms, p90 {m['p90_ms']} ms, max {m['max_ms']} ms "
            f"over {m['milestones']}"
        )


if __name__ == "__main__":
    main()
