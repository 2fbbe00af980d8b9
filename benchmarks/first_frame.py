"""Time from launching `nanobot` to its first frame, against a minimal Textual app.

Run: python -m benchmarks.first_frame [--runs 7] [--json]

Each program is launched in a real pseudo-terminal (120x36, TERM=xterm-256color) and its
output is read as it comes. The first frame is the moment the main screen's text is on
screen: after the switch to the alternate screen, both markers have been written (the
header title and the chat pane's border title for nanobot; the header title and the
Static's text for the minimal app). Then ctrl+q quits it. References measured in the same
run, interleaved: the same launch of a 10-line Textual app, and `python -c pass`. Every
program runs with compiled bytecode cached (a private PYTHONPYCACHEPREFIX), as an installed
package would.

Also recorded per nanobot run: when the chat status says the main server is ready (the
servers start in a worker after the first frame), and how long ctrl+q takes to exit
(it stops the servers). A private NANOBOT_HOME is used, so the default config applies:
every slot falls back to the embedded model, one server.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
COLUMNS, LINES = 120, 36
ALT_SCREEN = b"\x1b[?1049h"
CTRL_Q = b"\x11"

# The reference: what any Textual app pays before its first frame.
MINIMAL_APP = """\
from textual.app import App, ComposeResult
from textual.widgets import Header, Static

class Minimal(App[None]):
    TITLE = "minimal"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("hello from a minimal Textual app")

Minimal().run()
"""

# CSI sequences, OSC strings (ended by BEL or ST) and two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_READY = re.compile(r"main · [^·\n]+ · ready")


@dataclass
class Launch:
    """Seconds from fork for one launch; None where the event was not seen."""

    alt_screen_s: float | None = None
    header_s: float | None = None
    first_frame_s: float | None = None
    ready_s: float | None = None
    exit_s: float | None = None  # from fork to exit (for `python -c pass`)
    quit_s: float | None = None  # from ctrl+q to exit
    killed: bool = False
    leftovers: int = 0  # descendants still alive after the exit (killed by us)
    markers: list[str] = field(default_factory=list)


def visible(raw: bytes) -> str:
    return _ANSI.sub("", raw.decode("utf-8", "replace"))


def spawn(
    argv: list[str], env: dict[str, str], size: tuple[int, int] = (COLUMNS, LINES)
) -> tuple[int, int]:
    """Fork onto a new pty of `size` (columns, lines), set in the child before exec;
    returns (pid, master fd)."""
    columns, lines = size
    pid, fd = pty.fork()
    if pid == 0:  # the child: it is a session leader with the pty as controlling terminal
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
            os.chdir(REPO)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    return pid, fd


def read_some(fd: int, timeout: float) -> bytes | None:
    """Bytes from the pty master; b"" on timeout, None once the child side is closed."""
    ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
    if not ready:
        return b""
    try:
        data = os.read(fd, 65536)
    except OSError:  # EIO: every process holding the slave has exited
        return None
    return data or None


def reap(pid: int, timeout: float) -> bool:
    """Wait for the child; True if it exited on its own within `timeout`, else kill its
    process group (pty.fork made it a session leader) and reap it."""
    deadline = time.monotonic() + timeout
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def launch_app(
    argv: list[str],
    env: dict[str, str],
    markers: tuple[str, ...],
    *,
    wait_ready: bool,
    timeout: float = 60.0,
) -> Launch:
    """Launch a Textual app, time its first frame (and ready), then quit it with ctrl+q."""
    result = Launch(markers=list(markers))
    t0 = time.perf_counter()
    pid, fd = spawn(argv, env)
    screen = bytearray()  # everything written after the alternate-screen switch
    children: list[psutil.Process] = []
    reaped = False
    try:
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            data = read_some(fd, deadline - time.perf_counter())
            now = time.perf_counter() - t0
            if data is None:
                break
            if result.alt_screen_s is None:
                pos = data.find(ALT_SCREEN)
                if pos < 0:
                    continue
                result.alt_screen_s = now
                data = data[pos + len(ALT_SCREEN) :]
            screen += data
            # Re-strip the whole buffer: a marker may straddle two reads.
            text = visible(bytes(screen))
            if result.header_s is None and markers[0] in text:
                result.header_s = now
            if result.first_frame_s is None and all(m in text for m in markers):
                result.first_frame_s = now
            if wait_ready and result.ready_s is None and _READY.search(text):
                result.ready_s = now
            if result.first_frame_s is not None and (not wait_ready or result.ready_s):
                break
        children = descendants(pid)  # the model servers, to check they go away
        quit_at = time.perf_counter()
        with contextlib.suppress(OSError):
            os.write(fd, CTRL_Q)
        # Keep draining so the app never blocks on a full pty while it shuts down.
        while read_some(fd, 0.05) is not None and time.perf_counter() - quit_at < 10:
            pass
        result.killed = not reap(pid, max(0.0, 10 - (time.perf_counter() - quit_at)))
        reaped = True
        result.quit_s = time.perf_counter() - quit_at
    finally:
        os.close(fd)
        if not reaped:  # an exception above: never leave the app running
            reap(pid, 0.0)
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    result.leftovers += 1
                    child.kill()
    return result


def launch_pass(env: dict[str, str]) -> Launch:
    """`python -c pass` on the same kind of pty: the interpreter's own start and exit."""
    result = Launch()
    t0 = time.perf_counter()
    pid, fd = spawn([sys.executable, "-c", "pass"], env)
    try:
        while read_some(fd, 10.0) is not None:
            pass
    finally:
        os.close(fd)
        reap(pid, 10.0)
    result.exit_s = time.perf_counter() - t0
    return result


