"""A learning curve: one stream of small tasks over 10 kinds of step, run by four arms
that differ only in which learning loops are on (an ablation).

The stream is N tasks (default 1,000) in a fixed order from a seed. Each task is one of
the 10 families of the engine's `micro` domain (wordcase, city, email, dates, units,
code, sentiment, numbers, sums, capitals; drawn uniformly) and `--items` (default 3)
distinct items of that family's pool, drawn by a Zipf law (weight 1/rank^s) over a seeded
ranking of the pool: a few items come back often, most now and then, and every task is a
new combination of them. Each item is one step with a known truth.

Each task is a durable run (start_run + execute, as `nanobot run` does) on the REAL
embedded model (SmolLM2-135M, `local:rlm`; one model server for the whole benchmark,
started by the app's own serving code). Every task runs in every arm, the arm order
rotating from task to task so no arm always gets the server's warm prompt cache:
- control: `RunSpec(learn=False)`: nothing read or written;
- L0:      `learn_loops=("reuse",)`: verified step results are reused;
- L0+L1:   `("reuse", "examples")`: and verified answers are given as few-shot examples;
- all:     `("reuse", "examples", "history")`: and, as `nanobot run` does, k and budgets
           come from the task type's history (`history_budget`) once it has enough runs.

Arms must not see each other's learning: learned.db (and the runs, traces) live in
NANOBOT_HOME, so each arm has a home of its own (<base>/<arm>) and NANOBOT_HOME is
switched to it around each of its runs (runs are sequential); the model server lives in
<base>/server. `--home DIR` keeps the homes (open the Learning screen on one with
`NANOBOT_HOME=DIR/L0 nanobot`); without it they are deleted at the end.

Per task and arm, one JSON line (`--rows`, appended as they come, so a stopped benchmark
keeps them): task, family, arm, steps (done), voted_steps (that called the model),
samples, tokens (completion), wall_s, solved (every item right), right, items, reused
(steps answered from L0), example_uses (L1: helped + hurt credits added by the run, i.e.
step-example pairs given and judged) and k. `--from-rows FILE` summarises (and draws)
such a file without running anything. `--svg` draws samples per task (a 20-task rolling
mean) and the running success rate of the four arms against task number.

`--families` keeps the stream to some families (one family reaches the history's 20 runs
sooner); `--threads` sets the model server's threads (1 on a machine busier than its cores).

A fifth arm, `distill`, runs only when named (`--arms all,distill`): see `DISTILL` and
`DistillArm` (its own home and server; the engine's LearnJob every `--learn-every` tasks).

    python -m benchmarks.learning_curve [--tasks 1000] [--items 3] [--k 2] [--seed 11]
        [--arms control,L0,L0+L1,all[,distill]] [--families F,F] [--sampler local:rlm]
        [--threads N] [--rows FILE] [--svg FILE] [--home DIR] [--json] [--from-rows FILE]
        [--learn-every 40] [--learn-epochs N] [--ab-steps 120] [--train-threads 1]
        [--base-dir DIR] [--learn-log FILE]
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
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

# Each arm's learning loops (None: learning off).
ARMS: dict[str, tuple[str, ...] | None] = {
    "control": None,
    "L0": ("reuse",),
    "L0+L1": ("reuse", "examples"),
    "all": ("reuse", "examples", "history"),
}
# The distillation arm: the "all" arm's loops, plus LoRA adapters (`--arms ...,distill`,
# not run by default): after every `--learn-every` tasks the engine's LearnJob trains an
# adapter for each step type with enough verified examples, and a promoted one applies to
# the arm's later runs (run_memory gives a step type's promoted adapter scale 1).
DISTILL = "distill"
KNOWN_ARMS: dict[str, tuple[str, ...] | None] = {**ARMS, DISTILL: ARMS["all"]}
ROW_KEYS = (
    "task", "family", "arm", "steps", "voted_steps", "samples", "tokens", "wall_s",
    "solved", "right", "items", "reused", "example_uses", "k",
)  # fmt: skip
ROLLING = 20  # tasks in the drawing's rolling mean


@dataclass(frozen=True)
class Task:
    task: int  # 0-based place in the stream
    family: str
    items: tuple[str, ...]


def family_pools() -> dict[str, tuple[str, ...]]:
    from nanobot_tui.engine.voting.domains.micro_families import FAMILIES

    return {name: tuple(family.pool()) for name, family in FAMILIES.items()}


def task_stream(
    tasks: int, items: int, seed: int, zipf: float, pools: dict[str, tuple[str, ...]]
) -> list[Task]:
    """`tasks` tasks in a fixed order: a family (uniform), then `items` distinct items of
    its pool drawn by a Zipf law over the pool's seeded ranking."""
    rng = random.Random(seed)
    ranked = {name: rng.sample(pool, len(pool)) for name, pool in sorted(pools.items())}
    names = sorted(pools)
    out = []
    for n in range(tasks):
        family = rng.choice(names)
        pool = ranked[family]
        weights = [1 / (r + 1) ** zipf for r in range(len(pool))]
        picked: list[str] = []
        while len(picked) < min(items, len(pool)):
            item = rng.choices(pool, weights)[0]
            if item not in picked:
                picked.append(item)
        out.append(Task(n, family, tuple(picked)))
    return out


