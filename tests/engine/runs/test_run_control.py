"""Run control, the engine's side of `nanobot pause | cancel | resume --detach | run
--detach` that the CLI and the app both call: each returns the line the CLI prints, or
raises an error of the NanobotError tree with the CLI's one-line message."""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from nanobot_tui.engine.runs.control import (
    RunError,
    RunLock,
    RunLocked,
    cancel_run,
    detach,
    pause_run,
    resume_detached,
    run_status,
    start_detached,
)
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import RunNotFound
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.errors import NanobotError, UsageError
from tests.engine.runs.runner_hold import HANG_GUARD_S, held_when, wait_pending


def hanoi_spec(disks: int) -> RunSpec:
    return RunSpec(
        domain="hanoi",
        params={"disks": disks},
        sampler="simulated:0.99",
        vote=VoteConfig(k=3),
        label=f"hanoi{disks}",
    )


def stopped_run(disks: int, steps: int) -> str:
    """A run that has done `steps` steps and stopped (no runner)."""

    async def go() -> str:
        rid = await start_run(hanoi_spec(disks))
        await execute(rid, budgets=Budgets(steps=steps))
        return rid

    return asyncio.run(go())


def test_pause_and_cancel_without_a_runner_record_the_status() -> None:
    rid = stopped_run(10, 100)
    assert pause_run(rid[:-2]) == f"run {rid}: paused (no runner was running)"  # a prefix
    st = run_status(rid)
    assert st.status == "paused" and st.steps_done == 100
    assert st.reason == "paused by `nanobot pause` (no runner was running)"
    assert cancel_run(rid) == f"run {rid}: cancelled (no runner was running)"
    assert run_status(rid).status == "cancelled"


def test_what_cannot_be_paused_cancelled_or_resumed_says_why() -> None:
    rid = stopped_run(10, 100)
    cancel_run(rid)
    for call, verb in ((pause_run, "pause"), (cancel_run, "cancel")):
        with pytest.raises(RunError) as caught:
            call(rid)
        assert str(caught.value) == f"run {rid} is cancelled; nothing to {verb}"
        assert caught.value.exit_code == 1 and isinstance(caught.value, NanobotError)
    with pytest.raises(RunError) as caught:
        resume_detached(rid)
    assert str(caught.value) == f"run {rid} was cancelled; it cannot be resumed"

    done = stopped_run(4, 1000)
    with pytest.raises(RunError, match=f"^run {done} is completed; nothing to pause$"):
        pause_run(done)
    assert resume_detached(done) == f"run {done} is completed already (solved)"


def test_an_unknown_or_ambiguous_id_is_bad_input() -> None:
    with pytest.raises(RunNotFound) as caught:
        pause_run("no-such-run")
    assert str(caught.value) == "no run 'no-such-run' (see `nanobot runs`)"
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2
    stopped_run(4, 1)
    stopped_run(4, 1)
    with pytest.raises(RunNotFound, match="is ambiguous"):
        cancel_run("2")  # every id starts with the year


def test_a_run_a_runner_is_just_taking_is_not_marked() -> None:
    rid = stopped_run(10, 10)
    # A runner that holds the lock but has not written its record yet:
    with RunLock(rid), pytest.raises(RunError, match=f"^run {rid} just started; try again$"):
        pause_run(rid)
    assert run_status(rid).status == "stopped"


def test_start_pause_resume_and_cancel_a_detached_runner() -> None:
    """Each request reaches the runner while it is held still mid-run (runner_hold.py),
    from a thread: pause_run and cancel_run wait for the runner to act on it."""
    rid = start_detached(hanoi_spec(19))
    assert rid == run_status(rid[:-3]).run_id and "hanoi19" in rid
    with ThreadPoolExecutor(1) as thread:
        with held_when(rid, lambda st: st.steps_done > 0) as st:
            runner = st.pid
            assert runner is not None and runner != os.getpid()
            assert os.getsid(runner) == runner  # a session of its own
            pausing = thread.submit(pause_run, rid)
            wait_pending(runner, signal.SIGUSR1)
        line = pausing.result(timeout=HANG_GUARD_S)
    assert line.startswith(f"run {rid}: paused (") and "nanobot pause" in line
    st = run_status(rid)
    assert st.status == "paused" and st.pid is None and 0 < st.steps_done < st.steps_total
    at = st.steps_done

    line = resume_detached(rid, Budgets(seconds=60.0))
    assert line.startswith("detached runner pid ") and line.endswith(f"{rid}/runner.log")
    with ThreadPoolExecutor(1) as thread:
        with held_when(rid, lambda st: st.steps_done > at) as st:
            with pytest.raises(
                RunError, match=f"^run {rid} is already running \\(pid {st.pid}\\)$"
            ):
                resume_detached(rid)
            cancelling = thread.submit(cancel_run, rid)
            wait_pending(st.pid, signal.SIGTERM)
        line = cancelling.result(timeout=HANG_GUARD_S)
    assert line.startswith(f"run {rid}: cancelled (") and "nanobot cancel" in line
    st = run_status(rid)
    assert st.status == "cancelled" and st.pid is None and st.steps_done < st.steps_total


def test_a_runner_that_cannot_start_is_an_error_with_its_last_log_line() -> None:
    rid = stopped_run(10, 10)
    cancel_run(rid)
    with pytest.raises(RunError) as caught:
        detach(rid)  # past the checks resume_detached makes: the runner itself refuses
    message = str(caught.value)
    assert message.startswith(f"run {rid}: the detached runner did not start: ")
    assert message.endswith(f"cannot run: run {rid} was cancelled; it cannot be resumed")


def test_a_held_lock_refuses_a_second_runner_with_a_run_error() -> None:
    rid = stopped_run(10, 10)
    with RunLock(rid), pytest.raises(RunLocked) as caught:
        RunLock(rid).acquire(patience=0.0)
    assert isinstance(caught.value, RunError) and caught.value.pid == os.getpid()
