"""The Channels screen (F4, or the palette's "Channels"): the gateway's channels as the
gateway itself last wrote them.

The gateway (`nanobot gateway`, channels/gateway.py) is a process of its own: it writes
NANOBOT_HOME/gateway/state.json atomically on every change (each channel's state, its
last error, its messages in and out, the bus's counters) and holds an flock on
gateway/gateway.pid while it runs. This screen reads both in a thread worker every
REFRESH_S while it is open, so it never waits on the gateway; with no gateway running it
says so and how to start one. The two files are the contract: the UI does not import
channels/ (the front-ends stand side by side); the lock test is pidlock.py's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from nanobot_tui import paths
from nanobot_tui.pidlock import holder
from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import fit, when
from nanobot_tui.ui.widgets.footer import Footer

REFRESH_S = 1.0
STATE_STYLES = {
    "running": "green",
    "starting": "yellow",
    "failed": "bold red",
    "stopped": "dim",
}
# What the bus's counters are called here, in the order shown.
BUS_COUNTERS = (
    ("published", "published"),
    ("sent", "sent"),
    ("retried", "retried"),
    ("failed", "given up"),
    ("delayed", "rate-limited"),
)
HOW_TO_START = (
    "Start one in a shell: nanobot gateway --detach  (stop it: nanobot gateway stop). "
    "Its channels are set in the config ({config}) under gateway.telegram and "
    'gateway.email; the README\'s "Channels" section says how, and `nanobot doctor` '
    "checks that each is reachable. The browser view is `nanobot web`, started on its own."
)


@dataclass
class GatewayStatus:
    """What the gateway last wrote, and whether one runs now."""

    running: bool
    pid: int | None
    state: dict[str, Any] = field(default_factory=dict)  # state.json; {} when none
    error: str = ""  # state.json could not be read


def gateway_dir() -> Path:
    return paths.home() / "gateway"


def gateway_pid() -> int | None:
    """The running gateway's pid (-1 when its pid file does not say); None when no
    gateway holds the lock on gateway.pid."""
    return holder(gateway_dir() / "gateway.pid")


def read_status() -> GatewayStatus:
    """The gateway's status (blocking: call it in a thread)."""
    pid = gateway_pid()
    path = gateway_dir() / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return GatewayStatus(pid is not None, pid)
    except (OSError, ValueError) as exc:
        return GatewayStatus(pid is not None, pid, error=f"{path}: {exc}")
    if not isinstance(state, dict):
        return GatewayStatus(pid is not None, pid, error=f"{path}: not a JSON object")
    return GatewayStatus(pid is not None, pid, state)


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "–"


def _last_activity(channel: dict[str, Any]) -> float | None:
    times = [
        t for t in (channel.get("last_in"), channel.get("last_out")) if isinstance(t, int | float)
    ]
    return max(times) if times else None


def _without_name(error: str, name: str) -> str:
    """A channel's error without its own name in front ("email: IMAP ..." -> "IMAP ...")."""
    return error.removeprefix(f"{name}: ")


def state_cell(channel: dict[str, Any], running: bool, now: float) -> Text:
    state = str(channel.get("state") or "?")
    if not running:
        return Text("stopped", style=STATE_STYLES["stopped"])
    if state == "failed":
        restart_at = channel.get("restart_at")
        if isinstance(restart_at, int | float):
            clock = time.strftime("%H:%M:%S", time.localtime(restart_at))
            return Text(f"restarting at {clock}", style="bold red")
        return Text("restarting", style="bold red")
    restarts = int(channel.get("restarts") or 0)
    text = Text(state, style=STATE_STYLES.get(state, ""))
    if restarts:
        text.append(f" ({restarts} restart{'s' if restarts != 1 else ''})", style="dim")
    return text


