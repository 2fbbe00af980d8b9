"""The durable runner: a voted run persisted as it goes, resumable from any crash.

`start_run(spec)` creates the run's store and returns its id; `execute(run_id)` takes the
run's lock, resumes from the last durable step and votes the rest, step by step, with the
same rules as runner.run_domain (a simulated sampler's error is counted and the run goes
on from the truth; a real sampler's winner is handed on), writing every finished step
through the store's group-committing writer, and ends with status completed, failed,
stopped (a budget ran out, SIGTERM, SIGINT), paused or cancelled.

A session's state and how it settles a step are in session.py; how it goes through the
steps (in order, or concurrently for independent steps) in scheduling.py. What the run
takes from and gives to the learning loops goes through learning_seam.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import psutil

from nanobot_tui.engine.runs.control import Control, RunError, RunLock, clear_request, run_status
from nanobot_tui.engine.runs.learning_seam import RunOutcome, learning_enabled, open_memory
from nanobot_tui.engine.runs.scheduling import (
    remaining,
    resume_in_order,
    run_concurrently,
    run_in_order,
)
from nanobot_tui.engine.runs.session import Failed, Health, Session, Stopped, Watch, unwrapped
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import (
    Batch,
    RunStatus,
    RunStore,
    StoreError,
    StoreWriter,
    create_run,
    resolve_run_id,
)
from nanobot_tui.engine.voting.ahead_by_k import vote
from nanobot_tui.engine.voting.domains import Domain
from nanobot_tui.engine.voting.runner import VoteMonitor
from nanobot_tui.engine.voting.samplers.seeded import SeededSimulatedSampler, StreamSimulatedSampler
from nanobot_tui.engine.voting.samples import Sampler

if TYPE_CHECKING:
    from nanobot_tui.engine.llm.openai import LLMClient

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.001  # the GIL switch interval while a session runs


async def start_run(spec: RunSpec, run_id: str | None = None) -> str:
    """Create a durable run (its store, its tree, status "stopped: not started yet") and
    return its id; `execute(id)` runs it."""
    if spec.learn and not await asyncio.to_thread(learning_enabled):
        spec = dataclasses.replace(spec, learn=False)  # the config turns learning off
    return await asyncio.to_thread(create_run, spec, run_id)


async def execute(
    run_id: str,
    *,
    monitor: VoteMonitor | None = None,
    stop: asyncio.Event | None = None,
    control: Control | None = None,
    sampler: Sampler | None = None,
    health: Health | None = None,
    budgets: Budgets | None = None,
    install_signals: bool = False,
) -> RunStatus:
    """Run (or resume) `run_id` to its end or until stopped; return its status.

    `monitor` is fed every step (the vote counter pane); `stop` (or `control.stop()`)
    ends the run cleanly with status "stopped", `control.pause()` / `control.cancel()`
    with "paused" / "cancelled": after the current step, or at once for a real model's
    step in flight (its requests cancelled, the step left pending for a resume).
    `sampler` replaces the spec's real sampler; `health` tells when its dead model
    server is back (default: see `server_health`); `budgets` replace the spec's for this
    session. RunLocked if another runner has the run, RunError if it cannot run
    (cancelled, unreadable), StoreDamaged if its database file is damaged."""
    rid = resolve_run_id(run_id)
    # Refused before taking the lock too: a watcher (`wait_started`) that saw a refused
    # runner hold it for a moment would take it for a started one.
    if run_status(rid).status == "cancelled":
        raise RunError(f"run {rid} was cancelled; it cannot be resumed")
    with RunLock(rid), RunStore.open(rid, readonly=True, locked=True) as reader:
        meta = reader.meta()
        spec = reader.spec
        state = meta.get("status")
        if state == "completed":
            return reader.status()
        if state == "cancelled":
            raise RunError(f"run {rid} was cancelled; it cannot be resumed")
        clear_request(rid)
        domain = spec.build_domain()
        control = control or Control(rid)
        control.run_id = rid
        async with AsyncExitStack() as stack:
            _listen(stack, control, stop, install_signals)
            writer = StoreWriter(rid)
            stack.callback(writer.close)
            sampler, health = await _sampler_for(stack, spec, domain, meta, sampler, health)
            simulated, keep = sampler.simulated, spec.keeps_samples
            memory = await asyncio.to_thread(open_memory, rid, spec, domain, sampler)
            if memory is not None:
                stack.callback(memory.close)
                memory.attach(sampler)
            session = Session(
                run_id=rid,
                spec=spec,
                domain=domain,
                sampler=Watch(sampler, guard=not simulated, keep=keep)
                if not simulated or keep
                else sampler,
                writer=writer,
                reader=reader,
                meta=meta,
                monitor=monitor if monitor is not None else VoteMonitor(),
                control=control,
                budgets=budgets or spec.budgets,
                health=health,
                memory=memory,
            )
            return await _run_session(session)


def _listen(
    stack: AsyncExitStack, control: Control, stop: asyncio.Event | None, install_signals: bool
) -> None:
    """Route signals (when asked) and `stop` to `control` until `stack` closes."""
    loop = asyncio.get_running_loop()
    if install_signals:
        control.install(loop)
        stack.callback(control.uninstall, loop)
    if stop is not None:

        async def watch_stop() -> None:
            await stop.wait()
            control.stop("stopped")

        stack.callback(asyncio.create_task(watch_stop()).cancel)


# --- samplers ------------------------------------------------------------------------------


async def _sampler_for(
    stack: AsyncExitStack,
    spec: RunSpec,
    domain: Domain,
    meta: dict[str, Any],
    sampler: Sampler | None,
    health: Health | None,
) -> tuple[Sampler, Health | None]:
    """The given sampler, else the spec's (a model server started for a local one), and
    how to tell that its model server is up."""
    if sampler is None:
        if spec.simulated:
            sampler = simulated_sampler(spec, domain, meta)
        elif spec.cluster is not None:
            sampler, pool_health = await _cluster_sampler(stack, spec, domain)
            return sampler, health if health is not None else pool_health
        else:
            sampler = await _local_sampler(stack, spec, domain)
    return sampler, health if health is not None else server_health(sampler)


async def _local_sampler(stack: AsyncExitStack, spec: RunSpec, domain: Domain) -> Sampler:
    """Start the slot's model server (as `nanobot run` does) and sample from it."""
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    slot = spec.slot
    workbench = Workbench(load_config()[0], only_slots=(slot,))
    await stack.enter_async_context(workbench)
    model = workbench.slots[slot].display_name
    return LLMSampler(
        workbench.client(slot), domain, name=f"local {slot}: {model}",
        token_cap=spec.vote.token_cap, seed=spec.seed,
    )  # fmt: skip


