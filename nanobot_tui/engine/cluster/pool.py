"""The pool: one model host per node (or per GPU) of a Ray cluster, plus any OpenAI-compatible
endpoints named by URL, taking chat requests as one endpoint.

Membership. `start()` puts a host (host_actor.ModelHost, a detached named actor pinned to
its node with NodeAffinitySchedulingStrategy) on every alive node: one per GPU on nodes
that have GPUs (each actor holds one of Ray's GPU resources), one per CPU-only node, whose
llama threads are that node's CPUs. An actor a previous driver left is found by its name
and used again. `refresh()` (every `refresh_interval` seconds while the pool runs) gives a
node that joined its host, marks the hosts of a node that left as down, and takes back a
host that answers again.

Choosing a host. A request with an affinity key (PoolClient's: its prompt) goes to the
host that had that key while the host has free slots, so a step's votes find their
prompt in that server's cache; otherwise to the host with the fewest requests in flight
relative to its slots (then the one sent fewest so far).

Losing a host. A call that fails because the actor, its worker or its node died (a Ray
error), or because the host's server did not answer at all, marks the host down and sends
the same request (same body, same seed: the same answer) to another host; only when no
host is left after `wait_for_host` seconds does the request fail (ServerUnavailable). A
server's own refusal (4xx) or failure (5xx) is the request's answer, not retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nanobot_tui.engine.cluster.host_actor import (
    ACTOR_PREFIX,
    HostInfo,
    HostSpec,
    ModelHost,
    actor_name,
)
from nanobot_tui.engine.cluster.ray_runtime import (
    NAMESPACE,
    ClusterError,
    NodeInfo,
    alive_nodes,
    require_ray,
)
from nanobot_tui.engine.llm.errors import (
    LLMError,
    RequestError,
    ResponseFormatError,
    ServerError,
    ServerUnavailable,
    describe,
)
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.openai_answers import chat_result
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult
from nanobot_tui.engine.serving.manager import LOCAL_REQUEST_TIMEOUT_S

log = logging.getLogger(__name__)

RAY = "ray"
URL = "url"
MAX_RESTARTS = 3  # Ray restarts a dead host actor this often (on its node) before giving up
AFFINITY_KEYS = 4096  # prompts remembered for prefix affinity
# A host that could not start (no model file on its node) is tried again this much later,
# not at every refresh: each try costs its node a Ray worker process.
RETRY_FAILED_HOST_S = 15.0
REFRESH_INTERVAL_S = 5.0  # between membership passes while a pool runs


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server the user already runs (llama-server, vLLM), joined to
    the pool by URL. `slots`: the requests it takes at once (None: asked of its /slots,
    else 1)."""

    url: str
    api_key: str | None = None
    model: str | None = None
    slots: int | None = None


@dataclass(eq=False)
class Member:
    """One host of the pool, as the driver counts it."""

    name: str  # the actor's name, or the endpoint's URL
    kind: str  # RAY or URL
    slots: int
    node_id: str = ""
    address: str = ""
    handle: Any = field(default=None, repr=False)  # the Ray actor handle
    client: LLMClient | None = field(default=None, repr=False)
    in_flight: int = 0  # this driver's requests (choices) on it now
    sent: int = 0  # requests sent to it, retried ones included
    lost: int = 0  # times it was marked down
    down: str = ""  # why it is out of the pool now ("": it is up)

    @property
    def up(self) -> bool:
        return not self.down

    @property
    def load(self) -> float:
        return self.in_flight / max(self.slots, 1)


@dataclass(frozen=True)
class MemberStatus:
    """A member as `nanobot cluster status` and the Hardware pane show it."""

    name: str
    kind: str
    node_id: str
    address: str
    slots: int
    in_flight: int
    sent: int
    lost: int
    up: bool
    reason: str


