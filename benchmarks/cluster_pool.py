"""Voted sampling over a Ray cluster's pool of llama hosts, against each host on its own.

Run: nice -n 10 python -m benchmarks.cluster_pool [--seconds 15] [--repeats 3] [--json]

A real cluster on this machine (ray.cluster_utils.Cluster: a head and one worker raylet,
one CPU each), one llama host per node on the embedded model (SmolLM2-135M, one llama
thread each), as the pool runs them: engine.cluster.host_actor.ModelHost actors pinned to
their nodes. The benchmark's hosts are a subclass that also tells the driver its server's
URL and key, so the same servers can be asked directly over HTTP.

(1) Throughput. Workers draw the first round of a k = 3 vote on random word-case steps
(LLMSampler.sample with temperatures [0, 0.1, 0.1]: one request at T = 0, one of n = 2),
as many workers as the hosts have slots, for `--seconds`:
  - each host alone, asked directly (LLMClient to its URL): the host's own best;
  - the pool of both hosts (PoolClient over HostPool) at the sum of their slots;
  - the pool of one host, at its slots.
Tokens/s are completion tokens over the phase's wall time; the ratios are the pool's
against the sum of the hosts' own (aim: >= 0.9) and one host's pool against that host.
(2) Overhead per request. One-token requests (max_tokens 1, T = 0, the same prompt: the
prompt cache warm), one at a time, interleaved: through the pool (Ray actor call, then
the host's HTTP) against LLMClient straight to the same host; the median paired difference.
(3) Projection. A 1,048,575-step run at target 0.95 on N such hosts: k from the measured p
(the share of samples whose answer is the step's truth), expected samples per step from
engine/voting/maths, at N times the measured per-host rate times the pool's efficiency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

STEPS = 1_048_575
TARGET = 0.95
K = 3
TEMPS = [0.0, 0.1, 0.1]  # the first round of a k = 3 vote (VoteConfig's temperatures)
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}


@dataclass
class Load:
    seconds: float
    tokens: int
    samples: int
    correct: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


async def drive(sampler: Any, domain: Any, workers: int, seconds: float, seed: int) -> Load:
    """`workers` loops drawing vote rounds on random steps until `seconds` have passed."""
    rng = random.Random(seed)
    total = domain.total_steps()
    counts = {"tokens": 0, "samples": 0, "correct": 0}
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            step = domain.step_at(rng.randrange(total))
            truth = domain.key(domain.truth(step))
            for sample in await sampler.sample(step, TEMPS):
                counts["tokens"] += sample.completion_tokens
                counts["samples"] += 1
                counts["correct"] += sample.key == truth

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Load(time.perf_counter() - start, **counts)


async def drive_together(
    loads: list[tuple[Any, int]], domain: Any, seconds: float, seed: int
) -> Load:
    """Each (sampler, workers) driven at the same time, summed: every host busy at once
    without the pool, so the box's shared cores weigh on it as on the pool."""
    parts = await asyncio.gather(
        *(drive(smp, domain, workers, seconds, seed + i) for i, (smp, workers) in enumerate(loads))
    )
    return Load(
        max(part.seconds for part in parts),
        sum(part.tokens for part in parts),
        sum(part.samples for part in parts),
        sum(part.correct for part in parts),
    )


