"""Wall time of `nanobot search` (a command with ~1 ms of work) against importing the package.

Run: python -m benchmarks.cli_startup [--runs 7] [--json]

A private NANOBOT_HOME gets one small volume (this repository's nanobot_tui/ sources,
ingested with the search index). Then, interleaved round by round so a noisy machine
slows every program alike (one warm-up round dropped), each is run as a fresh process
and timed from spawn to exit:
- `python -c pass` (the interpreter alone),
- `python -c 'import nanobot_tui'` (the reference the aim is stated against),
- `python -c 'import numpy, pydantic'` (what a search cannot do without: its index arrays
  and the config's validation),
- `nanobot --help`,
- `nanobot search VOLUME QUERY` with no config file (the defaults), and with a config file.
Every search is checked to have printed its hits. Bytecode is cached (a private
PYTHONPYCACHEPREFIX), as for an installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUERY = "load the config file"


def nanobot_argv() -> list[str]:
    script = Path(sys.executable).with_name("nanobot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nanobot_tui"]


def timed(argv: list[str], env: dict[str, str], expect: str | None = None) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    if out.returncode != 0 or (expect is not None and expect not in out.stdout):
        raise RuntimeError(f"{argv} failed: {out.returncode} {out.stdout[-300:]}{out.stderr}")
    return seconds


def measure(runs: int) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix="nanobot-bench-"))
    configured = home / "with-config"
    plain = home / "plain"
    nanobot = nanobot_argv()
    envs = {}
    # Bytecode cached for every program, as an installed package has it (see first_frame).
    cache = {"PYTHONPYCACHEPREFIX": str(home / "pycache")}
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for folder in (plain, configured):
        folder.mkdir()
        envs[folder] = {**base, **cache, "NANOBOT_HOME": str(folder)}
        ingest = [*nanobot, "ingest", str(REPO / "nanobot_tui"), "--name", "src"]
        subprocess.run(ingest, env=envs[folder], capture_output=True, check=True, timeout=300)
    (configured / "config.json").write_text("{}\n")
    py = sys.executable
    cases = {
        "python -c pass": ([py, "-c", "pass"], plain, None),
        "import nanobot_tui": ([py, "-c", "import nanobot_tui"], plain, None),
        "import numpy, pydantic": ([py, "-c", "import numpy, pydantic"], plain, None),
        "nanobot --help": ([*nanobot, "--help"], plain, "usage"),
        "nanobot search (no config file)": ([*nanobot, "search", "src", QUERY], plain, "hits"),
        "nanobot search (config file)": ([*nanobot, "search", "src", QUERY], configured, "hits"),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for i in range(runs + 1):
            for name, (argv, folder, expect) in cases.items():
                seconds = timed(argv, envs[folder], expect)
                if i:  # round 0 warms the page and bytecode caches
                    times[name].append(seconds)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    medians = {name: round(statistics.median(v), 4) for name, v in times.items()}
    ref = medians["import nanobot_tui"]
    return {
        "runs": runs,
        "command": nanobot,
        "median_s": medians,
        "ratio_to_import_nanobot_tui": {name: round(v / ref, 2) for name, v in medians.items()},
        "all_s": {name: [round(s, 4) for s in v] for name, v in times.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured rounds (after 1 warm-up)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(max(args.runs, 1))
    if args.json:
        print(json.dumps(result))
        return
    medians = result["median_s"]
    ratios = result["ratio_to_import_nanobot_tui"]
    assert isinstance(medians, dict) and isinstance(ratios, dict)
    print(f"fresh process, spawn to exit, median of {result['runs']} interleaved runs")
    for name, seconds in medians.items():
        print(f"  {name:<34}{seconds * 1000:8.0f} ms   {ratios[name]:5.2f}x import nanobot_tui")


if __name__ == "__main__":
    main()