async def _cluster_sampler(
    stack: AsyncExitStack, spec: RunSpec, domain: Domain
) -> tuple[Sampler, Health]:
    """Join the spec's Ray cluster, put the slot's model host on each of its nodes (or
    find those a previous run left) and sample across them and the config's endpoints
    (`cluster.endpoints`: servers the user runs, by URL); healthy while some host is
    up. The hosts stay up after the run, for the next one (`nanobot cluster down`)."""
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.cluster.host_actor import HostSpec
    from nanobot_tui.engine.cluster.pool import Endpoint, HostPool
    from nanobot_tui.engine.cluster.pool_client import PoolClient
    from nanobot_tui.engine.cluster.ray_runtime import connect
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    assert spec.cluster is not None
    slot = spec.slot
    config = load_config()[0]
    host = HostSpec.for_slot(config, slot)
    endpoints = [
        Endpoint(e.url, api_key=e.api_key, model=e.model, slots=e.slots)
        for e in config.cluster.endpoints
    ]
    await asyncio.to_thread(connect, spec.cluster)
    pool = HostPool(host, endpoints=endpoints)
    await pool.start()
    stack.push_async_callback(pool.close)
    client = PoolClient(pool, name=f"{spec.cluster}/{slot}")
    model = host.server.display_name
    sampler = LLMSampler(
        client, domain, name=f"cluster {slot}: {model}",
        token_cap=spec.vote.token_cap, seed=spec.seed,
    )  # fmt: skip

    async def healthy() -> bool:
        return await client.health() == "ok"

    return sampler, healthy


def simulated_sampler(spec: RunSpec, domain: Domain, meta: dict[str, Any]) -> Sampler:
    """The resumable simulated sampler for a run: one stream per segment where steps go
    in order over canonical inputs (the cheapest), else counter-based draws."""
    canonical = bool((meta.get("storage") or {}).get("canonical_inputs"))
    if canonical and not domain.independent_steps:
        cls: type[SeededSimulatedSampler | StreamSimulatedSampler] = StreamSimulatedSampler
    else:
        cls = SeededSimulatedSampler
    return cls(domain, spec.p, spec.wrong_choices, spec.seed, red_flag_rate=spec.red_flag_rate)