class HostPool:
    """Hosts across a Ray cluster (and endpoints by URL) as one chat endpoint.

    Ray must be connected (`ray_runtime.connect`) before `start()` when `spec` is given;
    a pool of endpoints alone needs no Ray."""

    def __init__(
        self,
        spec: HostSpec | None,
        *,
        endpoints: Sequence[Endpoint] = (),
        per_gpu: bool = True,
        refresh_interval: float | None = None,
        wait_for_host: float = 60.0,
    ) -> None:
        """`refresh_interval`: seconds between membership passes (None: REFRESH_INTERVAL_S;
        0: none after `start`). `wait_for_host`: how long a request waits for some host to
        be up before it fails."""
        self.spec = spec
        self.endpoints = tuple(endpoints)
        self.per_gpu = per_gpu
        self.refresh_interval = REFRESH_INTERVAL_S if refresh_interval is None else refresh_interval
        self.wait_for_host = wait_for_host
        self.members: list[Member] = []
        self._by_name: dict[str, Member] = {}
        self._affinity: collections.OrderedDict[str, Member] = collections.OrderedDict()
        self._refresher: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Lock | None = None
        self._problems: dict[str, str] = {}  # host name -> why it could not start
        self._tried: dict[str, float] = {}  # host name -> when it was last started
        self.resent = 0  # requests sent again after their host was lost

    @property
    def model(self) -> str | None:
        return self.spec.server.model_id if self.spec else None

    # --- life ------------------------------------------------------------------------

    async def start(self) -> None:
        """Put a host on every alive node (and join the endpoints), then keep membership
        fresh in the background. ClusterError (one line) when no host could start."""
        await self.refresh()
        if not any(member.up for member in self.members):
            why = "; ".join(self._problems.values()) or "the cluster has no alive node"
            raise ClusterError(f"no model host could start: {why}")
        if self.refresh_interval > 0:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="pool-refresh")

    async def close(self, *, stop_hosts: bool = False) -> None:
        """Stop refreshing and close the endpoint clients. The hosts stay up for the
        next run unless `stop_hosts` (then their servers stop and the actors end)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        for member in self.members:
            if member.client is not None:
                await member.client.close()
            if stop_hosts and member.kind == RAY:
                await _stop_actor(member.handle)

    async def __aenter__(self) -> HostPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- membership ------------------------------------------------------------------

    async def refresh(self) -> list[str]:
        """One pass over membership: hosts for new nodes, down for lost ones, up again
        for those that answer. Returns the names of members that came up."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            came_up: list[str] = []
            if self.spec is not None:
                came_up += await self._refresh_ray(self.spec)
            came_up += await self._refresh_endpoints()
            return came_up

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                added = await self.refresh()
            except Exception as exc:  # a passing Ray hiccup: the next pass tries again
                log.warning("cluster pool: membership refresh failed: %s", describe(exc))
                continue
            if added:
                log.info("cluster pool: up: %s", ", ".join(added))

    async def _refresh_ray(self, spec: HostSpec) -> list[str]:
        nodes = await asyncio.to_thread(alive_nodes)
        wanted = {
            host.name: (host.node, host.gpu, host.threads)
            for host in plan_hosts(nodes, spec, per_gpu=self.per_gpu)
        }
        for member in self.members:
            if member.kind == RAY and member.up and member.name not in wanted:
                self._mark_down(member, "its node left the cluster")
        now = time.monotonic()
        todo = [
            (name, node, gpu, threads)
            for name, (node, gpu, threads) in wanted.items()
            if (name not in self._by_name or not self._by_name[name].up)
            and (name not in self._problems or now - self._tried[name] > RETRY_FAILED_HOST_S)
        ]
        for name, *_ in todo:
            self._tried[name] = now
        started = await asyncio.gather(*(self._host_on(spec, *item) for item in todo))
        return [name for name in started if name is not None]

    async def _host_on(
        self, spec: HostSpec, name: str, node: NodeInfo, gpu: int | None, threads: int
    ) -> str | None:
        """Create (or find) the host actor `name` on `node` and wait for its server;
        the member's name once it is up, None (and the reason kept) if it is not."""
        ray = require_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        handle: Any = None
        try:
            handle = (
                _actor_class()
                .options(
                    name=name,
                    namespace=NAMESPACE,
                    lifetime="detached",
                    get_if_exists=True,
                    max_restarts=MAX_RESTARTS,
                    num_cpus=0,
                    num_gpus=1 if gpu is not None else 0,
                    max_concurrency=1000,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
                )
                .remote(spec, name, threads)
            )
            info: HostInfo = await handle.start.remote()
        except ray.exceptions.RayError as exc:
            problem = _ray_error_line(exc)
            if self._problems.get(name) != problem:  # said once, not at every refresh
                log.warning("cluster pool: %s: %s", name, problem)
            self._problems[name] = problem
            if handle is not None and isinstance(exc, ray.exceptions.RayTaskError):
                # It cannot serve (no model file there): no idle actor is left behind.
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
            return None
        self._problems.pop(name, None)
        member = self._by_name.get(name)
        if member is None:
            member = Member(name, RAY, info.slots, info.node_id, info.address, handle)
            self._add(member)
        member.handle, member.slots, member.down = handle, info.slots, ""
        return name

    async def _refresh_endpoints(self) -> list[str]:
        came_up = []
        for endpoint in self.endpoints:
            member = self._by_name.get(endpoint.url)
            if member is None:
                client = LLMClient(
                    endpoint.url,
                    api_key=endpoint.api_key,
                    model=endpoint.model,
                    timeout=LOCAL_REQUEST_TIMEOUT_S,
                    retries=0,
                )
                member = Member(endpoint.url, URL, endpoint.slots or 1, client=client)
                member.down = "not probed yet"
                self._add(member)
            if member.up or member.client is None:
                continue
            health = await member.client.health()
            if health != "ok":
                member.down = health  # "loading" or "unreachable"
                self._problems[member.name] = f"{member.name}: {health}"
                continue
            if endpoint.slots is None:
                with contextlib.suppress(LLMError):
                    member.slots = max(1, len(await member.client.slots()))
            member.down = ""
            self._problems.pop(member.name, None)
            came_up.append(member.name)
        return came_up

    def _add(self, member: Member) -> None:
        self.members.append(member)
        self._by_name[member.name] = member

    def _mark_down(self, member: Member, why: str) -> None:
        if member.up:
            member.lost += 1
            log.warning("cluster pool: %s is down: %s", member.name, why)
        member.down = why
        for key in [k for k, m in self._affinity.items() if m is member]:
            del self._affinity[key]

    # --- requests --------------------------------------------------------------------

    def healthy(self) -> bool:
        """Whether some host is up."""
        return any(member.up for member in self.members)

    def pick(self, affinity: str | None, weight: int = 1) -> Member | None:
        """The host for a request of `weight` choices: the affinity key's host while it
        has free slots, else the least loaded (then least used); None when none is up."""
        if affinity is not None:
            member = self._affinity.get(affinity)
            if member is not None and member.up and member.in_flight + weight <= member.slots:
                self._affinity.move_to_end(affinity)
                return member
        up = [member for member in self.members if member.up]
        if not up:
            return None
        member = min(up, key=lambda m: (m.load, m.sent))
        if affinity is not None:
            self._affinity[affinity] = member
            self._affinity.move_to_end(affinity)
            while len(self._affinity) > AFFINITY_KEYS:
                self._affinity.popitem(last=False)
        return member

    async def chat(self, request: ChatRequest, affinity: str | None = None) -> ChatResult:
        """One chat completion on some host; re-sent to another when its host is lost.
        Raises the host's LLMError for its own answer, ServerUnavailable when no host
        is left."""
        weight = request.n or 1
        attempts = 0
        while True:
            member = self.pick(affinity, weight)
            if member is None:
                await self._wait_for_a_host()
                continue
            attempts += 1
            member.sent += 1
            member.in_flight += weight
            try:
                return await self._send(member, request)
            except _HostLost as lost:
                self._mark_down(member, lost.why)
                self.resent += 1
                if attempts > 2 * len(self.members) + 2:
                    raise ServerUnavailable(f"cluster pool: {member.name}: {lost.why}") from None
            finally:
                member.in_flight -= weight

    async def _wait_for_a_host(self) -> None:
        deadline = time.monotonic() + self.wait_for_host
        while not self.healthy():
            if time.monotonic() > deadline:
                why = "; ".join(sorted({m.down for m in self.members})) or "no hosts"
                raise ServerUnavailable(f"cluster pool: no model host is up ({why})")
            with contextlib.suppress(Exception):
                await self.refresh()
            if not self.healthy():
                await asyncio.sleep(0.5)

    async def _send(self, member: Member, request: ChatRequest) -> ChatResult:
        if member.kind == URL:
            assert member.client is not None
            try:
                return await member.client.chat(request)
            except ServerUnavailable as exc:
                raise _HostLost(describe(exc)) from None
        ray = require_ray()
        body = request_body(request, self.model)
        start = time.perf_counter()
        try:
            envelope: dict[str, Any] = await member.handle.chat.remote(body)
        except ray.exceptions.RayTaskError as exc:  # the actor's own code failed
            raise ServerError.answered(_url(member), 500, _ray_error_line(exc), "actor") from None
        except ray.exceptions.RayError as exc:  # the actor, its worker or its node died
            raise _HostLost(_ray_error_line(exc)) from None
        return _result(member, envelope, time.perf_counter() - start)

    # --- what the pool looks like ----------------------------------------------------

    def statuses(self) -> list[MemberStatus]:
        return [
            MemberStatus(
                m.name, m.kind, m.node_id, m.address, m.slots, m.in_flight, m.sent, m.lost,
                m.up, m.down,
            )
            for m in self.members
        ]  # fmt: skip

    async def host_infos(self) -> list[HostInfo]:
        """Each Ray host's own account (model, load, tokens/s); hosts that do not
        answer are left out."""
        ray = require_ray()
        hosts = [m for m in self.members if m.kind == RAY and m.up]
        answers = await asyncio.gather(
            *(m.handle.info.remote() for m in hosts), return_exceptions=True
        )
        out = []
        for answer in answers:
            if isinstance(answer, HostInfo):
                out.append(answer)
            elif not isinstance(answer, ray.exceptions.RayError):
                raise answer if isinstance(answer, BaseException) else TypeError(answer)
        return out


