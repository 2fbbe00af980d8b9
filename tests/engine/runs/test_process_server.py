"""A real model server killed (kill -9) in the middle of a durable run: the samples come
back red-flagged `error`, the runner waits until the ServerManager has the server back,
votes the step again (without counting an attempt) and the run goes on to the end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import RetryPolicy, RunSpec
from nanobot_tui.engine.runs.store import RunStore
from nanobot_tui.engine.serving.manager import ServerManager, resolve_runtime
from nanobot_tui.engine.serving.slots import ServerSpec
from nanobot_tui.engine.serving.status import ServerState
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from tests.engine.runs.runner_hold import HANG_GUARD_S


class InFlight(LLMSampler):
    """The real sampler, telling whether a request is out (to kill the server under it)."""

    busy = 0

    async def sample(self, step, temperatures, paraphrase=0):  # type: ignore[no-untyped-def]
        self.busy += 1
        try:
            return await super().sample(step, temperatures, paraphrase)
        finally:
            self.busy -= 1


@pytest.mark.model
async def test_a_killed_model_server_is_waited_for_and_the_run_goes_on(
    embedded_model: Path,
) -> None:
    server_spec = ServerSpec(
        model_path=embedded_model,
        model_id="smollm2-135m-instruct",
        display_name="SmolLM2-135M-Instruct",
        slots=("rlm",),
        context_size=4096,
        parallel=2,
        gpu_layers=0,
        size_bytes=embedded_model.stat().st_size,
    )
    spec = RunSpec(
        domain="wordcase",
        params={"words": 24, "seed": 3},
        sampler="local:rlm",
        vote=VoteConfig(k=1, token_cap=16),
        retry=RetryPolicy(retries=1, on_fail="skip"),
        concurrency=2,
        label="wordcase24",
    )
    rid = await start_run(spec)
    async with ServerManager([server_spec], resolve_runtime("embedded")) as manager:
        server = manager.server_for("rlm")
        first_pid = server.pid
        assert first_pid is not None
        sampler = InFlight(
            manager.client("rlm"), spec.build_domain(), name="local rlm: SmolLM2-135M-Instruct"
        )
        run = asyncio.create_task(execute(rid, sampler=sampler))
        while True:  # a few steps in, and a request in flight: kill -9
            await asyncio.sleep(0.02)
            with RunStore.open(rid) as store:
                if store.status().steps_done >= 4 and sampler.busy:
                    break
            assert not run.done(), run
        os.kill(first_pid, signal.SIGKILL)
        try:
            st = await asyncio.wait_for(run, HANG_GUARD_S)
        except TimeoutError:  # say where it hangs, before pytest's own timeout does
            pytest.fail(
                f"the run did not end: the server is {server.state.value} at "
                f"{server.base_url} after {server.restarts} restart(s); the sampler asks "
                f"{sampler.client.base_url}"
            )
        assert server.restarts == 1 and server.state is ServerState.READY
        assert server.pid not in (None, first_pid)
    assert st.status == "completed", st.reason
    assert st.steps_done == 24 and st.failed == 0
    conn = sqlite3.connect(store_mod.db_path(rid))
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        attempts = [r[0] for r in conn.execute("SELECT attempts FROM steps")]
        flags = conn.execute("SELECT count(*) FROM samples WHERE red_flag = 'error'").fetchone()[0]
    finally:
        conn.close()
    # The step(s) caught by the kill were voted again once the server was back; the wait
    # is not an attempt (an attempt is a changed strategy, not a server outage).
    assert json.loads(meta["server_waits"]) >= 1
    assert max(attempts) <= 2 and flags == 0  # no failed round is kept as a vote
    with RunStore.open(rid) as store:
        row = store.step(0)
        assert row.input and row.samples >= 1 and len(store.samples(0)) == row.samples