def server_health(sampler: Sampler) -> Health | None:
    """How a run tells that `sampler`'s model server is back after a round in which every
    request failed: the /health of an OpenAI-compatible client's server (a local one the
    ServerManager restarts; a cloud one is probed through /models). None where there is
    no server to wait for: a simulated sampler, and a cloud client without a health
    endpoint (Anthropic's), whose transport retries a passing failure itself; a round
    that fails after those retries fails the run, resumably."""
    if sampler.simulated:
        return None
    # Imported here: a simulated run never loads the model clients.
    from nanobot_tui.engine.llm.openai import LLMClient
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    if isinstance(sampler, LLMSampler) and isinstance(sampler.client, LLMClient):
        return client_health(sampler.client)
    return None


def client_health(client: LLMClient) -> Health:
    async def ready() -> bool:
        return await client.health() == "ok"

    return ready


# --- a session, start to end ------------------------------------------------------------------


def _runner_record(started: float) -> dict[str, Any]:
    me = psutil.Process()
    return {"pid": os.getpid(), "created": me.create_time(), "started": started}


async def _run_session(s: Session) -> RunStatus:
    """Begin the session (status running), drive it to its ending, and record that
    ending whatever happened."""
    started = time.time()
    await _begin(s, started)
    beat = asyncio.create_task(s.heartbeat())
    status, reason = "failed", "the runner stopped unexpectedly"
    # The store writer gives the GIL back for every SQLite call and must win it back
    # from this loop each time: at the default 5 ms switch interval it falls behind
    # (measured, 18 disks: 1.32x the in-memory run's time, against 1.20x at 1 ms).
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
    try:
        status, reason = await _drive(s)
    except asyncio.CancelledError:
        status, reason = _requested(s.control, "the runner's task was cancelled; resumable")
        raise
    except StoreError as exc:
        status, reason = "failed", str(exc)
        raise
    except Exception as exc:
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        sys.setswitchinterval(switch)
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        await _finish(s, status, reason, started)
    return s.reader.status()


async def _begin(s: Session, started: float) -> None:
    """Take failed steps back out (they are voted again), mark the run running, and set
    the monitor going from the run's totals."""
    failed = [r[0] for r in s.reader.conn.execute("SELECT step FROM steps WHERE status = 'failed'")]
    sessions = int(s.meta.get("sessions") or 0) + 1
    s.writer.submit(Batch(deletes=failed))
    await asyncio.to_thread(
        s.writer.flush,
        status="running",
        status_reason=f"session {sessions}" + (" (resumed)" if sessions > 1 else ""),
        runner=_runner_record(started),
        sessions=sessions,
        sampler_name=s.sampler.name,
    )
    totals = s.writer.totals
    mon = s.monitor
    mon.begin(s.domain.name, s.sampler.name, s.simulated, s.cfg.k, s.total, s.domain.describe)
    mon.steps_done = int(totals["steps_done"])
    mon.errors = int(totals["errors"])
    mon.started -= s.elapsed_before  # rate and ETA over the run's whole active time


async def _drive(s: Session) -> tuple[str, str]:
    """Vote the steps left; return the (status, reason) the session ends with."""
    try:
        if s.independent:
            await run_concurrently(s, remaining(s.domain, s.reader))
        else:
            first = resume_in_order(s)
            inner = unwrapped(s.sampler)
            if first is not None and isinstance(inner, StreamSimulatedSampler):
                cfg = s.cfg
                await inner.replay(
                    first.index, s.domain.step_at, lambda smp, step: vote(smp, step, cfg)
                )
            await run_in_order(s, first)
    except Failed as exc:
        return "failed", str(exc)
    except Stopped:  # a request, or the time budget (then `ending` says so)
        return s.ending or _requested(s.control)
    if s.ending is not None:
        return s.ending
    if s.control.request is not None:
        return _requested(s.control)
    return "stopped", "stopped"


