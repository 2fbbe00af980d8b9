"""The app attached to a 1,048,575-step durable run: its memory and key-press latency.

Run: python -m benchmarks.attached_app [--disks 20] [--p 0.95] [--presses 15] [--json]

A detached runner (`nanobot run hanoi --disks 20 --sampler simulated:P --detach`, its own
session, exactly as a user starts one) solves Towers of Hanoi with the SIMULATED sampler
while `nanobot attach RUN` runs in a real pseudo-terminal (120x36, TERM=xterm-256color),
its Process pane polling the run's store. Measured, in the same run:

- key-press latency: ctrl+p is written to the terminal and timed until the command
  palette's prompt ("Search for commands") has been drawn, i.e. the key went through the
  app and the resulting frame reached the terminal; escape closes it. First while the run
  is busy, then again once it has finished: the reference is the same app on the same
  run, idle, on the same machine.
- memory: the app process's RSS (its model server excluded) sampled every 0.25 s while
  the run goes on, and after.

p < 0.99 makes the run vote longer (k grows), so there is time to measure while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import psutil

from benchmarks.first_frame import (
    COLUMNS,
    LINES,
    REPO,
    nanobot_argv,
    read_some,
    reap,
    spawn,
    visible,
)
from nanobot_tui.engine.runs.store import RunStore, status_from_meta

PALETTE = "Search for commands"
CTRL_P, ESCAPE = b"\x10", b"\x1b"
FIRST_FRAME = ("nanobot", "Process")


@dataclass
class Phase:
    latencies_ms: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    steps_seen: tuple[int, int] = (0, 0)  # steps done at the first and the last press

    def summary(self) -> dict[str, float | int | None]:
        lat, rss = self.latencies_ms, self.rss_mb
        return {
            "presses": len(lat),
            "latency_median_ms": round(statistics.median(lat), 1) if lat else None,
            "latency_max_ms": round(max(lat), 1) if lat else None,
            "rss_median_mb": round(statistics.median(rss), 1) if rss else None,
            "rss_peak_mb": round(max(rss), 1) if rss else None,
            "steps_from": self.steps_seen[0],
            "steps_to": self.steps_seen[1],
        }


class Terminal:
    """The app on a pty of `size` (columns, lines): what it has drawn so far, read without
    ever blocking it. Only the latest frames of a long output are kept (`KEEP` bytes)."""

    KEEP = 1 << 18

    def __init__(
        self, argv: list[str], env: dict[str, str], size: tuple[int, int] = (COLUMNS, LINES)
    ) -> None:
        self.pid, self.fd = spawn(argv, env, size)
        self.screen = bytearray()
        self.dropped = 0  # bytes cut from the front of `screen`
        self.app = psutil.Process(self.pid)

    @property
    def written(self) -> int:
        """Bytes the app has written so far."""
        return self.dropped + len(self.screen)

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
            if len(self.screen) > 4 * self.KEEP:
                cut = len(self.screen) - self.KEEP
                del self.screen[:cut]
                self.dropped += cut
        return got

    def wait_for(self, *texts: str, timeout: float, since: int = 0, poll: float = 0.005) -> float:
        """Seconds until every text is on screen in what was written after byte `since`
        (of all written), looking every `poll` seconds."""
        start = time.perf_counter()
        while not all(
            t in visible(bytes(self.screen[max(since - self.dropped, 0) :])) for t in texts
        ):
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{texts} not drawn within {timeout} s")
            self.pump(poll)
        return time.perf_counter() - start

    def press(self, key: bytes, waits_for: str, timeout: float = 10.0) -> float:
        mark = self.written
        t0 = time.perf_counter()
        os.write(self.fd, key)
        self.wait_for(waits_for, timeout=timeout, since=mark)
        return time.perf_counter() - t0

    def rss_mb(self) -> float:
        return self.app.memory_info().rss / 2**20

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, b"\x11")  # ctrl+q
        with contextlib.suppress(RuntimeError):
            self.pump(3.0)
        os.close(self.fd)
        reap(self.pid, 10.0)


def run_status(run_id: str) -> tuple[int, str]:
    """(steps done, status) from the run's meta row: a cheap read-only look."""
    with RunStore.open(run_id, readonly=True) as store:
        status = status_from_meta(run_id, store.meta(), {})
    return status.steps_done, status.status


