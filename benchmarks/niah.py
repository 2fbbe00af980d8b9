"""Needle in a haystack at about a million tokens: ingest, then ask for each needle.

Two modes over the same volume:
- search alone: the answer is the best-matching line of the top search hit; it is right
  when that line holds the needle's code;
- model reading: `ask()` gives the embedded model (SmolLM2-135M, the default slot model)
  only narrow excerpts around the top hits, and the answer is right when it contains the
  needle's code.

With --lookalike the haystack is real source code (the standard library's, then
site-packages') holding two kinds of needles: unique invented project names, and
look-alike passages that share every word except a compound service name
(`amber-quartz-3` against `amber-velvet-1`, the parts recurring across passages), a third
of them in near-empty files of their own. Search alone is scored as recall@3 (a top-3 hit
whose lines hold the needle) per kind, with the median query latency.

Recall = right answers / needles. Precision = right answers / answers that claim a code
(any string shaped like one), so a model that invents codes loses precision, and one that
says "I do not know" loses only recall. Wall times cover the ingest and all questions.

    python -m benchmarks.niah [--tokens 1000000] [--needles 100] [--top 1] [--window 0]
                              [--max-tokens 80] [--no-model] [--json]
    python -m benchmarks.niah --lookalike [--tokens 1000000] [--needles 100]
                              [--lookalikes 60] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CODE_SHAPE = re.compile(r"\b[A-Z0-9]{2}-[A-Z0-9]{3}-\d{2}\b")


@dataclass
class ModeResult:
    mode: str
    right: int = 0
    claimed: int = 0
    seconds: float = 0.0
    misses: list[str] = field(default_factory=list)

    def summary(self, needles: int) -> dict[str, object]:
        return {
            "mode": self.mode,
            "recall": round(self.right / needles, 4),
            "precision": round(self.right / self.claimed, 4) if self.claimed else None,
            "right": self.right,
            "claimed": self.claimed,
            "seconds": round(self.seconds, 2),
            "firstMisses": self.misses[:5],
        }


def score(result: ModeResult, answer: str, code: str, question: str) -> None:
    claims = CODE_SHAPE.findall(answer)
    if claims:
        result.claimed += 1
    if code in claims:
        result.right += 1
    else:
        result.misses.append(f"{question} -> {answer[:80]!r}")


async def run(args: argparse.Namespace) -> dict[str, object]:
    from benchmarks.haystack import build
    from nanobot_tui.config import Config, LocalConfig, SlotConfig
    from nanobot_tui.engine.context.ask import ask
    from nanobot_tui.engine.context.ingest import ingest
    from nanobot_tui.engine.context.search import search
    from nanobot_tui.engine.context.volume import Volume
    from nanobot_tui.engine.serving.workbench import Workbench

    work = Path(tempfile.mkdtemp(prefix="niah-"))
    started = time.perf_counter()
    needles = build(work / "haystack", tokens=args.tokens, needles=args.needles, seed=args.seed)
    generated = time.perf_counter() - started

    started = time.perf_counter()
    report = ingest(work / "haystack", "haystack")
    ingest_seconds = time.perf_counter() - started

    out: dict[str, object] = {
        "tokens": report.est_tokens,
        "bytes": report.bytes,
        "files": report.files,
        "needles": len(needles),
        "generateSeconds": round(generated, 2),
        "ingestSeconds": round(ingest_seconds, 2),
    }
    with Volume.open("haystack") as volume:
        alone = ModeResult("search alone")
        started = time.perf_counter()
        for needle in needles:
            hits = search(volume, needle.question, top=1).hits
            answer = volume.lines(hits[0].best_vline, hits[0].best_vline)[0].text if hits else ""
            score(alone, answer, needle.code, needle.question)
        alone.seconds = time.perf_counter() - started
        out["searchAlone"] = alone.summary(len(needles))
        out["searchAloneTotalSeconds"] = round(ingest_seconds + alone.seconds, 2)

        if not args.no_model:
            slot = SlotConfig(model="smollm2-135m-instruct", context_size=2048, parallel=2)
            workbench = Workbench(Config(local=LocalConfig(main=slot)), only_slots=("main",))
            reading = ModeResult("model reading")
            async with workbench:
                client = workbench.client("main")
                semaphore = asyncio.Semaphore(2)  # the server's two parallel slots

                async def one(needle) -> tuple[str, str, str]:
                    async with semaphore:
                        result = await ask(
                            volume,
                            needle.question,
                            client,
                            top=args.top,
                            window=args.window,
                            max_tokens=args.max_tokens,
                        )
                    return result.answer, needle.code, needle.question

                started = time.perf_counter()
                answers = await asyncio.gather(*(one(n) for n in needles))
                reading.seconds = time.perf_counter() - started
            for answer, code, question in answers:
                score(reading, answer, code, question)
            out["modelReading"] = reading.summary(len(needles))
            out["modelReadingTotalSeconds"] = round(ingest_seconds + reading.seconds, 2)
    return out


GENERIC_QUERIES = (
    "socket buffer timeout",
    "parse the http request header",
    "thread lock acquire release",
    "read file encoding utf8",
    "def __init__ self",
    "raise ValueError invalid argument",
    "return the list of keys",
    "test case setUp tearDown",
)


def run_lookalike(args: argparse.Namespace) -> dict[str, object]:
    """Recall@3 of search alone on real source code, unique and look-alike needles."""
    import statistics

    from benchmarks.haystack import build_source
    from nanobot_tui.engine.context.ingest import ingest
    from nanobot_tui.engine.context.search import search
    from nanobot_tui.engine.context.volume import Volume

    work = Path(tempfile.mkdtemp(prefix="niah-"))
    started = time.perf_counter()
    needles = build_source(
        work / "haystack",
        tokens=args.tokens,
        unique=args.needles,
        lookalike=args.lookalikes,
        seed=args.seed,
    )
    generated = time.perf_counter() - started
    started = time.perf_counter()
    report = ingest(work / "haystack", "haystack")
    ingest_seconds = time.perf_counter() - started
    out: dict[str, object] = {
        "haystack": "real source (stdlib, site-packages)",
        "tokens": report.est_tokens,
        "bytes": report.bytes,
        "files": report.files,
        "generateSeconds": round(generated, 2),
        "ingestSeconds": round(ingest_seconds, 2),
    }
    latencies: list[float] = []
    with Volume.open("haystack") as volume:
        search(volume, "warm up the index", top=3)  # the first call opens the mmaps
        for kind in ("unique", "lookalike"):
            group = [n for n in needles if n.kind == kind]
            right, misses = 0, []
            for needle in group:
                started = time.perf_counter()
                hits = search(volume, needle.question, top=3).hits
                latencies.append(time.perf_counter() - started)
                if any(
                    h.file == needle.file and h.first_fline <= needle.line <= h.last_fline
                    for h in hits
                ):
                    right += 1
                else:
                    top = f"{hits[0].file}:{hits[0].best_fline}" if hits else "no hit"
                    misses.append(f"{needle.question} -> {top}")
            out[kind] = {
                "needles": len(group),
                "recallAt3": round(right / len(group), 4) if group else None,
                "firstMisses": misses[:5],
            }
        # Everyday code queries, 10 hits each: here many chunks hold every query word, so
        # the re-ranking scans the most chunks.
        generic: list[float] = []
        for _ in range(3):
            for query in GENERIC_QUERIES:
                started = time.perf_counter()
                search(volume, query, top=10)
                generic.append(time.perf_counter() - started)
    out["medianQueryMs"] = round(1000 * statistics.median(latencies), 2)
    out["medianGenericQueryMs"] = round(1000 * statistics.median(generic), 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--needles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--top", type=int, default=1, help="search hits the model reads")
    parser.add_argument("--window", type=int, default=0, help="lines each side of a hit")
    parser.add_argument("--max-tokens", type=int, default=80, help="answer length cap")
    parser.add_argument("--no-model", action="store_true", help="search alone only")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--lookalike", action="store_true", help="real source code, look-alike needles, recall@3"
    )
    parser.add_argument("--lookalikes", type=int, default=60, help="look-alike needles")
    args = parser.parse_args()
    os.environ["NANOBOT_HOME"] = tempfile.mkdtemp(prefix="niah-home-")
    if args.lookalike:
        result = run_lookalike(args)
        if args.json:
            print(json.dumps(result, indent=2))
            return 0
        print(
            f"haystack: ~{result['tokens']:,} tokens of real source, {result['files']} files; "
            f"ingest {result['ingestSeconds']} s; median query {result['medianQueryMs']} ms "
            f"(everyday queries, 10 hits: {result['medianGenericQueryMs']} ms)"
        )
        for kind in ("unique", "lookalike"):
            m = result[kind]
            assert isinstance(m, dict)
            print(f"{kind:<10} recall@3 {m['recallAt3']:.2%} of {m['needles']}")
            for miss in m["firstMisses"]:
                print(f"    miss: {miss}", file=sys.stderr)
        return 0
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"haystack: ~{out['tokens']:,} tokens, {out['files']} files, {out['needles']} needles; "
        f"ingest {out['ingestSeconds']} s"
    )
    for key in ("searchAlone", "modelReading"):
        if key in out:
            m = out[key]
            total = out[f"{key}TotalSeconds"]
            print(
                f"{m['mode']:<14} recall {m['recall']:.2%}  precision {m['precision']}  "
                f"questions {m['seconds']} s  ingest+questions {total} s"
            )
            for miss in m["firstMisses"]:
                print(f"    miss: {miss}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