def _requested(control: Control, otherwise: str | None = None) -> tuple[str, str]:
    """The (status, reason) a pause, cancel or stop request ends a session with."""
    status = {"pause": "paused", "cancel": "cancelled"}.get(control.request or "", "stopped")
    return status, control.reason or otherwise or status


async def _finish(s: Session, status: str, reason: str, started: float) -> None:
    """Record how the session ended: status, reason, whether the task was solved."""
    solved = None
    if status == "completed":
        with contextlib.suppress(StoreError):
            await asyncio.to_thread(s.writer.flush, 60.0)  # the totals count every step
        errors = int(s.writer.totals["errors"])
        if s.independent:
            solved = errors == 0
        else:
            solved = bool(s.domain.is_solved(None, s.last_answer))
            if s.simulated:
                solved = solved and errors == 0
        reason = "solved" if solved else f"finished with {errors:,} errors"
    s.monitor.finish(bool(solved), None if status == "completed" else reason)
    learned = await _learned(s, status, reason, bool(solved))
    with contextlib.suppress(StoreError):
        await asyncio.to_thread(
            s.writer.flush,
            60.0,
            **learned,
            status=status,
            status_reason=reason,
            solved=solved,
            server_waits=int(s.meta.get("server_waits") or 0) + s.server_waits,
            inflight=[],
            elapsed_s=s.elapsed(),
            runner={**_runner_record(started), "ended": time.time()},
        )


async def _learned(s: Session, status: str, reason: str, solved: bool) -> dict[str, Any]:
    """The run's task record handed to its memory (the task history); returns the meta
    items to write with the ending ({"learning": ...}, or none)."""
    memory = s.memory
    if memory is None:
        return {}
    with contextlib.suppress(StoreError):
        await asyncio.to_thread(s.writer.flush, 60.0)  # the totals count every step
    totals = s.writer.totals
    # A simulated run always knows the truth: its monitor's p is the share of right votes.
    real_p = s.right / s.judged if s.judged else None
    p = s.monitor.p_estimate if s.simulated else real_p
    outcome = RunOutcome(
        status=status,
        reason=reason,
        solved=solved,
        steps=int(totals["steps_done"]),
        tokens=int(totals["tokens"]),
        seconds=s.elapsed(),
        samples=int(totals["samples"]),
        p=p,
        reused=s.reused,
    )
    try:
        learning = await asyncio.to_thread(memory.finished, outcome, s.meta)
    except Exception as exc:  # learning never fails a run: the run's own ending is recorded
        log.warning("run %s: its task record was not kept: %s", s.run_id, exc)
        return {}
    return {} if learning is None else {"learning": learning}


# --- the summary `nanobot run --json` prints -----------------------------------------------


def summary(status: RunStatus, monitor: VoteMonitor | None = None) -> dict[str, Any]:
    """The run as runner.RunSummary's JSON names it (steps, errors, solved, k, votes and
    red flags per step, ...), from the store's totals, plus id and status."""
    done = status.steps_done or 0
    hist = status.votes.get("histogram") or {}
    valid = sum(int(k) * v for k, v in hist.items())
    solved = status.status == "completed" and status.reason == "solved"
    out: dict[str, Any] = {
        "run_id": status.run_id,
        "status": status.status,
        "reason": status.reason,
        "domain": status.domain,
        "sampler": status.sampler,
        "simulated": status.simulated,
        "k": status.k,
        "steps": done,
        "total_steps": status.steps_total,
        "errors": status.errors,
        "undecided": status.errors_by_reason.get("undecided", 0),
        "errors_by_reason": status.errors_by_reason,
        "solved": solved,
        "samples": status.samples,
        "valid_samples": valid,
        "completion_tokens": status.tokens,
        "votes_per_step": hist,
        "rounds_histogram": status.votes.get("rounds") or {},
        "red_flags": status.red_flags,
        "mean_votes_per_step": valid / done if done else 0.0,
        "mean_samples_per_step": status.samples / done if done else 0.0,
        "mean_red_flags_per_step": {r: n / done for r, n in status.red_flags.items()}
        if done
        else {},
        "retried": status.retried,
        "seconds": status.elapsed_s,
        "steps_per_s": done / status.elapsed_s if status.elapsed_s else 0.0,
        "stopped": None if status.status == "completed" else status.reason,
    }
    if monitor is not None:
        out["p_estimate"] = monitor.p_estimate
        out["undecided_after_round"] = monitor.undecided_after_round()
    return out