def bench_host_class() -> Any:
    """ModelHost with one more method, for this benchmark only: its server's URL and key,
    so the driver can ask the same server directly."""
    from nanobot_tui.engine.cluster.host_actor import ModelHost

    class BenchHost(ModelHost):
        async def endpoint(self) -> tuple[str, str]:
            await self._ensure_up()
            assert self._server is not None
            return self._server.base_url, self._api_key

    return BenchHost


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="nanobot-cluster-bench-")
    os.environ["NANOBOT_HOME"] = home  # the raylets (and so the hosts) keep it
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from nanobot_tui.config import Config
    from nanobot_tui.engine.cluster import ray_runtime
    from nanobot_tui.engine.cluster.host_actor import HostSpec, actor_name
    from nanobot_tui.engine.cluster.pool import RAY, HostPool, Member
    from nanobot_tui.engine.cluster.pool_client import PoolClient
    from nanobot_tui.engine.llm.openai import LLMClient
    from nanobot_tui.engine.llm.request import ChatRequest
    from nanobot_tui.engine.voting import maths
    from nanobot_tui.engine.voting.domains.registry import build_domain
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    cluster.add_node(**NODE)
    ray_runtime.connect(cluster.address)
    spec = HostSpec.for_slot(Config(), "rlm", threads=1)
    host_class = ray.remote(bench_host_class())
    members: list[Member] = []
    clients: list[LLMClient] = []
    try:
        await asyncio.to_thread(cluster.wait_for_nodes)
        for node in ray_runtime.alive_nodes():
            name = actor_name("bench", node.node_id)
            handle = host_class.options(
                name=name, namespace=ray_runtime.NAMESPACE, num_cpus=0, max_concurrency=1000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            ).remote(spec, name, 1)  # fmt: skip
            info = await handle.start.remote()
            url, key = await handle.endpoint.remote()
            members.append(Member(name, RAY, info.slots, info.node_id, info.address, handle))
            clients.append(LLMClient(url, api_key=key, retries=0))
        domain = build_domain("wordcase", {"words": 300, "seed": 0})

        def sampler(client: Any, label: str) -> LLMSampler:
            return LLMSampler(client, domain, name=f"{label}: {spec.server.display_name}", seed=1)

        def pool_of(hosts: list[Member]) -> PoolClient:
            pool = HostPool(None, refresh_interval=0)
            for member in hosts:
                pool.members.append(
                    Member(member.name, RAY, member.slots, member.node_id, member.address,
                           member.handle)
                )  # fmt: skip
            return PoolClient(pool)

        slots = [m.slots for m in members]
        for client in clients:  # each server's first requests load and warm it
            await drive(sampler(client, "warm-up"), domain, 1, 2.0, seed=99)
        phases: dict[str, list[Load]] = {}
        for repeat in range(args.repeats):
            order: list[tuple[str, Any, int]] = [
                *((f"host{i}", sampler(c, "direct"), slots[i]) for i, c in enumerate(clients)),
                ("pool", sampler(pool_of(members), "pool"), sum(slots)),
                ("pool1", sampler(pool_of(members[:1]), "pool1"), slots[0]),
            ]
            order.insert(len(clients), ("together", None, 0))
            if repeat % 2:
                order.reverse()
            for label, smp, workers in order:
                if label == "together":
                    direct = [(sampler(c, "direct"), slots[i]) for i, c in enumerate(clients)]
                    load = await drive_together(direct, domain, args.seconds, seed=repeat)
                else:
                    load = await drive(smp, domain, workers, args.seconds, seed=repeat)
                phases.setdefault(label, []).append(load)
                print(f"  {label}: {load.tokens_per_s:.1f} tok/s", file=sys.stderr, flush=True)

        def med(label: str, what: str) -> float:
            return statistics.median(getattr(load, what) for load in phases[label])

        hosts_sum = sum(med(f"host{i}", "tokens_per_s") for i in range(len(members)))
        pool_ratios = [
            phases["pool"][r].tokens_per_s
            / sum(phases[f"host{i}"][r].tokens_per_s for i in range(len(members)))
            for r in range(args.repeats)
        ]
        together_ratios = [
            phases["pool"][r].tokens_per_s / phases["together"][r].tokens_per_s
            for r in range(args.repeats)
        ]
        one_ratios = [
            phases["pool1"][r].tokens_per_s / phases["host0"][r].tokens_per_s
            for r in range(args.repeats)
        ]
        throughput = {
            "per_host_tokens_per_s": [
                round(med(f"host{i}", "tokens_per_s"), 1) for i in range(len(members))
            ],
            "sum_of_hosts_tokens_per_s": round(hosts_sum, 1),
            "pool_tokens_per_s": round(med("pool", "tokens_per_s"), 1),
            "pool_over_sum": round(statistics.median(pool_ratios), 3),
            "pool_over_sum_each_repeat": [round(r, 3) for r in pool_ratios],
            "hosts_together_tokens_per_s": round(med("together", "tokens_per_s"), 1),
            "pool_over_together": round(statistics.median(together_ratios), 3),
            "pool_over_together_each_repeat": [round(r, 3) for r in together_ratios],
            "one_host_pool_tokens_per_s": round(med("pool1", "tokens_per_s"), 1),
            "one_host_pool_over_host": round(statistics.median(one_ratios), 3),
            "slots_per_host": slots,
        }

        # (2) overhead per one-token request, interleaved, paired
        pool_client = pool_of(members[:1])
        direct = clients[0]
        request = ChatRequest(
            [{"role": "user", "content": "Reply with one word: hello"}],
            temperature=0.0, max_tokens=1, seed=0,
        )  # fmt: skip
        through: list[float] = []
        straight: list[float] = []

        async def timed(client: Any) -> float:
            start = time.perf_counter()
            await client.chat(request)
            return time.perf_counter() - start

        for _ in range(10):
            await timed(pool_client)
            await timed(direct)
        for i in range(args.requests):
            if i % 2:
                through.append(await timed(pool_client))
                straight.append(await timed(direct))
            else:
                straight.append(await timed(direct))
                through.append(await timed(pool_client))
        diffs = [a - b for a, b in zip(through, straight, strict=True)]
        overhead = {
            "requests": args.requests,
            "through_ray_median_ms": round(statistics.median(through) * 1e3, 2),
            "direct_http_median_ms": round(statistics.median(straight) * 1e3, 2),
            "overhead_median_ms": round(statistics.median(diffs) * 1e3, 2),
        }

        # (3) projection from the measured per-host rate
        samples = sum(load.samples for loads in phases.values() for load in loads)
        correct = sum(load.correct for loads in phases.values() for load in loads)
        p = correct / samples
        per_host = statistics.median(med(f"host{i}", "samples_per_s") for i in range(len(members)))
        efficiency = throughput["pool_over_sum"]
        projection: dict[str, Any] = {
            "p": round(p, 4),
            "samples": samples,
            "per_host_samples_per_s": round(per_host, 3),
        }
        projection["at_measured_p"] = project(maths, p, per_host, efficiency)
        # The embedded model's calibrated p on word case (domains/micro.py's table), for
        # when this run's few samples put p at or below 0.5.
        at_reference = project(maths, args.p_reference, per_host, efficiency)
        projection["at_reference_p"] = {"p": args.p_reference, **at_reference}
        return {
            "model": spec.server.display_name,
            "nodes": len(members),
            "seconds_per_phase": args.seconds,
            "repeats": args.repeats,
            "throughput": throughput,
            "overhead": overhead,
            "projection": projection,
        }
    finally:
        for client in clients:
            await client.close()
        for member in members:
            try:
                await asyncio.wait_for(member.handle.stop.remote(), timeout=15)
                ray.kill(member.handle, no_restart=True)
            except Exception as exc:  # the node may already be gone
                print(f"  stop {member.name}: {exc}", file=sys.stderr)
        ray_runtime.disconnect()
        cluster.shutdown()


def project(maths: Any, p: float, per_host: float, efficiency: float) -> dict[str, Any]:
    """k for a 1,048,575-step run at TARGET and, on N hosts, samples per step and days:
    one host at its own rate (`per_host` samples/s), N > 1 at N times that times the
    pool's measured `efficiency`."""
    try:
        k = maths.k_min(p, STEPS, TARGET)
    except maths.Infeasible as exc:
        return {"infeasible": str(exc)}
    out: dict[str, Any] = {"k": k}
    for n in (1, 2, 4, 10):
        rate = per_host if n == 1 else n * per_host * efficiency
        plan = maths.project(p, STEPS, TARGET, k=k, samples_per_s=rate)
        out[f"hosts_{n}"] = {
            "samples_per_step": round(plan.samples_per_step, 3),
            "days": round((plan.seconds or 0.0) / 86400, 1),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="each phase's length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100, help="overhead pairs")
    parser.add_argument(
        "--p-reference", type=float, default=0.85, help="a calibrated p to project at too"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
