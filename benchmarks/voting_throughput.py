"""Voting engine throughput with the simulated sampler, and MAKER's 20-disk run.

Run: python -m benchmarks.voting_throughput [--runs 5] [--steps 200000] [--no-full] [--json]

1. Voted steps per second at p = 0.99, k = 3 (median of --runs runs of --steps steps):
   the whole engine (run_domain: vote, verify against the truth, hand on, monitor) on a
   20-disk Towers of Hanoi, and the bare vote() on a constant step for reference. The aim
   is >= 10,000 steps/s, so the engine is never what a million-step run waits on.
2. The full 20-disk run (1,048,575 steps) at p = 0.99 with k = k_min(p, 2^20 - 1, 0.95):
   steps, errors, solved, seconds, k, the vote histogram and MAKER's undecided decay.

The sampler is simulated (named "simulated p=0.99" in every figure): no model is involved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Hashable
from typing import Any

from nanobot_tui.engine.voting.ahead_by_k import VoteConfig, vote
from nanobot_tui.engine.voting.domains import Step
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.maths import expected_samples, k_min, p_vote, success
from nanobot_tui.engine.voting.runner import run_domain
from nanobot_tui.engine.voting.samplers.simulated import SimulatedSampler

P = 0.99
K = 3
DISKS = 20
TARGET = 0.95


class Constant:
    """The cheapest possible domain: one truth, three wrongs; isolates vote()."""

    name = "constant"

    def truth(self, step: Step) -> str:
        return "right"

    def key(self, answer: Any) -> Hashable:
        return answer

    def wrong_answers(self, step: Step, count: int) -> list[str]:
        return [f"wrong {i}" for i in range(count)]


async def engine_rate(steps: int, seed: int) -> float:
    h = Hanoi(DISKS)
    summary = await run_domain(
        h, SimulatedSampler(h, P, seed=seed), VoteConfig(k=K), max_steps=steps
    )
    return summary.steps / summary.seconds


async def bare_vote_rate(steps: int, seed: int) -> float:
    sampler = SimulatedSampler(Constant(), P, seed=seed)  # type: ignore[arg-type]
    cfg = VoteConfig(k=K)
    t0 = time.perf_counter()
    for i in range(steps):
        await vote(sampler, Step(i, None), cfg)
    return steps / (time.perf_counter() - t0)


async def full_run(seed: int) -> dict[str, Any]:
    h = Hanoi(DISKS)
    k = k_min(P, h.total_steps(), TARGET)
    summary = await run_domain(h, SimulatedSampler(h, P, seed=seed), VoteConfig(k=k))
    return {
        "disks": DISKS,
        "p": P,
        "k": k,
        "steps": summary.steps,
        "errors": summary.errors,
        "solved": summary.solved,
        "seconds": round(summary.seconds, 2),
        "steps_per_s": round(summary.steps_per_s),
        "mean_samples_per_step": round(summary.mean_samples_per_step, 4),
        "expected_samples_per_step_one_rival": round(expected_samples(P, k), 4),
        "votes_per_step": summary.votes_per_step,
        "undecided_after_round": summary.undecided_after_round,
        "p_estimate": round(summary.p_estimate or 0.0, 5),
        "projected_success": round(success(P, k, h.total_steps()), 4),
        "expected_errors": h.total_steps() * (1 - p_vote(P, k)),
    }


async def measure(runs: int, steps: int, full: bool) -> dict[str, Any]:
    await engine_rate(2000, 0)  # warm-up
    engine = []
    bare = []
    for r in range(runs):  # interleaved, so drift hits both alike
        engine.append(await engine_rate(steps, r + 1))
        bare.append(await bare_vote_rate(steps, r + 1))
    result: dict[str, Any] = {
        "sampler": f"simulated p={P}",
        "k": K,
        "runs": runs,
        "steps_per_run": steps,
        "engine_steps_per_s": round(statistics.median(engine)),
        "engine_steps_per_s_all": [round(x) for x in engine],
        "bare_vote_steps_per_s": round(statistics.median(bare)),
        "aim_steps_per_s": 10_000,
    }
    if full:
        result["full_20_disks"] = await full_run(seed=2026)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--no-full", action="store_true", help="skip the 20-disk run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(max(args.runs, 1), max(args.steps, 1000), not args.no_full))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"engine (run_domain, hanoi-{DISKS}, {result['sampler']}, k={K}): "
        f"median {result['engine_steps_per_s']:,} voted steps/s over {args.runs} runs of "
        f"{result['steps_per_run']:,} steps {result['engine_steps_per_s_all']} "
        f"(aim >= 10,000)"
    )
    print(f"bare vote() on a constant step: median {result['bare_vote_steps_per_s']:,} steps/s")
    full = result.get("full_20_disks")
    if full:
        print(
            f"20-disk run, {result['sampler']}, k={full['k']} (k_min for t={TARGET}): "
            f"{full['steps']:,} steps, {full['errors']} errors, solved={full['solved']}, "
            f"{full['seconds']} s ({full['steps_per_s']:,} steps/s)"
        )
        print(
            f"  samples/step {full['mean_samples_per_step']} (formula, one rival: "
            f"{full['expected_samples_per_step_one_rival']}); p estimate {full['p_estimate']}; "
            f"projected success {full['projected_success']}, expected errors "
            f"{full['expected_errors']:.3g}"
        )
        print(f"  votes per step: {full['votes_per_step']}")
        print(f"  undecided after round 1, 2, ...: {full['undecided_after_round']}")


if __name__ == "__main__":
    main()
