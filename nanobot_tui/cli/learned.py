"""`nanobot learned [--json]`, `nanobot learned forget WHAT [--type T] [--json]` and
`nanobot learned replay ROWS [--speed N]`:
everything the learning loops kept, and taking it back.

The listing shows the cached step results (L0) per step type with their hits and hit
rate, each task type's history with the budgets and p derived from it, the anomalies, and
the learned agent skills (when this nanobot has them: engine/learning/skills.py).
`replay` opens the app on a learning-curve benchmark's rows, replayed task by task
(ui/screens/learning_replay.py).
`forget` removes what it names (`--type` narrows it to one step type, task type or skill)
and says how many of each went. Names come from stored data: the text listing shows them
with control characters escaped; JSON keeps them as they are.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from types import ModuleType
from typing import Any

from nanobot_tui.cli.common import EXIT_OK
from nanobot_tui.errors import UsageError

FORGET_WHAT = ("results", "examples", "history", "anomalies", "skills", "all")
_SKILLS_MODULE = "nanobot_tui.engine.learning.skills"


def _skills_api() -> ModuleType | None:
    """engine/learning/skills.py when this nanobot has it (and it lists skills), else None."""
    try:
        module = importlib.import_module(_SKILLS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == _SKILLS_MODULE:
            return None
        raise
    return module if hasattr(module, "list_learned_skills") else None


def _when(stamp: float | None) -> str:
    return "never" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _name(text: str) -> str:
    from nanobot_tui.text import display_name

    return display_name(text)


def collect() -> dict[str, Any]:
    """Everything `nanobot learned --json` prints (engine/learning/overview.py reads it)."""
    from nanobot_tui.engine.learning.overview import learned_overview

    return learned_overview().to_dict()


def _budget_text(budget: dict[str, Any] | None, records: int, min_records: int) -> str:
    if budget is None:
        return f"defaults (budgets from history after {min_records} tasks)"
    from nanobot_tui.units import format_seconds

    text = (
        f"budget {budget['steps']:,} steps, {budget['tokens']:,} tokens, "
        f"{format_seconds(budget['seconds'])}"
    )
    if budget["p"] is not None:
        text += f"; p {budget['p']:.3f}"
    k = f"k {budget['k']}" if budget["k"] is not None else f"no k ({budget['note']})"
    return f"{text}; {k}"


def _print_listing(data: dict[str, Any]) -> None:
    print(f"{_name(data['path'])} (learning {'on' if data['learning'] else 'off'})")
    print("Cached results (L0):")
    if not data["results"]:
        print("  none")
    for r in data["results"]:
        rate = f" ({r['hit_rate']:.0%})" if r["hit_rate"] is not None else ""
        print(
            f"  {_name(r['step_type'])}: {r['results']:,} result(s), "
            f"{r['hits']:,} hit(s) in {r['lookups']:,} lookup(s){rate}, "
            f"last hit {_when(r['last_hit'])}"
        )
    print("Few-shot examples (L1):")
    if not data["examples"]:
        print("  none")
    for e in data["examples"]:
        print(
            f"  {_name(e['step_type'])}: {e['active']:,} in use, {e['retired']:,} retired; "
            f"helped {e['helped']:,} step(s), hurt {e['hurt']:,}"
        )
    print("Task history:")
    if not data["history"]:
        print("  none")
    for h in data["history"]:
        if not h["records"]:
            continue  # a type with anomalies only: listed below
        rate = f", {h['success_rate']:.0%} succeeded" if h["success_rate"] is not None else ""
        budget = _budget_text(h["budget"], h["records"], data["min_records"])
        print(f"  {_name(h['task_type'])} ({h['kind']}): {h['records']:,} task(s){rate}; {budget}")
    print("Anomalies:")
    if not data["anomalies"]:
        print("  none")
    for a in data["anomalies"]:
        what = "; ".join(
            f"{e['metric']} {e['value']:,.6g} > {e['threshold']:,.6g} (median {e['median']:,.6g})"
            for e in a["exceeded"]
        )
        print(f"  #{a['id']} {_when(a['at'])} {_name(a['task_type'])}: {what}")
    if data["skills"] is None:
        return
    print("Skills:")
    if not data["skills"]:
        print("  none")
    for s in data["skills"]:
        print(
            f"  {_name(str(s.get('name', '')))} ({_name(str(s.get('status', '')))}): "
            f"{s.get('hits', 0)} hit(s), {s.get('failures', 0)} failure(s); "
            f"{_name(str(s.get('description', '')))}"
        )


def cmd_learned(args: argparse.Namespace) -> int:
    data = collect()
    if args.json:
        print(json.dumps(data, default=str))
    else:
        _print_listing(data)
    return EXIT_OK


def forget(what: str, task_type: str | None = None) -> dict[str, int]:
    """Remove what `what` names (see FORGET_WHAT), of one type when given; how many of
    each went. UsageError for skills where this nanobot has none."""
    from nanobot_tui.engine.learning.examples import ExampleBank
    from nanobot_tui.engine.learning.history import TaskHistory
    from nanobot_tui.engine.learning.reuse import ResultCache
    from nanobot_tui.engine.learning.store import LearningStore

    removed: dict[str, int] = {}
    named = ("results", "examples", "history", "anomalies") if what == "all" else (what,)
    parts = tuple(p for p in named if p != "skills")
    if parts:
        store = LearningStore.open_existing()
        for part in parts:
            removed[part] = 0
        if store is not None:
            with store:
                if "results" in parts:
                    removed["results"] = ResultCache(store).forget(step_type=task_type)
                if "examples" in parts:
                    removed["examples"] = ExampleBank(store).forget(task_type)
                if "history" in parts:
                    removed["history"] = TaskHistory(store).forget(task_type)
                if "anomalies" in parts:
                    removed["anomalies"] = TaskHistory(store).forget_anomalies(task_type)
    if what in ("skills", "all"):
        skills_api = _skills_api()
        if skills_api is None:
            if what == "skills":
                raise UsageError("learned forget skills: this nanobot learns no skills yet")
        else:
            known = {s.name for s in skills_api.list_learned_skills()}
            names = [task_type] if task_type is not None else sorted(known)
            if what == "all":
                # `all --type T` removes a skill only if one is called T.
                names = [n for n in names if n in known]
            # Nothing to remove: not calling forget leaves an empty home untouched.
            removed["skills"] = len(skills_api.forget_learned_skills(names)) if names else 0
    return removed


def cmd_forget(args: argparse.Namespace) -> int:
    removed = forget(args.what, args.type)
    if args.json:
        print(json.dumps({"forgot": removed, "type": args.type}))
        return EXIT_OK
    labels = {"results": "cached result(s)", "examples": "example(s)",
              "history": "history record(s)",
              "anomalies": "anomaly(ies)", "skills": "skill(s)"}  # fmt: skip
    scope = f" of type {_name(args.type)}" if args.type is not None else ""
    print("forgot " + ", ".join(f"{n:,} {labels[k]}" for k, n in removed.items()) + scope)
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """Read the rows first (a bad file is one line, and no app), then open the app on
    the replay, which reads them again in its worker."""
    from pathlib import Path

    from nanobot_tui.config import load_config_file
    from nanobot_tui.ui.screens.learning_replay import LearningReplayApp, read_rows

    path = Path(args.rows)
    read_rows(path)
    LearningReplayApp(path, args.speed, load_config_file()).run()
    return EXIT_OK


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of tasks per second, not {text!r}"
        ) from None
    if not 0.1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be from 0.1 to 1000 tasks per second, not {text}")
    return value


def _type_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a step type, task type or skill, not ''")
    return text


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "learned",
        help="what the learning loops kept: cached results, task history, budgets, "
        "anomalies, skills",
        description="List what nanobot learned from its verified work (learned.db and "
        "learned skills); `learned forget` takes it back; `learned replay` replays a "
        "learning-curve benchmark in the app.",
    )
    p.add_argument("--json", action="store_true", help="print everything as one JSON object")
    p.set_defaults(func=cmd_learned)
    learned_sub = p.add_subparsers(dest="learned_command", metavar="{forget,replay}")
    q = learned_sub.add_parser(
        "forget",
        help="remove cached results, history, anomalies, skills, or all of them",
        description="Remove what WHAT names (all: every kind), of one type with --type; "
        "prints how many of each went.",
    )
    q.add_argument(
        "what",
        choices=FORGET_WHAT,
        metavar="WHAT",
        help=f"what to remove: {', '.join(FORGET_WHAT)}",
    )
    q.add_argument(
        "--type",
        type=_type_name,
        metavar="T",
        help="only this step type (results), task type (history, anomalies) or skill name",
    )
    q.add_argument("--json", action="store_true", help="print the counts as JSON")
    q.set_defaults(func=cmd_forget)
    r = learned_sub.add_parser(
        "replay",
        help="replay a learning-curve benchmark's rows in the app, task by task",
        description="Open the app on a replay of ROWS (a learning-curve benchmark's JSON "
        "lines): each arm's samples per task and success, drawn task by task. Space pauses, "
        "q goes back.",
    )
    r.add_argument("rows", metavar="ROWS", help="the benchmark's rows file (.jsonl)")
    r.add_argument(
        "--speed",
        type=_speed,
        default=4.0,
        metavar="TASKS_PER_S",
        help="tasks shown per second (default 4)",
    )
    r.set_defaults(func=cmd_replay)
