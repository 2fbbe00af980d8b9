"""The hardware meter: CPU, RAM, each GPU, and every model server with its live tokens/s;
attached to a run that samples over a Ray cluster, the pool's hosts too (node, model,
requests in flight, tokens/s), read in a worker from the cluster every few seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from nanobot_tui.ui.format import RESTART_HINT, error_line
from nanobot_tui.units import human_bytes

if TYPE_CHECKING:
    from nanobot_tui.engine.cluster.host_actor import HostInfo

BAR_WIDTH = 16
POOL_INTERVAL = 5.0  # seconds between readings of a cluster run's hosts
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


def render_pool(address: str, hosts: list[HostInfo], error: str = "") -> Table | Text:
    """A cluster run's hosts, two lines each as the servers: node and state, then model,
    requests in flight of its slots, and tokens/s."""
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_row(Text(f"pool {address}", style="bold"), f"{len(hosts)} host(s)")
    if error:
        table.add_row(Text(error, style="red"), "")
    for host in hosts:
        node = host.name.rsplit(":", 1)[-1][:8] if host.name.count(":") >= 2 else host.name
        state = Text("● up", style="green") if host.up else Text("● down", style="bold red")
        table.add_row(Text(f"{host.address} {node}", style="bold"), state)
        table.add_row(
            Text(host.model, style="dim"),
            f"{host.tokens_per_s:.0f} tok/s · {host.in_flight}/{host.slots} req",
        )
    return table


def read_pool(run_id: str, connected: str | None) -> tuple[str | None, list[HostInfo]]:
    """The cluster a run samples over (None: not a cluster run) and its hosts; blocks (Ray),
    so it runs in a worker. `connected`: the cluster this process joined before, left when
    the run names another."""
    import asyncio

    from nanobot_tui.engine.runs.store.reader import RunStore

    with RunStore.open(run_id) as store:
        address = store.spec.cluster
    if address is None:
        return None, []
    from nanobot_tui.engine.cluster import pool, ray_runtime

    if connected != address:
        if connected is not None:
            ray_runtime.disconnect()
        _probe(address)
    ray_runtime.connect(address)
    return address, asyncio.run(pool.list_hosts())


def _probe(address: str) -> None:
    """ConnectionError at once when nothing listens at HOST:PORT: Ray would retry for
    minutes, holding the worker (and the app's exit) meanwhile."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto": Ray finds it
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            pass
    except OSError:
        raise ConnectionError(f"no Ray cluster answers at {address}") from None


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

    @dataclass
    class PoolRead(Message):
        """The hosts of the attached run's cluster (address None: not a cluster run)."""

        run_id: str | None
        address: str | None
        hosts: list[Any] = field(default_factory=list)
        error: str = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Made in the first sample's thread: psutil's import and first reading stay off
        # the app's first frame.
        self._sampler: HardwareSampler | None = None
        self._last_servers: list[ServerStatus] | None = None
        self._last_hardware: tuple[object, ...] | None = None
        self._pool_address: str | None = None  # the cluster this process joined
        self.pool_hosts: list[HostInfo] = []  # the last hosts shown (tests read it)
        self.pool_reads = 0  # readings of the attached run's pool handled (tests read it)
        self._last_pool: tuple[object, ...] | None = None  # what the pool lines show

    def compose(self) -> ComposeResult:
        yield Static(id="meter-hardware")
        yield Static(id="meter-servers")
        pool = Static(id="meter-pool")
        pool.display = False  # only for a run on a cluster
        yield pool

    def on_mount(self) -> None:
        self.border_title = "Hardware"
        self.app.server_signal.subscribe(self, self._server_changed)
        # After the first frame: the sample's thread (psutil, NVML) would slow it down.
        self.call_after_refresh(self.take_sample)
        self.call_after_refresh(self.poll_pool)

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

    def poll_pool(self) -> None:
        """Read the attached run's cluster hosts in a worker; no run attached, no worker."""
        run_id = self.app.attached_run
        if run_id is None:
            self.post_message(self.PoolRead(None, None))
        else:
            self._read_pool(run_id)

    @work(thread=True, exclusive=True, group="meter-pool", exit_on_error=False,
          description="read the cluster's hosts")  # fmt: skip
    def _read_pool(self, run_id: str) -> None:
        try:
            address, hosts = read_pool(run_id, self._pool_address)
        except Exception as exc:  # a run being created or deleted, a cluster gone
            self.post_message(self.PoolRead(run_id, self._pool_address, error=error_line(exc)))
        else:
            self.post_message(self.PoolRead(run_id, address, hosts))

    @on(PoolRead)
    def _pool_read(self, message: PoolRead) -> None:
        pane = self.query_one("#meter-pool", Static)
        self.pool_reads += 1
        if message.address is not None and not message.error:
            self._pool_address = message.address
        if message.address is None:
            pane.display = False
            self.pool_hosts = []
            self._last_pool = None
        elif message.run_id == self.app.attached_run:
            self.pool_hosts = list(message.hosts) if not message.error else self.pool_hosts
            key = (message.address, *self.pool_hosts, message.error)
            if key != self._last_pool:  # redrawn only when it changed (bytes over SSH)
                self._last_pool = key
                pane.update(render_pool(message.address, self.pool_hosts, message.error))
            pane.display = True
        self.set_timer(POOL_INTERVAL, self.poll_pool)

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
