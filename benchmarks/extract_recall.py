"""The extract recipe finds planted facts in a real codebase: recall, precision, citations.

This repository's nanobot_tui/ is copied to a temporary folder and N facts are planted in
it, one comment line each in N different .py files at seeded random lines:
`# the access code for project Albatross is QX-4821`. The folder is ingested as a volume
(the engine's own ingest, in a temporary NANOBOT_HOME) and the extract recipe runs as a
durable run (start_run + execute, as `nanobot run` does) over the chunks that hold a fact
plus as many chunks without one, drawn with the same seed, with the instruction
"List every access code mentioned, with the project it opens.".

Scored against the planted truth on the root's merged list (`run_report`):
- recall:    facts found (an item that contains the fact's code) / facts planted;
- precision: items that contain a planted code / items reported;
- cited:     found facts with a citation at the planted file:line / facts found;
- exact:     chunks whose voted set equals the planted set of the chunk.

Samplers: `simulated:P` (the right set with probability P, else a missed item, an item
one line off or an invented one; named as simulated) and `local:rlm`, the REAL embedded
model (SmolLM2-135M, started by the engine exactly as for `nanobot run`).

    python -m benchmarks.extract_recall [--facts 6] [--k 2] [--chunk-lines 40]
        [--sampler simulated:0.9 --sampler local:rlm] [--json]
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
from pathlib import Path
from typing import Any

PROJECTS = (
    "Albatross", "Bluefin", "Cormorant", "Dragonfly", "Egret", "Falcon", "Gannet", "Heron",
    "Ibis", "Jackdaw", "Kestrel", "Lapwing", "Merlin", "Nightjar", "Osprey", "Puffin",
)  # fmt: skip
INSTRUCTION = "List every access code mentioned, with the project it opens."


def plant(root: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` facts in `count` different .py files under root (seeded); the truth."""
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*.py") if len(p.read_text().splitlines()) >= 20)
    truth: list[dict[str, Any]] = []
    for n, path in enumerate(rng.sample(files, count)):
        lines = path.read_text().splitlines()
        spot = rng.randrange(5, len(lines) - 5)
        code = f"QX-{rng.randrange(1000, 10000)}"
        fact = f"the access code for project {PROJECTS[n % len(PROJECTS)]} is {code}"
        lines.insert(spot, f"# {fact}")
        path.write_text("\n".join(lines) + "\n")
        rel = path.relative_to(root).as_posix()
        truth.append({"text": fact, "path": rel, "line": spot + 1, "code": code})
    return truth


def pick_chunks(domain: Any, truth: list[dict[str, Any]], seed: int) -> list[int]:
    """The chunks that hold a fact, plus as many drawn (seeded) from those that hold none."""
    holding = [s.index for s in domain.steps() if domain.truth(s)]
    others = [s.index for s in domain.steps() if not domain.truth(s)]
    extra = random.Random(seed + 1).sample(others, len(holding))
    return sorted(holding + extra)


def score(report: list[Any], truth: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    relevant = 0
    for item in report:
        text = item.text.casefold()
        hits = [t for t in truth if t["code"].casefold() in text]
        relevant += bool(hits)
        for t in hits:
            found.setdefault(t["code"], []).extend(item.citations)
    cited = sum((t["path"], t["line"]) in found.get(t["code"], ()) for t in truth)
    return {
        "recall": round(len(found) / len(truth), 3),
        "precision": round(relevant / len(report), 3) if report else None,
        "cited": round(cited / len(found), 3) if found else None,
        "items": len(report),
        "found": len(found),
    }


async def run_one(sampler: str, params: dict[str, Any], args: argparse.Namespace) -> dict:
    from nanobot_tui.engine.runs.durable import execute, start_run
    from nanobot_tui.engine.runs.spec import Budgets, RetryPolicy, RunSpec
    from nanobot_tui.engine.runs.store import RunStore
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
    from nanobot_tui.engine.work.extract import run_report

    spec = RunSpec(
        domain="extract", params={**params, "simulated": sampler.startswith("simulated")},
        sampler=sampler, seed=args.seed, label="extract",
        vote=VoteConfig(k=args.k, token_cap=args.cap, max_samples=args.max_samples,
                        max_red_rounds=3),
        retry=RetryPolicy(retries=0, on_fail="skip"),
        budgets=Budgets(seconds=args.seconds),
    )  # fmt: skip
    rid = await start_run(spec)
    started = time.perf_counter()
    status = await execute(rid)
    wall = time.perf_counter() - started
    truth = params["truth"]
    with RunStore.open(rid) as store:
        domain = store.domain
        exact = sum(
            1 for i in range(domain.total_steps())
            if store.step(i).answer is not None
            and domain.key(domain.load_answer(store.step(i).answer))
            == domain.key(domain.truth(domain.step_at(i)))
        )  # fmt: skip
    out = {
        "sampler": sampler,
        "status": status.status,
        "reason": status.reason,
        "chunks": status.steps_total,
        "chunksDone": status.steps_done,
        "skipped": status.skipped,
        "exactChunks": exact,
        **score(run_report(rid), truth),
        "samples": status.samples,
        "redFlags": status.red_flags,
        "tokens": status.tokens,
        "wallS": round(wall, 1),
    }
    if args.show:
        out["report"] = [i.cited() for i in run_report(rid)]
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from nanobot_tui.engine.context.ingest import ingest
    from nanobot_tui.engine.work.extract import ExtractDomain

    work = Path(tempfile.mkdtemp(prefix="extract-recall-"))
    src = work / "nanobot_tui"
    package = Path(__file__).resolve().parent.parent / "nanobot_tui"
    shutil.copytree(package, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    truth = plant(src, args.facts, args.seed)
    t0 = time.perf_counter()
    report = ingest(src, "codebase")
    ingest_s = time.perf_counter() - t0
    base = {"volume": "codebase", "instruction": INSTRUCTION, "chunk_lines": args.chunk_lines}
    full = ExtractDomain({**base, "truth": truth})
    chosen = pick_chunks(full, truth, args.seed)
    params = {**base, "truth": truth, "chunks": chosen}
    results = [await run_one(s, params, args) for s in args.sampler]
    shutil.rmtree(work, ignore_errors=True)
    return {
        "files": report.files if hasattr(report, "files") else None,
        "volumeChunks": full.total_steps(),
        "ingestS": round(ingest_s, 2),
        "facts": args.facts,
        "chunksRun": len(chosen),
        "k": args.k,
        "chunkLines": args.chunk_lines,
        "runs": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=6)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--chunk-lines", type=int, default=40)
    parser.add_argument("--cap", type=int, default=160, help="token cap per sample")
    parser.add_argument("--max-samples", type=int, default=8, help="per chunk, red flags too")
    parser.add_argument("--seconds", type=float, default=1500, help="budget per run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sampler", action="append", help="simulated:P or local:rlm")
    parser.add_argument("--show", action="store_true", help="include the cited report")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.sampler = args.sampler or ["simulated:0.9", "local:rlm"]
    home = tempfile.mkdtemp(prefix="extract-recall-home-")
    os.environ["NANOBOT_HOME"] = home
    try:
        out = asyncio.run(main_async(args))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
