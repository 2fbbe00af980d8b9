"""The app's memory over a long scripted session: chat turns, a run watched, pane switches.

Run: python -m benchmarks.app_memory [--minutes 30] [--trace] [--json]

The real `nanobot` runs in a real pseudo-terminal (100x30, TERM=xterm-256color: the narrow
layout, one pane at a time, so every pane is drawn in turn) in a private NANOBOT_HOME
(default config: every slot on the embedded model, one real llama.cpp server). Scripted
with real keys, as a user would:

- F2 every `--switch-every` seconds: chat -> process -> volumes -> meter -> votes -> chat…
- every `--chat-every` seconds, back on the chat pane, a short prompt is typed and Enter
  pressed; the real embedded model answers it (the turn ends when the turn summary,
  "… prompt tokens …", is drawn);
- a durable run in the background: `nanobot run hanoi --disks D --sampler simulated:P
  --detach` (a detached runner, its own session, as a user starts one); when it has
  finished, the next is started (`--run-every` seconds apart) and the previous one is
  removed (`nanobot runs rm`, so the disk stays small). The Process pane follows the most
  recent run, so it always watches one, running or just done.

Every `--sample-every` seconds the app process's RSS is sampled (psutil), and, apart,
the RSS of its child processes (the model servers). Printed: start (once the main server
is ready), end, peak, and the growth per hour (a least-squares line through the samples
after the first `--warmup` seconds), with the phase of each sample.

`--trace DIR` starts the app with a SIGUSR1 handler that, at each sample, writes into DIR
a count of live objects by type and the app's own facts (threads, glibc malloc's heap and
what of it is in use, pymalloc's blocks); the first and the last are compared and the
biggest growths printed. `--tracemalloc` adds tracemalloc snapshots (`-X tracemalloc=8`),
compared by line: it slows the app and adds to its RSS, so it finds a leak but does not
measure one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from benchmarks.attached_app import Terminal, run_status, start_detached_hanoi
from benchmarks.first_frame import REPO, nanobot_argv, visible

SIZE = (100, 30)  # under 114 columns: the narrow layout, one pane shown at a time
PANES = 5  # F2 cycles through all of them and back to the chat
F2 = b"\x1bOQ"
ENTER = b"\r"
TURN_DONE = "prompt tokens"  # in the turn summary, once the answer is complete
# The chat status while a turn goes on (redrawn at every token). Old turn summaries are
# drawn again whenever the transcript scrolls, so a turn is over only when the summary
# comes after the last of these, and stays so.
BUSY = ("thinking…", "writing…", "calling tool")
PROMPTS = (
    "Say hello in five words.",
    "What is 7 times 8? Answer with the number only.",
    "Name one colour of the rainbow.",
    "Give me a two-word title for a note about memory.",
    "Is water wet? One short sentence.",
)

# Run in the app's process under --trace: dumps a snapshot and object counts on SIGUSR1.
TRACE_BOOT = """\
import collections, ctypes, gc, json, os, signal, sys, threading, tracemalloc
out = os.environ["NANOBOT_BENCH_TRACE"]
count = [0]
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]
def malloc_stats():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"malloc_arena_mb": m.arena / 2**20, "malloc_in_use_mb": m.uordblks / 2**20,
            "malloc_free_mb": m.fordblks / 2**20, "malloc_mmapped_mb": m.hblkhd / 2**20}
def dump(signum, frame):
    count[0] += 1
    base = os.path.join(out, f"{count[0]:03d}")
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(base + ".snap")
    types = collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
    )
    facts = {"threads": threading.active_count(), "pymalloc_blocks": sys.getallocatedblocks(),
             **malloc_stats()}
    with open(base + ".tmp", "w") as f:
        json.dump({"facts": facts, "types": dict(types.most_common(400))}, f)
    os.replace(base + ".tmp", base + ".types.json")
signal.signal(signal.SIGUSR1, dump)
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]  # as the nanobot script
from nanobot_tui.cli.main import main
sys.exit(main())
"""


@dataclass
class Sample:
    t_s: float
    app_mb: float
    children_mb: float
    phase: str
    turns: int
    runs: int
    facts: dict[str, float] = field(default_factory=dict)  # the app's own, with --trace


@dataclass
class Session:
    samples: list[Sample] = field(default_factory=list)
    turns: int = 0
    turn_s: list[float] = field(default_factory=list)
    turn_failures: int = 0
    runs: int = 0
    switches: int = 0
    phase: str = "start"


def rss_mb(proc: psutil.Process) -> tuple[float, float]:
    """(the app's RSS, its descendants' RSS summed), in MB."""
    app = proc.memory_info().rss / 2**20
    kids = 0.0
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            kids += child.memory_info().rss / 2**20
    return app, kids


def growth_per_hour(samples: list[Sample], warmup_s: float) -> float | None:
    """MB/hour of the app's RSS: the slope of a least-squares line after the warm-up."""
    points = [(s.t_s, s.app_mb) for s in samples if s.t_s >= warmup_s]
    if len(points) < 3:
        return None
    slope = statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope
    return slope * 3600