def start_detached_hanoi(env: dict[str, str], disks: int, p: float) -> str:
    """`nanobot run hanoi --detach` on the SIMULATED sampler, as a user starts one; its id.
    This process reads the run's store too, so it takes the run's NANOBOT_HOME."""
    command = ["run", "hanoi", "--disks", str(disks), "--sampler", f"simulated:{p}", "--detach"]
    started = subprocess.run(
        [*nanobot_argv(), *command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    os.environ["NANOBOT_HOME"] = env["NANOBOT_HOME"]
    return started.stdout.strip().splitlines()[-1]


def measure_phase(term: Terminal, run_id: str, presses: int, *, while_running: bool) -> Phase:
    phase = Phase()
    first = None
    for _ in range(presses):
        done, status = run_status(run_id)
        if while_running and status != "running":
            break
        first = done if first is None else first
        phase.latencies_ms.append(term.press(CTRL_P, PALETTE) * 1000)
        phase.rss_mb.append(term.rss_mb())
        os.write(term.fd, ESCAPE)
        # Between presses: let the pane poll a few times, sampling memory as it goes.
        for _ in range(2):
            term.pump(0.25)
            phase.rss_mb.append(term.rss_mb())
        phase.steps_seen = (first, run_status(run_id)[0])
    return phase


def measure(disks: int, p: float, presses: int) -> dict[str, object]:
    home = tempfile.mkdtemp(prefix="nanobot-bench-attach-")
    env = dict(os.environ, NANOBOT_HOME=home, TERM="xterm-256color", COLORTERM="truecolor")
    run_id = start_detached_hanoi(env, disks, p)
    term = Terminal([*nanobot_argv(), "attach", run_id], env)
    try:
        first_frame_s = term.wait_for(*FIRST_FRAME, timeout=60)
        term.pump(1.0)  # let the engine start and the pane settle
        busy = measure_phase(term, run_id, presses, while_running=True)
        while run_status(run_id)[1] == "running":
            term.pump(0.5)
        done, status = run_status(run_id)
        term.pump(1.5)  # the pane's last polls
        idle = measure_phase(term, run_id, presses, while_running=False)
    finally:
        term.close()
    b, i = busy.summary(), idle.summary()
    ratio = None
    if b["latency_median_ms"] and i["latency_median_ms"]:
        ratio = round(float(b["latency_median_ms"]) / float(i["latency_median_ms"]), 2)
    return {
        "run": run_id,
        "disks": disks,
        "steps": 2**disks - 1,
        "sampler": f"simulated:{p}",
        "final_status": status,
        "final_steps_done": done,
        "first_frame_s": round(first_frame_s, 2),
        "busy": b,
        "idle": i,
        "latency_ratio_busy_over_idle": ratio,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disks", type=int, default=20)
    parser.add_argument("--p", type=float, default=0.95, help="the simulated model's p")
    parser.add_argument("--presses", type=int, default=15, help="key presses per phase")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.disks, args.p, args.presses)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    busy, idle = result["busy"], result["idle"]
    assert isinstance(busy, dict) and isinstance(idle, dict)
    print(f"run {result['run']}: {result['steps']:,} steps, {result['sampler']}")
    print(f"  ended {result['final_status']} with {result['final_steps_done']:,} steps done")
    for name, phase in (("while running", busy), ("after, idle", idle)):
        print(
            f"  {name:14} key->frame median {phase['latency_median_ms']} ms "
            f"(max {phase['latency_max_ms']}, {phase['presses']} presses, steps "
            f"{phase['steps_from']:,}->{phase['steps_to']:,}); RSS median "
            f"{phase['rss_median_mb']} MB, peak {phase['rss_peak_mb']} MB"
        )
    print(f"  latency ratio busy/idle: {result['latency_ratio_busy_over_idle']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
