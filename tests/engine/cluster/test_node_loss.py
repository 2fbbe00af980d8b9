"""A voted run across a real two-node Ray cluster (ray.cluster_utils.Cluster: a head and a
worker raylet on this machine), each node with its own llama host on the embedded model.
The worker node joins while the run goes (and gets its host), then is removed (its raylet
and every Ray process of it killed) while a request is in flight on its host: the run
goes on to the end with every step recorded once, its llama host ends by itself, and the
answers are those of the same run on the head's host alone. And a node without the model
file says so, naming the node and the file."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (the [cluster] extra)")

from ray.cluster_utils import Cluster  # noqa: E402

from nanobot_tui.config import Config, LocalConfig, SlotConfig, save_config  # noqa: E402
from nanobot_tui.engine.cluster import pool as pool_mod  # noqa: E402
from nanobot_tui.engine.cluster import ray_runtime  # noqa: E402
from nanobot_tui.engine.cluster.host_actor import HostSpec  # noqa: E402
from nanobot_tui.engine.cluster.pool import (  # noqa: E402
    HostPool,
    host_names,
    list_hosts,
    stop_hosts,
)
from nanobot_tui.engine.cluster.ray_runtime import ClusterError  # noqa: E402
from nanobot_tui.engine.runs import store as store_mod  # noqa: E402
from nanobot_tui.engine.runs.durable import execute, start_run  # noqa: E402
from nanobot_tui.engine.runs.spec import RetryPolicy, RunSpec  # noqa: E402
from nanobot_tui.engine.runs.store import RunStore  # noqa: E402
from nanobot_tui.engine.serving.slots import ServerSpec  # noqa: E402
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig  # noqa: E402
from nanobot_tui.engine.voting.runner import VoteMonitor  # noqa: E402
from nanobot_tui.models import catalog  # noqa: E402
from tests.conftest import until  # noqa: E402

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

WORDS = 30
# One CPU a node: each node's host gets one llama thread, as the two cores allow.
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head node (joined by this process) for the module; tests add worker nodes. The
    raylets, and so the hosts, keep the NANOBOT_HOME they were started with."""
    home = tmp_path_factory.mktemp("cluster-home")
    previous = os.environ.get("NANOBOT_HOME")
    os.environ["NANOBOT_HOME"] = str(home)
    try:
        cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    finally:
        if previous is None:
            os.environ.pop("NANOBOT_HOME", None)
        else:
            os.environ["NANOBOT_HOME"] = previous
    ray_runtime.connect(cluster.address)
    try:
        yield cluster
    finally:
        ray_runtime.disconnect()
        cluster.shutdown()


def spec(address: str) -> RunSpec:
    """Word case, k = 2, three steps at a time (a step's request seeds depend on the step,
    not on the order requests go out, so any number of hosts draws the same samples).
    Undecided steps are skipped, not retried."""
    return RunSpec(
        domain="wordcase",
        params={"words": WORDS, "seed": 3},
        sampler="local:rlm",
        vote=VoteConfig(k=2, max_rounds=4, max_red_rounds=2),
        seed=11,
        retry=RetryPolicy(retries=0, on_fail="skip"),
        concurrency=3,
        learn=False,
        label="wordcase-cluster",
        cluster=address,
    )


def step_rows(run_id: str) -> list[tuple[int, int, int]]:
    """(step, rows stored for it, samples stored for it) of every step, in order."""
    conn = sqlite3.connect(store_mod.db_path(run_id))
    try:
        return conn.execute(
            "SELECT s.step, count(*), (SELECT count(*) FROM samples m WHERE m.step = s.step) "
            "FROM steps s GROUP BY s.step ORDER BY s.step"
        ).fetchall()
    finally:
        conn.close()


def rows(run_id: str) -> list[tuple[int, int, int]]:
    """(step, 1, the samples its vote drew) for every step of the run, in order."""
    conn = sqlite3.connect(store_mod.db_path(run_id))
    try:
        drawn = dict(conn.execute("SELECT step, samples FROM steps").fetchall())
    finally:
        conn.close()
    return [(step, 1, drawn.get(step, -1)) for step in range(WORDS)]


def answers(run_id: str) -> list[tuple[int, Any]]:
    with RunStore.open(run_id) as reader:
        return list(reader.answers())


async def host_on(node_id: str) -> Any:
    hosts = [info for info in await list_hosts() if info.node_id == node_id]
    return hosts[0] if hosts else None


async def test_a_run_goes_on_when_a_node_is_lost_with_the_same_answers(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The joining node is seen within half a second, however fast the steps go.
    monkeypatch.setattr(pool_mod, "REFRESH_INTERVAL_S", 0.5)
    save_config(
        Config(
            local=LocalConfig(
                rlm=SlotConfig(model=catalog.EMBEDDED_ID, context_size=1024, parallel=2)
            )
        )
    )
    # The reference: the same run on the head node's host alone.
    alone = await start_run(spec(cluster.address))
    status = await execute(alone)
    assert status.status == "completed", status.reason
    reference = answers(alone)
    assert len(reference) >= WORDS // 2  # the model decides most word-case steps

    caplog.set_level(logging.WARNING, logger="nanobot_tui.engine.cluster.pool")
    rid = await start_run(spec(cluster.address))
    monitor = VoteMonitor()
    run = asyncio.create_task(execute(rid, monitor=monitor))
    # A node that joins while the run goes gets its host, and requests.
    await until(lambda: monitor.steps_done >= 1, 120)
    worker = cluster.add_node(**NODE)  # Ray wants the main thread: the loop waits
    worker_id = worker.node_id

    # Lose the worker node while its host has a request in flight, before the run ends.
    lost_pid: int | None = None
    while not run.done():
        host = await host_on(worker_id)
        if host is not None and host.in_flight > 0 and monitor.steps_done >= 4:
            lost_pid = host.pid
            await asyncio.to_thread(cluster.remove_node, worker, False)
            break
        await asyncio.sleep(0.02)
    assert lost_pid is not None, "the run ended before the worker's host had a request"
    # Its llama host ends with its actor (PDEATHSIG): no orphan keeps the node's cores.
    await until(lambda: not psutil.pid_exists(lost_pid), 30)

    status = await asyncio.wait_for(run, 240)
    assert status.status == "completed", status.reason
    assert status.steps_done == WORDS
    assert step_rows(rid) == [(step, 1, step_samples) for step, _, step_samples in rows(rid)]
    assert answers(rid) == reference
    lost = [r.getMessage() for r in caplog.records if "is down" in r.getMessage()]
    assert any(worker_id in line for line in lost), lost

    # `nanobot cluster down`: the hosts left for the next run stop, servers and actors.
    head = await host_on(ray_runtime.alive_nodes()[0].node_id)
    assert head is not None and head.pid is not None
    assert head.name in await stop_hosts()
    await until(lambda: not psutil.pid_exists(head.pid), 30)
    assert host_names() == []


async def test_a_node_without_the_model_file_says_so(cluster: Cluster, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "absent-model.gguf"
    server = ServerSpec(missing, "custom", "absent", ("memory",), 512, 1, 0)
    pool = HostPool(HostSpec.for_server("memory", server), refresh_interval=0)
    with pytest.raises(ClusterError) as caught:
        await pool.start()
    line = str(caught.value)
    assert "\n" not in line
    assert str(missing) in line and "node " in line
    head = ray_runtime.alive_nodes()[0]
    assert head.short_id in line