def render_status(status: GatewayStatus, now: float, width: int = 80) -> RenderableType:
    """The screen's text: the gateway's line, a row per channel with its errors under it,
    and the bus's counters; with no gateway, how to start one."""
    parts: list[RenderableType] = []
    state = status.state
    channels: dict[str, Any] = state.get("channels") or {}
    if status.running:
        head = Text("gateway running", style="bold green")
        head.append(f" (pid {status.pid})" if status.pid and status.pid > 0 else "")
        started = state.get("started")
        if isinstance(started, int | float):
            head.append(f" · started {when(started, now)}")
        updated = state.get("updated")
        if isinstance(updated, int | float):
            head.append(f" · written {when(updated, now)}", style="dim")
        parts.append(head)
    else:
        parts.append(Text("No gateway is running.", style="bold"))
        parts.append(Text(HOW_TO_START.format(config=paths.config_path()), style="dim"))
        if channels:
            updated = state.get("updated")
            last = f" (written {when(updated, now)})" if isinstance(updated, int | float) else ""
            parts.append(Text(f"\nWhat the last gateway wrote{last}:", style="dim"))
    if status.error:
        parts.append(Text(f"cannot read the gateway's state: {status.error}", style="red"))
    if not channels:
        if status.running:
            parts.append(Text("it has written no channel yet", style="dim"))
        return Group(*parts)
    table = Table(box=None, padding=(0, 1), show_edge=False, expand=False)
    table.add_column("channel", style="bold", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("in", justify="right", no_wrap=True)
    table.add_column("out", justify="right", no_wrap=True)
    table.add_column("last message", no_wrap=True)
    notes: list[Text] = []
    for name, channel in channels.items():
        if not isinstance(channel, dict):
            continue
        table.add_row(
            name,
            state_cell(channel, status.running, now),
            _count(channel.get("messages_in")),
            _count(channel.get("messages_out")),
            when(_last_activity(channel), now),
        )
        error = channel.get("last_error") or (
            channel.get("reason") if channel.get("state") == "failed" else None
        )
        if error:
            line = f"{name}: last error: {_without_name(str(error), name)}"
            notes.append(Text(fit(line, width - 2), style="red"))
        send_error = channel.get("last_send_error")
        if send_error:
            given_up = _count(channel.get("send_failures"))
            last = _without_name(str(send_error), name)
            line = f"{name}: {given_up} message(s) given up on, the last: {last}"
            notes.append(Text(fit(line, width - 2), style="yellow"))
    parts += [Text(""), table]
    if notes:
        parts += [Text(""), *notes]
    bus = state.get("bus")
    if isinstance(bus, dict) and status.running:
        counters = " · ".join(f"{_count(bus.get(key))} {label}" for key, label in BUS_COUNTERS)
        parts += [Text(""), Text(fit(f"bus: {counters}", width - 2), style="dim")]
    return Group(*parts)


class ChannelsScreen(Screen[None]):
    """The gateway's channels, read every REFRESH_S while open; Esc (or F4) closes it."""

    CSS_PATH = "channels.tcss"
    BINDINGS = [Binding("escape", "close", "Back", id="channels.close")]

    @dataclass
    class Read(Message):
        status: GatewayStatus

    def __init__(self) -> None:
        super().__init__()
        self.status: GatewayStatus | None = None
        self.loaded = False  # the first read has been shown
        self._shown: tuple[str, int] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="channels-box"), VerticalScroll(id="channels-scroll"):
            yield Static("reading the gateway's state…", id="channels-text")
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#channels-box")
        box.border_title = "Channels"
        box.border_subtitle = "the gateway's, live"
        self.query_one("#channels-scroll", VerticalScroll).focus()
        self.load()
        self.set_interval(REFRESH_S, self.load)

    @work(thread=True, exclusive=True, exit_on_error=False, group="channels-read",
          description="read the gateway's state")  # fmt: skip
    def load(self) -> None:
        self.post_message(self.Read(read_status()))

    @on(Read)
    def _read(self, message: Read) -> None:
        now = time.time()
        # Redraw when something changed, and once a second regardless ("3 s ago").
        key = (json.dumps([message.status.__dict__], sort_keys=True, default=str), int(now))
        if key == self._shown:
            return
        self._shown, self.status = key, message.status
        width = self.query_one("#channels-text", Static).size.width or self.size.width
        self.query_one("#channels-text", Static).update(render_status(message.status, now, width))
        self.loaded = True

    def action_close(self) -> None:
        self.dismiss(None)


def open_channels(app: EngineApp) -> None:
    """Show the Channels screen (closing it when it is already on top)."""
    if isinstance(app.screen, ChannelsScreen):
        app.screen.dismiss(None)
        return
    app.push_screen(ChannelsScreen())