def import_time(module: str, env: dict[str, str]) -> float:
    """Wall seconds for a fresh interpreter to start, import `module` and exit (the exit
    tears the modules down, so this reads higher than the import alone)."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", f"import {module}"], env=env, cwd=REPO, check=True, timeout=60
    )
    return time.perf_counter() - t0


def bytecode_cache(home: str) -> dict[str, str]:
    """Compiled bytecode for every program, as an installed package has it: with
    PYTHONDONTWRITEBYTECODE set (as in some shells), nanobot's modules, not installed as
    wheels, would be compiled from source at every launch while Textual's come from
    site-packages' .pyc. A private cache folder, filled by the dropped warm-up round,
    puts both on the same footing and writes nothing into the source tree."""
    cache = os.path.join(home, "pycache")
    os.makedirs(cache, exist_ok=True)
    return {"PYTHONPYCACHEPREFIX": cache}


def nanobot_argv() -> list[str]:
    script = Path(sys.executable).with_name("nanobot")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nanobot_tui"]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def measure(runs: int, wait_ready: bool = True) -> dict[str, object]:
    home = tempfile.mkdtemp(prefix="nanobot-bench-")
    env = dict(os.environ)
    env.update(
        TERM="xterm-256color",
        COLUMNS=str(COLUMNS),
        LINES=str(LINES),
        NANOBOT_HOME=home,
    )
    for name in ("TEXTUAL", "TEXTUAL_DRIVER", "NO_COLOR", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env.update(bytecode_cache(home))
    minimal_argv = [sys.executable, "-c", MINIMAL_APP]
    nanobot = nanobot_argv()
    samples: dict[str, list[Launch]] = {"pass": [], "minimal": [], "nanobot": []}
    imports: dict[str, list[float]] = {"textual.app": [], "nanobot_tui.ui.app": []}
    try:
        for i in range(runs + 1):  # round 0 warms the page and bytecode caches; dropped
            # Interleaved, so slow phases of a noisy machine hit every program alike.
            rounds = {
                "pass": launch_pass(env),
                "minimal": launch_app(minimal_argv, env, ("minimal", "hello"), wait_ready=False),
                "nanobot": launch_app(nanobot, env, ("nanobot", "Chat"), wait_ready=wait_ready),
            }
            times = {m: import_time(m, env) for m in imports}
            if i == 0:
                continue
            for name, launch in rounds.items():
                samples[name].append(launch)
            for module, seconds in times.items():
                imports[module].append(seconds)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    def med(name: str, attr: str) -> float | None:
        return _median([getattr(s, attr) for s in samples[name]])

    nano_frame = med("nanobot", "first_frame_s")
    mini_frame = med("minimal", "first_frame_s")
    nano_runs = samples["nanobot"]
    return {
        "runs": runs,
        "terminal": f"{COLUMNS}x{LINES}",
        "command": nanobot,
        "python_pass_s": med("pass", "exit_s"),
        "minimal": {
            "alt_screen_s": med("minimal", "alt_screen_s"),
            "first_frame_s": mini_frame,
            "quit_s": med("minimal", "quit_s"),
        },
        "nanobot": {
            "alt_screen_s": med("nanobot", "alt_screen_s"),
            "header_s": med("nanobot", "header_s"),
            "first_frame_s": nano_frame,
            "ready_s": med("nanobot", "ready_s"),
            "ready_seen": sum(s.ready_s is not None for s in nano_runs),
            "quit_s": med("nanobot", "quit_s"),
            "killed": sum(s.killed for s in nano_runs),
            "leftover_processes": sum(s.leftovers for s in nano_runs),
        },
        "import_s": {m: _median(list(v)) for m, v in imports.items()},
        "ratio_first_frame_nanobot_over_minimal": (
            round(nano_frame / mini_frame, 3) if nano_frame and mini_frame else None
        ),
        "first_frame_all_s": {
            name: [round(s.first_frame_s, 4) for s in samples[name] if s.first_frame_s]
            for name in ("minimal", "nanobot")
        },
        "raw": {name: [asdict(s) for s in samples[name]] for name in ("minimal", "nanobot")},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured rounds (after 1 warm-up)")
    parser.add_argument(
        "--no-ready", action="store_true", help="quit at the first frame, skip the ready wait"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(max(args.runs, 1), wait_ready=not args.no_ready)
    if args.json:
        result.pop("raw")
        print(json.dumps(result))
        return
    mini, nano, imports = result["minimal"], result["nanobot"], result["import_s"]
    assert isinstance(mini, dict) and isinstance(nano, dict) and isinstance(imports, dict)

    def ms(value: object) -> str:
        return f"{value * 1000:8.0f} ms" if isinstance(value, float) else "       n/a"

    print(f"first frame, {result['terminal']} pty, median of {result['runs']} runs")
    rows = [
        ("python -c pass (start+exit)", result["python_pass_s"]),
        ("python -c 'import textual.app'", imports["textual.app"]),
        ("python -c 'import nanobot_tui.ui.app'", imports["nanobot_tui.ui.app"]),
        ("minimal app: alt screen", mini["alt_screen_s"]),
        ("minimal app: first frame", mini["first_frame_s"]),
        ("nanobot: alt screen", nano["alt_screen_s"]),
        ("nanobot: header drawn", nano["header_s"]),
        ("nanobot: first frame", nano["first_frame_s"]),
        (f"nanobot: main server ready ({nano['ready_seen']} seen)", nano["ready_s"]),
        ("nanobot: ctrl+q to exit", nano["quit_s"]),
    ]
    for label, value in rows:
        print(f"  {label:<40}{ms(value)}")
    print(
        f"ratio first frame nanobot / minimal: {result['ratio_first_frame_nanobot_over_minimal']}"
    )
    if nano["killed"] or nano["leftover_processes"]:
        print(f"warning: {nano['killed']} kill(s), {nano['leftover_processes']} leftover(s)")


if __name__ == "__main__":
    main()