class Script:
    """The scripted user: switches panes, chats, keeps a run going, samples memory."""

    def __init__(self, term: Terminal, env: dict[str, str], args: argparse.Namespace) -> None:
        self.term, self.env, self.args = term, env, args
        self.session = Session()
        self.pane = 0  # F2 presses mod PANES: 0 is the chat
        self.dumps = 0  # trace snapshots asked for
        self.run_id: str | None = None
        self.t0 = time.monotonic()
        self.next_sample = self.next_switch = self.next_chat = self.next_run = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def tick(self) -> None:
        """Whatever is due: a sample, a pane switch, a run started."""
        t = self.now()
        if t >= self.next_sample:
            self.next_sample = t + self.args.sample_every
            app, kids = rss_mb(self.term.app)
            s = self.session
            facts = self.dump_trace() if self.args.trace else {}
            s.samples.append(
                Sample(round(t, 1), round(app, 1), round(kids, 1), s.phase, s.turns, s.runs, facts)
            )
            if not self.args.json:
                extra = " ".join(f"{k} {v:.1f}" for k, v in facts.items())
                print(
                    f"  {t:7.0f} s  app {app:7.1f} MB  servers {kids:7.1f} MB  {s.phase}  {extra}",
                    flush=True,
                )
        if t >= self.next_run:
            self.next_run = t + self.args.run_every
            self.keep_run_going()
        if t >= self.next_switch and self.session.phase != "chat turn":
            self.next_switch = t + self.args.switch_every
            self.switch()

    def dump_trace(self) -> dict[str, float]:
        """Ask the app for a probe, and wait until it is written (the app is paused
        meanwhile: the time is not counted); the app's facts."""
        self.dumps += 1
        os.kill(self.term.pid, signal.SIGUSR1)
        done = Path(self.args.trace) / f"{self.dumps:03d}.types.json"
        paused = time.monotonic()
        while not done.exists() and time.monotonic() - paused < 120:
            self.term.pump(0.2)
        self.t0 += time.monotonic() - paused
        with contextlib.suppress(OSError, ValueError):
            return {k: round(v, 1) for k, v in json.loads(done.read_text())["facts"].items()}
        return {}

    def switch(self) -> None:
        os.write(self.term.fd, F2)
        self.pane = (self.pane + 1) % PANES
        self.session.switches += 1

    def keep_run_going(self) -> None:
        """A new detached run once the last one is over; the finished one is removed."""
        if self.run_id is not None:
            with contextlib.suppress(Exception):
                if run_status(self.run_id)[1] == "running":
                    return
            self.nanobot("runs", "rm", self.run_id)
        spec = (self.args.disks, self.args.p)
        self.run_id = start_detached_hanoi(self.env, *spec)
        self.session.runs += 1

    def nanobot(self, *argv: str) -> None:
        subprocess.run(
            [*nanobot_argv(), *argv],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            timeout=120,
            check=False,
        )

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.term.pump(min(left, 0.5))
            self.tick()

    def chat_turn(self) -> None:
        while self.pane != 0:  # back to the chat pane
            self.switch()
            self.wait(0.5)
        s = self.session
        s.phase = "chat turn"
        mark = self.term.written
        prompt = PROMPTS[s.turns % len(PROMPTS)]
        os.write(self.term.fd, prompt.encode())
        self.wait(0.3)
        os.write(self.term.fd, ENTER)
        started = time.monotonic()
        deadline = started + self.args.turn_timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            self.wait(0.5)
            if not self.turn_over(mark):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= 2.0:
                break
        else:
            s.turn_failures += 1
        s.turn_s.append(round(time.monotonic() - started, 1))
        s.turns += 1
        s.phase = "panes + run"

    def turn_over(self, mark: int) -> bool:
        """Whether the turn started after byte `mark` has begun and then ended: its
        summary drawn after the last busy status."""
        text = visible(bytes(self.term.screen[max(mark - self.term.dropped, 0) :]))
        busy = max(text.rfind(b) for b in BUSY)
        return busy >= 0 and text.rfind(TURN_DONE) > busy

    def play(self) -> None:
        end = self.args.minutes * 60
        self.next_chat = self.args.chat_every / 4
        while self.now() < end:
            if self.now() >= self.next_chat:
                self.chat_turn()
                self.next_chat = self.now() + self.args.chat_every
            self.wait(0.5)
        self.session.phase = "end"
        self.next_sample = 0.0
        self.tick()


