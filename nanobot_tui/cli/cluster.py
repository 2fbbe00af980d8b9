"""`nanobot cluster`: this machine as a node of a Ray cluster of model hosts.

nanobot cluster up [--port 6379] [--bind ADDRESS] [--node-ports 6380] [--dashboard]
nanobot cluster join ADDRESS [--bind ADDRESS] [--node-ports 6380]
nanobot cluster status [--address ADDRESS] [--json]
nanobot cluster down
nanobot cluster pull MODEL [--quant Q] [--address ADDRESS] [--json]

`up` and `join` wrap `ray start` with nanobot's settings: the node advertises the address
the user names, the dashboard is off unless asked (and then on that address only), every
port Ray opens is named from two numbers (the cluster's port and the node's block) so a
firewall rule can list them, and the node carries the resource tag that marks a nanobot
node. Each node keeps its Ray files in a temp folder of its own, and `down` stops exactly
the processes under it (never every Ray process of the machine, as `ray stop` does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.cli.common import EXIT_OK, number_type
from nanobot_tui.engine.cluster.ray_runtime import ClusterError
from nanobot_tui.errors import NanobotError, UsageError
from nanobot_tui.text import printable
from nanobot_tui.units import human_bytes

if TYPE_CHECKING:
    from nanobot_tui.models.catalog import CatalogModel, Quant

DEFAULT_PORT = 6379  # the head's GCS port: the address other nodes join
DEFAULT_NODE_PORTS = 6380  # the first port of a node's block (see node_ports)
DEFAULT_WORKER_PORTS = 64  # ports for Ray's worker processes on a node
DASHBOARD_PORT = 8265
NODE_RESOURCE = "nanobot_node"  # the custom resource that marks a nanobot node
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0

port_number = number_type(int, "whole number", lambda v: 1024 <= v <= 65535, "1024 to 65535")
worker_count = number_type(int, "whole number", lambda v: 4 <= v <= 10000, "4 to 10000")


@dataclass(frozen=True)
class NodeRecord:
    """What `up`/`join` started on this machine, kept for `down` and `status`."""

    role: str  # "head" | "worker"
    address: str  # the cluster's address, HOST:PORT (the head's GCS)
    bind: str  # the address this node advertises
    node_ports: int  # the first port of this node's block
    worker_ports: int
    temp_dir: str  # Ray's files for this node; its processes name it on their command line
    dashboard: str | None  # "HOST:PORT" when asked for
    started: float


def node_file() -> Path:
    return paths.run_dir() / "cluster-node.json"


def read_node() -> NodeRecord | None:
    try:
        return NodeRecord(**json.loads(node_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def node_ports(base: int, workers: int, *, head: bool, port: int | None = None) -> dict[str, Any]:
    """Every port a node opens, from the first of its block: the raylet's and the object
    manager's, the dashboard agent's two, the runtime-env agent's, the metrics export's,
    then `workers` ports for worker processes. A head adds the cluster's `port`."""
    ports: dict[str, Any] = {
        "node_manager": base,
        "object_manager": base + 1,
        "dashboard_agent_http": base + 2,
        "dashboard_agent_grpc": base + 3,
        "runtime_env_agent": base + 4,
        "metrics_export": base + 5,
        "workers": (base + 10, base + 10 + workers - 1),
    }
    if head:
        ports = {"cluster": port, **ports}
    return ports


def port_ranges(ports: dict[str, Any]) -> str:
    """The node's ports as a firewall rule would name them: '6379, 6380-6385, 6390-6453'."""
    singles = sorted(v for k, v in ports.items() if k != "workers")
    first, last = ports["workers"]
    runs: list[list[int]] = []
    for value in singles:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    text = [f"{a}-{b}" if a != b else str(a) for a, b in runs]
    return ", ".join([*text, f"{first}-{last}"])


