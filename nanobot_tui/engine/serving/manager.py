"""The server manager: one llama.cpp server per distinct model across the three slots.

Either runtime works the same way: a user's `llama-server` binary, or the embedded
xllamacpp host module run as a subprocess with the same flags. Each server runs in its
own process group on a free 127.0.0.1 port; the manager waits on /health (503 while
loading), fails fast with the server's last log lines if it exits, restarts a crashed
server, stops everything with SIGTERM to the group then SIGKILL, and records pids so that
servers left behind by a crashed nanobot are reaped on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from pathlib import Path

import httpx
import psutil

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.serving.slots import ServerSpec
from nanobot_tui.errors import NanobotError
from nanobot_tui.units import human_bytes

HOST = "127.0.0.1"
HOST_MODULE = "nanobot_tui.engine.serving.llama_host"


class ServerStartError(NanobotError):
    """A server that could not be started or kept running. str() is one line."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


# --- runtimes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    kind: str  # "embedded" or "llama-server"
    command: tuple[str, ...]  # argv before the llama-server flags
    version: str

    @property
    def description(self) -> str:
        return f"{self.kind} ({' '.join(self.command[-1:])}, {self.version})"


def resolve_runtime(setting: str = "embedded") -> Runtime:
    """The runtime the config names: "embedded", "llama-server" (on PATH) or a binary path."""
    if setting == "embedded":
        try:
            version = metadata.version("xllamacpp")
        except metadata.PackageNotFoundError:
            raise ServerStartError("the embedded runtime (xllamacpp) is not installed") from None
        return Runtime("embedded", (sys.executable, "-m", HOST_MODULE), f"xllamacpp {version}")
    binary = shutil.which(setting) if os.sep not in setting else setting
    if binary is None or not os.access(binary, os.X_OK) or not os.path.isfile(binary):
        raise ServerStartError(f"runtime {setting!r}: no executable llama-server found there")
    return Runtime("llama-server", (binary,), _binary_version(binary))


def _binary_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):
            return line.removeprefix("version:").strip()
    return "unknown"


def server_args(spec: ServerSpec, port: int, threads: int) -> list[str]:
    """The llama-server flags for a spec; the embedded host takes the same ones."""
    args = [
        "--model", str(spec.model_path),
        "--host", HOST,
        "--port", str(port),
        "--ctx-size", str(spec.context_size),
        "--parallel", str(spec.parallel),
        "--n-gpu-layers", str(spec.gpu_layers),
        "--threads", str(threads),
        "--alias", spec.model_id,
        "--metrics", "--slots", "--jinja",
    ]  # fmt: skip
    if spec.embeddings:
        args.append("--embeddings")
    if spec.pooling:
        args += ["--pooling", spec.pooling]
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- status and events ----------------------------------------------------------------