@contextmanager
def nanobot_home(home: Path) -> Iterator[None]:
    """NANOBOT_HOME is `home` inside (learned.db, runs and traces go there)."""
    before = os.environ.get("NANOBOT_HOME")
    os.environ["NANOBOT_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("NANOBOT_HOME", None)
        else:
            os.environ["NANOBOT_HOME"] = before


def example_credits() -> int:
    """helped + hurt over every stored L1 example of this home's learned.db."""
    from nanobot_tui.engine.learning.examples import ExampleBank
    from nanobot_tui.engine.learning.store import LearningStore

    store = LearningStore.open_existing()
    if store is None:
        return 0
    with store:
        return sum(int(s.helped or 0) + int(s.hurt or 0) for s in ExampleBank(store).summary())


async def run_task(
    task: Task, arm: str, args: argparse.Namespace, client: Any, model: str
) -> dict[str, Any]:
    """One task as one durable run in `arm`, inside the arm's NANOBOT_HOME; its row."""
    from nanobot_tui.engine.learning.run_memory import history_budget, task_type_of
    from nanobot_tui.engine.runs.durable import execute, start_run
    from nanobot_tui.engine.runs.spec import Budgets, RetryPolicy, RunSpec
    from nanobot_tui.engine.runs.store import RunStore
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
    from nanobot_tui.engine.voting.domains.registry import DOMAINS
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    loops = KNOWN_ARMS[arm]
    params: dict[str, Any] = {"family": task.family, "items": list(task.items)}
    label = DOMAINS["micro"].label(params)
    k, budgets = args.k, Budgets()
    if loops is not None and "history" in loops:  # as `nanobot run` takes them
        task_type = task_type_of(label, "micro", args.sampler.startswith("simulated"))
        budget = await asyncio.to_thread(history_budget, task_type, len(task.items))
        if budget is not None:
            k = budget.k or k
            # Steps and tokens as `nanobot run` takes them; not seconds: on this shared
            # machine a wall budget from history measures the neighbours' load.
            budgets = Budgets(steps=budget.steps, tokens=budget.tokens)
    spec = RunSpec(
        domain="micro", params=params, sampler=args.sampler, seed=args.seed, label=label,
        vote=VoteConfig(k=k, max_rounds=args.max_rounds, max_red_rounds=3, token_cap=args.cap),
        budgets=budgets, retry=RetryPolicy(retries=0, on_fail="skip"),
        learn=loops is not None, learn_loops=loops or (),
    )  # fmt: skip
    credits = await asyncio.to_thread(example_credits) if loops else 0
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
    right = reused = 0
    with RunStore.open(rid) as store:
        domain = store.domain
        for i in range(domain.total_steps()):
            row = store.step(i)
            if row.status == "completed" and row.attempts == 0:  # an L0 hit: no model call
                reused += 1
            if row.answer is not None and domain.key(domain.load_answer(row.answer)) == (
                domain.key(domain.truth(domain.step_at(i)))
            ):
                right += 1
    used = (await asyncio.to_thread(example_credits)) - credits if loops else 0
    steps = status.steps_done or 0
    return {
        "task": task.task,
        "family": task.family,
        "arm": arm,
        "steps": steps,
        "voted_steps": steps - reused,
        "samples": status.samples,
        "tokens": status.tokens,
        "wall_s": round(wall, 3),
        "solved": status.status == "completed" and status.reason == "solved",
        "right": right,
        "items": len(task.items),
        "reused": reused,
        "example_uses": used,
        "k": k,
    }


def arm_order(arms: Sequence[str], task: int) -> list[str]:
    """The arms rotated by one place per task: each leads every len(arms)-th task."""
    shift = task % len(arms)
    return list(arms[shift:]) + list(arms[:shift])


class DistillArm:
    """The distill arm's model server and learning jobs, in its home (<base>/distill).
    Its server is its own: a server loads its home's promoted adapters when it starts
    (a new adapter file needs a new server), so it is started again after a job."""

    def __init__(self, args: argparse.Namespace, home: Path) -> None:
        self.args = args
        self.home = home
        self.bench: Any = None
        self.model = ""
        self.served: tuple[Path, ...] = ()  # the adapter files its server loaded
        self.jobs: list[dict[str, Any]] = []

    @property
    def client(self) -> Any:
        return None if self.bench is None else self.bench.client("rlm")

    async def start(self) -> None:
        if self.args.sampler.startswith("simulated"):
            return
        from nanobot_tui.config import load_config
        from nanobot_tui.engine.serving.adapter_registry import served_adapters
        from nanobot_tui.engine.serving.workbench import Workbench

        with nanobot_home(self.home):
            self.bench = Workbench(
                load_config()[0], only_slots=("rlm",), threads=self.args.threads or None
            )
            await self.bench.start()
            path = self.bench.slots["rlm"].path
            self.served = served_adapters(path) if path is not None else ()
        self.model = self.bench.slots["rlm"].display_name

    async def stop(self) -> None:
        if self.bench is not None:
            with nanobot_home(self.home):
                await self.bench.stop()
            self.bench = None

    def adapter_for(self, family: str) -> int | None:
        """The id of the promoted adapter a run of `family` gets (its server serves it)."""
        if not self.served:
            return None
        from nanobot_tui.engine.serving.adapter_registry import AdapterRegistry

        found = None
        with nanobot_home(self.home), AdapterRegistry() as registry:
            for record in registry.list(status="promoted"):  # the newest, as run_memory
                if record.step_type == f"micro:{family}" and record.path in self.served:
                    found = record.id
        return found

    async def learn(self, after_task: int) -> dict[str, Any]:
        """The engine's LearnJob on the arm's learned.db (its server stopped meanwhile:
        one model server at a time); the job's summary, also appended to
        `--learn-log`."""
        from nanobot_tui.config import load_config
        from nanobot_tui.engine.learning.distill.job import LearnJob

        await self.stop()
        options: dict[str, Any] = {"threads": self.args.train_threads}
        if self.args.base_dir:
            options["base_dir"] = Path(self.args.base_dir)
        started = time.perf_counter()
        with nanobot_home(self.home):
            job = LearnJob(
                load_config()[0], epochs=self.args.learn_epochs, train_options=options,
                ab_steps=self.args.ab_steps,
            )  # fmt: skip
            summary = await job.run()
            done = {
                "after_task": after_task,
                "wall_s": round(time.perf_counter() - started, 1),
                "line": summary.line(),  # names this home's learned.db
                **summary.to_dict(),
            }
        self.jobs.append(done)
        if self.args.learn_log:
            with Path(self.args.learn_log).open("a") as out:
                out.write(json.dumps(done) + "\n")
        await self.start()
        return done


async def run_stream(
    stream: Sequence[Task],
    args: argparse.Namespace,
    base: Path,
    client: Any,
    model: str,
    quiet: bool = True,
    distill: DistillArm | None = None,
) -> list[dict[str, Any]]:
    """Every task in every arm of `args.arms`, each arm in its own home under `base`;
    the rows, also appended to `args.rows` as they come. The distill arm asks its own
    server (`distill`) and learns after every `args.learn_every` tasks."""
    rows: list[dict[str, Any]] = []
    for task in stream:
        done = []
        for arm in arm_order(args.arms, task.task):
            adapter = None
            with nanobot_home(base / arm):
                if arm == DISTILL and distill is not None:
                    adapter = distill.adapter_for(task.family)
                    row = await run_task(
                        task, arm, args, distill.client or client, distill.model or model
                    )
                    row["adapter"] = adapter
                else:
                    row = await run_task(task, arm, args, client, model)
            rows.append(row)
            done.append(row)
            if args.rows:  # row by row: a long stream stopped early keeps its rows
                with Path(args.rows).open("a") as out:
                    out.write(json.dumps(row) + "\n")
        if not quiet:
            print(f"task {task.task + 1}/{len(stream)} {task.family}: " + "  ".join(
                f"{r['arm']} solved={r['solved']} samples={r['samples']} "
                f"reused={r['reused']} k={r['k']} {r['wall_s']:.1f}s" for r in done
            ), flush=True)  # fmt: skip
        every = getattr(args, "learn_every", 0)
        last = task is stream[-1]
        if distill is not None and every and (task.task + 1) % every == 0 and not last:
            job = await distill.learn(task.task)
            if not quiet:
                print(f"learned after task {task.task + 1}: {job['line']}", flush=True)
    return rows


# --- the summary ---------------------------------------------------------------------------


def edge_of(tasks: int) -> int:
    """The first and last windows' size: min(50, N/5), at least 1."""
    return max(1, min(50, tasks // 5))


def window(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    n, steps, items = len(rows), sum(r["steps"] for r in rows), sum(r["items"] for r in rows)
    return {
        "tasks": n,
        "votedStepsPerTask": round(sum(r["voted_steps"] for r in rows) / n, 3),
        "samplesPerTask": round(sum(r["samples"] for r in rows) / n, 2),
        "tokensPerTask": round(sum(r["tokens"] for r in rows) / n, 1),
        "wallPerTaskS": round(sum(r["wall_s"] for r in rows) / n, 3),
        "success": round(sum(bool(r["solved"]) for r in rows) / n, 3),
        "itemsRight": round(sum(r["right"] for r in rows) / max(1, items), 3),
        "hitShare": round(sum(r["reused"] for r in rows) / steps, 3) if steps else 0.0,
        "exampleUsesPerTask": round(sum(r["example_uses"] for r in rows) / n, 2),
        "meanK": round(sum(r["k"] for r in rows) / n, 2),
    }  # fmt: skip


def _ratio(first: float, last: float) -> str:
    if last > 0:
        return f"{first / last:.1f}x"
    return "inf x" if first > 0 else "1.0x"


def targets(first: dict[str, Any], last: dict[str, Any]) -> dict[str, str]:
    """The seed's targets, each as "first window -> last window" (steps 5x fewer, wall 10x
    less, success 60 -> 95 %, hit share 0 -> 60 %)."""
    if not first or not last:
        return {}
    fs, ls = first["votedStepsPerTask"], last["votedStepsPerTask"]
    fw, lw = first["wallPerTaskS"], last["wallPerTaskS"]
    return {
        "votedSteps (5x fewer)": f"{fs:.2f} -> {ls:.2f} ({_ratio(fs, ls)} fewer)",
        "wall (10x less)": f"{fw:.2f} s -> {lw:.2f} s ({_ratio(fw, lw)} less)",
        "success (60 -> 95 %)": f"{first['success']:.0%} -> {last['success']:.0%}",
        "hit (0 -> 60 %)": f"{first['hitShare']:.0%} -> {last['hitShare']:.0%}",
    }


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: the whole stream, the first and last windows and the targets; per family
    and arm: the success rate."""
    tasks = len({r["task"] for r in rows})
    edge = edge_of(tasks)
    arms = [a for a in KNOWN_ARMS if any(r["arm"] == a for r in rows)]
    out: dict[str, Any] = {"tasks": tasks, "window": edge, "arms": {}, "families": {}}
    for arm in arms:
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["task"])
        first, last = window(mine[:edge]), window(mine[-edge:])
        out["arms"][arm] = {
            "all": window(mine),
            "first": first,
            "last": last,
            "targets": targets(first, last),
        }
    for family in sorted({r["family"] for r in rows}):
        out["families"][family] = {
            arm: round(sum(bool(r["solved"]) for r in picked) / len(picked), 3)
            for arm in arms
            if (picked := [r for r in rows if r["arm"] == arm and r["family"] == family])
        }
    return out


# --- the drawing ---------------------------------------------------------------------------

STYLES = {  # colour and dash: told apart in colour and in grey
    "control": ("#d62728", ""),
    "L0": ("#ff7f0e", "6 3"),
    "L0+L1": ("#2ca02c", "2 3"),
    "all": ("#1f77b4", "10 3 2 3"),
    DISTILL: ("#9467bd", "1 2"),
}


def rolling(values: Sequence[float], width: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def running(values: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        out.append(total / (i + 1))
    return out


def svg_chart(rows: Sequence[dict[str, Any]], title: str) -> str:
    """Two panels, plain SVG: samples per task (top; a 20-task rolling mean) and the
    running share of solved tasks (bottom), every arm against task number."""
    width, height, left, pad, panel = 760, 540, 60, 20, 200
    arms = {
        a: sorted((r for r in rows if r["arm"] == a), key=lambda r: r["task"])
        for a in STYLES
        if any(r["arm"] == a for r in rows)
    }
    count = max((len(v) for v in arms.values()), default=0) or 1
    series = {
        a: (
            rolling([float(r["samples"]) for r in rs], ROLLING),
            running([float(bool(r["solved"])) for r in rs]),
        )
        for a, rs in arms.items()
    }
    top = max((max(s[0], default=0.0) for s in series.values()), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="16" font-size="14">{title}</text>',
    ]
    plot_w = width - left - pad
    panels = ((f"samples per task ({ROLLING}-task rolling mean)", top), ("solved so far", 1.0))
    for p, (label, y_max) in enumerate(panels):
        y0 = 40 + p * (panel + 60)
        parts.append(f'<text x="{left}" y="{y0 - 6}">{label}</text>')
        parts.append(
            f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel}" '
            'fill="none" stroke="#888"/>'
        )
        for frac in (0.0, 0.5, 1.0):
            y = y0 + panel * (1 - frac)
            text = f"{frac:.0%}" if p == 1 else f"{y_max * frac:.3g}"
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
        for a, values in series.items():
            ys = values[p]
            if not ys:
                continue
            points = " ".join(
                f"{left + plot_w * i / max(count - 1, 1):.1f},"
                f"{y0 + panel * (1 - min(v / y_max, 1.0)):.1f}"
                for i, v in enumerate(ys)
            )
            color, dash = STYLES[a]
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.5"{dashes} '
                f'points="{points}"/>'
            )
        base = y0 + panel + 14
        parts.append(f'<text x="{left}" y="{base}">task 1</text>')
        parts.append(f'<text x="{left + plot_w}" y="{base}" text-anchor="end">task {count}</text>')
    for n, a in enumerate(arms):
        color, dash = STYLES[a]
        x, y = left + 150 * n, height - 14
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{x}" y1="{y - 4}" x2="{x + 30}" y2="{y - 4}" stroke="{color}" '
            f'stroke-width="2"{dashes}/>'
        )
        name = "control (no learning)" if a == "control" else a
        parts.append(f'<text x="{x + 36}" y="{y}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- the command ---------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    pools = family_pools()
    if args.families:
        wanted = [name.strip() for name in args.families.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in pools]
        if unknown:
            raise SystemExit(f"unknown family {unknown[0]!r}; one of: {', '.join(pools)}")
        pools = {name: pools[name] for name in wanted}
    stream = task_stream(args.tasks, args.items, args.seed, args.zipf, pools)
    if args.rows:
        Path(args.rows).write_text("")
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        client, model = None, ""
        distill = None
        if DISTILL in args.arms:
            distill = DistillArm(args, base / DISTILL)
            stack.push_async_callback(distill.stop)
            await distill.start()
        shared = [arm for arm in args.arms if arm != DISTILL]
        if shared and not args.sampler.startswith("simulated"):
            from nanobot_tui.config import SlotName, load_config
            from nanobot_tui.engine.serving.workbench import Workbench

            slot = cast("SlotName", args.sampler.partition(":")[2] or "rlm")
            # The server's home stays NANOBOT_HOME (<base>/server) while it starts and stops.
            # On a machine busier than its cores, llama.cpp's threads wait on each other
            # at every barrier: one thread can be many times faster.
            workbench = Workbench(
                load_config()[0], only_slots=(slot,), threads=args.threads or None
            )
            await stack.enter_async_context(workbench)
            client, model = workbench.client(slot), workbench.slots[slot].display_name
        rows = await run_stream(stream, args, base, client, model, args.json, distill)
    seen: set[str] = set()
    familiar = 0
    for task in stream:
        familiar += sum(f"{task.family}/{i}" in seen for i in task.items)
        seen.update(f"{task.family}/{i}" for i in task.items)
    if args.svg:
        Path(args.svg).write_text(svg_chart(rows, title_of(args, len(stream))))
    return {
        "itemsPerTask": args.items,
        "familyCount": len(pools),
        "distinctItems": len(seen),
        "familiarItemShare": round(familiar / max(1, sum(len(t.items) for t in stream)), 3),
        "sampler": args.sampler,
        "model": model or None,
        "k": args.k,
        "seed": args.seed,
        "wallS": round(time.perf_counter() - started, 1),
        **summarize(rows),
        "rows": args.rows,
        "svg": args.svg,
        "home": args.home,
        **({"learnJobs": distill.jobs} if distill is not None else {}),
    }


def title_of(args: argparse.Namespace, tasks: int) -> str:
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    which = ", ".join(families) if families else "10 families"
    return f"learning curve: {tasks} micro tasks ({which}), {args.sampler}, k={args.k}"


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tasks", type=int, default=1000, help="tasks in the stream")
    p.add_argument("--items", type=int, default=3, help="items (steps) per task")
    p.add_argument("--k", type=int, default=2, help="votes ahead needed to decide an item")
    p.add_argument("--max-rounds", type=int, default=8, help="voting rounds before undecided")
    p.add_argument("--cap", type=int, default=24, help="token cap per sample")
    p.add_argument("--seed", type=int, default=11, help="the stream's and the runs' seed")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of item recurrence")
    p.add_argument(
        "--arms",
        default=",".join(ARMS),
        help=f"comma-separated arms to run (default all: {','.join(ARMS)})",
    )
    p.add_argument(
        "--sampler",
        default="local:rlm",
        help="local:SLOT (the real embedded model) or simulated:P (no L0/L1: the harness only)",
    )
    p.add_argument("--rows", help="append one JSON line per task and arm to this file")
    p.add_argument("--svg", help="draw cost and success per task into this SVG file")
    p.add_argument(
        "--families", default="",
        help="comma-separated families to draw from (default: all ten)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=0,
        help="the model server's threads (default: one per core)",
    )  # fmt: skip
    p.add_argument("--home", help="keep each arm's NANOBOT_HOME under DIR/<arm> (not deleted)")
    p.add_argument(
        "--learn-every",
        type=int,
        default=40,
        help="the distill arm: a learning job after every N tasks (0: never)",
    )
    p.add_argument(
        "--learn-epochs",
        type=int,
        default=None,
        help="the distill arm: training epochs (default: the engine's)",
    )
    p.add_argument(
        "--ab-steps",
        type=int,
        default=120,
        help="the distill arm: fresh steps each adapter's A/B test runs on, at most",
    )
    p.add_argument("--train-threads", type=int, default=1, help="the distill arm: torch threads")
    p.add_argument("--base-dir", help="the distill arm: a base checkpoint train.py made before")
    p.add_argument("--learn-log", help="the distill arm: append each learning job's summary here")
    p.add_argument("--json", action="store_true", help="only the summary, as one JSON line")
    p.add_argument(
        "--from-rows",
        metavar="FILE",
        help="run nothing: summarize (and draw, with --svg) the rows an earlier run wrote",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in KNOWN_ARMS]
    if unknown or not args.arms:
        known = ", ".join(KNOWN_ARMS)
        p.error(f"--arms: unknown {', '.join(unknown) or 'none given'} (known: {known})")
    if args.from_rows:
        rows = read_rows(Path(args.from_rows))
        if args.svg:
            tasks = len({r["task"] for r in rows})
            Path(args.svg).write_text(svg_chart(rows, title_of(args, tasks)))
        print(json.dumps(summarize(rows), indent=None if args.json else 2))
        return 0
    if args.tasks < 1 or args.items < 1 or args.k < 1:
        p.error("--tasks, --items and --k must be at least 1")
    base = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="learning-curve-"))
    with nanobot_home(base / "server"):
        try:
            out = asyncio.run(main_async(args, base))
        finally:
            if not args.home:
                shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
