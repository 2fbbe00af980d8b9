"""`nanobot process` and `nanobot recipes`: a task applied to a codebase, one voted function
at a time, on a snapshot of the user's files.

    nanobot process "add a docstring to every public function" --on ./repo [--detach]
    nanobot process "use f-strings and add docstrings" --on ./repo --plan
    nanobot process show ID      what the run produced (edits, reverts, the check)
    nanobot process diff ID      the patch
    nanobot process apply ID     write it into ./repo, if those files did not change since
    nanobot process undo ID      put back what apply replaced

A process is a durable run (`nanobot status`, `pause`, `resume`, `cancel`, `attach` work on
it); its edits go to a working copy and reach the user's files only through `apply`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobot_tui.cli.common import EXIT_FAIL, EXIT_OK, number_type, positive_float, positive_int
from nanobot_tui.cli.common import fail as _fail
from nanobot_tui.errors import NanobotError, UsageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from nanobot_tui.engine.learning.history import HistoryBudget
    from nanobot_tui.engine.llm.chat_client import ChatClient
    from nanobot_tui.engine.runs.spec import RunSpec
    from nanobot_tui.engine.work.plan import Pass, PlannerModel
    from nanobot_tui.engine.work.process import Plan

ACTIONS = ("show", "diff", "apply", "undo")
DEFAULT_K = 2  # without --k or a calibration of the model on the recipe
non_negative_int = number_type(int, "whole number", lambda v: v >= 0, "at least 0")


def _sampler_text(args: argparse.Namespace) -> str:
    kind, p = args.sampler
    return f"simulated:{p}" if kind == "simulated" else f"local:{args.slot}"


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """What every process's run takes from the command line: sampler, k, budgets,
    retries, seed, concurrency and whether it learns."""
    from nanobot_tui.cli.run import cluster_option
    from nanobot_tui.engine.runs.spec import Budgets, RetryPolicy

    return {
        "sampler": _sampler_text(args),
        "k": args.k or DEFAULT_K,
        "budgets": Budgets(steps=args.max_steps, tokens=args.max_tokens, seconds=args.max_seconds),
        "retry": RetryPolicy(retries=args.retries, on_fail="skip"),
        "seed": args.seed,
        "concurrency": args.concurrency,
        "learn": not args.no_learn,
        "cluster": cluster_option(args),
    }


def _learning_spec(
    args: argparse.Namespace, spec: RunSpec, steps: int
) -> tuple[RunSpec, HistoryBudget | None]:
    """`spec` with the `--learn-loops` and, from its task type's history, the budgets and
    k the flags do not give (as `nanobot run` takes them: `cli.run.history_for`), and
    that history (None: nothing taken)."""
    from nanobot_tui.cli.run import flag_or_learned, history_for, learn_loops
    from nanobot_tui.engine.learning.run_memory import task_type_of
    from nanobot_tui.engine.runs.spec import Budgets

    spec = dataclasses.replace(spec, learn_loops=learn_loops(args))
    task_type = task_type_of(spec.label, spec.domain, spec.simulated)
    history = history_for(args, task_type, min(steps, args.max_steps or steps))
    if history is None:
        return spec, None
    budgets = Budgets(
        steps=flag_or_learned(args.max_steps, history.steps),
        tokens=flag_or_learned(args.max_tokens, history.tokens),
        seconds=flag_or_learned(args.max_seconds, history.seconds),
    )
    spec = dataclasses.replace(spec, budgets=budgets)
    if args.k is None and history.k is not None:
        spec = dataclasses.replace(spec, vote=dataclasses.replace(spec.vote, k=history.k))
    return spec, history


def _keep_checked(args: argparse.Namespace, run_id: str, result: dict[str, Any]) -> int:
    """After a process whose `--verify` check passed: its winners (every decided function
    whose edit was not reverted) kept as checked results for a later run to reuse
    (`run_memory.remember_checked`: only with learning and its "reuse" loop on, for a
    real model); how many were kept."""
    from nanobot_tui.engine.learning.run_memory import remember_checked

    check = result.get("verify")
    if not check or not check.get("passed"):
        return 0
    reverted = {int(r["step"]) for r in result.get("reverted") or ()}
    steps = [i for i in range(int(result["functions"])) if i not in reverted]
    try:
        kept = remember_checked(run_id, steps)
    except NanobotError as exc:  # the process is done: learning is not worth failing it
        print(f"nanobot: no checked results kept: {exc}", file=sys.stderr)
        return 0
    if kept and not args.json:
        print(f"learned: {kept:,} checked result(s) kept for reuse", file=sys.stderr)
    return kept


async def _classify(task: str) -> str:
    """The recipe the main model votes for `task` (printed, so the user sees the choice)."""
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.engine.work.classify import classify

    workbench = Workbench(load_config()[0], only_slots=("main",))
    async with workbench:
        name = f"local main: {workbench.slots['main'].display_name}"
        result = await classify(task, workbench.client("main"), name)
    print(result.line(), file=sys.stderr)
    return result.recipe


class _MainPlanner:
    """The main slot's model as a planner (engine.work.plan.PlannerModel); its server
    starts only when `open` is entered."""

    def __init__(self) -> None:
        from nanobot_tui.config import load_config
        from nanobot_tui.engine.serving.workbench import Workbench

        self.workbench = Workbench(load_config()[0], only_slots=("main",))
        slot = self.workbench.slots["main"]
        self.name = f"{slot.provider} main: {slot.display_name}"
        if slot.path is not None:  # a local file: its name and size
            self.model_key = f"{slot.provider}:{slot.path.name}:{slot.path.stat().st_size}"
        else:
            self.model_key = f"{slot.provider}:{slot.model_id}"

    def open(self) -> AbstractAsyncContextManager[ChatClient]:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def started() -> AsyncIterator[ChatClient]:
            async with self.workbench:
                yield self.workbench.client("main")

        return started()


def _main_planner() -> PlannerModel:
    """The model `--plan` asks: the main slot's. The one place the CLI gets its planner, so
    a test can put a fake in its stead (no model strong enough to plan runs offline)."""
    return _MainPlanner()


async def _planned(args: argparse.Namespace, task: str) -> tuple[Pass, ...]:
    """`--plan`: the main model's plan of `task` if it is able (the grade and the plan
    printed); () when it is not able or its vote is undecided: then the process goes on as
    without --plan."""
    from nanobot_tui.engine.work.plan import decide

    def say(text: str) -> None:
        print(text, file=sys.stderr)

    decision = await decide(task, _main_planner(), say)
    if decision.vote is None:
        return ()
    if not decision.vote.decided:
        say(f"{decision.vote.line()}; going on without a plan")
        return ()
    if not args.json:
        print(decision.vote.line())
    return decision.passes


def _plan(
    args: argparse.Namespace,
    task: str,
    recipe: str,
    source: Path | None = None,
    origin: Path | None = None,
    previous: str | None = None,
) -> Plan:
    from nanobot_tui.cli.progress import TerminalProgress
    from nanobot_tui.engine.work.process import prepare

    bar = TerminalProgress(enabled=False if args.json else None)
    plan = prepare(
        task,
        source or args.on,
        recipe,
        **_run_options(args),
        verify=args.verify,
        verify_timeout=args.verify_timeout,
        files=args.files,
        max_samples=args.max_samples,
        progress=lambda n: bar.update("copy", n, 0, "files"),
        origin=origin,
        previous=previous,
    )
    bar.finish()
    return plan


async def _start(
    args: argparse.Namespace, task: str, recipe: str | None = None
) -> tuple[Plan, str]:
    recipe = recipe or args.recipe or await _classify(task)
    plan = await asyncio.to_thread(_plan, args, task, recipe)
    return plan, await _start_planned(args, recipe, plan)


async def _start_planned(args: argparse.Namespace, recipe: str, plan: Plan) -> str:
    """Print what `plan` found, check the projection of a real model, start the run."""
    from nanobot_tui.engine.runs.durable import start_run

    if not args.json:
        print(plan.line())
        for problem in plan.problems[:5]:
            print(f"  skipped {problem.path}: {problem.reason}")
    spec, history = await asyncio.to_thread(_learning_spec, args, plan.spec, plan.functions)
    plan = dataclasses.replace(plan, spec=spec)
    learned_k = args.k is None and history is not None and history.k is not None
    if args.sampler[0] == "local":
        k = await _check_projection(args, recipe, plan, spec.vote.k if learned_k else None)
        if k is not None and args.k is None and not learned_k:  # the model's p on this recipe
            plan = dataclasses.replace(
                plan,
                spec=dataclasses.replace(plan.spec, vote=dataclasses.replace(plan.spec.vote, k=k)),
            )
    return await start_run(plan.spec)


async def _check_projection(
    args: argparse.Namespace, recipe: str, plan: Plan, learned_k: int | None = None
) -> int | None:
    """Before a real model starts: MAKER's projection from the model's calibration on
    this recipe, printed, and its k (None: no calibration, or hopeless); a hopeless one
    (p <= 0.5) stops here unless --force. `learned_k`: the k history gave the run."""
    from nanobot_tui.cli.run import projection
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.engine.voting import calibration_store

    model = Workbench(load_config()[0], only_slots=(args.slot,)).slots[args.slot].display_name
    latest = await calibration_store.latest_calibration(model, f"code-{recipe}")
    say = (lambda text: None) if args.json else (lambda text: print(text, file=sys.stderr))
    if latest is None:
        say(
            f"no calibration of {model} on {recipe} yet: `nanobot calibrate --recipe {recipe} "
            f"--on PATH` projects what a run costs"
        )
        return None
    proj = projection(
        latest.p,
        plan.functions,
        0.95,
        tokens_per_sample=latest.tokens_per_sample,
        samples_per_s=latest.samples_per_second,
    )
    if not proj["feasible"]:
        message = (
            f"hopeless: {model} has p = {latest.p:.2f} on {recipe} (calibrated "
            f"{latest.date}): {proj['reason']}"
        )
        if not args.force:
            raise UsageError(f"{message}; --force runs it anyway")
        say(message)
        return None
    hours = f", ~{proj['seconds'] / 3600:.1f} h" if proj["seconds"] is not None else ""
    k = args.k or learned_k or int(proj["k"])
    say(
        f"projection: p = {latest.p:.2f} needs k = {proj['k']} for {plan.functions:,} "
        f"functions at 95 %: ~{proj['total_samples']:,.0f} samples{hours} (running with "
        f"k = {k})"
    )
    return int(proj["k"])


async def _start_extract(args: argparse.Namespace, task: str) -> tuple[str, str]:
    from nanobot_tui.engine.runs.durable import start_run
    from nanobot_tui.engine.work.process import prepare_extract

    spec = prepare_extract(
        task,
        args.volume,
        **_run_options(args),
    )
    steps = spec.build_domain().total_steps()
    spec, _ = await asyncio.to_thread(_learning_spec, args, spec, steps)
    line = f"extract: {steps:,} chunk(s) of volume {args.volume}"
    if not args.json:
        print(line)
    return line, await start_run(spec)


async def _run(args: argparse.Namespace, task: str) -> int | str:
    from nanobot_tui.cli.runs import run_foreground
    from nanobot_tui.engine.runs.durable import summary

    passes: tuple[Pass, ...] = ()
    if args.volume:
        line, run_id = await _start_extract(args, task)
    else:
        passes = await _planned(args, task) if args.plan else ()
        if len(passes) > 1:
            if args.detach:
                raise UsageError(
                    f"process: a plan of {len(passes)} passes runs in the foreground only "
                    "(drop --detach)"
                )
            return await _run_passes(args, passes)
        plan, run_id = await _start(args, task, passes[0].recipe if passes else None)
        line = plan.line()
    if args.detach:
        return run_id
    started = time.perf_counter()
    status, monitor = await run_foreground(run_id, quiet=args.json)
    result = await asyncio.to_thread(_result, run_id, bool(args.volume))
    if not args.volume:
        await asyncio.to_thread(_keep_checked, args, run_id, result)
        result["summary"] = await _summarize(args, run_id)
    if args.json:
        out: dict[str, Any] = {"run": summary(status, monitor), "outcome": result, "plan": line}
        if passes:
            out["passes"] = [{"pass": passes[0].line(), "run_id": run_id, "status": status.status}]
        print(json.dumps(out))
    else:
        reason = f" ({status.reason})" if status.reason else ""
        what = "chunks" if args.volume else "functions"
        print(
            f"{status.status}{reason}: {status.steps_done:,}/{status.steps_total:,} {what}, "
            f"k = {status.k}, {time.perf_counter() - started:.1f} s"
        )
        print(_show(result))
        if status.status in ("stopped", "paused", "failed"):
            print(f"resume with: nanobot resume {run_id}")
        if not args.volume:
            print(f"look: nanobot process diff {run_id} · apply: nanobot process apply {run_id}")
        print(run_id)
    return EXIT_OK if status.status == "completed" else EXIT_FAIL


async def _run_passes(args: argparse.Namespace, passes: tuple[Pass, ...]) -> int:
    """A plan's passes as consecutive runs, each on the previous one's result; the last
    run stands for the whole plan (its diff, apply and undo are against the user's files).
    A pass whose recipe finds nothing is skipped; one that does not complete stops the plan."""
    from nanobot_tui.cli.runs import run_foreground
    from nanobot_tui.engine.runs.durable import summary
    from nanobot_tui.engine.work import process

    say = (lambda text: None) if args.json else print
    started = time.perf_counter()
    done: list[dict[str, Any]] = []
    source: Path | None = None
    origin: Path | None = None
    last: tuple[str, Any, Any, str] | None = None  # run id, status, monitor, plan line
    for n, step in enumerate(passes, 1):
        say(f"pass {n}/{len(passes)}: {step.line()}")
        previous = last[0] if last else None
        try:
            plan = await asyncio.to_thread(
                _plan, args, step.instruction, step.recipe, source, origin, previous
            )
        except process.NothingToDo as exc:
            say(f"  skipped: {exc}")
            done.append({"pass": step.line(), "run_id": None, "status": "skipped"})
            continue
        run_id = await _start_planned(args, step.recipe, plan)
        status, monitor = await run_foreground(run_id, quiet=args.json)
        done.append({"pass": step.line(), "run_id": run_id, "status": status.status})
        last = (run_id, status, monitor, plan.line())
        if status.status != "completed":
            say(f"pass {n} {status.status}: the plan stops here (resume: nanobot resume {run_id})")
            break
        await _summarize(args, run_id)
        source, origin = await asyncio.to_thread(process.chain_source, run_id)
    if last is None:
        raise process.ProcessError(f"nothing to do in {args.on}: no pass of the plan found work")
    run_id, status, monitor, line = last
    result = await asyncio.to_thread(_result, run_id, False)
    await asyncio.to_thread(_keep_checked, args, run_id, result)
    if args.json:
        run = summary(status, monitor)
        print(json.dumps({"run": run, "outcome": result, "plan": line, "passes": done}))
    else:
        ran = sum(1 for d in done if d["run_id"])
        print(
            f"{status.status}: {ran} pass run(s) of {len(passes)}, "
            f"{time.perf_counter() - started:.1f} s"
        )
        print(_show(result))
        print(
            f"the whole plan: nanobot process diff {run_id} · apply: nanobot process apply {run_id}"
        )
        print(run_id)
    complete = status.status == "completed" and len(done) == len(passes)
    return EXIT_OK if complete else EXIT_FAIL


async def _summarize(args: argparse.Namespace, run_id: str) -> str | None:
    """The run's summaries, stored in its store: by the memory model, or from the facts
    when the sampler is simulated (no model) or the memory model cannot be started."""
    note = None if args.json else lambda text: print(text, file=sys.stderr)
    try:
        text = await _summaries(run_id, args.sampler[0] == "simulated", note)
    except NanobotError as exc:  # the run itself is done: a summary is not worth failing
        print(f"nanobot: no summary: {exc}", file=sys.stderr)
        return None
    return text


async def _summaries(run_id: str, simulated: bool, note: Callable[[str], None] | None) -> str:
    from nanobot_tui.engine.work.summaries import summarize_run

    if simulated:
        if note:
            note("summaries: made from the facts (a simulated run uses no memory model)")
        return (await summarize_run(run_id, None)).text
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench

    try:
        workbench = Workbench(load_config()[0], only_slots=("memory",))
        async with workbench:
            name = f"local memory: {workbench.slots['memory'].display_name}"
            if note:
                note(f"summaries: written by {name}")
            return (await summarize_run(run_id, workbench.client("memory"), model=name)).text
    except (NanobotError, OSError, RuntimeError, ValueError) as exc:
        if note:
            note(f"summaries: made from the facts (the memory model failed: {exc})")
        why = "(the memory model did not start)"
        return (await summarize_run(run_id, None, no_model=why)).text


def _facts_summary(run_id: str) -> str | None:
    """Summaries from the facts for a run that has none (it ran detached, or was resumed:
    no memory model was at hand), stored; None while a runner still holds the run."""
    from nanobot_tui.engine.work.summaries import summarize_run

    try:
        made = asyncio.run(summarize_run(run_id, None, no_model="no memory model: run detached"))
    except NanobotError:
        return None
    return made.text


def _result(run_id: str, extract: bool) -> dict[str, Any]:
    """What a process produced, as JSON-safe data: a code run's outcome, or an extract
    run's merged items with their citations."""
    from nanobot_tui.engine.work import process

    if not extract:
        from nanobot_tui.engine.work.summaries import read_summary

        return {**process.outcome(run_id).to_dict(), "summary": read_summary(run_id)}
    from nanobot_tui.engine.work.extract import run_report

    items = run_report(run_id)
    return {
        "run_id": run_id,
        "items": [
            {"item": i.text, "citations": [f"{p}:{n}" for p, n in i.citations]} for i in items
        ],
    }


def cmd_process(args: argparse.Namespace) -> int:
    from nanobot_tui.cli.run import cluster_option, learn_loops

    words: list[str] = args.words
    if words[0] in ACTIONS and len(words) == 2:
        return _act(words[0], words[1], args.json)
    learn_loops(args)  # an unknown loop name stops here, before anything starts
    cluster_option(args)  # so does a --cluster that names no cluster
    if args.recipe == "extract" and not args.volume:
        raise UsageError("process: the extract recipe reads a volume: --volume NAME")
    if args.volume and args.sampler[0] == "simulated":
        raise UsageError(
            "process: a simulated extract needs the planted truth (benchmarks/extract_recall.py "
            "plants it); use the local sampler"
        )
    if args.volume and args.plan:
        raise UsageError("process: --plan splits a task over code (--on), not a --volume")
    if args.volume and args.on is not None:
        raise UsageError(
            "process: --on (a codebase) and --volume (to extract from) exclude each other"
        )
    if args.on is None and not args.volume:
        raise UsageError(
            "process: --on PATH is required to start a process "
            f"(or: nanobot process {{{','.join(ACTIONS)}}} ID)"
        )
    task = " ".join(words).strip()
    if not task:
        raise UsageError("process: the task is empty")
    try:
        result = asyncio.run(_run(args, task))
    except KeyboardInterrupt:
        return _fail("process interrupted", 130)
    if isinstance(result, str):
        from nanobot_tui.cli.runs import print_detached
        from nanobot_tui.engine.runs.control import detach

        return print_detached(result, detach(result))
    return result


def _act(action: str, run_id: str, as_json: bool) -> int:
    from nanobot_tui.engine.work import process

    kind = process.kind_of(run_id)
    if kind not in (process.DOMAIN, process.EXTRACT):
        raise UsageError(f"run {run_id} is a {kind} run, not a process")
    if action == "show":
        result = _result(run_id, kind == process.EXTRACT)
        if kind == process.DOMAIN and result.get("summary") is None:
            result["summary"] = _facts_summary(run_id)
        print(json.dumps(result) if as_json else _show(result))
        return EXIT_OK
    if kind == process.EXTRACT:
        raise UsageError(f"run {run_id} extracts from a volume: it has no patch to {action}")
    if action == "diff":
        sys.stdout.write(process.patch_text(run_id))
        return EXIT_OK
    written = process.apply_process(run_id) if action == "apply" else process.undo_process(run_id)
    if as_json:
        print(json.dumps({"action": action, "files": written}))
    else:
        verb = "applied to" if action == "apply" else "put back"
        print(f"{verb} {len(written)} file(s): {', '.join(written[:5])}")
        if action == "apply":
            print(f"undo with: nanobot process undo {run_id}")
    return EXIT_OK


def _show(o: dict[str, Any]) -> str:
    from nanobot_tui.text import printable

    if "items" in o:
        found = [f"- {i['item']} ({', '.join(i['citations'])})" for i in o["items"]]
        return printable("\n".join([f"{len(found)} item(s) found", *found]))
    lines = [
        f"{o['run_id']} ({o['status']}): {o['recipe']} on {o['source']}",
        f"{o['functions']:,} function(s), {o['decided']:,} decided, {o['proposed']:,} edit(s) "
        f"proposed, {o['accepted']:,} accepted in {len(o['changed_files']):,} file(s); "
        f"{o['compiled']:,}/{len(o['changed_files']):,} changed file(s) compile",
    ]
    if o["verify"]:
        lines.append(f"check: {o['verify']['summary']}")
    for r in o["reverted"][:10]:
        lines.append(f"  reverted {r['path']}:{r['function']} (step {r['step']}): {r['reason']}")
    if len(o["reverted"]) > 10:
        lines.append(f"  … and {len(o['reverted']) - 10} more reverted")
    lines.append(f"patch: {o['patch']}")
    if o.get("summary"):
        lines.append(f"summary: {o['summary']}")
    return printable("\n".join(lines))


def cmd_recipes(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.work.recipes import RECIPES

    rows = [
        {
            "name": r.name,
            "summary": r.summary,
            "may_change": r.may_change,
            "reference": r.has_reference,
        }
        for r in RECIPES.values()
    ]
    rows.append(
        {
            "name": "extract",
            "summary": "list what the task asks for from every chunk of a volume (--volume)",
            "may_change": "nothing: it reads, and cites every item's file:line",
            "reference": False,
        }
    )
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    for row in rows:
        ref = "reference: yes" if row["reference"] else "reference: no"
        print(f"{row['name']:<15} {row['summary']}")
        print(f"{'':<15} may change: {row['may_change']}; {ref}")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from nanobot_tui.cli.run import add_cluster_option, add_learning_options, parse_sampler
    from nanobot_tui.cli.runs import budget_options

    p = sub.add_parser(
        "process",
        help="apply a task to a codebase, one voted, checked function at a time",
        description="Start a process: TASK applied to every function of --on PATH that the "
        "recipe wants, on a snapshot (your files change only with `process apply`). "
        f"Or act on one: {', '.join(ACTIONS)} ID.",
    )
    p.add_argument("words", nargs="+", metavar="TASK | ACTION ID", help="the task, or an action")
    p.add_argument("--on", type=Path, metavar="PATH", help="the codebase (a folder) to work on")
    p.add_argument(
        "--volume",
        metavar="NAME",
        help="the extract recipe: list what TASK asks for from every chunk of this volume",
    )
    p.add_argument(
        "--recipe",
        help="fstrings, docstrings, error-handling, instruction, or extract with --volume "
        "(default: the main model picks one from TASK; see `nanobot recipes`)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="let the main model split TASK into passes, each one recipe, run one after "
        "the other (the last run's diff/apply/undo is the whole plan's); only if the model "
        "passes 5 of 6 planning probes (graded once per model), else as without --plan "
        "(the plan, when there is one, overrides --recipe)",
    )
    p.add_argument(
        "--sampler",
        type=parse_sampler,
        default=("local", None),
        help="'local' (the slot's model) or 'simulated:P' (a SIMULATED model right with p P)",
    )
    p.add_argument(
        "--slot",
        choices=("main", "rlm", "memory"),
        default="rlm",
        help="the slot whose model does the steps with --sampler local (default: rlm)",
    )
    p.add_argument(
        "--k",
        type=positive_int,
        help="votes ahead to accept an edit (default: from the model's calibration, else 2)",
    )
    p.add_argument(
        "--max-samples", type=positive_int, default=10, help="samples per function at most"
    )
    p.add_argument("--files", nargs="+", metavar="FILE", help="only these files (relative)")
    p.add_argument("--verify", metavar="CMD", help="your check, run before and after the edits")
    p.add_argument(
        "--verify-timeout", type=positive_float, default=900.0, help="seconds per check run"
    )
    p.add_argument(
        "--retries", type=non_negative_int, default=1, help="votes again for an undecided one"
    )
    p.add_argument(
        "--concurrency", type=positive_int, help="functions at once (default: CPU cores)"
    )
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    add_cluster_option(p)
    add_learning_options(
        p, "no reused step results, no task history, budgets and k not from history"
    )
    budget_options(p)
    p.add_argument("--detach", action="store_true", help="run in the background (own session)")
    p.add_argument(
        "--force", action="store_true", help="start even when the calibration says hopeless"
    )
    p.add_argument("--json", action="store_true", help="one JSON object as the last line")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("recipes", help="list the recipes a process can apply")
    p.add_argument("--json", action="store_true", help="a JSON list")
    p.set_defaults(func=cmd_recipes)
