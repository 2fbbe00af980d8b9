"""`nanobot runs [rm | prune | compact | recover] | status | resume | pause | cancel |
traces | attach | export`: durable runs.

Every `nanobot run` is a durable run (see nanobot_tui/engine/runs/): these commands
list runs, show one (`status`: the snapshot a script can poll with --json), resume one
from its last durable step (in the foreground, or detached with --detach), ask its
runner to pause or cancel after the current step, print its trace lines, and open the
app on it; `runs rm` and `runs prune` remove runs (never one a runner holds) and say what
that freed; `runs compact` gzips trace files, `runs recover` rebuilds a damaged store
from what it still holds. A run id may be given by any unique prefix. Errors are one line on stderr:
exit 2 for an unknown id or bad input, 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nanobot_tui.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, positive_float, positive_int
from nanobot_tui.cli.common import fail as _fail

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.prune import Removal
    from nanobot_tui.engine.runs.spec import Budgets
    from nanobot_tui.engine.runs.store import RunStatus
    from nanobot_tui.engine.voting.runner import VoteMonitor


def _resolve(run_id: str) -> str:
    from nanobot_tui.engine.runs.store import resolve_run_id

    return resolve_run_id(run_id)


def _duration(seconds: float | None) -> str:
    from nanobot_tui.units import format_seconds

    return "–" if seconds is None else format_seconds(seconds)


# --- shared with `nanobot run` -----------------------------------------------------------


def live_line(monitor: VoteMonitor) -> str:
    snap = monitor.snapshot()
    eta = f" ETA {_duration(snap.eta_s)}" if snap.eta_s is not None else ""
    p = f" p≈{snap.p_estimate:.3f}" if snap.p_estimate is not None else ""
    return f"{snap.errors} errors {snap.rate:,.0f} steps/s{eta}{p}"


async def run_foreground(
    run_id: str, budgets: Budgets | None = None, *, quiet: bool = False
) -> tuple[RunStatus, VoteMonitor]:
    """Run `run_id` in this process with a live line on stderr; Ctrl-C (or SIGTERM) stops
    it cleanly (a real model's step in flight is cancelled and left pending), resumable.
    Returns (status, monitor)."""
    from nanobot_tui.cli.progress import TerminalProgress
    from nanobot_tui.engine.runs.durable import execute
    from nanobot_tui.engine.voting.runner import VoteMonitor

    monitor = VoteMonitor()
    bar = TerminalProgress(enabled=False if quiet else None)

    async def watch() -> None:
        while True:
            snap = monitor.snapshot()
            if snap.steps_total:
                bar.update("run", snap.steps_done, snap.steps_total, live_line(monitor))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        status = await execute(run_id, monitor=monitor, budgets=budgets, install_signals=True)
    finally:
        watcher.cancel()
        bar.finish()
    return status, monitor


def print_outcome(status: RunStatus, monitor: VoteMonitor, as_json: bool, started: float) -> int:
    from nanobot_tui.engine.runs.durable import summary

    result = summary(status, monitor)
    if as_json:
        print(json.dumps(result))
    else:
        reason = f" ({status.reason})" if status.reason else ""
        print(
            f"{status.domain} with {status.sampler}: {status.status}{reason}; "
            f"{status.steps_done:,}/{status.steps_total:,} steps, {status.errors:,} errors, "
            f"k = {status.k}, {time.perf_counter() - started:.1f} s"
        )
        if status.status in ("stopped", "paused", "failed"):
            print(f"resume with: nanobot resume {status.run_id}")
        print(status.run_id)
    return EXIT_OK if result["solved"] and result["errors"] == 0 else EXIT_FAIL


def print_detached(run_id: str, line: str) -> int:
    """What a detached start prints: the runner's line, where to watch it, and the run id
    as the last line."""
    print(line)
    print(f"watch it: nanobot status {run_id} · nanobot attach {run_id}")
    print(run_id)
    return EXIT_OK


# --- runs ------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.store import list_runs

    runs = list_runs()
    if args.json:
        print(json.dumps(runs))
        return EXIT_OK
    if not runs:
        print("no runs yet: nanobot run hanoi --disks N --sampler simulated:0.99 --detach")
        return EXIT_OK
    print(f"{'run':<34} {'status':<10} {'steps':>23} {'errors':>7} {'rate/s':>9} {'pid':>7}")
    for run in runs:
        done, total = run.get("steps_done") or 0, run.get("steps_total") or 0
        share = f" {100 * done / total:3.0f}%" if total else ""
        print(
            f"{run['id']:<34} {run.get('status', '?'):<10} {f'{done:,}/{total:,}{share}':>23} "
            f"{run.get('errors') or 0:>7,} {run.get('rate') or 0:>9,.0f} {run.get('pid') or '':>7}"
        )
    return EXIT_OK


# --- runs rm / runs prune --------------------------------------------------------------


def _removed(removals: list[Removal], as_json: bool, *, dry_run: bool = False) -> None:
    from nanobot_tui.units import human_bytes

    freed = sum(r.freed for r in removals)
    if as_json:
        runs = [r.to_dict() for r in removals]
        print(json.dumps({"dry_run": dry_run, "runs": runs, "bytes": freed}))
        return
    verb = "would remove" if dry_run else "removed"
    for r in removals:
        print(f"{verb} {r.run_id} ({r.status}, {human_bytes(r.freed)})")
    what = "would free" if dry_run else "freed"
    print(f"{len(removals)} run(s); {what} {human_bytes(freed)}")


def cmd_runs_rm(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.prune import remove_runs

    _removed(remove_runs(args.runs), args.json)
    return EXIT_OK


def cmd_runs_prune(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.prune import FINISHED, parse_statuses, prune

    if args.older_than is None and args.status is None and args.keep_size is None:
        return _fail("say what to prune: --older-than, --status and/or --keep-size", EXIT_USAGE)
    statuses = parse_statuses(args.status) if args.status is not None else FINISHED
    removals = prune(
        dry_run=args.dry_run,
        statuses=statuses,
        older_than=args.older_than,
        keep_size=args.keep_size,
    )
    _removed(removals, args.json, dry_run=args.dry_run)
    return EXIT_OK


def cmd_runs_compact(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.compact import compact_runs
    from nanobot_tui.units import human_bytes

    if bool(args.runs) == bool(args.all):
        return _fail("say which runs: RUN ... or --all (every finished run)", EXIT_USAGE)
    done = compact_runs(None if args.all else args.runs, dry_run=args.dry_run)
    before = sum(c.before for c in done)
    after = sum(c.after or 0 for c in done)
    if args.json:
        runs = [c.to_dict() for c in done]
        print(json.dumps({"dry_run": args.dry_run, "runs": runs, "before": before,
                          "after": None if args.dry_run else after}))  # fmt: skip
        return EXIT_OK
    for c in done:
        if c.after is None:
            print(f"would compact {c.run_id} ({c.status}, traces {human_bytes(c.before)})")
        else:
            print(f"compacted {c.run_id}: traces {human_bytes(c.before)} -> {human_bytes(c.after)}")
    if args.dry_run:
        print(f"{len(done)} run(s); {human_bytes(before)} of traces would be compressed")
    else:
        print(f"{len(done)} run(s); freed {human_bytes(before - after)}")
    return EXIT_OK


def cmd_runs_recover(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.recover import recover_line, recover_run

    done = recover_run(args.run)
    print(json.dumps(done.to_dict()) if args.json else recover_line(done))
    return EXIT_OK


def _arg(parser: str) -> Callable[[str], object]:
    """An argparse type from prune's parser `parser`, which raises a one-line UsageError
    (imported when an option is given, not when the parser is built)."""

    def convert(text: str) -> object:
        from nanobot_tui.engine.runs import prune
        from nanobot_tui.errors import UsageError

        try:
            return getattr(prune, parser)(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


# --- status ----------------------------------------------------------------------------


def status_text(st: RunStatus) -> str:
    lines = [f"run {st.run_id}: {st.status}" + (f" ({st.reason})" if st.reason else "")]
    lines.append(f"  {st.domain} with {st.sampler}, k = {st.k}")
    share = 100 * st.steps_done / st.steps_total if st.steps_total else 0.0
    lines.append(
        f"  steps {st.steps_done:,}/{st.steps_total:,} ({share:.1f}%): {st.completed:,} "
        f"completed, {st.skipped:,} skipped, {st.failed:,} failed; {st.errors:,} errors"
    )
    if st.errors_by_reason:
        by = ", ".join(f"{k} {v:,}" for k, v in sorted(st.errors_by_reason.items()))
        lines.append(f"  errors by reason: {by}")
    nodes = ", ".join(f"{k} {v:,}" for k, v in st.nodes.items() if v)
    lines.append(f"  nodes: {nodes}")
    votes = st.votes
    if votes.get("mean") is not None:
        lines.append(
            f"  votes per step: mean {votes['mean']:.3f}, min {votes['min']}, max "
            f"{votes['max']}; samples per step {votes['mean_samples']:.3f}"
        )
    if st.red_flags:
        lines.append("  red flags: " + ", ".join(f"{k} {v:,}" for k, v in st.red_flags.items()))
    rate = f"{st.rate:,.0f} steps/s" if st.pid else "no runner"
    lines.append(
        f"  {rate}, ETA {_duration(st.eta_s) if st.pid else '–'}, active "
        f"{_duration(st.elapsed_s)}, tokens {st.tokens:,}, retried steps {st.retried:,}"
    )
    lines.append(f"  runner pid: {st.pid}" if st.pid else "  runner: none")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.store import RunStore, StoreError

    try:
        with RunStore.open(_resolve(args.run)) as store:
            st = store.status()
            meta = store.meta()
    except StoreError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if st.warning:
        print(f"nanobot: {st.warning}", file=sys.stderr)
    summary = None
    if "summary" in meta:  # a process's root summary (engine/work/summaries.py)
        from nanobot_tui.engine.work.summaries import stored_summary

        summary = stored_summary(meta, st.steps_done)
    learning = meta.get("learning") if isinstance(meta.get("learning"), dict) else None
    if args.json:
        extra = {"summary": summary} if summary else {}
        if learning:
            extra["learning"] = learning
        print(json.dumps({**st.to_dict(), **extra}))
    else:
        text = status_text(st) + (f"\n  summary: {summary}" if summary else "")
        if learning and learning.get("anomaly"):
            text += "\n" + anomaly_line(learning)
        print(text)
    return EXIT_OK


def anomaly_line(learning: dict[str, Any]) -> str:
    """The one line `status` adds for a run that cost far more than its task type's
    history (engine/learning/history.py says when)."""
    from nanobot_tui.text import display_name

    what = display_name(str(learning.get("task_type") or "its task type"))
    return f"  anomaly: {display_name(str(learning['anomaly']))}, against earlier {what} runs"


# --- resume ----------------------------------------------------------------------------


def _budgets(args: argparse.Namespace) -> Budgets | None:
    from nanobot_tui.engine.runs.spec import Budgets

    if args.max_steps is None and args.max_tokens is None and args.max_seconds is None:
        return None
    return Budgets(steps=args.max_steps, tokens=args.max_tokens, seconds=args.max_seconds)


def cmd_resume(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.control import completed_line, resumable, resume_detached
    from nanobot_tui.engine.runs.store import StoreError

    budgets = _budgets(args)
    try:
        st = resumable(args.run)
    except StoreError as exc:  # an unreadable store is the id's fault here
        return _fail(str(exc), EXIT_USAGE)
    rid = st.run_id
    if st.warning:
        print(f"nanobot: {st.warning}", file=sys.stderr)
    if st.status == "completed":
        print(completed_line(st))
        print(rid)
        return EXIT_OK
    if args.detach:
        return print_detached(rid, resume_detached(rid, budgets))
    started = time.perf_counter()
    status, monitor = asyncio.run(run_foreground(rid, budgets, quiet=args.json))
    return print_outcome(status, monitor, args.json, started)


# --- pause / cancel --------------------------------------------------------------------


def _ask(args: argparse.Namespace, request: Callable[..., str]) -> int:
    from nanobot_tui.engine.runs.store import StoreError

    try:
        print(request(args.run, wait=args.wait))
    except StoreError as exc:  # an unreadable store is the id's fault here
        return _fail(str(exc), EXIT_USAGE)
    return EXIT_OK


def cmd_pause(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.control import pause_run

    return _ask(args, pause_run)


def cmd_cancel(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.control import cancel_run

    return _ask(args, cancel_run)


# --- traces ----------------------------------------------------------------------------


def cmd_traces(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.runs.traces import latest_trace_run, run_trace, tail, trace_path

    rid = _resolve(args.run) if args.run else latest_trace_run()
    if rid is None:
        return _fail("no traces yet", EXIT_USAGE)
    path = run_trace(rid)
    if path is None:
        return _fail(f"run {rid} has no trace file ({trace_path(rid)})", EXIT_USAGE)
    for line in tail(path, args.last):
        print(line)
    return EXIT_OK


# --- attach ----------------------------------------------------------------------------


def cmd_attach(args: argparse.Namespace) -> int:
    from nanobot_tui.config import load_config_file

    rid = _resolve(args.run)
    config = load_config_file()  # None: the app detects the tier after its first frame
    from nanobot_tui.ui.app import NanobotApp

    NanobotApp(config, attach_run=rid).run()
    return EXIT_OK


# --- export ----------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nanobot_tui.engine.runs.store import RunStore, StoreError

    try:
        with RunStore.open(_resolve(args.run)) as store:
            n = store.export_json(Path(args.path), steps=args.steps)
    except StoreError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(f"cannot write {args.path}: {exc.strerror or exc}")
    print(f"wrote {n:,} nodes to {args.path}")
    return EXIT_OK


# --- the parser ------------------------------------------------------------------------


def budget_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    p.add_argument("--max-tokens", type=positive_int, help="stop after this many tokens")
    p.add_argument("--max-seconds", type=positive_float, help="stop after this wall time")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "runs", help="list durable runs; remove (rm, prune), compact or recover them"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)
    runs_sub = p.add_subparsers(dest="runs_command", metavar="{rm,prune,compact,recover}")
    q = runs_sub.add_parser("rm", help="remove runs: their folders and trace files")
    q.add_argument("runs", nargs="+", metavar="RUN", help="run id (or a unique prefix)")
    q.add_argument("--json", action="store_true", help="print what was removed as JSON")
    q.set_defaults(func=cmd_runs_rm)
    q = runs_sub.add_parser(
        "prune", help="remove old, finished or oversized runs (never one that is running)"
    )
    q.add_argument(
        "--older-than",
        type=_arg("parse_age"),
        metavar="AGE",
        help="only runs last updated longer ago than this (7d, 12h, 30m)",
    )
    q.add_argument(
        "--status",
        metavar="S,S",
        help="only runs with one of these statuses (default: completed,cancelled,failed)",
    )
    q.add_argument(
        "--keep-size",
        type=_arg("parse_size"),
        metavar="SIZE",
        help="remove the oldest matching runs until all runs fit in this (2GB, 500MB)",
    )
    q.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    q.add_argument("--json", action="store_true", help="print the runs as JSON")
    q.set_defaults(func=cmd_runs_prune)
    q = runs_sub.add_parser(
        "compact", help="gzip runs' trace files (every reader reads them alike)"
    )
    q.add_argument("runs", nargs="*", metavar="RUN", help="run id (or a unique prefix)")
    q.add_argument("--all", action="store_true", help="every finished run no runner holds")
    q.add_argument("--dry-run", action="store_true", help="list what would be compacted")
    q.add_argument("--json", action="store_true", help="print the runs and sizes as JSON")
    q.set_defaults(func=cmd_runs_compact)
    q = runs_sub.add_parser("recover", help="rebuild a damaged run store from what it still holds")
    q.add_argument("run", metavar="RUN", help="run id (or a unique prefix)")
    q.add_argument("--json", action="store_true", help="print what was recovered as JSON")
    q.set_defaults(func=cmd_runs_recover)

    p = sub.add_parser("status", help="a run's snapshot: status, steps, errors, rate, ETA, pid")
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("resume", help="resume a run from its last durable step")
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("--detach", action="store_true", help="run in the background, own session")
    p.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    budget_options(p)
    p.set_defaults(func=cmd_resume)

    for name, func, what in (
        ("pause", cmd_pause, "pause a run after its current step (resume continues it)"),
        ("cancel", cmd_cancel, "cancel a run after its current step (for good)"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("run", help="run id (or a unique prefix)")
        p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for it")
        p.set_defaults(func=func)

    p = sub.add_parser("traces", help="print a run's last trace lines (JSONL)")
    p.add_argument("--run", help="run id (default: the run traced last)")
    p.add_argument("--last", type=positive_int, default=20, help="how many lines")
    p.set_defaults(func=cmd_traces)

    p = sub.add_parser("attach", help="open the app on a run (the process tree follows it)")
    p.add_argument("run", help="run id (or a unique prefix)")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("export", help="write a run's tree as one JSON document")
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("path", help="the JSON file to write")
    p.add_argument("--steps", action="store_true", help="every step row too (large)")
    p.set_defaults(func=cmd_export)
