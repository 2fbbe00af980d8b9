"""Context store speed, each figure against a reference measured in the same run.

- ctx_grep against GNU `grep -n` on the same ~1M-token file and the same patterns
  (literal and regex): median wall time per search, and the ratio ours / grep's. Both
  print every matching line with its number; grep's output goes to /dev/null, ours is
  built as Python objects (which grep never has to do).
- ctx_search latency on the indexed ~1M-token haystack: 3-word queries, median and p99
  (the first query, which opens the index, apart), against GNU `grep -ciE` counting the
  lines that hold any of the same words in the same text (a full scan: what the index
  saves).
- ctx_slice latency on a 1 GB volume: random 50-line slices, median and p99, and the
  time to open the volume; the reference is reading the same bytes with a plain
  seek+read of the source file at known offsets.
- ingest throughput in MB/s (with the search index, on the ~1M-token haystack; without
  it, on the 1 GB file), against `cat FILE > /dev/null`-style reading of the same bytes.

    python -m benchmarks.context_speed [--gb 1.0] [--runs 15] [--json]
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

# Byte semantics on both sides: our regexes run over UTF-8 bytes.
C_LOCALE = {**os.environ, "LC_ALL": "C"}
PATTERNS = {
    "literal": "access code for project",
    "literal-rare": "Dradraban",
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


def grep_vs_gnu(haystack_file: Path, runs: int) -> dict[str, object]:
    from nanobot_tui.engine.context.volume import Volume

    results: dict[str, object] = {}
    with Volume.open("single") as volume:
        for label, pattern in PATTERNS.items():
            ours: list[float] = []
            theirs: list[float] = []
            hits = 0
            for _ in range(runs):  # interleaved, so drift hits both alike
                started = time.perf_counter()
                hits = len(volume.grep(pattern, max_hits=10**9).hits)
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                done = subprocess.run(
                    ["grep", "-nE", pattern, str(haystack_file)],
                    stdout=subprocess.DEVNULL,
                    env=C_LOCALE,
                )
                theirs.append(time.perf_counter() - started)
                assert done.returncode in (0, 1)
            gnu = subprocess.run(
                ["grep", "-cE", pattern, str(haystack_file)],
                capture_output=True,
                text=True,
                env=C_LOCALE,
            )
            assert int(gnu.stdout) == hits, f"{label}: grep counts {gnu.stdout}, ours {hits}"
            results[label] = {
                "pattern": pattern,
                "matchingLines": hits,
                "oursMs": median_ms(ours),
                "gnuGrepMs": median_ms(theirs),
                "ratio": round(statistics.median(ours) / statistics.median(theirs), 2),
            }
    return results


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the big volume")
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

        # Ingest with the index: the haystack folder, several times (re-created each time).
        size = sum(p.stat().st_size for p in (work / "haystack").rglob("*") if p.is_file())
        ingest_times = []
        for i in range(3):
            began = time.perf_counter()
            ingest(work / "haystack", f"hay{i}")
            ingest_times.append(time.perf_counter() - began)
        read_times = timed(lambda: [read_all(p) for p in (work / "haystack").rglob("*.*")], 3)
        out["ingestIndexed"] = {
            "bytes": size,
            "seconds": round(statistics.median(ingest_times), 3),
            "mbPerS": round(size / 1e6 / statistics.median(ingest_times), 1),
            "plainReadMbPerS": round(size / 1e6 / statistics.median(read_times), 1),
        }

        ingest(single, "single")
        out["grep"] = grep_vs_gnu(single, args.runs)
        out["search"] = search_vs_gnu("hay0", single, args.runs)

        big = work / "big.txt"
        written = make_big_file(big, single, args.gb)
        began = time.perf_counter()
        ingest(big, "big", index=False)
        big_seconds = time.perf_counter() - began
        plain = timed(lambda: read_all(big), 1)[0]
        out["ingestBig"] = {
            "bytes": written,
            "seconds": round(big_seconds, 2),
            "mbPerS": round(written / 1e6 / big_seconds, 1),
            "plainReadMbPerS": round(written / 1e6 / plain, 1),
            "indexed": False,
        }
        out["slice"] = slice_latency(big, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
