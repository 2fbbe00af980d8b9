"""Aggregate tokens/s while voting with the real embedded model, against the server's own
best with the same parallelism, measured in the same run.

One embedded server with `--parallel k`. References, interleaved with it: k concurrent plain
requests per step, and one request with n=k choices per step (the prompt evaluated once,
the server's best at this parallelism); same word-case prompts, same token cap, no parsing
and no voting, for the same number of steps. Subject: `run_domain` on the word-case domain with
first-to-ahead-by-k voting (the first k samples of a step go out together; later rounds
top up only what is needed). Both report completion tokens per wall second; the ratio
subject / reference is the engine's efficiency (the aim: at least 0.9).

    python -m benchmarks.voting_real [--k 3] [--steps 60] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time


async def reference(client, domain, steps: int, k: int, cap: int) -> float:
    """k concurrent plain requests per step, as many steps: tokens per wall second."""
    from nanobot_tui.engine.llm.request import ChatRequest

    tokens = 0
    started = time.perf_counter()
    for step in list(domain.steps())[:steps]:
        messages = domain.messages(step)
        results = await asyncio.gather(
            *(
                client.chat(ChatRequest(messages, temperature=0.1, max_tokens=cap + 1, seed=i))
                for i in range(k)
            )
        )
        tokens += sum(r.usage.completion_tokens for r in results)
    return tokens / (time.perf_counter() - started)


async def reference_batched(client, domain, steps: int, k: int, cap: int) -> float:
    """One request with n=k choices per step (the prompt evaluated once): the server's best
    at this parallelism. llama.cpp reports usage for choice 0 only, so each choice's tokens
    are counted from its logprobs."""
    from nanobot_tui.engine.llm.request import ChatRequest

    tokens = 0
    started = time.perf_counter()
    for step in list(domain.steps())[:steps]:
        result = await client.chat(
            ChatRequest(
                domain.messages(step),
                temperature=0.1,
                max_tokens=cap + 1,
                n=k,
                extra={"logprobs": True, "top_logprobs": 1},
            )
        )
        for choice in result.raw["choices"]:
            tokens += len((choice.get("logprobs") or {}).get("content") or [])
    return tokens / (time.perf_counter() - started)


async def voting(client, domain, steps: int, k: int, cap: int) -> tuple[float, dict]:
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
    from nanobot_tui.engine.voting.runner import run_domain
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    sampler = LLMSampler(client, domain, name="local main: SmolLM2-135M-Instruct", token_cap=cap)
    started = time.perf_counter()
    summary = await run_domain(domain, sampler, VoteConfig(k=k, token_cap=cap), max_steps=steps)
    wall = time.perf_counter() - started
    result = summary.to_dict()
    return result["completion_tokens"] / wall, result


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    from nanobot_tui.engine.serving.manager import ServerManager, resolve_runtime
    from nanobot_tui.engine.serving.slots import ServerSpec
    from nanobot_tui.engine.voting.domains.wordcase import WordCase
    from nanobot_tui.models.catalog import embedded_model_path

    model = embedded_model_path()
    assert model is not None
    spec = ServerSpec(
        model_path=model,
        model_id="smollm2-135m-instruct",
        display_name="SmolLM2-135M-Instruct",
        slots=("main",),
        context_size=1024 * args.k,
        parallel=args.k,
        gpu_layers=0,
        size_bytes=model.stat().st_size,
    )
    ours, theirs, batched, summaries = [], [], [], []
    async with ServerManager([spec], resolve_runtime("embedded")) as manager:
        client = manager.client("main")
        domain = WordCase(count=args.steps, seed=1)
        await reference(client, domain, 3, args.k, args.cap)  # warm-up
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            theirs.append(await reference(client, domain, args.steps, args.k, args.cap))
            batched.append(await reference_batched(client, domain, args.steps, args.k, args.cap))
            rate, summary = await voting(client, domain, args.steps, args.k, args.cap)
            ours.append(rate)
            summaries.append(summary)
    return {
        "k": args.k,
        "steps": args.steps,
        "runs": args.runs,
        "votingTokensPerS": round(statistics.median(ours), 1),
        "serverSeparateTokensPerS": round(statistics.median(theirs), 1),
        "serverBatchedTokensPerS": round(statistics.median(batched), 1),
        "ratioToSeparate": round(statistics.median(ours) / statistics.median(theirs), 3),
        "ratioToBest": round(
            statistics.median(ours) / max(statistics.median(theirs), statistics.median(batched)),
            3,
        ),
        "lastRun": {k: summaries[-1][k] for k in ("steps", "errors", "samples")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cap", type=int, default=32, help="token cap per sample")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["NANOBOT_HOME"] = tempfile.mkdtemp(prefix="voting-real-")
    out = asyncio.run(main_async(args))
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