def ray_program() -> str:
    """The `ray` program of this Python, or ClusterError saying how to install Ray."""
    from nanobot_tui.engine.cluster.ray_runtime import INSTALL_HINT, ray_available

    if not ray_available():
        raise ClusterError(INSTALL_HINT)
    ray = Path(sys.executable).with_name("ray")
    if not ray.is_file():
        raise ClusterError(f"Ray is installed but its program is missing: {ray}")
    return str(ray)


def cluster_address(text: str | None) -> str:
    """The cluster's HOST:PORT: `text` as given, or (None, "auto") the cluster this
    machine joined with `nanobot cluster up/join`; UsageError when there is none."""
    if text and text != "auto":
        if ":" not in text:
            raise UsageError(f"a cluster address is HOST:PORT, not {text!r}")
        return text
    record = read_node()
    if record is None:
        raise UsageError(
            "this machine is in no nanobot cluster: `nanobot cluster up` (or `join ADDRESS`) "
            "first, or name the cluster's ADDRESS"
        )
    return record.address


def reachable(address: str, timeout_s: float = 3.0) -> None:
    """ClusterError when nothing listens at the cluster's address: Ray itself would retry
    for minutes before it says so."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError):
        raise ClusterError(f"no Ray cluster answers at {address}") from None


def connect(text: str | None) -> str:
    """Join the cluster `text` names (see cluster_address) as a driver; its address."""
    from nanobot_tui.engine.cluster import ray_runtime

    address = cluster_address(text)
    ray_program()  # Ray missing: the install hint, before anything is probed
    reachable(address)
    ray_runtime.connect(address)
    return address


def _start_arguments(args: argparse.Namespace, head: bool, temp_dir: str) -> list[str]:
    ports = node_ports(args.node_ports, args.worker_ports, head=head, port=args.port)
    first, last = ports["workers"]
    argv = [
        "start",
        f"--temp-dir={temp_dir}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        f"--dashboard-agent-listen-port={ports['dashboard_agent_http']}",
        f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--metrics-export-port={ports['metrics_export']}",
        f"--min-worker-port={first}",
        f"--max-worker-port={last}",
        f"--resources={json.dumps({NODE_RESOURCE: 1})}",
        "--disable-usage-stats",
    ]
    if args.bind:
        argv.append(f"--node-ip-address={args.bind}")
    if args.num_cpus is not None:
        argv.append(f"--num-cpus={args.num_cpus}")
    if args.num_gpus is not None:
        argv.append(f"--num-gpus={args.num_gpus}")
    if head:
        argv += ["--head", f"--port={args.port}"]
        if args.dashboard:
            argv += [
                "--include-dashboard=true",
                f"--dashboard-host={args.bind or '127.0.0.1'}",
                f"--dashboard-port={DASHBOARD_PORT}",
            ]
        else:
            argv.append("--include-dashboard=false")
    else:
        argv.append(f"--address={args.address}")
    return argv


def _node_temp_dir(base: int) -> str:
    """A folder of this node's own, short (Ray's socket paths must stay under ~107
    characters), named by the node's first port so two nodes on one machine differ."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return str(Path(tempfile.gettempdir()) / f"nanobot-ray-{uid}-{base}")


