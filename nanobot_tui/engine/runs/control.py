"""Who runs a run, and how to tell it to stop: the lock, pause/cancel, detaching.

The lock. A runner holds `fcntl.flock(LOCK_EX)` on runs/<id>/lock for as long as it
runs. A second runner is refused with the holder's pid; a runner that dies, however it
dies (SIGKILL included), loses the lock with its last file descriptor, so the next runner
simply takes it over: there is no stale-lock cleanup to get wrong. The lock file also
holds the holder's pid, for the error message.

Stopping. `nanobot pause` writes "pause" to runs/<id>/control and sends SIGUSR1;
`nanobot cancel` writes "cancel" and sends SIGTERM. The runner's handlers set a request
that the scheduler checks after every step: it finishes the step in hand, commits, and
ends with status paused or cancelled. A SIGTERM without a cancel request (a shutdown, a
plain `kill`) or a SIGINT stops the run the same way with status "stopped": resumable.

Detaching. `spawn_worker` starts `python -m nanobot_tui.engine.runs.worker RUN_ID`
in a new session (setsid: no controlling terminal, so a closed terminal or SSH session
sends it no SIGHUP) with stdin from /dev/null and stdout/stderr appended to
runs/<id>/runner.log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nanobot_tui.engine.runs import store as store_mod

WORKER_MODULE = "nanobot_tui.engine.runs.worker"
PAUSE, CANCEL, STOP = "pause", "cancel", "stop"


class RunLocked(Exception):
    """Another runner holds the run; str() is one line naming it."""

    def __init__(self, run_id: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"run {run_id} is already being run by {who}")
        self.pid = pid


class RunLock:
    """flock on runs/<id>/lock; `acquire()` raises RunLocked when it is held."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.path = store_mod.run_dir(run_id) / "lock"
        self.fd: int | None = None

    def holder(self) -> int | None:
        try:
            text = self.path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def acquire(self, patience: float = 0.5) -> None:
        """Take the lock or raise RunLocked. A holder is waited for `patience` seconds
        first, so that a watcher's momentary probe (`is_locked`) never turns a runner
        away."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RunLocked(self.run_id, self.holder()) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(run_id: str) -> bool:
    """Whether a runner holds the run (a probe: takes and drops a shared lock)."""
    path = store_mod.run_dir(run_id) / "lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


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
    run_id: str, budgets: Any = None, env: dict[str, str] | None = None
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
