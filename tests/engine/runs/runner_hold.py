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

from nanobot_tui.engine.runs.control import run_status
from nanobot_tui.engine.runs.store import RunStatus

HANG_GUARD_S = 90.0  # a wait that only stops a hang: tests assert what happens, not how soon


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