def _ray_start(args: argparse.Namespace, head: bool) -> NodeRecord:
    existing = read_node()
    if existing is not None and list(node_processes(existing.temp_dir)):
        raise UsageError(
            f"this machine is already a nanobot cluster node ({existing.role} of "
            f"{existing.address}); `nanobot cluster down` first"
        )
    program = ray_program()
    temp_dir = _node_temp_dir(args.node_ports)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        done = subprocess.run(
            [program, *_start_arguments(args, head, temp_dir)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        _stop(temp_dir)
        raise ClusterError(f"ray start did not finish in {START_TIMEOUT_S:.0f} s") from None
    output = done.stdout + done.stderr
    if done.returncode != 0:
        _stop(temp_dir)
        if "dashboard dependencies" in output:  # the minimal Ray has no dashboard
            raise ClusterError("--dashboard needs Ray's dashboard: pip install 'ray[default]'")
        raise ClusterError(f"ray start failed: {_last_error(output)}")
    if head:
        found = re.search(r"--address='([^']+)'", output)
        bound = _local_ip(output) or args.bind or "127.0.0.1"
        address = found.group(1) if found else f"{bound}:{args.port}"
    else:
        address = args.address
    dashboard = f"{args.bind or '127.0.0.1'}:{DASHBOARD_PORT}" if head and args.dashboard else None
    record = NodeRecord(
        role="head" if head else "worker",
        address=address,
        bind=_local_ip(output) or args.bind or "",
        node_ports=args.node_ports,
        worker_ports=args.worker_ports,
        temp_dir=temp_dir,
        dashboard=dashboard,
        started=time.time(),
    )
    paths.ensure(node_file().parent)
    write_atomic(node_file(), json.dumps(asdict(record), indent=1))
    return record


def _local_ip(output: str) -> str | None:
    found = re.search(r"Local node IP: (\S+)", output)
    return found.group(1) if found else None


def _last_error(output: str) -> str:
    """The line of `ray start`'s output that says what went wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "failed" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def node_processes(temp_dir: str) -> Iterator[int]:
    """The ids of this user's processes that belong to the node whose Ray files are in
    `temp_dir` (its processes name the folder on their command line), and their children."""
    import psutil

    owned: set[int] = set()
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if any(temp_dir in part for part in cmdline):
                owned.add(proc.pid)
                owned.update(child.pid for child in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    owned.discard(os.getpid())
    yield from sorted(owned)


def _stop(temp_dir: str, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM to the node's processes, SIGKILL to what is left after `grace_s`; how many
    there were."""
    import psutil

    pids = list(node_processes(temp_dir))
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            procs.append(proc)
        except psutil.NoSuchProcess:
            continue
    _gone, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_s)
    return len(pids)


# --- commands -----------------------------------------------------------------------------


def _say_started(record: NodeRecord, args: argparse.Namespace) -> None:
    ports = node_ports(record.node_ports, record.worker_ports, head=record.role == "head",
                       port=args.port if record.role == "head" else None)  # fmt: skip
    if args.json:
        print(json.dumps({**asdict(record), "ports": ports, "port_ranges": port_ranges(ports)}))
        return
    if record.role == "head":
        print(f"cluster up: {record.address} (this machine is its head)")
        print(f"other machines join with: nanobot cluster join {record.address}")
    else:
        print(f"joined the cluster at {record.address} as {record.bind}")
    print(f"ports this node opens (TCP): {port_ranges(ports)}")
    if record.dashboard:
        print(f"dashboard: http://{record.dashboard}")


def cmd_up(args: argparse.Namespace) -> int:
    args.address = None
    _say_started(_ray_start(args, head=True), args)
    return EXIT_OK


def cmd_join(args: argparse.Namespace) -> int:
    if ":" not in args.address:
        raise UsageError(f"the cluster's address is HOST:PORT, not {args.address!r}")
    args.port = None
    args.dashboard = False
    _say_started(_ray_start(args, head=False), args)
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    record = read_node()
    if record is None:
        print("this machine is not a nanobot cluster node")
        return EXIT_OK
    stopped = _stop(record.temp_dir)
    node_file().unlink(missing_ok=True)
    what = "head" if record.role == "head" else "node"
    print(f"stopped this {what} of {record.address} ({stopped} Ray processes)")
    return EXIT_OK


def cluster_report(address: str) -> dict[str, Any]:
    """The cluster as `status` shows it: nodes (Ray's view) and hosts (each host's own)."""
    import asyncio

    from nanobot_tui.engine.cluster import pool, ray_runtime

    ray = ray_runtime.require_ray()
    tagged = {
        str(entry["NodeID"])
        for entry in ray.nodes()
        if (entry.get("Resources") or {}).get(NODE_RESOURCE)
    }
    nodes = [{**asdict(node), "nanobot": node.node_id in tagged} for node in ray_runtime.nodes()]
    hosts = [info.to_dict() for info in asyncio.run(pool.list_hosts())]
    hosts.sort(key=lambda host: (host["address"], host["name"]))
    endpoints = asyncio.run(endpoint_states())
    return {"address": address, "nodes": nodes, "hosts": hosts, "endpoints": endpoints}


async def endpoint_states() -> list[dict[str, Any]]:
    """The config's `cluster.endpoints` (servers joined by URL) and whether each answers
    now: 'ok', 'loading' or 'unreachable' (the key is never shown)."""
    import asyncio

    from nanobot_tui.config import load_config
    from nanobot_tui.engine.llm.openai import LLMClient

    async def state(url: str, api_key: str | None) -> str:
        async with LLMClient(url, api_key=api_key, connect_timeout=3.0, retries=0) as client:
            return await client.health()

    endpoints = load_config()[0].cluster.endpoints
    states = await asyncio.gather(*(state(e.url, e.api_key) for e in endpoints))
    return [{"url": e.url, "model": e.model, "slots": e.slots, "state": st}
            for e, st in zip(endpoints, states, strict=True)]  # fmt: skip


def format_report(report: dict[str, Any]) -> str:
    nodes, hosts = report["nodes"], report["hosts"]
    alive = sum(1 for node in nodes if node["alive"])
    lines = [f"cluster {report['address']}: {alive} node(s) up of {len(nodes)}, "
             f"{len(hosts)} model host(s)"]  # fmt: skip
    for node in nodes:
        role = "head" if node["head"] else "node"
        state = "up" if node["alive"] else "down"
        tag = "" if node["nanobot"] or not node["alive"] else " (not started by nanobot)"
        lines.append(
            f"  {role} {node['address']} {node['node_id'][:8]} {state}: "
            f"{node['cpus']} CPU, {node['gpus']} GPU{tag}"
        )
    for endpoint in report.get("endpoints", []):
        lines.append(f"  endpoint {endpoint['url']}: {endpoint['state']}")
    for host in hosts:
        state = "up" if host["up"] else "down"
        lines.append(
            f"  host {host['address']} {host['name'].rsplit(':', 1)[-1][:8]} {state}: "
            f"{host['model']} · {host['in_flight']}/{host['slots']} in flight · "
            f"{host['tokens_per_s']:.0f} tok/s · {host['requests']} requests"
        )
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.cluster import ray_runtime

    address = connect(args.address)
    try:
        report = cluster_report(address)
    finally:
        ray_runtime.disconnect()
    print(json.dumps(report) if args.json else printable(format_report(report)))
    return EXIT_OK


def pull_here(model: CatalogModel, quant: Quant) -> dict[str, Any]:
    """Runs on one node, as a Ray task: `quant` of `model` into that node's models folder
    with nanobot's own downloader (resumable, verified). What happened, as data."""
    import asyncio

    from nanobot_tui.models import catalog
    from nanobot_tui.models.download import fetch_model

    dest = catalog.model_file(model, quant, paths.models_dir())
    if dest.is_file():
        return {"state": "present", "path": str(dest), "bytes": dest.stat().st_size}
    try:
        path = asyncio.run(fetch_model(model, quant))
    except NanobotError as exc:
        return {"state": "failed", "path": str(dest), "error": str(exc)}
    return {"state": "downloaded", "path": str(path), "bytes": path.stat().st_size}


def _pull(model: CatalogModel, quant: Quant) -> list[dict[str, Any]]:
    """`pull_here` on every alive node at once, pinned to it; one row a node."""
    from nanobot_tui.engine.cluster import ray_runtime

    ray = ray_runtime.require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(pull_here)
    nodes = ray_runtime.alive_nodes()
    refs = [
        task.options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
        ).remote(model, quant)
        for node in nodes
    ]
    rows = []
    for node, ref in zip(nodes, refs, strict=True):
        try:
            row = ray.get(ref)
        except ray.exceptions.RayError as exc:
            row = {"state": "failed", "error": _last_error(str(exc))}
        rows.append({"node_id": node.node_id, "address": node.address, **row})
    return rows


