"""80x24 over SSH: one pane at a time under a strip of names, F2 to switch, nothing drawn
outside the screen; an idle app writes next to nothing; a terminal that goes away ends
the app cleanly (servers stopped, no traceback)."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest
from textual.command import CommandPalette

from nanobot_tui import paths
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.screens.main import NARROW_WIDTH, MainScreen, PaneStrip
from nanobot_tui.ui.widgets.prompt import PromptArea
from tests.conftest import until
from tests.ui.test_process_pane import hanoi, make_run, quiet_app, watching

SMALL = (80, 24)
WIDE = (120, 36)
STRIP_ORDER = ["chat", "process", "volumes", "meter", "votes"]


def shown_panes(screen: MainScreen) -> list[str]:
    return [
        pane_id for pane_id, _ in screen.pane_order() if screen.query_one(f"#{pane_id}").display
    ]


async def main_screen(app: NanobotApp) -> MainScreen:
    await until(lambda: isinstance(app.screen, MainScreen))
    screen = app.screen
    assert isinstance(screen, MainScreen)
    return screen


def inside_the_screen(screen: MainScreen, size: tuple[int, int]) -> None:
    """Every widget drawn lies within the terminal."""
    width, height = size
    for widget in screen.query("*"):
        if widget.display and widget.region.area:
            region = widget.region
            assert region.right <= width and region.bottom <= height, (widget, region)


async def test_80x24_shows_one_pane_at_a_time_and_f2_walks_them() -> None:
    app = quiet_app()
    async with app.run_test(size=SMALL) as pilot:
        screen = await main_screen(app)
        await pilot.pause()
        assert screen.narrow and screen.has_class("-narrow")
        assert [pane_id for pane_id, _ in screen.pane_order()] == STRIP_ORDER
        strip = screen.query_one(PaneStrip)
        assert str(strip.content).split("  F2")[0].split() == [
            "Chat", "Process", "Volumes", "Hardware", "Votes",
        ]  # fmt: skip
        walked = []
        for _ in STRIP_ORDER:
            walked.append(shown_panes(screen))
            pane = screen.query_one(f"#{screen.active_pane}")
            assert pane.region.width == SMALL[0]  # the whole width
            inside_the_screen(screen, SMALL)
            await pilot.press("f2")
            await pilot.pause()
        assert walked == [[pane_id] for pane_id in STRIP_ORDER]
        assert shown_panes(screen) == ["chat"]  # round again
        await pilot.press("shift+f2")
        await pilot.pause()
        assert shown_panes(screen) == ["votes"]
        # The strip marks the pane shown, in reverse video (no colour needed).
        spans = [span for span in strip.content.spans if "reverse" in str(span.style)]
        assert [str(strip.content)[s.start : s.end].strip() for s in spans] == ["Votes"]
        # Keys go where the eye is: the chat's prompt when chat is shown, nothing hidden.
        await pilot.press("f2")
        await pilot.pause()
        assert app.focused is screen.query_one("#prompt", PromptArea)


async def test_switching_keeps_each_panes_state_and_resizing_lays_out_again() -> None:
    app = quiet_app()
    async with app.run_test(size=WIDE) as pilot:
        screen = await main_screen(app)
        assert not screen.narrow
        assert shown_panes(screen) == STRIP_ORDER  # all five, three columns
        assert not screen.query_one(PaneStrip).display
        prompt = screen.query_one("#prompt", PromptArea)
        prompt.value = "half a question"
        # Wide: F2 moves the focus to the next pane that takes keys.
        await pilot.press("f2")
        assert app.focused is not prompt and app.focused is not None
        assert any(node.id == "volumes" for node in app.focused.ancestors_with_self)

        await pilot.resize_terminal(NARROW_WIDTH - 1, 30)
        await until(lambda: screen.narrow)
        await pilot.pause()
        assert len(shown_panes(screen)) == 1
        screen.show_pane("chat")
        await pilot.pause()
        assert prompt.value == "half a question" and app.focused is prompt
        inside_the_screen(screen, (NARROW_WIDTH - 1, 30))

        await pilot.resize_terminal(*WIDE)
        await until(lambda: not screen.narrow)
        await pilot.pause()
        assert shown_panes(screen) == STRIP_ORDER
        assert prompt.value == "half a question"


async def test_attach_at_80x24_shows_the_run_first() -> None:
    run_id = await make_run(hanoi(6), steps=30)
    app = quiet_app(attach_run=run_id)
    async with app.run_test(size=SMALL) as pilot:
        screen = await main_screen(app)
        await pilot.pause()
        assert shown_panes(screen) == ["process"]
        await watching(screen.query_one("#process"), run_id)  # type: ignore[arg-type]


async def test_back_from_a_palette_the_focus_is_never_on_a_hidden_pane() -> None:
    app = quiet_app()
    async with app.run_test(size=SMALL) as pilot:
        screen = await main_screen(app)
        screen.show_pane("votes")  # nothing there takes keys
        await pilot.pause()
        assert app.focused is None
        await pilot.press("ctrl+p")
        await until(lambda: isinstance(app.screen, CommandPalette))
        await pilot.press("escape")
        await until(lambda: app.screen is screen)
        await pilot.pause()
        focused = app.focused
        assert focused is None or focused in screen.focus_chain
        # So the footer shows the keys of what is on screen, not the hidden Process pane's.
        assert "r" not in app.active_bindings


# --- a real terminal: bytes written, and going away -------------------------------------

LAUNCH = (
    "import sys; sys.stderr = open(sys.argv[1], 'w', buffering=1); "
    "from nanobot_tui.cli.main import main; raise SystemExit(main([]))"
)


def set_size(fd: int, size: tuple[int, int]) -> None:
    columns, lines = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))


def read_for(fd: int, seconds: float) -> bytes:
    """What the app writes in `seconds` (b"" once the terminal is closed)."""
    out = b""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
    return out


def read_until(fd: int, text: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"{text!r} not written in {timeout} s: {seen[-300:]!r}"
        seen += read_for(fd, 0.1)
    return seen


def spawn_app(log: Path, *, controlling: bool) -> tuple[subprocess.Popen[bytes], int]:
    """`nanobot` on a new pty of 80x24, its Python errors (sys.stderr) to `log`; the
    screen is drawn on the terminal (Textual writes to the real stderr, sys.__stderr__).
    With `controlling`, the pty is its controlling terminal, as in a login: closing the
    master sends it SIGHUP. Without, it only sees end-of-file."""
    master, slave = os.openpty()
    set_size(slave, SMALL)
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")

    def make_controlling() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(log)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=make_controlling if controlling else None,
    )
    os.close(slave)
    return proc, master


def servers_of(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(proc.pid).children(recursive=True)
        if "llama_host" in " ".join(child.cmdline())
    ]


def hang_up(tmp_path: Path, *, controlling: bool) -> None:
    log = tmp_path / "stderr.log"
    proc, master = spawn_app(log, controlling=controlling)
    try:
        read_until(master, b"ready", timeout=90)  # the chat status: the server is up
        servers = servers_of(proc)
        assert len(servers) == 1
        # Idle at 80x24: almost nothing goes over the wire (the aim: under 2 KB/s).
        read_for(master, 1.5)
        idle = read_for(master, 3.0)
        assert len(idle) / 3.0 < 2048, idle[-500:]
        os.close(master)  # the terminal goes away
        master = -1
        proc.wait(timeout=60)  # a hang guard: it exits on its own
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    errors = log.read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, errors[-2000:]
    assert "Traceback" not in errors and "Error" not in errors, errors[-2000:]
    # The servers were stopped by the app (not left to die with it): gone, pid file removed.
    psutil.wait_procs(servers, timeout=60)
    assert not any(server.is_running() for server in servers)
    assert list(paths.run_dir().glob("servers-*.json")) == []


@pytest.mark.model
def test_a_hung_up_terminal_ends_the_app_cleanly(tmp_path: Path) -> None:
    hang_up(tmp_path, controlling=True)  # SIGHUP


@pytest.mark.model
def test_a_terminal_at_end_of_file_ends_the_app_cleanly(tmp_path: Path) -> None:
    hang_up(tmp_path, controlling=False)  # no signal: the hang-up is seen by polling


@pytest.mark.parametrize("size", [SMALL, WIDE])
async def test_attach_starts_with_the_focus_on_the_process_pane(size: tuple[int, int]) -> None:
    """`nanobot attach RUN` is about the run: the focus starts in the Process pane (its
    keys in the footer), never in the chat's prompt, at 80x24 and at 120x36."""
    run_id = await make_run(hanoi(6), steps=30)
    app = quiet_app(attach_run=run_id)
    async with app.run_test(size=size) as pilot:
        screen = await main_screen(app)
        pane = screen.query_one("#process")
        await watching(pane, run_id)  # type: ignore[arg-type]
        await pilot.pause()
        await until(lambda: app.focused is pane.run_tree)  # type: ignore[attr-defined]
        keys = {binding.key for (_, binding, _, _) in screen.active_bindings.values()}
        assert "r" in keys and "p" in keys  # the pane's keys, not the chat's
        await pilot.press("p")
        await pilot.pause()
        assert screen.query_one("#prompt", PromptArea).value == ""
