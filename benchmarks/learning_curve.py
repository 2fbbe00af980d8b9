"""A learning curve: the same stream of tasks run with learning on and with it off.

The stream is N small word-case tasks (default 1,000) in a fixed order from a seed. Each
task is 3 words (`--words`) of one of 10 themed word lists (animals, food, ...; the
"families"); a family is drawn uniformly, its words by a Zipf law over a fixed seeded
ranking of the list, so a few words come back often, most now and then, and every task
is a new combination: familiar items in new company. All families are the engine's one
`wordcase` domain (upper-case each word, truth known), so what varies between families
is the vocabulary, not the kind of step.

Each task is a durable run (start_run + execute, as `nanobot run` does) on the REAL
embedded model (SmolLM2-135M, `local:rlm`, one model server for the whole benchmark,
started by the app's own serving code in a private NANOBOT_HOME). Two arms run every
task, one after the other, the first alternating from task to task so neither gets the
server's warm prompt cache every time:
- learn:   `RunSpec(learn=True)`: L0 reuse of verified step results, L1 few-shot
           examples and the task history (engine/learning through runs/learning_seam);
- control: `RunSpec(learn=False)`: nothing read or written.
The engine has one `learn` switch for all loops, so there is no L0-only / L0+L1 ablation.

Per task and arm (one JSON line each, `--rows`): steps, samples, completion tokens, wall
clock, solved (every word right), right words, steps reused from L0 (the run's meta
`learning.reused`), example uses (L1: new helped + hurt credits over all examples, i.e.
step-example pairs that were given and judged). `--svg` draws samples per task and the
running success rate of both arms against task number.

    python -m benchmarks.learning_curve [--tasks 1000] [--words 3] [--k 2] [--seed 11]
        [--sampler local:rlm] [--rows FILE] [--svg benchmarks/learning_curve.svg] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

# Ten themed lists of common words (3 to 6 letters, as the wordcase domain asks them).
FAMILIES: dict[str, tuple[str, ...]] = {
    name: tuple(words.split())
    for name, words in (
        ("animals", "bear bird cat cow dog duck fish horse lion monkey mouse rabbit sheep tiger"),
        ("food", "bread cake cheese coffee egg fruit juice lunch milk orange potato salt soup"),
        ("nature", "air earth field fire flower forest grass hill island lake leaf moon ocean"),
        ("home", "bed bottle box candle chair clock cup desk door floor knife lamp room wall"),
        ("wear", "coat dress hat jacket pocket ring shirt shoe bag gold glass paper pencil card"),
        ("places", "bank beach castle city farm garden market office park pool road school store"),
        ("time", "day early hour late minute month night season spring summer today week winter"),
        ("colors", "black blue brown five four green red seven three white yellow orange first"),
        ("actions", "begin bring build carry dance drink drive eat fly grow jump laugh read sing"),
        ("qualities", "big busy cheap clean cold dark deep dry easy fast happy heavy hot quiet"),
    )
}  # fmt: skip


def task_stream(tasks: int, words: int, seed: int, zipf_s: float) -> list[dict[str, Any]]:
    """`tasks` tasks in a fixed order: a family (uniform), then `words` distinct words of
    it drawn by a Zipf law (weight 1/rank^s) over the family's seeded ranking."""
    rng = random.Random(seed)
    ranked = {f: rng.sample(ws, len(ws)) for f, ws in FAMILIES.items()}
    names = sorted(FAMILIES)
    out = []
    for n in range(tasks):
        family = rng.choice(names)
        pool = ranked[family]
        weights = [1 / (r + 1) ** zipf_s for r in range(len(pool))]
        picked: list[str] = []
        while len(picked) < min(words, len(pool)):
            word = rng.choices(pool, weights)[0]
            if word not in picked:
                picked.append(word)
        out.append({"task": n, "family": family, "words": picked})
    return out


def example_credits() -> int:
    """helped + hurt over every stored L1 example (0 before learned.db exists)."""
    from nanobot_tui.engine.learning.examples import ExampleBank
    from nanobot_tui.engine.learning.store import LearningStore

    store = LearningStore.open_existing()
    if store is None:
        return 0
    with store:
        return sum(int(s.helped or 0) + int(s.hurt or 0) for s in ExampleBank(store).summary())


