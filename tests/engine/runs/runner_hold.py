"""Holding a runner still, for tests that act on a run in the middle.

A simulated run takes a few seconds at most. A test that pauses, cancels or interrupts
one, or looks at it while it runs, holds its runner process still (SIGSTOP) from the
moment the store shows it running until its request has been delivered (the signal is
pending), then lets it go on: the runner handles the request at once. Whatever the
machine's speed, the run cannot end in between.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from nanobot_tui.engine.runs.control import WORKER_MODULE, run_status
from nanobot_tui.engine.runs.store import RunStatus
from nanobot_tui.engine.runs.store.db import StoreError

HANG_GUARD_S = 90.0  # a wait that only stops a hang: tests assert what happens, not how soon
STEP_SLICE_S = 0.001  # how long `step_until` lets a held runner go on between looks


def hold(pid: int) -> None:
    """Stop process `pid` (SIGSTOP) and wait until it stands still."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + HANG_GUARD_S
    while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
        assert time.monotonic() < deadline, f"pid {pid} did not stop"
        time.sleep(0.001)


def let_go(pid: int) -> None:
    """Let a held process go on (SIGCONT); nothing if it is gone (killed while held)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


@contextmanager
def held_when(run_id: str, ready: Callable[[RunStatus], bool]) -> Iterator[RunStatus]:
    """Once the run's store names a runner and shows `ready` (read here, in a few
    milliseconds), hold that runner still for the block; let it go on after. Yields the
    status seen."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        st = run_status(run_id)
        if st.pid is not None and ready(st):
            break
        assert time.monotonic() < deadline, f"condition not met: {st}"
        time.sleep(0.002)
    hold(st.pid)
    try:
        yield st
    finally:
        let_go(st.pid)


def held_runner(parent_pid: int) -> int:
    """The detached runner `parent_pid` starts (while that command still waits for it),
    held still as soon as it runs the runner's module, before it has imported much."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        for child in psutil.Process(parent_pid).children():
            with contextlib.suppress(psutil.Error):  # a fork shows its parent's cmdline
                if WORKER_MODULE in child.cmdline():  # until it has exec'd
                    hold(child.pid)
                    return child.pid
        assert time.monotonic() < deadline, f"pid {parent_pid} started no runner"
        time.sleep(0.0005)


def step_until(pid: int, run_id: str, ready: Callable[[RunStatus], bool]) -> RunStatus:
    """Let the held runner `pid` of run `run_id` go on a few milliseconds at a time until
    its store shows `ready`; it stays held. However fast the run, it cannot pass the
    condition between two looks by more than one short slice: the runner is also made
    the machine's least important process, so that a busy machine that keeps this test
    from looking in time keeps the runner from running too."""
    os.setpriority(os.PRIO_PROCESS, pid, 19)
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        assert time.monotonic() < deadline, f"run {run_id} never reached the condition"
        let_go(pid)
        time.sleep(STEP_SLICE_S)
        hold(pid)
        try:
            st = run_status(run_id)  # the run is created before its runner starts
        except StoreError as exc:
            # Held inside SQLite's update of its WAL index, the runner leaves readers
            # "locking protocol" until it goes on: let it, and look again.
            if "locking protocol" not in str(exc):
                raise
            continue
        if st.pid is not None and ready(st):
            return st


def wait_pending(pid: int, sig: signal.Signals) -> None:
    """Wait until `sig` has been sent to the held process `pid`: it is pending, and the
    process handles it the moment it goes on."""
    bit = 1 << (sig - 1)
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        masks = [int(ln.split()[1], 16) for ln in lines if ln.startswith(("SigPnd", "ShdPnd"))]
        if any(mask & bit for mask in masks):
            return
        assert time.monotonic() < deadline, f"{sig.name} never reached pid {pid}"
        time.sleep(0.005)
