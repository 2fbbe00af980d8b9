"""`nanobot run` and `nanobot calibrate`: MAKER-style voted runs and the numbers before them.

`calibrate` measures a model's per-step success rate p on a domain (or takes `--p`) and
projects what a run of S steps at target reliability T needs: k, votes per step, tokens,
time. `run` executes a domain step by step with first-to-ahead-by-k voting, with a live
line on the terminal and, with --json, a JSON summary as the last line. Every run is a
durable run (nanobot_tui/engine/runs/): it has an id and a store, survives crashes
and is resumed with `nanobot resume ID`; with --detach it runs in a session of its own
and prints the run id as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobot_tui.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    number_type,
    positive_float,
    positive_int,
    probability,
)
from nanobot_tui.cli.common import fail as _fail
from nanobot_tui.errors import NanobotError, UsageError

if TYPE_CHECKING:
    from nanobot_tui.engine.learning.history import HistoryBudget
    from nanobot_tui.engine.runs.spec import RunSpec
    from nanobot_tui.engine.voting.domains import Domain


non_negative_int = number_type(int, "whole number", lambda v: v >= 0, "at least 0")
fanout_type = number_type(int, "whole number", lambda v: v >= 2, "at least 2")


def domain_params(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen domain's params, from the options named by its registry entry."""
    from nanobot_tui.engine.voting.domains.registry import DOMAINS as KINDS

    return {name: getattr(args, name) for name in KINDS[args.domain].options}


