"""The Channels screen (F4, or the palette's "Channels"): the gateway's channels as its
state file says, read while the screen is open.

The Pilot tests run a real gateway (channels/gateway.py `serve`, holding its lock and
writing NANOBOT_HOME/gateway/state.json) over in-process loopback channels beside the app:
one that fails at its first start (the gateway restarts it), one that answers. The
snapshot (80x24; update with `pytest tests/ui/test_channels_screen.py --snapshot-update`,
then look at the SVG) shows a state file with its times pinned long past and a lock
held by this test, as a running gateway holds it."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from nanobot_tui.channels.bus import BusCounters, ChannelTraffic
from nanobot_tui.channels.gateway import ChannelState, Gateway, pid_path, serve, state_path
from nanobot_tui.channels.loopback import LoopbackChannel
from nanobot_tui.config import GatewayConfig
from nanobot_tui.ui.screens.channels import ChannelsScreen
from nanobot_tui.ui.screens.help import key_sections, palette_commands
from nanobot_tui.ui.screens.main import MainScreen
from tests.conftest import until
from tests.ui.palette import run_command
from tests.ui.test_app import text_of
from tests.ui.test_process_pane import quiet_app

TITLE = "Channels: the gateway's Telegram and email"
SNAPSHOT_HOME = Path("/tmp/nanobot-snapshot-channels")
PINNED = 1767323040.0  # 2026-01-02 03:04 UTC


def shown(app: Any) -> str:
    return text_of(app.screen.query_one("#channels-text", Static))


def row(app: Any, channel: str) -> list[str]:
    """The channel's row, split at spaces: name, state..., in, out, last message."""
    lines = [line.split() for line in shown(app).splitlines()]
    return next((words for words in lines if words and words[0] == channel), [])


async def test_the_screen_follows_a_real_gateway_its_restarts_messages_and_its_end() -> None:
    flaky = LoopbackChannel("flaky", fail_runs=1)
    steady = LoopbackChannel("steady")
    gateway = Gateway([flaky, steady], GatewayConfig(), poll_s=0.05, restart_backoff_s=0.2)
    app = quiet_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        await run_command(pilot, TITLE)
        await until(lambda: isinstance(app.screen, ChannelsScreen) and app.screen.loaded)
        text = shown(app)
        assert text.startswith("No gateway is running.\nStart one in a shell: nanobot gateway")
        assert "flaky" not in text  # no gateway has ever written its state here

        serving = asyncio.create_task(serve(gateway))
        try:
            await until(lambda: "flaky: last error: failed at start, as asked" in shown(app))
            await until(lambda: gateway.states["flaky"].state == "running")
            steady.say("666", "/status")  # a stranger: answered with a pairing code
            await until(lambda: gateway.bus.counters.sent == 1)
            await until(lambda: row(app, "steady")[1:4] == ["running", "1", "1"])  # in, out
            text = shown(app)
            assert text.startswith(f"gateway running (pid {os.getpid()}) · started ")
            assert row(app, "flaky")[1:6] == ["running", "(1", "restart)", "0", "0"]
            assert row(app, "steady")[-1] == "ago"  # its last message: "1 s ago"
            assert "bus: 1 published · 1 sent · 0 retried · 0 given up" in text
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
        await until(lambda: shown(app).startswith("No gateway is running."))
        text = shown(app)
        assert "What the last gateway wrote" in text
        assert row(app, "steady")[1:4] == ["stopped", "1", "1"]
        assert row(app, "flaky")[1] == "stopped"
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, MainScreen))


async def test_f4_opens_and_closes_it_and_the_help_and_palette_list_it() -> None:
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        assert TITLE in [title for title, _ in palette_commands(app)]
        assert ("f4", "Channels") in dict(key_sections(app))["Everywhere"]
        await pilot.press("f4")
        await until(lambda: isinstance(app.screen, ChannelsScreen) and app.screen.loaded)
        await pilot.press("f4")
        await until(lambda: isinstance(app.screen, MainScreen))


async def test_a_damaged_state_file_is_one_line() -> None:
    state_path().parent.mkdir(parents=True, exist_ok=True)
    state_path().write_text("{not json")
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        await pilot.press("f4")
        await until(lambda: isinstance(app.screen, ChannelsScreen) and app.screen.loaded)
        lines = shown(app).splitlines()
        assert lines[0] == "No gateway is running."
        assert any(line.startswith("cannot read the gateway's state: ") for line in lines)


def pinned_state() -> dict[str, Any]:
    """A state file as the gateway writes it (its own dataclasses), times pinned."""
    telegram = asdict(ChannelState("running", None, 2, PINNED, "telegram: getMe failed: 502"))
    telegram |= asdict(ChannelTraffic(7, 12, 0, PINNED + 50, PINNED + 55))
    email = asdict(
        ChannelState(
            "failed", "email: IMAP 127.0.0.1:993 failed: Connection refused", 3, PINNED,
            "email: IMAP 127.0.0.1:993 failed: Connection refused", PINNED + 64,
        )
    )  # fmt: skip
    given_up = "email: sending to ann@example.org through 127.0.0.1:587 failed: timed out"
    email |= asdict(ChannelTraffic(1, 4, 1, PINNED + 20, PINNED + 30, given_up))
    bus = BusCounters(received=8, published=17, sent=16, retried=4, failed=1)
    return {
        "pid": 4242,
        "started": PINNED - 3600,
        "updated": PINNED + 60,
        "channels": {"telegram": telegram, "email": email},
        "bus": bus.to_dict(),
    }


@pytest.fixture
def snapshot_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fixed NANOBOT_HOME (the screen shows the config's path) and UTC times."""
    shutil.rmtree(SNAPSHOT_HOME, ignore_errors=True)
    SNAPSHOT_HOME.mkdir(parents=True)
    monkeypatch.setenv("NANOBOT_HOME", str(SNAPSHOT_HOME))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield SNAPSHOT_HOME
    monkeypatch.undo()
    time.tzset()
    shutil.rmtree(SNAPSHOT_HOME, ignore_errors=True)


@contextlib.contextmanager
def held_lock(pid: int) -> Iterator[None]:
    """gateway.pid locked, holding `pid`: what a running gateway leaves there."""
    pid_path().parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(pid_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{pid}\n".encode())
        yield
    finally:
        os.close(fd)


def test_channels_screen(snap_compare: Any, snapshot_home: Path) -> None:
    state_path().parent.mkdir(parents=True, exist_ok=True)
    state_path().write_text(json.dumps(pinned_state()))
    app = quiet_app()

    async def ready(pilot: Any) -> None:
        await until(lambda: isinstance(app.screen, MainScreen))
        await pilot.press("f4")
        await until(lambda: isinstance(app.screen, ChannelsScreen) and app.screen.loaded)
        assert shown(app).startswith("gateway running (pid 4242)")

    with held_lock(4242):
        assert snap_compare(app, terminal_size=(80, 24), run_before=ready)