def cmd_pull(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.cluster import ray_runtime
    from nanobot_tui.models import catalog

    model = catalog.get(args.model)
    # Every node gets the same file, so every host of the pool serves the same weights.
    quant = model.quant(args.quant or _local_quant(model.id))
    address = connect(args.address)
    try:
        rows = _pull(model, quant)
    finally:
        ray_runtime.disconnect()
    if args.json:
        print(json.dumps({"model": model.id, "quant": quant.name, "nodes": rows}))
    else:
        for row in rows:
            where = f"{row['address']} {row['node_id'][:8]}"
            if row["state"] == "failed":
                print(printable(f"{where}: failed: {row['error']}"))
            else:
                size = human_bytes(row["bytes"])
                print(printable(f"{where}: {row['state']}: {row['path']} ({size})"))
    failed = sum(1 for row in rows if row["state"] == "failed")
    if failed:
        raise ClusterError(f"{model.id} {quant.name}: {failed} of {len(rows)} node(s) failed")
    print(f"{model.id} {quant.name} is on all {len(rows)} node(s) of {address}")
    return EXIT_OK


def _local_quant(model_id: str) -> str:
    """The quant this machine's setup plan picks for the model."""
    from nanobot_tui.hardware import detect
    from nanobot_tui.setup import plan as setup_plan

    return setup_plan.build_plan(detect()).quant_for(model_id)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "cluster",
        help="this machine as a node of a Ray cluster of model hosts (up, join, status, down, "
        "pull)",
        description="A Ray cluster of model hosts that `nanobot run --cluster` and `nanobot "
        "process --cluster` sample over. Needs ray (the 'cluster' extra).",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    def node_options(p: argparse.ArgumentParser, bind_default: str | None) -> None:
        where = bind_default or "the address that reaches the head"
        p.add_argument(
            "--bind",
            default=bind_default,
            metavar="ADDRESS",
            help=f"the address this node advertises to the others (default: {where})",
        )
        p.add_argument(
            "--node-ports",
            type=port_number,
            default=DEFAULT_NODE_PORTS,
            metavar="PORT",
            help="the first of this node's ports: PORT to PORT+5 for Ray's services, then "
            f"PORT+10 on for its workers (default: {DEFAULT_NODE_PORTS})",
        )
        p.add_argument(
            "--worker-ports",
            type=worker_count,
            default=DEFAULT_WORKER_PORTS,
            metavar="N",
            help=f"ports kept for worker processes (default: {DEFAULT_WORKER_PORTS})",
        )
        p.add_argument("--num-cpus", type=int, help="CPUs Ray may use here (default: all)")
        p.add_argument("--num-gpus", type=int, help="GPUs Ray may use here (default: all)")
        p.add_argument("--json", action="store_true", help="one JSON line")

    up = actions.add_parser("up", help="start a cluster with this machine as its head")
    up.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"the cluster's port, which other machines join (default: {DEFAULT_PORT})",
    )
    up.add_argument(
        "--dashboard",
        action="store_true",
        help=f"start Ray's dashboard on the bind address, port {DASHBOARD_PORT} (default: off)",
    )
    node_options(up, "127.0.0.1")
    up.set_defaults(func=cmd_up)

    join = actions.add_parser("join", help="add this machine to the cluster at ADDRESS")
    join.add_argument("address", help="the cluster's HOST:PORT, as `cluster up` printed it")
    node_options(join, None)
    join.set_defaults(func=cmd_join)

    status = actions.add_parser("status", help="nodes, hosts, their model, load and tokens/s")
    status.add_argument("--address", help="the cluster (default: the one this machine is in)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    down = actions.add_parser("down", help="stop this machine's node (only nanobot's)")
    down.set_defaults(func=cmd_down)

    pull = actions.add_parser("pull", help="fetch a model into every node's models folder")
    pull.add_argument("model", help="a catalog id (see `nanobot models`)")
    pull.add_argument("--quant", help="which quant (default: the best for each node)")
    pull.add_argument("--address", help="the cluster (default: the one this machine is in)")
    pull.add_argument("--json", action="store_true", help="machine-readable output")
    pull.set_defaults(func=cmd_pull)