def make_domain(args: argparse.Namespace) -> Domain:
    """The chosen domain; UsageError for options it cannot use (--disks 0)."""
    from nanobot_tui.engine.voting.domains.registry import build_domain

    if getattr(args, "recipe", None):
        return _code_domain(args)
    try:
        return build_domain(args.domain, domain_params(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _code_domain(args: argparse.Namespace) -> Domain:
    """`calibrate --recipe R --on PATH`: the recipe's functions in the user's own files
    (read only: calibration edits nothing)."""
    from nanobot_tui.engine.voting.domains.registry import build_domain

    if args.on is None:
        raise UsageError("calibrate --recipe needs --on PATH (the codebase to sample from)")
    if not args.on.is_dir():
        raise UsageError(f"not a folder: {args.on}")
    params = {"root": str(args.on), "recipe": args.recipe, "simulated": False}
    try:
        domain = build_domain("code", params)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not domain.total_steps():
        raise UsageError(f"the {args.recipe} recipe finds no function to edit in {args.on}")
    return domain


def parse_sampler(text: str) -> tuple[str, float | None]:
    """'local' or 'simulated:P' (0 < P ≤ 1)."""
    if text == "local":
        return "local", None
    kind, _, value = text.partition(":")
    if kind != "simulated" or not value:
        raise argparse.ArgumentTypeError(f"expected 'local' or 'simulated:P', not {text!r}")
    try:
        p = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a probability: {value!r}") from None
    if not 0.0 < p <= 1.0:
        raise argparse.ArgumentTypeError(f"p must be in (0, 1], not {p}")
    return "simulated", p


def projection(
    p: float,
    steps: int,
    target: float,
    *,
    tokens_per_sample: float = 0.0,
    samples_per_s: float | None = None,
) -> dict[str, Any]:
    """MAKER's projection as JSON-safe data; p ≤ 0.5 gives an infeasible plan with the
    reason instead of a run that would never end."""
    from nanobot_tui.engine.voting import maths

    try:
        plan = maths.project(
            p, steps, target, tokens_per_sample=tokens_per_sample, samples_per_s=samples_per_s
        )
    except maths.Infeasible as exc:
        return {"feasible": False, "p": p, "steps": steps, "target": target, "reason": str(exc)}
    return {"feasible": True, **plan.to_dict()}


def _show_plan(plan: dict[str, Any]) -> None:
    if not plan["feasible"]:
        print(f"infeasible: {plan['reason']}")
        return
    print(
        f"k = {plan['k']} for {plan['steps']:,} steps at target {plan['target']}: "
        f"p_vote = {plan['p_vote']:.10f}, P(every step right) = {plan['p_success']:.4f}"
    )
    print(
        f"expected samples per step: {plan['samples_per_step']:.3f} "
        f"({plan['total_samples']:,.0f} in all)"
    )
    if plan["total_tokens"]:
        print(f"projected tokens: {plan['total_tokens']:,.0f}")
    if plan["seconds"] is not None:
        print(f"projected wall time: {plan['seconds'] / 3600:.2f} h at the measured throughput")


async def _calibrate(args: argparse.Namespace) -> int:
    from nanobot_tui.cli.progress import TerminalProgress
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.engine.voting import calibration_store
    from nanobot_tui.engine.voting.calibration import calibrate
    from nanobot_tui.engine.voting.samplers.model import LLMSampler
    from nanobot_tui.engine.voting.samples import DEFAULT_TOKEN_CAP

    domain = make_domain(args)
    steps = args.steps or domain.total_steps()
    # A code recipe's replies are whole functions: the cap `nanobot process` gives them.
    token_cap = getattr(domain, "token_cap", lambda: DEFAULT_TOKEN_CAP)()
    workbench = Workbench(load_config()[0], only_slots=(args.slot,))
    model = workbench.slots[args.slot].display_name
    bar = TerminalProgress(enabled=False if args.json else None)
    async with workbench:
        sampler = LLMSampler(
            workbench.client(args.slot),
            domain,
            name=f"local {args.slot}: {model}",
            token_cap=token_cap,
        )
        result = await calibrate(
            domain,
            sampler,
            args.samples,
            seed=args.seed,
            progress=lambda done, total: bar.update("sample", done, total),
        )
    bar.finish()
    if args.recipe:  # kept per recipe: each has its own p
        result = dataclasses.replace(result, domain=f"code-{args.recipe}")
    await calibration_store.record_calibration(result)
    plan = projection(
        result.p,
        steps,
        args.target,
        tokens_per_sample=result.tokens_per_sample,
        samples_per_s=result.samples_per_second,
    )
    if args.json:
        print(json.dumps({"calibration": result.to_dict(), "plan": plan}))
        return EXIT_OK
    c = result.to_dict()
    print(
        f"{model} on {c['domain']}: p = {c['p']:.3f} "
        f"(95% CI {c['ciLow']:.3f}–{c['ciHigh']:.3f}) over {c['samples']} samples"
    )
    flags = ", ".join(f"{k} {v}" for k, v in c["redFlags"].items() if v) or "none"
    print(f"red flags (strict parser): {c['redFlagRate']:.1%} ({flags})")
    print(
        f"{c['tokensPerSample']:.0f} tokens and {c['secondsPerSample']:.2f} s per sample "
        f"({c['samplesPerSecond']:.1f} samples/s)"
    )
    _show_plan(plan)
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.p is not None:
        steps = args.steps or make_domain(args).total_steps()
        plan = projection(args.p, steps, args.target)
        if args.json:
            print(json.dumps(plan))
        else:
            _show_plan(plan)
        return EXIT_OK if plan["feasible"] else EXIT_FAIL
    try:
        return asyncio.run(_calibrate(args))
    except KeyboardInterrupt:
        return _fail("calibration interrupted", 130)


def run_spec(args: argparse.Namespace, k: int, history: HistoryBudget | None = None) -> RunSpec:
    """The durable run's spec from `nanobot run`'s flags; `history`'s budgets stand in for
    the budget flags not given."""
    from nanobot_tui.engine.runs.spec import Budgets, RetryPolicy, RunSpec
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
    from nanobot_tui.engine.voting.domains.registry import DOMAINS as KINDS

    kind, p = args.sampler
    params = domain_params(args)
    label = KINDS[args.domain].label(params)
    sampler = f"simulated:{p}" if kind == "simulated" else f"local:{args.slot}"
    return RunSpec(
        domain=args.domain,
        params=params,
        sampler=sampler,
        vote=VoteConfig(k=k),
        seed=args.seed,
        budgets=Budgets(
            steps=flag_or_learned(args.max_steps, history and history.steps),
            tokens=flag_or_learned(args.max_tokens, history and history.tokens),
            seconds=flag_or_learned(args.max_seconds, history and history.seconds),
        ),
        retry=RetryPolicy(retries=args.retries, on_fail=args.on_fail),
        fanout=args.fanout,
        concurrency=args.concurrency,
        keep_samples=args.keep_samples,
        traces=not args.no_traces,
        label=label,
        learn=not args.no_learn,
        learn_loops=learn_loops(args),
        cluster=cluster_option(args),
    )


def cluster_option(args: argparse.Namespace) -> str | None:
    """`--cluster [ADDRESS|auto]` as the spec keeps it: HOST:PORT ("auto": the cluster
    this machine joined with `nanobot cluster up/join`), None without the flag;
    UsageError with the simulated sampler, which has no model to spread."""
    text = getattr(args, "cluster", None)
    if text is None:
        return None
    if args.sampler[0] == "simulated":
        raise UsageError("--cluster samples a model across the cluster: use --sampler local")
    from nanobot_tui.cli.cluster import cluster_address

    return cluster_address(text)


def add_cluster_option(p: argparse.ArgumentParser) -> None:
    """`--cluster [ADDRESS|auto]`, for `nanobot run` and `nanobot process`."""
    p.add_argument(
        "--cluster",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="sample over the model hosts of a Ray cluster (see `nanobot cluster`): its "
        "HOST:PORT, or auto (the default) for the cluster this machine is in",
    )


def learn_loops(args: argparse.Namespace) -> tuple[str, ...]:
    """The loops `--learn-loops` names (all three without it); UsageError naming an
    unknown one."""
    from nanobot_tui.engine.runs.spec import LEARN_LOOPS, parse_learn_loops

    text = getattr(args, "learn_loops", None)
    return LEARN_LOOPS if text is None else parse_learn_loops(text)


def learns_history(args: argparse.Namespace) -> bool:
    """Whether a run takes its budgets and k from history: learning on (flags and
    config) with "history" among its loops."""
    from nanobot_tui.config import load_config_file

    if args.no_learn or "history" not in learn_loops(args):
        return False
    config = load_config_file()
    return config is None or config.learning.enabled


def add_learning_options(p: argparse.ArgumentParser, what: str) -> None:
    """`--no-learn` and `--learn-loops`, for `nanobot run` and `nanobot process`."""
    p.add_argument(
        "--no-learn",
        action="store_true",
        help=f"learn nothing and use nothing learned: {what} (the config's "
        "learning.enabled = false does this for every run)",
    )
    p.add_argument(
        "--learn-loops",
        metavar="LOOPS",
        help="the learning loops to use, comma-separated (default: all): reuse (verified "
        "step results), examples (few-shot examples), history (task records, budgets and "
        "k from history, anomalies); --no-learn turns them all off",
    )


def flag_or_learned(flag: Any, learned: Any) -> Any:
    """An explicit flag wins over what history says."""
    return flag if flag is not None else (learned or None)


def _history(args: argparse.Namespace, domain: Domain) -> HistoryBudget | None:
    """The budgets and k of the run's task type from its history (`history_for`)."""
    from nanobot_tui.engine.learning.run_memory import task_type_of
    from nanobot_tui.engine.voting.domains.registry import DOMAINS as KINDS

    label = KINDS[args.domain].label(domain_params(args))
    task_type = task_type_of(label, args.domain, args.sampler[0] == "simulated")
    steps = min(domain.total_steps(), args.max_steps or domain.total_steps())
    return history_for(args, task_type, steps)


def history_for(args: argparse.Namespace, task_type: str, steps: int) -> HistoryBudget | None:
    """The budgets and k of `task_type` from its history (at least MIN_RECORDS earlier
    runs) for a run of `steps` steps, when learning and its "history" loop are on and some
    of them are not given by flags (`--k`, `--max-steps/-tokens/-seconds`); one line says
    what was taken. A learned.db that cannot be read is reported and ignored."""
    from nanobot_tui.engine.learning.run_memory import history_budget

    flags = (args.max_steps, args.max_tokens, args.max_seconds)
    if args.k is not None and None not in flags:
        return None
    if not learns_history(args):
        return None
    try:
        budget = history_budget(task_type, steps=steps)
    except NanobotError as exc:
        print(f"nanobot: {exc}; budgets and k from the defaults", file=sys.stderr)
        return None
    if budget is None:
        return None
    taken = []
    if args.k is None and budget.k is not None:
        taken.append(f"k = {budget.k}")
    if None in flags:
        taken.append("budgets")
    if not taken:
        return None
    line = f"{' and '.join(taken)} from {budget.records} earlier {task_type} runs"
    print(line, file=sys.stderr if args.json else sys.stdout)
    return budget


async def _pick_k(args: argparse.Namespace, domain: Domain) -> int:
    """k from --k, or MAKER's k_min for p (the simulated p, or the model's latest
    calibration); UsageError without a calibration, NanobotError for p <= 0.5."""
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.voting import maths

    if args.k is not None:
        return args.k
    kind, p = args.sampler
    steps = min(domain.total_steps(), args.max_steps or domain.total_steps())
    if kind != "simulated":
        from nanobot_tui.engine.serving.workbench import Workbench
        from nanobot_tui.engine.voting import calibration_store

        workbench = Workbench(load_config()[0], only_slots=(args.slot,))
        model = workbench.slots[args.slot].display_name
        latest = await calibration_store.latest_calibration(model, domain.name)
        if latest is None:
            # A domain of families calibrates per family: "micro-dates" is micro --family dates.
            family = f" --family {args.family}" if domain.name != args.domain else ""
            raise UsageError(
                f"no calibration of {model} on {domain.name} yet: run "
                f"`nanobot calibrate --domain {args.domain}{family}` first, or pass --k"
            )
        p = latest.p
    assert p is not None
    try:
        return maths.k_min(p, steps, args.target)
    except maths.Infeasible as exc:
        raise NanobotError(f"infeasible: {exc}") from None


async def _run(args: argparse.Namespace, domain: Domain) -> int | str:
    """The exit code of a run in the foreground, or (--detach) the new run's id."""
    from nanobot_tui.cli.runs import print_outcome, run_foreground
    from nanobot_tui.engine.runs.durable import start_run

    history = _history(args, domain)
    if args.k is None and history is not None and history.k is not None:
        k = history.k
    else:
        k = await _pick_k(args, domain)
    run_id = await start_run(run_spec(args, k, history))
    notify(run_id, args)
    if args.detach:
        return run_id  # its runner is started by cmd_run, outside this event loop
    started = time.perf_counter()
    status, monitor = await run_foreground(run_id, quiet=args.json)
    return print_outcome(status, monitor, args.json, started)


def notify_targets(args: argparse.Namespace) -> None:
    """`--notify telegram:CHAT,email:ADDR` parsed into args.notify_targets; UsageError
    (one line) naming the part that is wrong."""
    from nanobot_tui.channels.subscriptions import parse_notify

    text = getattr(args, "notify", None)
    args.notify_targets = parse_notify(text) if text is not None else ()


def notify(run_id: str, args: argparse.Namespace) -> None:
    """Subscribe the --notify targets to the new run: the gateway sends them its
    milestones."""
    targets = getattr(args, "notify_targets", ())
    if not targets:
        return
    from nanobot_tui.channels.subscriptions import Subscriptions

    subscriptions = Subscriptions()
    for target in targets:
        subscriptions.subscribe(run_id, target)
    line = f"milestones go to {', '.join(map(str, targets))} (while `nanobot gateway` runs)"
    print(line, file=sys.stderr if args.json else sys.stdout)


def cmd_run(args: argparse.Namespace) -> int:
    """Every run is durable: it gets a run id and a store, and can be resumed. With
    --detach it runs in a session of its own and the run id is the last line."""
    from nanobot_tui.cli.runs import print_detached
    from nanobot_tui.engine.runs.control import detach

    learn_loops(args)  # an unknown loop name stops here, before anything starts
    notify_targets(args)  # so does a bad --notify
    cluster_option(args)  # and a --cluster that names no cluster
    domain = make_domain(args)
    try:
        result = asyncio.run(_run(args, domain))
    except KeyboardInterrupt:
        return _fail("run interrupted", 130)
    if isinstance(result, str):  # a run id: start its detached runner
        return print_detached(result, detach(result))
    return result


def _domain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--disks", type=positive_int, default=10, help="Hanoi: number of disks")
    from nanobot_tui.engine.voting.domains.micro_families import FAMILIES

    p.add_argument("--words", type=positive_int, default=300, help="wordcase, micro: how many")
    p.add_argument(
        "--family",
        default="wordcase",
        metavar="NAME",
        help=f"micro: the task family, one of {', '.join(FAMILIES)}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slot", choices=("main", "rlm", "memory"), default="rlm")
    p.add_argument("--target", type=probability, default=0.95, help="P(every step right)")
    p.add_argument("--json", action="store_true")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from nanobot_tui.engine.voting.domains.registry import RUN_NAMES as DOMAINS

    p = sub.add_parser("run", help="run a domain step by step with MAKER voting")
    p.add_argument("domain", choices=DOMAINS)
    p.add_argument("--k", type=positive_int, help="votes ahead to win a step (default: from p)")
    p.add_argument(
        "--sampler",
        type=parse_sampler,
        default=("local", None),
        help="'local' (the slot's model) or 'simulated:P' (a SIMULATED model right with p P)",
    )
    p.add_argument("--max-steps", type=positive_int, help="budget: stop after this many steps")
    p.add_argument("--max-tokens", type=positive_int, help="budget: stop after these tokens")
    p.add_argument("--max-seconds", type=positive_float, help="budget: stop after this time")
    p.add_argument("--detach", action="store_true", help="run in the background (own session)")
    p.add_argument(
        "--retries", type=non_negative_int, default=2, help="votes again for an undecided step"
    )
    p.add_argument(
        "--on-fail",
        choices=("escalate", "skip"),
        default="escalate",
        help="after the retries: fail the run, or skip the step where possible",
    )
    p.add_argument("--fanout", type=fanout_type, default=10, help="children per tree node")
    p.add_argument(
        "--concurrency", type=positive_int, help="independent steps at once (default: CPU cores)"
    )
    p.add_argument(
        "--keep-samples",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep every sample (default: for real models only)",
    )
    p.add_argument("--no-traces", action="store_true", help="no trace file for this run")
    p.add_argument(
        "--notify",
        metavar="TARGETS",
        help="send the run's milestones through the gateway to telegram:CHAT_ID and/or "
        "email:ADDR, comma-separated",
    )
    add_learning_options(
        p, "no reused step results, no task history, budgets and k not from history"
    )
    add_cluster_option(p)
    _domain_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "calibrate", help="measure p on a domain and project k, votes, tokens and time"
    )
    p.add_argument("--domain", choices=DOMAINS, default="hanoi")
    p.add_argument(
        "--recipe",
        help="calibrate a code recipe instead of a domain (see `nanobot recipes`); needs --on",
    )
    p.add_argument("--on", type=Path, metavar="PATH", help="--recipe: the codebase to sample")
    p.add_argument("--samples", type=positive_int, default=100, help="random steps to sample")
    p.add_argument("--p", type=probability, help="no sampling: only the arithmetic, from this p")
    p.add_argument(
        "--steps", type=positive_int, help="steps of the planned run (default: the task's)"
    )
    _domain_options(p)
    p.set_defaults(func=cmd_calibrate)
