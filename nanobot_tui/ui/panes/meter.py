"""The hardware meter: CPU, RAM, each GPU, and every model server with its live tokens/s."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual import getters, on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from nanobot_tui.engine.serving.status import ServerEvent, ServerState, ServerStatus
from nanobot_tui.hardware import HardwareSample, HardwareSampler
from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import RESTART_HINT
from nanobot_tui.units import human_bytes

BAR_WIDTH = 16
STATE_STYLE = {
    ServerState.READY: "green",
    ServerState.STARTING: "yellow",
    ServerState.LOADING: "yellow",
    ServerState.RESTARTING: "bold yellow",
    ServerState.STOPPED: "dim",
    ServerState.FAILED: "bold red",
}


def bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    """A block bar; colour warns as it fills."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    style = "green" if fraction < 0.7 else "yellow" if fraction < 0.9 else "red"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))


def render_hardware(sample: HardwareSample) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(width=5)
    table.add_column(width=BAR_WIDTH)
    table.add_column()
    table.add_row("CPU", bar(sample.cpu_percent / 100), f"{sample.cpu_percent:4.0f}%")
    ram = sample.ram_used / sample.ram_total if sample.ram_total else 0.0
    table.add_row(
        "RAM", bar(ram), f"{human_bytes(sample.ram_used)}/{human_bytes(sample.ram_total)}"
    )
    for gpu in sample.gpus:
        vram = gpu.vram_used / gpu.vram_total if gpu.vram_total else 0.0
        table.add_row(
            f"GPU{gpu.index}",
            bar(vram),
            f"{human_bytes(gpu.vram_used)}/{human_bytes(gpu.vram_total)}",
        )
        if gpu.utilization is not None:
            table.add_row("", bar(gpu.utilization / 100), f"{gpu.utilization:4.0f}% util")
    if not sample.gpus:
        table.add_row("GPU", Text("none · CPU only", style="dim"), "")
    return table


def hardware_key(sample: HardwareSample) -> tuple[object, ...]:
    """What `render_hardware` would show, as a value: equal keys draw the same lines, so
    the meter skips the redraw (over SSH a redraw is about 1 KB)."""

    def filled(fraction: float) -> int:
        return round(min(max(fraction, 0.0), 1.0) * BAR_WIDTH)

    ram = sample.ram_used / sample.ram_total if sample.ram_total else 0.0
    key: list[object] = [
        filled(sample.cpu_percent / 100),
        f"{sample.cpu_percent:4.0f}",
        filled(ram),
        human_bytes(sample.ram_used),
        human_bytes(sample.ram_total),
    ]
    for gpu in sample.gpus:
        vram = gpu.vram_used / gpu.vram_total if gpu.vram_total else 0.0
        util = None if gpu.utilization is None else f"{gpu.utilization:4.0f}"
        key += [gpu.index, filled(vram), human_bytes(gpu.vram_used), human_bytes(gpu.vram_total)]
        key += [util, None if gpu.utilization is None else filled(gpu.utilization / 100)]
    return tuple(key)


def render_servers(statuses: list[ServerStatus]) -> Table | Text:
    """Two lines a server, so names fit a narrow column: slots and state, then model and
    throughput; a server that is down adds why and how to restart it."""
    if not statuses:
        return Text("no model servers", style="dim")
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    for status in statuses:
        style = STATE_STYLE.get(status.state, "")
        table.add_row(Text(status.label, style="bold"), Text(f"● {status.state}", style=style))
        restarts = f" · {status.restarts}↻" if status.restarts else ""
        table.add_row(
            Text(status.model, style="dim"),
            f"{status.tokens_per_s:.0f} tok/s · {status.in_flight} req{restarts}",
        )
        if status.state is ServerState.FAILED:
            table.add_row(Text(status.message, style="red"), "")
            table.add_row(Text(f"restart: {RESTART_HINT}", style="dim"), "")
    return table


class HardwareMeter(Vertical):
    """Samples once a second; the next sample is scheduled when the last one lands, so
    samples never pile up, and the widgets are redrawn only when what they show changes."""

    INTERVAL = 1.0

    app = getters.app(EngineApp)
    hardware = getters.query_one("#meter-hardware", Static)
    servers = getters.query_one("#meter-servers", Static)

    @dataclass
    class Sampled(Message):
        sample: HardwareSample

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Made in the first sample's thread: psutil's import and first reading stay off
        # the app's first frame.
        self._sampler: HardwareSampler | None = None
        self._last_servers: list[ServerStatus] | None = None
        self._last_hardware: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="meter-hardware")
        yield Static(id="meter-servers")

    def on_mount(self) -> None:
        self.border_title = "Hardware"
        self.app.server_signal.subscribe(self, self._server_changed)
        # After the first frame: the sample's thread (psutil, NVML) would slow it down.
        self.call_after_refresh(self.take_sample)

    def on_unmount(self) -> None:
        if self._sampler is not None:
            self._sampler.close()

    @work(thread=True, exclusive=True, group="meter", exit_on_error=False, description="sample")
    def take_sample(self) -> None:
        # NVML calls can block for a moment; a thread keeps the UI free.
        if self._sampler is None:
            self._sampler = HardwareSampler()
        self.post_message(self.Sampled(self._sampler.sample()))

    @on(Sampled)
    def _sampled(self, message: Sampled) -> None:
        key = hardware_key(message.sample)
        if key != self._last_hardware:
            self._last_hardware = key
            self.hardware.update(render_hardware(message.sample))
        self._show_servers()
        self.set_timer(self.INTERVAL, self.take_sample)

    def _server_changed(self, event: ServerEvent) -> None:
        status = event.status
        if status.state is ServerState.FAILED:
            why = status.message.removeprefix("down: ")
            self.app.notify(
                f"The {status.label} model server is down ({why}). To restart it: {RESTART_HINT}",
                title="model server down",
                severity="error",
                timeout=30,
            )
        self._show_servers()

    def _show_servers(self) -> None:
        workbench = self.app.workbench
        statuses = workbench.statuses() if workbench else []
        if statuses != self._last_servers:
            self._last_servers = statuses
            self.servers.update(render_servers(statuses))
