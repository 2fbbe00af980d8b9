"""Who runs a run, and how to tell it to stop: the lock, pause/cancel, detaching.

The lock. A runner holds `fcntl.flock(LOCK_EX)` on runs/<id>/lock for as long as it
runs. A second runner is refused with the holder's pid; a runner that dies, however it
dies (SIGKILL included), loses the lock with its last file descriptor, so the next runner
simply takes it over: there is no stale-lock cleanup to get wrong. The lock file also
holds the holder's pid, for the error message.

Stopping. `nanobot pause` writes "pause" to runs/<id>/control and sends SIGUSR1;
`nanobot cancel` writes "cancel" and sends SIGTERM. The runner's handlers set a request
that the scheduler checks after every step, and a real model's vote in flight every
0.1 s (session.py: its requests are cancelled, the step is left pending, for a resume
to vote again); it commits and ends with status paused or cancelled. A SIGTERM without
a cancel request (a shutdown, a plain `kill`) or a SIGINT stops the run the same way with
status "stopped": resumable.

Detaching. `spawn_worker` starts `python -m nanobot_tui.engine.runs.worker RUN_ID`
in a new session (setsid: no controlling terminal, so a closed terminal or SSH session
sends it no SIGHUP) with stdin from /dev/null and stdout/stderr appended to
runs/<id>/runner.log.

Run control. `pause_run`, `cancel_run`, `resume_detached` and `start_detached` are what
`nanobot pause | cancel | resume --detach | run --detach` do, for the CLI and the app
alike: each returns the one line saying what happened, or raises RunError (exit 1) or
RunNotFound (exit 2) with the line the CLI prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nanobot_tui.engine.runs import store as store_mod
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import RunStatus, RunStore
from nanobot_tui.engine.runs.store.db import runner_holds
from nanobot_tui.errors import NanobotError
from nanobot_tui.pidlock import LockHeld, PidLock, holder

WORKER_MODULE = "nanobot_tui.engine.runs.worker"
PAUSE, CANCEL, STOP = "pause", "cancel", "stop"


class RunError(NanobotError):
    """A run that cannot be run, paused, cancelled or resumed as asked (cancelled, already
    running, finished, a runner that did not start); str() is one line."""


class RunLocked(RunError):
    """Another runner holds the run; str() is one line naming it."""

    def __init__(self, run_id: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"run {run_id} is already being run by {who}")
        self.pid = pid


class RunLock(PidLock):
    """flock on runs/<id>/lock (pidlock.py); `acquire()` raises RunLocked when it is held."""

    def __init__(self, run_id: str) -> None:
        super().__init__(store_mod.run_dir(run_id) / "lock")
        self.run_id = run_id

    def holder(self) -> int | None:
        return holder(self.path)

    def acquire(self, patience: float = 0.5) -> None:
        """Take the lock or raise RunLocked. A holder is waited for `patience` seconds
        first, so that a watcher's momentary probe (`is_locked`) never turns a runner
        away."""
        try:
            super().acquire(patience)
        except LockHeld as exc:
            raise RunLocked(self.run_id, exc.pid if exc.pid > 0 else None) from None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self


def is_locked(run_id: str) -> bool:
    """Whether a runner holds the run."""
    return runner_holds(store_mod.run_dir(run_id))


# --- requests to a runner ------------------------------------------------------------


class Control:
    """What the scheduler checks after every step: `request` is None while it should go
    on, else "pause", "cancel" or "stop" (with `reason`)."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id
        self.request: str | None = None
        self.reason: str | None = None
        self._installed: list[int] = []

    def pause(self, reason: str = "paused") -> None:
        self._set(PAUSE, reason)

    def cancel(self, reason: str = "cancelled") -> None:
        self._set(CANCEL, reason)

    def stop(self, reason: str = "stopped") -> None:
        self._set(STOP, reason)

    def _set(self, request: str, reason: str) -> None:
        # A cancel outranks a pause or stop already asked for; nothing else overrides.
        if self.request is None or (request == CANCEL and self.request != CANCEL):
            self.request, self.reason = request, reason

    def _requested(self) -> str | None:
        """What `nanobot pause/cancel` wrote for this run, if anything."""
        if self.run_id is None:
            return None
        path = control_path(self.run_id)
        try:
            return path.read_text().strip() or None
        except OSError:
            return None

    def _on_usr1(self) -> None:
        self.pause("paused by `nanobot pause`")

    def _on_term(self) -> None:
        if self._requested() == CANCEL:
            self.cancel("cancelled by `nanobot cancel`")
        else:
            self.stop("stopped by SIGTERM; resumable")

    def _on_int(self) -> None:
        self.stop("interrupted (SIGINT); resumable")

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Route SIGUSR1, SIGTERM and SIGINT to requests (main thread only)."""
        for sig, handler in (
            (signal.SIGUSR1, self._on_usr1),
            (signal.SIGTERM, self._on_term),
            (signal.SIGINT, self._on_int),
        ):
            try:
                loop.add_signal_handler(sig, handler)
            except (RuntimeError, ValueError, NotImplementedError):
                continue
            self._installed.append(sig)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self._installed:
            with contextlib.suppress(RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        self._installed.clear()


def control_path(run_id: str) -> Path:
    return store_mod.run_dir(run_id) / "control"


def clear_request(run_id: str) -> None:
    control_path(run_id).unlink(missing_ok=True)


def signal_runner(run_id: str, pid: int, request: str) -> None:
    """Ask the runner `pid` to pause or cancel after its current step."""
    path = control_path(run_id)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(request + "\n")
    os.replace(tmp, path)
    os.kill(pid, signal.SIGUSR1 if request == PAUSE else signal.SIGTERM)


# --- detaching -----------------------------------------------------------------------


def log_path(run_id: str) -> Path:
    return store_mod.run_dir(run_id) / "runner.log"


def spawn_worker(
    run_id: str, budgets: Budgets | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a detached runner for `run_id` in its own session (with `budgets` for its
    session, if given); return its Popen (the caller may exit at once: the worker does
    not depend on it)."""
    log = log_path(run_id)
    extra: list[str] = []
    if budgets is not None:
        for flag, value in (
            ("--max-steps", budgets.steps),
            ("--max-tokens", budgets.tokens),
            ("--max-seconds", budgets.seconds),
        ):
            if value is not None:
                extra += [flag, str(value)]
    with open(log, "ab") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} detached runner\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, run_id, *extra],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env if env is not None else os.environ.copy(),
        )
    return proc


