"""What distillation does to one step type: p before and after a LoRA adapter trained on
nanobot's own verified work, and what that p means for k_min and for the cost of a
million-step run.

1. The work. In a private NANOBOT_HOME, one durable run of `--items` word-case steps
   (`--family wordcase`: the `wordcase` domain, step type "wordcase"; or a `micro`
   family, "micro:<family>") with learning on (`learn_loops=("reuse", "examples")`), on
   the REAL embedded model (SmolLM2-135M, one server, `--threads` llama.cpp threads), as
   `nanobot run` does it. Only answers the truth verified land in learned.db (L0
   results and L1 examples): that is the training data a user would have.
2. The training set (dataset.py: deduplicated, the held-out split by a hash of the
   input, never trained on), the adapter trained on it (train.py, `--train-threads`
   torch threads, `--epochs`), written as a llama.cpp adapter GGUF.
3. The A/B test (ab_test.py): one server with the adapter loaded, base (scale 0) against
   adapter (scale 1) on the same prompts, interleaved, greedy; p of each with its Wilson
   95 % interval and the paired difference's interval, and the engine's verdict. On two
   sets of steps:
   - "heldout": the store's held-out split, what `nanobot learn` tests on. These are
     steps the model's vote got right (only verified answers are stored), so they are
     easier than a random step: the base p there is biased upwards.
   - "fresh": `--fresh` steps of the same type that were never run (not in the store at
     all): an unbiased sample of the step type, for the p that k_min needs.
4. For each set and arm, from engine.voting.maths: k_min for a 1,048,575-step run
   (Hanoi with 20 discs) at 95 % whole-run success, and the expected samples per step
   (`expected_samples(p, k_min)`: first-to-ahead-by-k, one rival) and in all; None,
   with the reason, where p <= 0.5 (voting cannot help there). Also k_min at the lower
   end of p's interval: a p of 1.0 measured on a few dozen steps is not a p of 1.

p here is one greedy answer's success rate; the runs vote samples at temperature > 0,
whose p is measured by `nanobot calibrate` (0.665 for word case on this model). The A/B
compares like with like; the projections say what the same change of p would do.

    python -m benchmarks.distill_gain [--family wordcase] [--items 160] [--epochs 1]
        [--k 2] [--fresh 60] [--threads 1] [--train-threads 1] [--base-dir DIR]
        [--home DIR] [--no-run] [--json]

`--home DIR` keeps the home (learned.db, the job folder with train/heldout.jsonl and the
adapter); without it a temporary one is deleted at the end. `--base-dir` reuses a base
checkpoint train.py made before (NANOBOT_HOME/distill/base/<model>/), instead of making
it again in the private home (a minute or more). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from benchmarks.learning_curve import nanobot_home

if TYPE_CHECKING:
    from nanobot_tui.engine.learning.distill.ab_test import ABResult
    from nanobot_tui.engine.learning.distill.dataset import TrainingExample, TrainingSet
    from nanobot_tui.engine.learning.distill.train import TrainConfig, TrainResult
    from nanobot_tui.engine.llm.chat_client import ChatClient
    from nanobot_tui.engine.voting.domains import Domain

RUN_STEPS = 1_048_575  # 2^20 - 1: the moves of Hanoi with 20 discs, MAKER's million steps
RUN_TARGET = 0.95  # whole-run success that k_min must reach


class Trainer(Protocol):
    """train.py's `train_lora`, or a test's fake with its signature."""

    def __call__(
        self,
        config: TrainConfig,
        examples: Sequence[TrainingExample],
        *,
        progress: Callable[[Any], None] | None = None,
        stop: threading.Event | None = None,
    ) -> TrainResult: ...


# Serves a model with the adapter file loaded; yields a client and the adapter's id.
Serve = Callable[[Path], AbstractAsyncContextManager[tuple["ChatClient", int]]]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def step_type_and_params(family: str, items: int, seed: int) -> tuple[str, str, dict[str, Any]]:
    """(step type, domain, run params) of `--family`: "wordcase" is the wordcase domain,
    any other name a family of the micro domain."""
    if family == "wordcase":
        return "wordcase", "wordcase", {"words": items, "seed": seed}
    return f"micro:{family}", "micro", {"family": family, "words": items, "seed": seed}


# --- the maths -----------------------------------------------------------------------------


def projection(p: float, steps: int = RUN_STEPS, target: float = RUN_TARGET) -> dict[str, Any]:
    """k_min and the expected samples (per step and in all) of a `steps`-step run at `p`;
    where voting cannot reach the target (p <= 0.5), k_min is None and `note` says why."""
    from nanobot_tui.engine.voting import maths

    try:
        k = maths.k_min(p, steps, target)
    except maths.Infeasible as exc:
        return {"p": p, "k_min": None, "samples_per_step": None, "total_samples": None,
                "note": exc.reason}  # fmt: skip
    per_step = maths.expected_samples(p, k)
    return {
        "p": p,
        "k_min": k,
        "samples_per_step": per_step,
        "total_samples": per_step * steps,
        "note": "",
    }


def ab_summary(ab: ABResult) -> dict[str, Any]:
    """One A/B test with both arms' projections (at p and, more cautious, at the lower
    end of p's 95 % interval) and the change of cost (at p)."""
    base, adapter = projection(ab.base.p), projection(ab.adapter.p)
    ratio = None
    if base["total_samples"] and adapter["total_samples"]:
        ratio = adapter["total_samples"] / base["total_samples"]
    return {
        **ab.to_dict(),
        "moved": ab.adapter.right != ab.base.right,
        "base": base,
        "adapter": adapter,
        "base_at_ci_low": projection(ab.base.interval[0]),
        "adapter_at_ci_low": projection(ab.adapter.interval[0]),
        "cost_ratio": ratio,  # adapter's expected samples / base's, None if either infeasible
    }


