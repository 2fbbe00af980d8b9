"""The server manager: one llama.cpp server per distinct model across the three slots.

Either runtime works the same way: a user's `llama-server` binary, or the embedded
xllamacpp host module run as a subprocess with the same flags. Each server runs in its
own process group on a free 127.0.0.1 port; the manager waits on /health (503 while
loading), fails fast with the server's last log lines if it exits, restarts a crashed
server, stops everything with SIGTERM to the group then SIGKILL, and records pids so that
servers left behind by a crashed nanobot are reaped on the next start.

Each server takes requests only with the API key this manager made (a fresh random one per
manager, handed over in the environment, never in argv or the log), and allows no other
web origin (CORS): a web page that finds the port cannot use the model. Every client the
manager hands out, and its own /metrics polls, carry the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import psutil

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.engine.llm.kv_pool import KvPool
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.serving import lora, metrics
from nanobot_tui.engine.serving.slots import ServerSpec
from nanobot_tui.engine.serving.status import EventSink, ServerEvent, ServerState, ServerStatus
from nanobot_tui.errors import NanobotError
from nanobot_tui.units import format_seconds, human_bytes

HOST = "127.0.0.1"
HOST_MODULE = "nanobot_tui.engine.serving.llama_host"


# A request to our own server is as slow as its queue and the machine: a busy CPU makes a
# few hundred tokens take many minutes, and cutting it off wastes the work. A dead server
# is found by the health checks, not by this timeout, which only ends a request that hangs.
LOCAL_REQUEST_TIMEOUT_S = 3600.0


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
    if spec.kv_cache_type != "f16":
        # A quantised V cache needs flash attention; say so rather than rely on "auto".
        args += ["--cache-type-k", spec.kv_cache_type, "--cache-type-v", spec.kv_cache_type]
        args += ["--flash-attn", "on"]
    if spec.kv_unified:
        args += ["--kv-unified", "--kv-unified-per-slot", str(spec.window)]
    if spec.embeddings:
        args.append("--embeddings")
    if spec.pooling:
        args += ["--pooling", spec.pooling]
    for adapter in spec.lora_adapters:
        args += ["--lora", _csv_field(str(adapter))]
    if spec.lora_adapters:
        # Loaded, not applied; the manager also sets every scale to 0 once the server is
        # up, since llama-server applies --lora files at 1 from its first request on.
        args.append("--lora-init-without-apply")
    return args


def _csv_field(value: str) -> str:
    """One value of a llama.cpp comma-separated flag, quoted when it needs to be."""
    if any(char in value for char in ',"'):
        return '"' + value.replace('"', '""') + '"'
    return value


def server_env(api_key: str, origin: str) -> dict[str, str]:
    """What a server reads from its environment, llama-server's variables (the embedded
    host reads the same): the key requests must carry, and CORS off, the only origin
    allowed being the server's own, with no credentials. A llama-server too old for the
    CORS variables ignores them; the key it has read since 2024."""
    return {
        "LLAMA_API_KEY": api_key,
        "LLAMA_ARG_CORS_ORIGINS": origin,
        "LLAMA_ARG_CORS_CREDENTIALS": "false",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- one server -----------------------------------------------------------------------


@dataclass
class _Counters:
    predicted_total: float = 0.0  # tokens generated so far, in-flight requests' included
    at: float = 0.0


@dataclass
class ManagedServer:
    spec: ServerSpec
    runtime: Runtime
    port: int
    log_path: Path
    threads: int
    api_key: str = field(default="", repr=False)
    state: ServerState = ServerState.STOPPED
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0  # crash restarts over the manager's life, for the meter
    # When the recent crash restarts were (monotonic): the supervisor gives up only after
    # `max_restarts` of them within `restart_window` seconds.
    recent_restarts: deque[float] = field(default_factory=deque)
    tokens_per_s: float = 0.0
    in_flight: int = 0
    message: str = ""
    stopping: bool = False
    supervisor: asyncio.Task[None] | None = None  # waits for the process to end
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
                env={**os.environ, **server_env(self.api_key, self.base_url)},
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
                # llama.cpp's own message for a bad adapter does not name the file.
                adapters = ", ".join(str(path) for path in self.spec.lora_adapters)
                loading = f" with LoRA adapters {adapters}" if adapters else ""
                raise ServerStartError(
                    f"{self.spec.label} server exited with code {self.process.returncode} "
                    f"while starting{loading} (log: {self.log_path})",
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
        restart_window: float = 600.0,
        threads: int | None = None,
        stats_interval: float = 1.0,
    ) -> None:
        """A server that crashes is restarted, unless it crashed `max_restarts` times in
        the last `restart_window` seconds: then it is left down (FAILED) until `restart`."""
        self.runtime = runtime
        self.health_timeout = health_timeout
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.stats_interval = stats_interval
        self.on_event = on_event
        self._stopped = False
        self._api_key = secrets.token_urlsafe(32)
        # The servers share the cores: llama.cpp threads that outnumber the free cores
        # wait on each other at every barrier (on 2 busy cores the embedded model decoded
        # 1.4 tokens/s with 2 threads, 12 with 1), so each server gets its share, >= 1.
        threads = threads or max(1, (os.cpu_count() or 1) // max(1, len(specs)))
        self.servers = [
            ManagedServer(
                spec=spec,
                runtime=runtime,
                port=0,
                log_path=paths.logs_dir() / f"server-{spec.label}.log",
                threads=threads,
                api_key=self._api_key,
            )
            for spec in specs
        ]
        self._by_slot: dict[str, ManagedServer] = {
            slot: server for server in self.servers for slot in server.spec.slots
        }
        # Loopback http only: no SSL context. /health is open; /metrics wants the key.
        self._http = httpx.AsyncClient(verify=False, headers=self.auth_headers)
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

    @property
    def api_key(self) -> str:
        """The key these servers want (kept out of repr, argv and the logs)."""
        return self._api_key

    @property
    def auth_headers(self) -> dict[str, str]:
        """The header a request to these servers must carry (for a raw HTTP client)."""
        return {"Authorization": f"Bearer {self._api_key}"}

    def server_for(self, slot: str) -> ManagedServer:
        return self._by_slot[slot]

    def url(self, slot: str) -> str:
        return self.server_for(slot).base_url

    def client(self, slot: str) -> LLMClient:
        """A shared client for the server behind a slot (clients are per server)."""
        server = self.server_for(slot)
        key = server.spec.label
        if key not in self._clients:
            spec = server.spec
            # One pool per server, shared by every slot on it: the client admits requests.
            pool = KvPool(spec.context_size, spec.window) if spec.kv_unified else None
            self._clients[key] = LLMClient(
                server.base_url,
                api_key=self._api_key,
                model=spec.model_id,
                kv_pool=pool,
                timeout=LOCAL_REQUEST_TIMEOUT_S,
            )
        return self._clients[key]

    async def lora_adapters(self, slot: str) -> list[lora.LoraAdapter]:
        """The LoRA adapters the slot's server loaded, with their global scales."""
        return await lora.list_adapters(self._http, self.url(slot))

    async def set_lora_scales(self, slot: str, scales: Mapping[int, float]) -> None:
        """Global scales for the slot's server ({adapter id: scale}; others go to 0).
        A restart sets them all back to 0; a request's own `lora` overrides them."""
        await lora.set_scales(self._http, self.url(slot), scales)

    def statuses(self) -> list[ServerStatus]:
        return [server.status() for server in self.servers]

    async def restart(self, slot: str | None = None) -> list[str]:
        """Start again the server behind `slot`, or every server that is down (FAILED), with
        a fresh count of crash restarts; return the labels of those restarted. A server on
        its way up already is left to it. Raises ServerStartError if one cannot start."""
        if self._stopped:
            raise ServerStartError("the model servers have been stopped")
        coming_up = (ServerState.STARTING, ServerState.LOADING, ServerState.RESTARTING)
        if slot is not None:
            targets = [self.server_for(slot)]
        else:
            targets = [s for s in self.servers if s.state is ServerState.FAILED]
        done = []
        for server in targets:
            if server.state in coming_up:
                continue
            if server.supervisor is not None:  # this end is asked for: no crash restart
                server.supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await server.supervisor
            server.stopping = True
            await server.terminate(self.stop_timeout)
            server.recent_restarts.clear()
            self._set_state(server, ServerState.RESTARTING, "restarting, as asked…")
            error = await self._start_again(server)
            if error is not None:
                raise error
            done.append(server.spec.label)
        return done

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
        client = self._clients.get(server.spec.label)
        if client is not None and client.base_url != server.base_url:
            client.move_to(server.base_url)  # whoever holds the client follows the server
        server.counters = _Counters()  # a new process counts its tokens from 0
        self._set_state(server, ServerState.STARTING, "starting…")
        await server.spawn()
        try:
            self._record_pids()
        except ServerStartError:  # a full disk: stop what nothing would know to clean up
            await server.terminate(self.stop_timeout)
            raise
        size = human_bytes(server.spec.size_bytes)
        try:
            await server.wait_healthy(
                self._http,
                self.health_timeout,
                lambda: self._set_state(
                    server, ServerState.LOADING, f"loading the model ({size})…"
                ),
            )
        except ServerStartError:
            await server.terminate(self.stop_timeout)  # one not healthy in time may still run
            raise
        if server.spec.lora_adapters:
            await self._adapters_off(server)
        self._set_state(server, ServerState.READY, f"ready on port {server.port}")
        server.supervisor = asyncio.create_task(
            self._supervise(server), name=f"supervise-{server.spec.label}"
        )
        self._tasks.append(server.supervisor)

    async def _adapters_off(self, server: ManagedServer) -> None:
        """Every adapter of a new server at scale 0, and all of them loaded."""
        try:
            loaded = await lora.list_adapters(self._http, server.base_url)
            if len(loaded) != len(server.spec.lora_adapters):
                raise lora.LoraServerError(
                    f"{len(loaded)} of {len(server.spec.lora_adapters)} LoRA adapters loaded"
                )
            await lora.set_scales(self._http, server.base_url, {a.id: 0.0 for a in loaded})
        except lora.LoraServerError as exc:
            await server.terminate(self.stop_timeout)
            raise ServerStartError(f"{server.spec.label} server: {exc}") from None

    async def _supervise(self, server: ManagedServer) -> None:
        """Wait for the process to end; if nobody asked it to, restart it."""
        assert server.process is not None
        code = await server.process.wait()
        if server.stopping:
            return
        tail = server.log_tail(4)
        now = time.monotonic()
        recent = server.recent_restarts
        while recent and now - recent[0] > self.restart_window:
            recent.popleft()
        if len(recent) >= self.max_restarts:
            self._set_state(
                server,
                ServerState.FAILED,
                f"down: exited with code {code} after {len(recent)} restarts in "
                f"{format_seconds(self.restart_window)}",
            )
            return
        recent.append(now)
        server.restarts += 1
        self._set_state(
            server,
            ServerState.RESTARTING,
            f"crashed (exit code {code}); restarting, attempt {len(recent)}"
            + (f": {tail.splitlines()[-1]}" if tail else ""),
        )
        await asyncio.sleep(min(0.2 * 2 ** (len(recent) - 1), 5.0))
        await self._start_again(server)

    async def _start_again(self, server: ManagedServer) -> ServerStartError | None:
        """Start a server that was running; on failure it is down (FAILED) and the error
        is returned."""
        try:
            await self._start_one(server)
        except ServerStartError:
            # The port may have been taken meanwhile: one more try on a fresh one.
            server.port = free_port()
            try:
                await self._start_one(server)
            except ServerStartError as exc:
                self._set_state(server, ServerState.FAILED, f"down: {exc}")
                return exc
        return None

    async def _sample_stats(self) -> None:
        """Tokens/s and requests in flight per server, from /metrics and /slots, chained
        polls."""
        while True:
            await asyncio.gather(*(self._sample_one(s) for s in self.servers))
            await asyncio.sleep(self.stats_interval)

    async def _sample_one(self, server: ManagedServer) -> None:
        if server.state is not ServerState.READY:
            server.tokens_per_s = 0.0
            server.in_flight = 0
            server.counters = _Counters()
            return
        sample = await metrics.sample(self._http, server.base_url)
        if sample is None:
            return
        total, server.in_flight = sample
        now = time.monotonic()
        counters = server.counters
        if counters.at and total < counters.predicted_total:
            return  # a request ended between the reads: the next poll spans both intervals
        if counters.at:
            server.tokens_per_s = (total - counters.predicted_total) / (now - counters.at)
        server.counters = _Counters(total, now)

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
        record = json.dumps({"owner": owner, "servers": entries})
        try:
            paths.ensure(self._pid_file.parent)
            write_atomic(self._pid_file, record, mode=0o644)
        except OSError as exc:
            raise ServerStartError(
                f"cannot record the model servers in {self._pid_file}: {exc.strerror or exc}"
            ) from None


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