def wait_started(run_id: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str | None:
    """Wait until the worker holds the run's lock (None) or has exited (its last log
    line, as the reason)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            if code == 0:
                return None  # it ran and finished already (a tiny run)
            return last_log_line(run_id) or f"the runner exited with code {code}"
        if is_locked(run_id):
            return None
        time.sleep(0.02)
    return f"the runner did not start within {timeout:.0f} s (see {log_path(run_id)})"


def last_log_line(run_id: str) -> str:
    try:
        lines = [ln for ln in log_path(run_id).read_text(errors="replace").splitlines() if ln]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def record_status(run_id: str, status: str, reason: str) -> None:
    """Record a status on a run no runner holds (`nanobot pause/cancel` without one);
    RunLocked if a runner has just taken it."""
    lock = RunLock(run_id)
    lock.acquire(patience=2.0)
    try:
        conn = store_mod.connect(store_mod.db_path(run_id))
        try:
            conn.execute("BEGIN IMMEDIATE")
            store_mod.meta_set(
                conn,
                {"status": status, "status_reason": reason, "inflight": [], "updated": time.time()},
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
    finally:
        lock.release()


# --- run control ---------------------------------------------------------------------

WAIT_S = 30.0  # how long pause_run and cancel_run wait for the runner to stop


def pause_run(run_id: str, *, wait: float = WAIT_S) -> str:
    """Pause run `run_id` (or a unique prefix) after its current step, waiting up to
    `wait` seconds for its runner to stop; return the line saying what became of it.
    RunNotFound or StoreError when it cannot be read, RunError when it is finished, its
    runner came or went just then, or its runner did not stop within `wait`."""
    return _ask(run_id, PAUSE, wait)


def cancel_run(run_id: str, *, wait: float = WAIT_S) -> str:
    """Cancel run `run_id` (or a unique prefix) for good after its current step; as
    `pause_run`, and a failed run may be cancelled too."""
    return _ask(run_id, CANCEL, wait)


def _ask(run_id: str, request: str, wait: float) -> str:
    st = run_status(run_id)
    rid = st.run_id
    if st.status in ("completed", "cancelled") or (st.status == "failed" and request != CANCEL):
        raise RunError(f"run {rid} is {st.status}; nothing to {request}")
    want = "cancelled" if request == CANCEL else "paused"
    if st.pid is None:
        try:
            record_status(rid, want, f"{want} by `nanobot {request}` (no runner was running)")
        except RunLocked:
            raise RunError(f"run {rid} just started; try again") from None
        return f"run {rid}: {want} (no runner was running)"
    try:
        signal_runner(rid, st.pid, request)
    except ProcessLookupError:
        raise RunError(f"run {rid}: its runner (pid {st.pid}) is gone; try again") from None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        now = run_status(rid)
        if now.pid is None or now.status != "running":
            return f"run {rid}: {now.status}" + (f" ({now.reason})" if now.reason else "")
        time.sleep(0.1)
    raise RunError(
        f"run {rid}: asked its runner (pid {st.pid}) to {request}, but it has not stopped "
        f"within {wait:g} s (see {log_path(rid)})"
    )


def run_status(run_id: str) -> RunStatus:
    """Run `run_id`'s (or a unique prefix's) status, read fresh from its store."""
    with RunStore.open(run_id) as store:
        return store.status()


def resumable(run_id: str) -> RunStatus:
    """The status of run `run_id` (or a unique prefix) when a runner may take it up; a
    completed run comes back too (resuming it does nothing: `completed_line`). RunError
    when a runner has it or it was cancelled."""
    st = run_status(run_id)
    if st.pid is not None:
        raise RunError(f"run {st.run_id} is already running (pid {st.pid})")
    if st.status == "cancelled":
        raise RunError(f"run {st.run_id} was cancelled; it cannot be resumed")
    return st


def completed_line(st: RunStatus) -> str:
    return f"run {st.run_id} is completed already ({st.reason})"


def resume_detached(run_id: str, budgets: Budgets | None = None) -> str:
    """Resume run `run_id` (or a unique prefix) in a detached runner with `budgets` for
    its session; return "detached runner pid P; log: PATH", or `completed_line` for a
    completed run. RunError as `resumable` and `detach` say."""
    st = resumable(run_id)
    if st.status == "completed":
        return completed_line(st)
    return detach(st.run_id, budgets)


def start_detached(spec: RunSpec) -> str:
    """Create a run of `spec` and start its detached runner; return the run's id.
    RunError when the runner did not start (the run stays, resumable)."""
    rid = store_mod.create_run(spec)
    detach(rid)
    return rid


def detach(run_id: str, budgets: Budgets | None = None) -> str:
    """Start a detached runner for `run_id` (a whole id) and wait until it holds the
    run; return "detached runner pid P; log: PATH". RunError with its last log line
    when it did not start."""
    proc = spawn_worker(run_id, budgets)
    problem = wait_started(run_id, proc)
    if problem is not None:
        raise RunError(f"run {run_id}: the detached runner did not start: {problem}")
    return f"detached runner pid {proc.pid}; log: {log_path(run_id)}"