class ServerState(StrEnum):
    STARTING = "starting"  # process spawned, not answering yet
    LOADING = "loading"  # answering 503 while the model loads
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot of one server, for the meter, doctor and --json."""

    label: str
    slots: tuple[str, ...]
    model: str
    model_path: str
    state: ServerState
    port: int
    pid: int | None
    tokens_per_s: float  # generated tokens per second over the last sampling interval
    in_flight: int  # requests being processed
    restarts: int
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "slots": list(self.slots),
            "model": self.model,
            "modelPath": self.model_path,
            "state": str(self.state),
            "port": self.port,
            "pid": self.pid,
            "tokensPerSecond": round(self.tokens_per_s, 1),
            "inFlight": self.in_flight,
            "restarts": self.restarts,
            "message": self.message,
        }


@dataclass(frozen=True)
class ServerEvent:
    """Published on every state change; the UI turns it into a message."""

    status: ServerStatus
    message: str


EventSink = Callable[[ServerEvent], None]


# --- one server -----------------------------------------------------------------------


@dataclass
class _Counters:
    predicted_total: float = 0.0
    at: float = 0.0


@dataclass
class ManagedServer:
    spec: ServerSpec
    runtime: Runtime
    port: int
    log_path: Path
    threads: int
    state: ServerState = ServerState.STOPPED
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    tokens_per_s: float = 0.0
    in_flight: int = 0
    message: str = ""
    stopping: bool = False
    counters: _Counters = field(default_factory=_Counters)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.returncode is None else None

    def status(self) -> ServerStatus:
        return ServerStatus(
            label=self.spec.label,
            slots=self.spec.slots,
            model=self.spec.display_name,
            model_path=str(self.spec.model_path),
            state=self.state,
            port=self.port,
            pid=self.pid,
            tokens_per_s=self.tokens_per_s,
            in_flight=self.in_flight,
            restarts=self.restarts,
            message=self.message,
        )

    def log_tail(self, lines: int = 12) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 16_384))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def spawn(self) -> None:
        command = [*self.runtime.command, *server_args(self.spec, self.port, self.threads)]
        paths.ensure(self.log_path.parent)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {command}\n".encode())
            log.flush()
            # A session of its own: a Ctrl-C in the terminal reaches nanobot, which then
            # stops the servers in order, and one killpg reaches everything a server spawns.
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_healthy(
        self,
        http: httpx.AsyncClient,
        timeout: float,
        on_loading: Callable[[], None] = lambda: None,
    ) -> None:
        """Poll /health until 200; raise ServerStartError with the log tail if the process exits.
        `on_loading` is called once, when the server first answers 503 (model loading)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        url = f"{self.base_url}/health"
        while True:
            if self.process.returncode is not None:
                raise ServerStartError(
                    f"{self.spec.label} server exited with code {self.process.returncode} "
                    f"while starting (log: {self.log_path})",
                    self.log_tail(),
                )
            try:
                response = await http.get(url, timeout=2.0)
                if response.status_code == 200:
                    return
                if response.status_code == 503 and self.state is not ServerState.LOADING:
                    on_loading()
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.spec.label} server not healthy after {timeout:.0f} s "
                    f"(log: {self.log_path})",
                    self.log_tail(),
                )
            # Fast polls while a small model comes up, then the documented 250 ms.
            await asyncio.sleep(0.02 if time.monotonic() - started < 2 else 0.25)

    async def terminate(self, timeout: float) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`; always reaps."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# --- the manager ----------------------------------------------------------------------


class ServerManager:
    """Starts, watches, restarts and stops the servers for a list of specs."""

    def __init__(
        self,
        specs: list[ServerSpec],
        runtime: Runtime,
        *,
        on_event: EventSink | None = None,
        health_timeout: float = 300.0,
        stop_timeout: float = 5.0,
        max_restarts: int = 5,
        threads: int | None = None,
        stats_interval: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self.health_timeout = health_timeout
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.stats_interval = stats_interval
        self.on_event = on_event
        self._stopped = False
        threads = threads or os.cpu_count() or 1
        self.servers = [
            ManagedServer(
                spec=spec,
                runtime=runtime,
                port=0,
                log_path=paths.logs_dir() / f"server-{spec.label}.log",
                threads=threads,
            )
            for spec in specs
        ]
        self._by_slot: dict[str, ManagedServer] = {
            slot: server for server in self.servers for slot in server.spec.slots
        }
        self._http = httpx.AsyncClient(verify=False)  # loopback http only: no SSL context
        self._clients: dict[str, LLMClient] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pid_file = paths.run_dir() / f"servers-{os.getpid()}.json"

    # public API

    async def start(self) -> None:
        """Reap leftovers, then start every server, largest first; returns when all are ready.

        Raises ServerStartError (and stops what did start) if one cannot be started.
        """
        reap_orphans()
        try:
            for server in self.servers:
                await self._start_one(server)
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._sample_stats(), name="server-stats"))

    async def stop(self) -> None:
        """Stop everything cleanly. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for server in self.servers:
            server.stopping = True
        await asyncio.gather(*(s.terminate(self.stop_timeout) for s in self.servers))
        for server in self.servers:
            if server.state is not ServerState.FAILED:
                self._set_state(server, ServerState.STOPPED, "stopped")
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        await self._http.aclose()
        self._pid_file.unlink(missing_ok=True)

    def server_for(self, slot: str) -> ManagedServer:
        return self._by_slot[slot]

    def url(self, slot: str) -> str:
        return self.server_for(slot).base_url

    def client(self, slot: str) -> LLMClient:
        """A shared client for the server behind a slot (clients are per server)."""
        server = self.server_for(slot)
        key = server.spec.label
        if key not in self._clients:
            self._clients[key] = LLMClient(server.base_url, model=server.spec.model_id)
        return self._clients[key]

    def statuses(self) -> list[ServerStatus]:
        return [server.status() for server in self.servers]

    async def __aenter__(self) -> ServerManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # internals

    async def _start_one(self, server: ManagedServer) -> None:
        server.stopping = False
        if server.port == 0:
            server.port = free_port()
        self._set_state(server, ServerState.STARTING, "starting…")
        await server.spawn()
        self._record_pids()
        size = human_bytes(server.spec.size_bytes)
        await server.wait_healthy(
            self._http,
            self.health_timeout,
            lambda: self._set_state(server, ServerState.LOADING, f"loading the model ({size})…"),
        )
        self._set_state(server, ServerState.READY, f"ready on port {server.port}")
        self._tasks.append(
            asyncio.create_task(self._supervise(server), name=f"supervise-{server.spec.label}")
        )

    async def _supervise(self, server: ManagedServer) -> None:
        """Wait for the process to end; if nobody asked it to, restart it."""
        assert server.process is not None
        code = await server.process.wait()
        if server.stopping:
            return
        tail = server.log_tail(4)
        if server.restarts >= self.max_restarts:
            self._set_state(
                server,
                ServerState.FAILED,
                f"exited with code {code}; gave up after {server.restarts} restarts",
            )
            return
        server.restarts += 1
        self._set_state(
            server,
            ServerState.RESTARTING,
            f"crashed (exit code {code}); restarting, attempt {server.restarts}"
            + (f": {tail.splitlines()[-1]}" if tail else ""),
        )
        await asyncio.sleep(min(0.2 * 2 ** (server.restarts - 1), 5.0))
        try:
            await self._start_one(server)
        except ServerStartError as exc:
            # The port may have been taken meanwhile: one more try on a fresh one.
            server.port = free_port()
            try:
                await self._start_one(server)
            except ServerStartError:
                self._set_state(server, ServerState.FAILED, str(exc))

    async def _sample_stats(self) -> None:
        """Tokens/s and requests in flight per server, from /metrics, chained polls."""
        while True:
            await asyncio.gather(*(self._sample_one(s) for s in self.servers))
            await asyncio.sleep(self.stats_interval)

    async def _sample_one(self, server: ManagedServer) -> None:
        if server.state is not ServerState.READY:
            server.tokens_per_s = 0.0
            server.in_flight = 0
            return
        try:
            response = await self._http.get(f"{server.base_url}/metrics", timeout=2.0)
        except httpx.HTTPError:
            return
        metrics = parse_metrics(response.text)
        now = time.monotonic()
        total = metrics.get("llamacpp:tokens_predicted_total", 0.0)
        counters = server.counters
        if counters.at and total >= counters.predicted_total:
            server.tokens_per_s = (total - counters.predicted_total) / (now - counters.at)
        server.counters = _Counters(total, now)
        server.in_flight = int(metrics.get("llamacpp:requests_processing", 0))

    def _set_state(self, server: ManagedServer, state: ServerState, message: str) -> None:
        server.state = state
        server.message = message
        if self.on_event is not None:
            self.on_event(ServerEvent(server.status(), f"{server.spec.label}: {message}"))

    def _record_pids(self) -> None:
        entries = []
        for server in self.servers:
            if server.pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                created = psutil.Process(server.pid).create_time()
                entries.append({"pid": server.pid, "created": created, "port": server.port})
        owner = {"pid": os.getpid(), "created": psutil.Process().create_time()}
        paths.ensure(self._pid_file.parent)
        record = json.dumps({"owner": owner, "servers": entries})
        write_atomic(self._pid_file, record, mode=0o644)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format, the plain `name value` lines llama.cpp writes."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value.split()[0])
    return values


def _alive(pid: int, created: float) -> bool:
    """The process is alive and is the same one (pids get reused)."""
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - created) < 1.0
        return same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reap_orphans(run_dir: Path | None = None) -> int:
    """Kill servers recorded by nanobot processes that are gone; return how many."""
    run_dir = run_dir or paths.run_dir()
    reaped = 0
    for pid_file in run_dir.glob("servers-*.json"):
        try:
            record = json.loads(pid_file.read_text())
            owner = record["owner"]
            servers = record["servers"]
        except (OSError, ValueError, KeyError, TypeError):
            pid_file.unlink(missing_ok=True)
            continue
        if _alive(owner["pid"], owner["created"]):
            continue
        for entry in servers:
            if _alive(entry["pid"], entry["created"]):
                _signal_group(entry["pid"], signal.SIGKILL)
                reaped += 1
        pid_file.unlink(missing_ok=True)
    return reaped
