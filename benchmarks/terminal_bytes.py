"""Bytes the app writes to its terminal per second: idle, and attached to a busy run.

Run: python -m benchmarks.terminal_bytes [--seconds 20] [--disks 20] [--p 0.99] [--json]

Over SSH every byte drawn crosses the network, so an idle app should send almost nothing
(the aim: under 2 KB/s) and a busy one a few updates a second per pane. Each case runs
the real `nanobot` in a real pseudo-terminal (TERM=xterm-256color, truecolor) at 120x36
and at 80x24, in a private NANOBOT_HOME (default config: every slot on the embedded
model, one real server), and counts what it writes, second by second:

- idle: `nanobot`, once the main server is ready and the first frames have settled;
- busy: `nanobot attach RUN` on a detached durable run (`nanobot run hanoi --disks 22
  --sampler simulated:0.99 --detach`, its own session, exactly as a user starts one),
  counted only while the run is still running (22 disks: 4M steps, about a minute here;
  20 disks finish in ~10 s, before the window is over).

Reported per case: the median and the mean bytes/s over the window, the busiest second,
and how many seconds were counted.
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
from dataclasses import dataclass, field

from benchmarks.attached_app import Terminal, run_status, start_detached_hanoi
from benchmarks.first_frame import REPO, nanobot_argv

SIZES = ((120, 36), (80, 24))
AIM_IDLE_BPS = 2048


@dataclass
class Window:
    size: str
    case: str
    per_second: list[int] = field(default_factory=list)
    steps: tuple[int, int] = (0, 0)  # the run's steps done at the start and the end

    def summary(self) -> dict[str, object]:
        counts = self.per_second
        return {
            "case": self.case,
            "size": self.size,
            "seconds": len(counts),
            "median_bps": round(statistics.median(counts)) if counts else None,
            "mean_bps": round(statistics.fmean(counts)) if counts else None,
            "max_bps": max(counts) if counts else None,
            "steps_from": self.steps[0],
            "steps_to": self.steps[1],
        }


def count(term: Terminal, seconds: int, window: Window, running: object = None) -> None:
    """Bytes per second for `seconds` seconds; with `running` (a callable), only while
    it says the run is still running."""
    for _ in range(seconds):
        if callable(running) and not running():
            break
        window.per_second.append(term.pump(1.0))


def private_env() -> tuple[str, dict[str, str]]:
    """A fresh NANOBOT_HOME, and the environment of a truecolor xterm using it."""
    home = tempfile.mkdtemp(prefix="nanobot-bench-bytes-")
    return home, dict(os.environ, NANOBOT_HOME=home, TERM="xterm-256color", COLORTERM="truecolor")


def idle(size: tuple[int, int], seconds: int, settle: float) -> Window:
    home, env = private_env()
    window = Window(f"{size[0]}x{size[1]}", "idle")
    term = Terminal(nanobot_argv(), env, size)
    try:
        term.wait_for("ready", timeout=120, poll=0.05)  # the chat status: the main server is up
        term.pump(settle)
        count(term, seconds, window)
    finally:
        term.close()
        shutil.rmtree(home, ignore_errors=True)
    return window


def busy(size: tuple[int, int], seconds: int, settle: float, disks: int, p: float) -> Window:
    home, env = private_env()
    run_id = start_detached_hanoi(env, disks, p)
    window = Window(f"{size[0]}x{size[1]}", "busy")
    term = Terminal([*nanobot_argv(), "attach", run_id], env, size)
    try:
        term.wait_for("running", timeout=120, poll=0.05)  # the Process pane shows the run
        term.pump(settle)
        first = run_status(run_id)[0]
        count(term, seconds, window, running=lambda: run_status(run_id)[1] == "running")
        window.steps = (first, run_status(run_id)[0])
    finally:
        term.close()
        subprocess.run(
            [*nanobot_argv(), "cancel", run_id],
            env=env,
            cwd=REPO,
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)  # a 4M-step run store is ~300 MB
    return window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="seconds counted per case")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before counting")
    parser.add_argument("--disks", type=int, default=22, help="the busy run's Hanoi disks")
    parser.add_argument("--p", type=float, default=0.99, help="the simulated model's p")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    windows: list[Window] = []
    for size in SIZES:
        windows.append(idle(size, args.seconds, args.settle))
        windows.append(busy(size, args.seconds, args.settle, args.disks, args.p))
    results = [w.summary() for w in windows]
    if args.json:
        print(json.dumps({"results": results, "aim_idle_bps": AIM_IDLE_BPS}, indent=2))
        return 0
    print(f"bytes written to the terminal per second (aim idle < {AIM_IDLE_BPS} B/s)")
    for r in results:
        steps = ""
        if r["case"] == "busy":
            steps = f"; run steps {r['steps_from']:,}->{r['steps_to']:,}"
        print(
            f"  {r['case']:4} {r['size']:>6}: median {r['median_bps']:,} B/s, mean "
            f"{r['mean_bps']:,}, max {r['max_bps']:,} over {r['seconds']} s{steps}"
        )
    print(f"  (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
