"""A voted run with the real embedded model on a domain where it is above 0.5, against
the MAKER projection from its own calibration, measured in the same run.

Calibrate p on N random word-case steps, then vote S steps at margin k, and compare the
measured per-step error with 1 − p_vote(p, k). (The 135M model's errors are tied to
particular words, which voting cannot decorrelate; the comparison shows by how much.)

    python -m benchmarks.wordcase_real [--steps 150] [--k 3] [--samples 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    from nanobot_tui.engine.serving.manager import ServerManager, resolve_runtime
    from nanobot_tui.engine.serving.slots import ServerSpec
    from nanobot_tui.engine.voting import maths
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
    from nanobot_tui.engine.voting.calibration import calibrate
    from nanobot_tui.engine.voting.domains.wordcase import WordCase
    from nanobot_tui.engine.voting.runner import run_domain
    from nanobot_tui.engine.voting.samplers.model import LLMSampler
    from nanobot_tui.models.catalog import embedded_model_path

    model = embedded_model_path()
    assert model is not None
    spec = ServerSpec(
        model_path=model,
        model_id="smollm2-135m-instruct",
        display_name="SmolLM2-135M-Instruct",
        slots=("rlm",),
        context_size=1024 * 4,
        parallel=4,
        gpu_layers=0,
        size_bytes=model.stat().st_size,
    )
    async with ServerManager([spec], resolve_runtime("embedded")) as manager:
        domain = WordCase(count=args.steps, seed=args.seed)
        sampler = LLMSampler(manager.client("rlm"), domain, name="local rlm: SmolLM2-135M")
        cal = await calibrate(WordCase(count=2000, seed=99), sampler, args.samples, seed=1)
        summary = await run_domain(domain, sampler, VoteConfig(k=args.k), max_steps=args.steps)
    p = cal.p_valid if getattr(cal, "p_valid", None) else cal.p
    s = summary.to_dict()
    projected_error = 1 - maths.p_vote(p, args.k)
    return {
        "calibration": {
            "p": round(cal.p, 4),
            "pValid": round(p, 4),
            "samples": args.samples,
            "secondsPerSample": round(cal.seconds_per_sample, 3),
        },
        "k": args.k,
        "steps": s["steps"],
        "errors": s["errors"],
        "measuredStepError": round(s["errors"] / max(s["steps"], 1), 4),
        "projectedStepError": round(projected_error, 4),
        "projectedErrors": round(projected_error * s["steps"], 1),
        "singleSampleError": round(1 - p, 4),
        "samplesPerStep": round(s["mean_samples_per_step"], 2),
        "projectedSamplesPerStep": round(maths.expected_samples(p, args.k), 2),
        "seconds": round(s["seconds"], 1),
        "stopped": s["stopped"],
        "undecided": s["undecided"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["NANOBOT_HOME"] = tempfile.mkdtemp(prefix="wordcase-real-")
    print(json.dumps(asyncio.run(main_async(args)), indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