def trace_report(folder: Path, top: int = 15) -> dict[str, object]:
    """The first and last probes compared: the app's own facts (threads, malloc's heap,
    pymalloc's blocks), the object types that grew most, and, under --tracemalloc, the
    biggest growths by where they were allocated."""
    probes = sorted(folder.glob("*.types.json"))
    if len(probes) < 2:
        return {}
    first, last = (json.loads(p.read_text()) for p in (probes[0], probes[-1]))
    grown = sorted(
        ((name, n - first["types"].get(name, 0)) for name, n in last["types"].items()),
        key=lambda kv: -kv[1],
    )[:top]
    report: dict[str, object] = {
        "probes": len(probes),
        "facts_first": first["facts"],
        "facts_last": last["facts"],
        "objects_grown": dict(grown),
    }
    snaps = [p for p in sorted(folder.glob("*.snap")) if p.with_suffix(".types.json").exists()]
    if len(snaps) >= 2:
        a, b = (tracemalloc.Snapshot.load(str(p)) for p in (snaps[0], snaps[-1]))
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        a, b = a.filter_traces(ignore), b.filter_traces(ignore)
        report["by_line"] = [
            {
                "kb": round(d.size_diff / 1024, 1),
                "count": d.count_diff,
                "where": str(d.traceback[-1]),
            }
            for d in b.compare_to(a, "lineno")[:top]
        ]
    return report


def measure(args: argparse.Namespace) -> dict[str, object]:
    home = tempfile.mkdtemp(prefix="nanobot-bench-memory-")
    env = dict(os.environ, NANOBOT_HOME=home, TERM="xterm-256color", COLORTERM="truecolor")
    argv = nanobot_argv()
    trace_dir = Path(args.trace or home)
    if args.trace:
        trace_dir.mkdir(parents=True, exist_ok=True)
        env["NANOBOT_BENCH_TRACE"] = str(trace_dir)
        traced = ["-X", "tracemalloc=8"] if args.tracemalloc else []
        argv = [sys.executable, *traced, "-c", TRACE_BOOT]
    term = Terminal(argv, env, SIZE)
    script = Script(term, env, args)
    try:
        term.wait_for("ready", timeout=300, poll=0.05)  # the main server is up
        term.pump(args.settle)
        script.t0 = time.monotonic()
        script.session.phase = "panes + run"
        script.play()
        report = trace_report(trace_dir) if args.trace else {}
    finally:
        term.close()
        if script.run_id is not None:
            script.nanobot("cancel", script.run_id)
        shutil.rmtree(home, ignore_errors=True)
    s = script.session
    samples = s.samples
    peak = max(samples, key=lambda x: x.app_mb)
    return {
        "minutes": args.minutes,
        "size": f"{SIZE[0]}x{SIZE[1]}",
        "driven": "real pty, real keys",
        "start_mb": samples[0].app_mb,
        "end_mb": samples[-1].app_mb,
        "peak_mb": peak.app_mb,
        "peak_at_s": peak.t_s,
        "peak_phase": peak.phase,
        "growth_mb_per_hour": _round(growth_per_hour(samples, args.warmup)),
        "servers_start_mb": samples[0].children_mb,
        "servers_end_mb": samples[-1].children_mb,
        "chat_turns": s.turns,
        "chat_turn_failures": s.turn_failures,
        "chat_turn_median_s": statistics.median(s.turn_s) if s.turn_s else None,
        "runs_started": s.runs,
        "pane_switches": s.switches,
        "traced": bool(args.trace),
        "trace": report,
        "samples": [asdict(x) for x in samples],
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the session lasts")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--switch-every", type=float, default=4.0, help="seconds between F2s")
    parser.add_argument("--chat-every", type=float, default=120.0, help="seconds between turns")
    parser.add_argument(
        "--turn-timeout", type=float, default=240.0, help="seconds a chat turn may take"
    )
    parser.add_argument("--run-every", type=float, default=60.0, help="seconds between runs")
    parser.add_argument("--disks", type=int, default=18, help="each run's Hanoi disks")
    parser.add_argument("--p", type=float, default=0.9, help="the simulated model's p")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the start")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds left out of the slope")
    parser.add_argument(
        "--trace",
        metavar="DIR",
        help="probe the app at each sample (object counts, malloc), into DIR",
    )
    parser.add_argument("--tracemalloc", action="store_true", help="with --trace: tracemalloc too")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    r = measure(args)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"app memory over {r['minutes']} min ({r['driven']}, {r['size']}):")
    print(f"  start {r['start_mb']} MB, end {r['end_mb']} MB, peak {r['peak_mb']} MB")
    print(f"  (at {r['peak_at_s']} s, {r['peak_phase']}); growth {r['growth_mb_per_hour']} MB/h")
    print(f"  servers: {r['servers_start_mb']} -> {r['servers_end_mb']} MB")
    print(
        f"  {r['chat_turns']} chat turns ({r['chat_turn_failures']} unfinished, median "
        f"{r['chat_turn_median_s']} s), {r['runs_started']} runs, "
        f"{r['pane_switches']} pane switches"
    )
    if r["trace"]:
        print(json.dumps(r["trace"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
