"""What durability costs: durable steps per second against the same run without a store.

Run: python -m benchmarks.durability [--disks 16 18 20] [--repeat 3] [--json]

For each size, in one process, alternating so that both see the same machine:

- base:     runner.run_domain (in memory, nothing written) with the simulated sampler,
            p = 0.99, k by MAKER's formula for the run (the reference);
- stream:   run_domain with the resumable sampler the durable runner uses for Hanoi
            (seeded.StreamSimulatedSampler: one random stream per 4,096 steps, seeded by
            (seed, segment)) - what resumable randomness costs by itself;
- durable:  the durable runner (start_run + execute): every step in the run store,
            group commits every 50 ms, the tree's counters, the trace file;
- no-trace: the same without the trace file.

Reported: steps/s (median of --repeat), durable time / base time (the aim: under 1.2),
and CPU seconds: the runner's own thread and the store writer's thread (the difference
between the process's CPU and the main thread's). On a machine with a spare core the
writer's work runs beside the runner's (SQLite releases the GIL); on one without, it
adds to the run's time, which the CPU columns show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from typing import Any

from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.maths import k_min
from nanobot_tui.engine.voting.runner import run_domain
from nanobot_tui.engine.voting.samplers.seeded import StreamSimulatedSampler
from nanobot_tui.engine.voting.samplers.simulated import SimulatedSampler

P = 0.99


async def _timed(coro: Any) -> tuple[float, float, float, Any]:
    """(wall s, process CPU s, this thread's CPU s, result)."""
    c0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
    result = await coro
    return (
        time.perf_counter() - w0,
        time.process_time() - c0,
        time.thread_time() - t0,
        result,
    )


async def base(disks: int, k: int, resumable: bool) -> tuple[float, float, float, Any]:
    h = Hanoi(disks)
    cls = StreamSimulatedSampler if resumable else SimulatedSampler
    return await _timed(run_domain(h, cls(h, P, seed=0), VoteConfig(k=k)))


async def durable(disks: int, k: int, traces: bool) -> tuple[float, float, float, Any]:
    spec = RunSpec(
        domain="hanoi",
        params={"disks": disks},
        sampler=f"simulated:{P}",
        vote=VoteConfig(k=k),
        traces=traces,
        label=f"bench{disks}",
    )
    run_id = await start_run(spec)
    out = await _timed(execute(run_id))
    status = out[3]
    assert status.status == "completed" and status.steps_done == (1 << disks) - 1, status
    return out


async def measure(disks: int, repeat: int) -> dict[str, Any]:
    steps = (1 << disks) - 1
    k = k_min(P, steps, 0.95)
    runs: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(repeat):
        for name, make in (
            ("base", lambda: base(disks, k, False)),
            ("stream", lambda: base(disks, k, True)),
            ("durable", lambda: durable(disks, k, True)),
            ("no-trace", lambda: durable(disks, k, False)),
        ):
            wall, cpu, main, _ = await make()
            runs.setdefault(name, []).append((wall, cpu, main))
    out: dict[str, Any] = {"disks": disks, "steps": steps, "k": k, "p": P}
    for name, samples in runs.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        main = statistics.median(s[2] for s in samples)
        out[name] = {
            "steps_per_s": steps / wall,
            "seconds": wall,
            "best_steps_per_s": steps / min(s[0] for s in samples),
            "cpu_s": cpu,
            "main_thread_cpu_s": main,
            "other_threads_cpu_s": max(cpu - main, 0.0),
        }
    b = out["base"]["seconds"]
    for name in ("stream", "durable", "no-trace"):
        out[name]["time_ratio"] = out[name]["seconds"] / b
        out[name]["cpu_ratio"] = out[name]["cpu_s"] / out["base"]["cpu_s"]
        out[name]["main_thread_ratio"] = out[name]["main_thread_cpu_s"] / out["base"]["cpu_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disks", type=int, nargs="+", default=[16, 18, 20])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="nanobot-durability-") as home:
        os.environ["NANOBOT_HOME"] = home
        for disks in args.disks:
            result = asyncio.run(measure(disks, args.repeat))
            results.append(result)
            if not args.json:
                print(
                    f"{disks} disks ({result['steps']:,} steps, k = {result['k']}, "
                    f"median of {args.repeat}):"
                )
                for name in ("base", "stream", "durable", "no-trace"):
                    r = result[name]
                    ratio = f"  x{r['time_ratio']:.3f} time" if "time_ratio" in r else ""
                    print(
                        f"  {name:<9} {r['steps_per_s']:>10,.0f} steps/s{ratio:<14} "
                        f"cpu {r['cpu_s']:6.2f} s (runner thread {r['main_thread_cpu_s']:6.2f}"
                        f", writer {r['other_threads_cpu_s']:5.2f})"
                    )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