# --- the harness ---------------------------------------------------------------------------


def fresh_steps(
    domain: Domain, seen: set[str], count: int, domain_name: str, params: dict[str, Any]
) -> list[TrainingExample]:
    """Up to `count` steps of the step type that are not in `seen` (user texts of the
    store's and the run's steps), with their truth as the verified answer: the engine's
    `fresh_examples`, what `nanobot learn` A/B tests on (`domain_name` is the run's)."""
    from nanobot_tui.engine.learning.distill.dataset import fresh_examples

    return fresh_examples(domain, seen, count, seed=int(params.get("seed", 0)) + 1)


@dataclass
class Distilled:
    training_set: TrainingSet
    result: TrainResult
    wall_s: float  # training, as measured around the trainer


def distill(
    step_type: str,
    domain: Domain,
    *,
    trainer: Trainer,
    base_gguf: Path,
    base_dir: Path | None,
    epochs: int,
    threads: int,
    seed: int = 0,
) -> Distilled:
    """The training set of `step_type` from this NANOBOT_HOME's learned.db and an adapter
    trained on its training part (job folder: NANOBOT_HOME/distill/jobs/...)."""
    from nanobot_tui.engine.learning.distill import train as training
    from nanobot_tui.engine.learning.distill.dataset import build_dataset, write_dataset
    from nanobot_tui.engine.learning.store import LearningStore

    store = LearningStore.open_existing()
    if store is None:
        raise SystemExit("distill_gain: no learned.db: the runs stored no verified work")
    with store:
        training_set = build_dataset(store, step_type, domain=domain)
    job_dir = training.job_folder(step_type)
    write_dataset(training_set, job_dir)
    say(f"training set: {training_set.counts.describe()}")
    config = training.TrainConfig(
        job_dir=job_dir, base_gguf=base_gguf, base_dir=base_dir, epochs=epochs,
        threads=threads, seed=seed,
    )  # fmt: skip
    started = time.perf_counter()
    result = trainer(config, training_set.train, progress=train_progress(10.0))
    wall = time.perf_counter() - started
    if result.adapter is None:
        raise SystemExit(f"distill_gain: training stopped at step {result.steps} (no adapter)")
    return Distilled(training_set, result, wall)


async def measure(
    distilled: Distilled,
    domain: Domain,
    fresh: Sequence[TrainingExample],
    serve: Serve,
) -> dict[str, Any]:
    """A/B test the adapter on the held-out and the fresh steps; the whole report."""
    from nanobot_tui.engine.learning.distill.ab_test import ab_test, truth_judge

    adapter = distilled.result.adapter
    assert adapter is not None
    judge = truth_judge(domain)
    tests: dict[str, ABResult] = {}
    async with serve(adapter.path) as (client, adapter_id):
        for name, steps in (("heldout", distilled.training_set.heldout), ("fresh", fresh)):
            if steps:
                say(f"A/B on {len(steps)} {name} steps")
                tests[name] = await ab_test(client, adapter_id, steps, judge)
    return {
        "step_type": distilled.training_set.step_type,
        "dataset": distilled.training_set.counts.to_dict(),
        "training": training_report(distilled),  # the caller adds epochs and threads
        "adapter": adapter_report(distilled),
        "run_steps": RUN_STEPS,
        "run_target": RUN_TARGET,
        "ab": {name: ab_summary(ab) for name, ab in tests.items()},
    }


# --- the real model ------------------------------------------------------------------------


