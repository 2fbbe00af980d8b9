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
import contextlib
import fcntl
import json
import os
import pty
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass, field

from benchmarks.attached_app import run_status, start_detached_hanoi
from benchmarks.first_frame import REPO, nanobot_argv, read_some, reap, visible

SIZES = ((120, 36), (80, 24))
AIM_IDLE_BPS = 2048
CTRL_Q = b"\x11"


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


def spawn(argv: list[str], env: dict[str, str], size: tuple[int, int]) -> tuple[int, int]:
    """Fork onto a new pty of `size` (columns, lines), set in the child before exec;
    returns (pid, master fd). (first_frame.spawn does the same at 120x36 only.)"""
    columns, lines = size
    pid, fd = pty.fork()
    if pid == 0:
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
            os.chdir(REPO)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    return pid, fd


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str], size: tuple[int, int]) -> None:
        self.pid, self.fd = spawn(argv, env, size)
        self.screen = bytearray()

    def pump(self, seconds: float) -> int:
        """Read for `seconds`; returns the bytes read."""
        end = time.perf_counter() + seconds
        got = 0
        while (left := end - time.perf_counter()) > 0:
            data = read_some(self.fd, left)
            if data is None:
                raise RuntimeError("the app exited: " + visible(bytes(self.screen))[-500:])
            got += len(data)
            self.screen += data
            # Keep what is scanned for markers short: only the latest frames matter.
            if len(self.screen) > 1 << 20:
                del self.screen[: len(self.screen) - (1 << 18)]
        return got

    def wait_for(self, text: str, timeout: float) -> None:
        start = time.perf_counter()
        mark = len(self.screen)
        while text not in visible(bytes(self.screen[max(mark - 65536, 0) :])):
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{text!r} not drawn within {timeout} s")
            self.pump(0.05)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, CTRL_Q)
        with contextlib.suppress(RuntimeError):
            self.pump(3.0)
        os.close(self.fd)
        reap(self.pid, 10.0)


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
        term.wait_for("ready", timeout=120)  # the chat status: the main server is up
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
        term.wait_for("running", timeout=120)  # the Process pane shows the run
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