async def run_task(
    task: dict[str, Any], learn: bool, args: argparse.Namespace, client: Any, model: str
) -> dict[str, Any]:
    """One task as one durable run; its row."""
    from nanobot_tui.engine.runs.durable import execute, start_run
    from nanobot_tui.engine.runs.spec import RetryPolicy, RunSpec
    from nanobot_tui.engine.runs.store import RunStore
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    spec = RunSpec(
        domain="wordcase", params={"word_list": task["words"], "words": len(task["words"])},
        sampler=args.sampler, seed=args.seed, label=f"{task['family']}{len(task['words'])}",
        vote=VoteConfig(k=args.k, max_rounds=args.max_rounds, max_red_rounds=3,
                        token_cap=args.cap),
        retry=RetryPolicy(retries=0, on_fail="skip"), learn=learn,
    )  # fmt: skip
    credits = await asyncio.to_thread(example_credits) if learn else 0
    started = time.perf_counter()
    rid = await start_run(spec)
    sampler = None
    if client is not None:  # the shared server, asked as `_local_sampler` would
        sampler = LLMSampler(
            client, spec.build_domain(), name=f"local rlm: {model}",
            token_cap=spec.vote.token_cap, seed=spec.seed,
        )  # fmt: skip
    status = await execute(rid, sampler=sampler)
    wall = time.perf_counter() - started
    with RunStore.open(rid) as store:
        learning = store.meta().get("learning") or {}
        domain = store.domain
        right = sum(
            1
            for i in range(domain.total_steps())
            if (answer := store.step(i).answer) is not None
            and domain.key(domain.load_answer(answer))
            == domain.key(domain.truth(domain.step_at(i)))
        )
    used = (await asyncio.to_thread(example_credits)) - credits if learn else 0
    return {
        "task": task["task"],
        "arm": "learn" if learn else "control",
        "family": task["family"],
        "words": task["words"],
        "status": status.status,
        "solved": status.status == "completed" and status.reason == "solved",
        "right": right,
        "steps": status.steps_done or 0,
        "samples": status.samples,
        "tokens": status.tokens,
        "wallS": round(wall, 3),
        "reused": int(learning.get("reused") or 0),
        "exampleUses": used,
    }


def window(rows: list[dict[str, Any]], part: slice) -> dict[str, Any]:
    picked = rows[part]
    if not picked:
        return {}
    n, steps = len(picked), sum(r["steps"] for r in picked) or 1
    return {
        "tasks": n,
        "solved": round(sum(r["solved"] for r in picked) / n, 3),
        "wordsRight": round(sum(r["right"] for r in picked) / steps, 3),
        "samplesPerTask": round(sum(r["samples"] for r in picked) / n, 2),
        "tokensPerTask": round(sum(r["tokens"] for r in picked) / n, 1),
        "wallPerTaskS": round(sum(r["wallS"] for r in picked) / n, 2),
        "reusedShare": round(sum(r["reused"] for r in picked) / steps, 3),
        "exampleUsesPerTask": round(sum(r["exampleUses"] for r in picked) / n, 2),
    }


def summarize(rows: list[dict[str, Any]], edge: int) -> dict[str, Any]:
    out = {}
    for arm in ("learn", "control"):
        mine = [r for r in rows if r["arm"] == arm]
        out[arm] = {
            "all": window(mine, slice(None)),
            f"first{edge}": window(mine, slice(None, edge)),
            f"last{edge}": window(mine, slice(-edge, None)),
        }
    return out