@dataclass(frozen=True)
class PlannedHost:
    """A host the pool wants: its actor's name, node, GPU (None: a CPU host) and threads."""

    name: str
    node: NodeInfo
    gpu: int | None
    threads: int


def plan_hosts(nodes: Sequence[NodeInfo], spec: HostSpec, *, per_gpu: bool) -> list[PlannedHost]:
    """The hosts for these nodes: one per GPU where a node has GPUs (and `per_gpu`), one
    per node otherwise; each host's llama threads are its share of the node's CPUs (or the
    spec's own number)."""
    planned = []
    for node in nodes:
        gpus: list[int | None] = list(range(node.gpus)) if per_gpu and node.gpus > 0 else [None]
        threads = spec.threads or max(1, node.cpus // len(gpus))
        for gpu in gpus:
            planned.append(
                PlannedHost(actor_name(spec.slot, node.node_id, gpu), node, gpu, threads)
            )
    return planned


class _HostLost(Exception):
    """A host that cannot answer (dead actor, node, worker, or server): try another."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def request_body(request: ChatRequest, model: str | None) -> dict[str, Any]:
    """The OpenAI body of a request, as LLMClient sends it, in plain picklable types."""
    body: dict[str, Any] = {"messages": [dict(message) for message in request.messages]}
    if model is not None:
        body["model"] = model
    for name, value in request.options().items():
        if name == "tools":
            value = [dict(tool) for tool in value]
        elif name in ("tool_choice", "response_format") and not isinstance(value, str):
            value = dict(value)
        elif name == "stop" and not isinstance(value, str):
            value = list(value)
        body[name] = value
    if request.extra:
        body.update(dict(request.extra))
    return body


def _url(member: Member) -> str:
    return member.name if member.kind == URL else f"ray://{member.name}"


def _result(member: Member, envelope: dict[str, Any], latency: float) -> ChatResult:
    """A host's envelope as the ChatResult (or the LLMError) an LLMClient would give."""
    url = _url(member)
    status = int(envelope.get("status") or 0)
    if status == 200:
        try:
            return chat_result(envelope["body"], latency)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ResponseFormatError(f"{url}: unexpected answer shape ({exc})") from None
    message = str(envelope.get("message") or "")
    if status in (0, 503):
        raise _HostLost(message or "no answer")
    kind = str(envelope.get("type") or "")
    cls = RequestError if status < 500 or status == 501 else ServerError
    raise cls.answered(url, status, message, kind)


def _ray_error_line(exc: BaseException) -> str:
    """A Ray error as one line: the host's own ClusterError message where that is the
    cause, else Ray's first line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ClusterError):
        return str(cause)
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("Traceback"):
            return line[:300]
    return type(exc).__name__


_ACTOR_CLASS: Any = None


def _actor_class() -> Any:
    """ModelHost as a Ray actor class (made once: each `ray.remote` call makes a new one)."""
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = require_ray().remote(ModelHost)
    return _ACTOR_CLASS


async def _stop_actor(handle: Any) -> None:
    """Stop a host's server and end its actor (no restart)."""
    ray = require_ray()
    with contextlib.suppress(ray.exceptions.RayError):
        await asyncio.wait_for(handle.stop.remote(), timeout=15.0)
    with contextlib.suppress(ray.exceptions.RayError, ValueError):
        ray.kill(handle, no_restart=True)


# --- the hosts of a cluster, for `nanobot cluster status` and `down` -------------------------


def host_names() -> list[str]:
    """The names of the host actors alive in the cluster's "nanobot" namespace."""
    ray = require_ray()
    return sorted(
        name
        for name in ray.util.list_named_actors(all_namespaces=False)
        if isinstance(name, str) and name.startswith(ACTOR_PREFIX + ":")
    )


async def list_hosts() -> list[HostInfo]:
    """Every host's own account (node, model, slots, load, tokens/s), whoever started it;
    hosts that do not answer are left out."""
    ray = require_ray()
    handles = []
    for name in await asyncio.to_thread(host_names):
        with contextlib.suppress(ValueError):
            handles.append(ray.get_actor(name, namespace=NAMESPACE))
    answers = await asyncio.gather(*(h.info.remote() for h in handles), return_exceptions=True)
    return [answer for answer in answers if isinstance(answer, HostInfo)]


async def stop_hosts() -> list[str]:
    """Stop every host of the cluster (servers and actors); the names stopped."""
    ray = require_ray()
    stopped = []
    for name in await asyncio.to_thread(host_names):
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue
        await _stop_actor(handle)
        stopped.append(name)
    return stopped