def training_report(distilled: Distilled) -> dict[str, Any]:
    """What training took and how its loss went, for a report."""
    result = distilled.result
    return {
        "examples": result.examples,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "wall_s": round(distilled.wall_s, 1),
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.final_loss,
    }


def adapter_report(distilled: Distilled) -> dict[str, Any]:
    """The trained adapter file, for a report."""
    adapter = distilled.result.adapter
    assert adapter is not None
    return {
        "path": str(adapter.path),
        "bytes": adapter.size_bytes,
        "rank": adapter.rank,
        "alpha": adapter.alpha,
        "tensors": len(adapter.tensors),
    }


def train_progress(every_s: float) -> Callable[[Any], None]:
    """A training progress callback that says a line at most every `every_s` seconds,
    and at the last step."""
    last = [0.0]

    def progress(p: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or p.step == p.steps:
            last[0] = now
            say(f"train: {p.describe()}")

    return progress


async def base_dir_for(args: argparse.Namespace, model: Path) -> Path:
    """`--base-dir`, else the model's base checkpoint for training (made once per home)."""
    from nanobot_tui.engine.learning.distill import train as training

    if args.base_dir:
        return Path(args.base_dir)
    say("making the base checkpoint (once per home)")
    return await asyncio.to_thread(training.base_checkpoint, model)


def serving(args: argparse.Namespace) -> Serve:
    """Serve an adapter: the rlm server started with it loaded, its client and the
    adapter's id there."""

    @asynccontextmanager
    async def serve(adapter: Path) -> AsyncIterator[tuple[ChatClient, int]]:
        bench = workbench(args, [adapter])
        async with bench:
            served = await bench.manager.lora_adapters("rlm")
            loaded = {Path(a.path).resolve(): a.id for a in served}
            yield bench.client("rlm"), loaded[adapter.resolve()]

    return serve


def workbench(args: argparse.Namespace, adapters: Sequence[Path] = ()) -> Any:
    """The embedded model's server for the rlm slot, `--threads` threads, with
    `adapters` loaded at scale 0."""
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench

    # On a machine busier than its cores, one llama.cpp thread is the fastest.
    return Workbench(
        load_config()[0], only_slots=("rlm",), extra_adapters={"rlm": list(adapters)},
        threads=args.threads,
    )  # fmt: skip


async def make_work(
    args: argparse.Namespace, domain_name: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The durable run that stores the verified work (module docstring, 1); its numbers."""
    from nanobot_tui.engine.runs.durable import execute, start_run
    from nanobot_tui.engine.runs.spec import RetryPolicy, RunSpec
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
    from nanobot_tui.engine.voting.domains.registry import DOMAINS
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    spec = RunSpec(
        domain=domain_name, params=params, sampler="local:rlm", seed=args.seed,
        label=DOMAINS[domain_name].label(params),
        vote=VoteConfig(k=args.k, max_rounds=8, max_red_rounds=3, token_cap=24),
        retry=RetryPolicy(retries=0, on_fail="skip"),
        learn=True, learn_loops=("reuse", "examples"),
    )  # fmt: skip
    started = time.perf_counter()
    async with workbench(args) as bench:
        rid = await start_run(spec)
        sampler = LLMSampler(
            bench.client("rlm"), spec.build_domain(), name="local rlm",
            token_cap=spec.vote.token_cap, seed=spec.seed,
        )  # fmt: skip
        say(f"run {rid}: {args.items} steps, k={args.k}")
        status = await execute(rid, sampler=sampler)
        model = bench.slots["rlm"].path
    return {
        "run": rid,
        "steps": status.steps_done,
        "samples": status.samples,
        "status": status.status,
        "wall_s": round(time.perf_counter() - started, 1),
        "model": str(model),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from nanobot_tui.engine.learning.distill import train as training
    from nanobot_tui.engine.learning.distill.dataset import domain_of

    step_type, domain_name, params = step_type_and_params(args.family, args.items, args.seed)
    work: dict[str, Any]
    if args.no_run:  # the verified work an earlier invocation left in --home
        work = {"run": None, "model": str(workbench(args).slots["rlm"].path)}
    else:
        work = await make_work(args, domain_name, params)
    domain = domain_of(step_type)
    assert domain is not None
    model = Path(work["model"])
    base_dir = await base_dir_for(args, model)
    distilled = await asyncio.to_thread(
        distill, step_type, domain, trainer=cast(Trainer, training.train_lora),
        base_gguf=model, base_dir=base_dir, epochs=args.epochs, threads=args.train_threads,
    )  # fmt: skip
    seen = {e.input_text for e in [*distilled.training_set.train, *distilled.training_set.heldout]}
    run_inputs = set(params_inputs(domain_name, params))
    fresh = fresh_steps(domain, seen | run_inputs, args.fresh, domain_name, params)

    report = await measure(distilled, domain, fresh, serving(args))
    report["training"]["epochs"] = args.epochs
    report["training"]["threads"] = args.train_threads
    return {"family": args.family, "work": work, **report}


def params_inputs(domain_name: str, params: dict[str, Any]) -> list[str]:
    """The user texts of every step the run asked (right or not): none of them is fresh."""
    from nanobot_tui.engine.learning.examples import last_user_text
    from nanobot_tui.engine.voting.domains.registry import DOMAINS

    domain = DOMAINS[domain_name].build(params)
    return [last_user_text(domain.messages(step)) for step in domain.steps()]


# --- the table -----------------------------------------------------------------------------


def _count(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def table(report: dict[str, Any]) -> str:
    """The report as text: one line per A/B set and arm, then an honest verdict."""
    t, a = report["training"], report["adapter"]
    work = report.get("work") or {}
    lines = [
        f"work: run {work['run']}: {work['steps']} steps, {work['samples']} samples, "
        f"{work['wall_s']:.0f} s (learning on)"
        if work.get("run")
        else "work: what the home's learned.db held (--no-run)",
        f"distillation of {report['step_type']}: {t['examples']} training examples, "
        f"{t['epochs']} epoch(s), {t['steps']} steps in {t['seconds']:.0f} s "
        f"(loss {_loss(t['first_loss'])} -> {_loss(t['final_loss'])}); adapter "
        f"{a['bytes']:,} bytes (rank {a['rank']}, {a['tensors']} tensors)",
        f"projections: {report['run_steps']:,}-step run, {report['run_target']:.0%} whole-run "
        "success",
        f"{'set':8} {'arm':8} {'right':>7} {'p':>5} {'95% CI':>13} {'k_min':>5} "
        f"{'samples/step':>12} {'samples (run)':>15} {'k_min@CI low':>12}",
    ]
    for name, ab in report["ab"].items():
        for arm, ci in (("base", "base_ci"), ("adapter", "adapter_ci")):
            proj = ab[arm]
            right = round(proj["p"] * ab["n"])
            per_step = proj["samples_per_step"]
            per_step = "-" if per_step is None else f"{per_step:.2f}"
            lines.append(
                f"{name:8} {arm:8} {right:>3}/{ab['n']:<3} {proj['p']:>5.2f} "
                f"[{ab[ci][0]:.2f}, {ab[ci][1]:.2f}] {proj['k_min'] or '-':>5} "
                f"{per_step:>12} {_count(proj['total_samples']):>15} "
                f"{ab[arm + '_at_ci_low']['k_min'] or '-':>12}"
            )
        low, high = ab["diff_ci"]
        moved = "p did not move" if not ab["moved"] else f"p moved by {ab['diff']:+.3f}"
        cost = "" if ab["cost_ratio"] is None else f", run cost x{ab['cost_ratio']:.3f}"
        lines.append(
            f"{name:8} {moved}, diff 95% CI [{low:+.2f}, {high:+.2f}]: {ab['verdict']}{cost}"
        )
    return "\n".join(lines)


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--family", default="wordcase",
                   help="wordcase (the wordcase domain) or a micro family")  # fmt: skip
    p.add_argument("--items", type=int, default=160, help="steps of the run that makes the data")
    p.add_argument("--epochs", type=int, default=1, help="training epochs")
    p.add_argument("--k", type=int, default=2, help="the run's voting margin")
    p.add_argument("--fresh", type=int, default=60, help="never-run steps in the fresh A/B")
    p.add_argument("--seed", type=int, default=3, help="the run's words and sampling seed")
    p.add_argument("--threads", type=int, default=1, help="the model server's threads")
    p.add_argument("--train-threads", type=int, default=1, help="torch threads")
    p.add_argument("--base-dir", help="a base checkpoint train.py made before (reused)")
    p.add_argument("--home", help="keep the NANOBOT_HOME here (not deleted)")
    p.add_argument("--no-run", action="store_true",
                   help="make no new work: train on what --home's learned.db holds")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the report as one JSON line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.items < 1 or args.epochs < 1 or args.k < 1:
        parser().error("--items, --epochs and --k must be at least 1")
    if args.no_run and not args.home:
        parser().error("--no-run needs --home (the home with the work)")
    from nanobot_tui.engine.learning.distill.train import require_learn_extra

    require_learn_extra()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="distill-gain-"))
    started = time.perf_counter()
    try:
        with nanobot_home(home):
            report = asyncio.run(main_async(args))
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