def svg_chart(rows: list[dict[str, Any]], title: str) -> str:
    """Two panels, hand-drawn: samples per task (top; a 5-task moving mean) and the
    running share of solved tasks (bottom), both arms against task number."""
    width, height, left, pad, panel = 760, 520, 60, 20, 200
    colors = {"learn": "#1f77b4", "control": "#d62728"}
    arms = {a: [r for r in rows if r["arm"] == a] for a in colors}
    count = max((len(v) for v in arms.values()), default=0) or 1

    def mean5(values: Sequence[float]) -> list[float]:
        return [sum(values[max(0, i - 4) : i + 1]) / len(values[max(0, i - 4) : i + 1])
                for i in range(len(values))]  # fmt: skip

    def running(values: Sequence[float]) -> list[float]:
        total, out = 0.0, []
        for i, v in enumerate(values):
            total += v
            out.append(total / (i + 1))
        return out

    series = {
        a: (mean5([r["samples"] for r in rs]), running([float(r["solved"]) for r in rs]))
        for a, rs in arms.items()
    }
    top = max((max(s[0], default=0) for s in series.values()), default=0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="16" font-size="14">{title}</text>',
    ]
    plot_w = width - left - pad
    for p, (label, y_max) in enumerate((("samples per task (5-task mean)", top),
                                        ("solved so far (share)", 1.0))):  # fmt: skip
        y0 = 40 + p * (panel + 60)
        parts.append(f'<text x="{left}" y="{y0 - 6}">{label}</text>')
        parts.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel}" '
                     'fill="none" stroke="#888"/>')  # fmt: skip
        for frac in (0.0, 0.5, 1.0):
            y = y0 + panel * (1 - frac)
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                         f"{y_max * frac:.3g}</text>")  # fmt: skip
        for a, values in series.items():
            ys = values[p]
            if not ys:
                continue
            points = " ".join(
                f"{left + plot_w * i / max(count - 1, 1):.1f},"
                f"{y0 + panel * (1 - min(v / y_max, 1.0)):.1f}"
                for i, v in enumerate(ys)
            )
            parts.append(f'<polyline fill="none" stroke="{colors[a]}" stroke-width="1.5" '
                         f'points="{points}"/>')  # fmt: skip
        base = y0 + panel + 14
        parts.append(f'<text x="{left}" y="{base}">task 1</text>')
        parts.append(f'<text x="{left + plot_w}" y="{base}" text-anchor="end">task {count}</text>')
    for n, (a, c) in enumerate(colors.items()):
        y = height - 14
        parts.append(f'<line x1="{left + 200 * n}" y1="{y - 4}" x2="{left + 200 * n + 24}" '
                     f'y2="{y - 4}" stroke="{c}" stroke-width="2"/>')  # fmt: skip
        name = "learning on" if a == "learn" else "learning off (control)"
        parts.append(f'<text x="{left + 200 * n + 30}" y="{y}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stream = task_stream(args.tasks, args.words, args.seed, args.zipf)
    rows: list[dict[str, Any]] = []
    if args.rows:
        Path(args.rows).write_text("")
    async with AsyncExitStack() as stack:
        client, model = None, ""
        if not args.sampler.startswith("simulated"):
            from nanobot_tui.config import SlotName, load_config
            from nanobot_tui.engine.serving.workbench import Workbench

            slot = cast("SlotName", args.sampler.partition(":")[2] or "rlm")
            workbench = Workbench(load_config()[0], only_slots=(slot,))
            await stack.enter_async_context(workbench)
            client, model = workbench.client(slot), workbench.slots[slot].display_name
        started = time.perf_counter()
        for task in stream:
            order = (True, False) if task["task"] % 2 == 0 else (False, True)
            for learn in order:
                row = await run_task(task, learn, args, client, model)
                rows.append(row)
                if args.rows:  # row by row: a long stream stopped early keeps its rows
                    with Path(args.rows).open("a") as out:
                        out.write(json.dumps(row) + "\n")
            if not args.json:
                done = [r for r in rows if r["task"] == task["task"]]
                print(f"task {task['task'] + 1}/{args.tasks} " + "  ".join(
                    f"{r['arm']}: solved={r['solved']} samples={r['samples']} "
                    f"reused={r['reused']} wall={r['wallS']:.1f}s" for r in done
                ), flush=True)  # fmt: skip
    seen: set[str] = set()
    familiar = 0
    for task in stream:
        familiar += sum(w in seen for w in task["words"])
        seen.update(task["words"])
    if args.svg:
        title = f"learning curve: {args.tasks} word-case tasks, {args.sampler}, k={args.k}"
        Path(args.svg).write_text(svg_chart(rows, title))
    edge = max(1, min(10, args.tasks // 2))
    return {
        "tasks": args.tasks,
        "wordsPerTask": args.words,
        "families": len(FAMILIES),
        "distinctWords": len(seen),
        "familiarWordShare": round(familiar / max(1, sum(len(t["words"]) for t in stream)), 3),
        "sampler": args.sampler,
        "model": model or None,
        "k": args.k,
        "seed": args.seed,
        "wallS": round(time.perf_counter() - started, 1),
        "arms": summarize(rows, edge),
        "rows": args.rows,
        "svg": args.svg,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the stream")
    parser.add_argument("--words", type=int, default=3, help="words (steps) per task")
    parser.add_argument("--k", type=int, default=2, help="votes ahead needed to decide a word")
    parser.add_argument(
        "--max-rounds", type=int, default=8, help="voting rounds before a word is undecided"
    )
    parser.add_argument("--cap", type=int, default=24, help="token cap per sample")
    parser.add_argument("--seed", type=int, default=11, help="the stream's and the runs' seed")
    parser.add_argument(
        "--zipf", type=float, default=1.1, help="Zipf exponent of word recurrence in a family"
    )
    parser.add_argument(
        "--sampler",
        default="local:rlm",
        help="local:SLOT (the real embedded model) or simulated:P (no learning: checks the "
        "harness only)",
    )
    parser.add_argument("--rows", help="write one JSON line per task and arm to this file")
    parser.add_argument("--svg", help="draw cost and success per task into this SVG file")
    parser.add_argument("--json", action="store_true", help="only the summary, as one JSON line")
    parser.add_argument(
        "--from-rows",
        metavar="FILE",
        help="run nothing: summarize (and draw, with --svg) the rows an earlier run wrote",
    )
    args = parser.parse_args()
    if args.from_rows:
        rows = [json.loads(line) for line in Path(args.from_rows).read_text().splitlines()]
        tasks = len({r["task"] for r in rows})
        if args.svg:
            title = f"learning curve: {tasks} word-case tasks, {args.sampler}, k={args.k}"
            Path(args.svg).write_text(svg_chart(rows, title))
        summary = {"tasks": tasks, "arms": summarize(rows, max(1, min(10, tasks // 2)))}
        print(json.dumps(summary, indent=None if args.json else 2))
        return 0
    if args.tasks < 1 or args.words < 1 or args.k < 1:
        parser.error("--tasks, --words and --k must be at least 1")
    home = tempfile.mkdtemp(prefix="learning-curve-home-")
    os.environ["NANOBOT_HOME"] = home
    try:
        out = asyncio.run(main_async(args))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
