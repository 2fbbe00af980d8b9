"""The Hardware pane lists the hosts of a Ray cluster's pool when the app is attached to a
run that samples over that cluster (a real one-node cluster, ray.cluster_utils.Cluster,
with a real llama host on the embedded model), and shows nothing of the kind for a run
that does not. `nanobot cluster status` lists the same host."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from textual.widgets import Static

from nanobot_tui.cli.cluster import cluster_report, format_report
from nanobot_tui.engine.runs.durable import start_run
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.panes.meter import HardwareMeter, read_pool
from tests.conftest import until
from tests.ui.test_app import small_config, text_of


def wordcase(sampler: str, cluster: str | None = None) -> RunSpec:
    return RunSpec(
        domain="wordcase",
        params={"words": 4, "seed": 0},
        sampler=sampler,
        vote=VoteConfig(k=1),
        learn=False,
        cluster=cluster,
    )


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_the_pane_lists_the_hosts_of_an_attached_cluster_run(nanobot_home: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (the [cluster] extra)")
    from ray.cluster_utils import Cluster

    from nanobot_tui.engine.cluster import ray_runtime
    from nanobot_tui.engine.cluster.host_actor import HostSpec
    from nanobot_tui.engine.cluster.pool import HostPool

    config = small_config()
    # The raylet (and so the host) keeps the NANOBOT_HOME it was started with: this test's.
    assert os.environ["NANOBOT_HOME"] == str(nanobot_home)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": 80 * 1024 * 1024,
            "include_dashboard": False,
        },
    )
    pool = None
    try:
        ray_runtime.connect(cluster.address)
        pool = HostPool(HostSpec.for_slot(config, "rlm", threads=1), refresh_interval=0)
        await pool.start()
        run_id = await start_run(wordcase("local:rlm", cluster.address))
        app = NanobotApp(config, workbench=Workbench(config, only_slots=()), attach_run=run_id)
        async with app.run_test(size=(140, 40)):
            meter = app.screen.query_one(HardwareMeter)
            await until(lambda: meter.pool_hosts, timeout=120)
            pane = meter.query_one("#meter-pool", Static)
            assert pane.display
            text = text_of(pane)
            host = meter.pool_hosts[0]
            assert f"pool {cluster.address}" in text and "1 host(s)" in text
            assert host.address in text and host.node_id[:8] in text
            assert "SmolLM2-135M-Instruct" in text and f"/{host.slots} req" in text
            assert "● up" in text
        # `nanobot cluster status` reads the same hosts.
        report = await asyncio.to_thread(cluster_report, cluster.address)
        [listed] = report["hosts"]
        assert listed["model"] == "SmolLM2-135M-Instruct" and listed["up"]
        assert listed["node_id"] == report["nodes"][0]["node_id"]
        lines = format_report(report).splitlines()
        assert "1 node(s) up of 1, 1 model host(s)" in lines[0]
        assert any(line.lstrip().startswith("host ") and "tok/s" in line for line in lines)
    finally:
        if pool is not None:
            await pool.close(stop_hosts=True)
        ray_runtime.disconnect()
        cluster.shutdown()


async def test_the_pane_shows_no_pool_for_a_run_on_the_local_server() -> None:
    config = small_config()
    run_id = await start_run(wordcase("simulated:0.9"))
    assert read_pool(run_id, None) == (None, [])
    app = NanobotApp(config, workbench=Workbench(config, only_slots=()), attach_run=run_id)
    async with app.run_test(size=(140, 40)) as pilot:
        meter = app.screen.query_one(HardwareMeter)
        await until(lambda: meter.pool_reads >= 1)
        await pilot.pause()
        assert not meter.query_one("#meter-pool", Static).display
        assert meter.pool_hosts == []
