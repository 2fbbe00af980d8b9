"""Ray, the optional engine under the cluster pool: finding it, joining a cluster, its nodes.

Ray comes with the `[cluster]` extra (`pip install 'nanobot-tui[cluster]'`). Nothing else in
nanobot imports it: every cluster function goes through `require_ray()`, which says in one
line how to get it when it is missing.

The driver (the process that runs a voted run, or `nanobot cluster status`) joins the
cluster in the "nanobot" namespace, where the model hosts are named actors, with Ray's own
logging kept quiet and no dashboard.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from nanobot_tui.errors import NanobotError

NAMESPACE = "nanobot"
INSTALL_HINT = "the cluster needs Ray: pip install 'nanobot-tui[cluster]' (or ray==2.60.0)"


class ClusterError(NanobotError):
    """A cluster that cannot be used as asked (Ray missing, no cluster at an address, a
    node without the model file). str() is one line."""


def ray_available() -> bool:
    """Whether Ray is installed (found, not imported: importing it takes a second)."""
    return importlib.util.find_spec("ray") is not None


def require_ray() -> ModuleType:
    """The `ray` module; ClusterError saying how to install it when it is not there."""
    if not ray_available():
        raise ClusterError(INSTALL_HINT)
    # Before the import: Ray reads these once. No usage reports leave the machine.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    return ray


def connect(address: str | None = None) -> str:
    """Join the Ray cluster at `address` ("auto": the one started on this machine with
    `ray start` / `nanobot cluster up`; "HOST:PORT": the head's GCS address) in the
    "nanobot" namespace, or, with None, start a private one-node Ray in this process.
    Already connected: nothing happens. Returns the address joined.

    Raises ClusterError (one line) when Ray is missing or no cluster answers there."""
    ray = require_ray()
    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    options: dict[str, Any] = {
        "namespace": NAMESPACE,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address is None:
        options["include_dashboard"] = False  # only a new cluster takes this option
    else:
        options["address"] = address
        if address != "auto":
            _probe(address)  # Ray itself retries a wrong address for minutes
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a new local Ray"
        raise ClusterError(f"cannot join the Ray cluster at {where}: {_first_line(exc)}") from None
    return str(ray.get_runtime_context().gcs_address)


def _probe(address: str, timeout: float = 3.0) -> None:
    """ClusterError at once when nothing listens at HOST:PORT."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"cluster address {address!r}: want 'auto' or HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); "
            "start one with `nanobot cluster up`"
        ) from None


def disconnect() -> None:
    """Leave the cluster (the hosts, detached actors, stay up for the next driver)."""
    ray = sys.modules.get("ray")  # never imported: never connected
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@dataclass(frozen=True)
class NodeInfo:
    """One node of the cluster as Ray sees it."""

    node_id: str  # Ray's hex id
    address: str  # the node's IP
    alive: bool
    cpus: int
    gpus: int
    head: bool

    @property
    def short_id(self) -> str:
        return self.node_id[:8]


def nodes() -> list[NodeInfo]:
    """Every node the cluster knows, alive or not, the head first."""
    ray = require_ray()
    out = []
    for entry in ray.nodes():
        resources = entry.get("Resources") or {}
        out.append(
            NodeInfo(
                node_id=str(entry["NodeID"]),
                address=str(entry.get("NodeManagerAddress") or ""),
                alive=bool(entry.get("Alive")),
                cpus=int(resources.get("CPU", 0)),
                gpus=int(resources.get("GPU", 0)),
                head="node:__internal_head__" in resources,
            )
        )
    out.sort(key=lambda node: (not node.head, node.node_id))
    return out


def alive_nodes() -> list[NodeInfo]:
    return [node for node in nodes() if node.alive]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
