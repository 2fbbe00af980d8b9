"""A pid file held with flock: one holder at a time (a run's runner, the gateway), and a
look at who holds it that never keeps it from them.

    lock = PidLock(path)
    lock.acquire(patience=0.5)   # LockHeld(pid) when another process holds it
    ...                          # the file holds this process's pid meanwhile
    lock.release()               # emptied; closing the descriptor drops the flock

    holder(path)                 # the holder's pid (-1: unreadable), None when free

The look takes and drops a shared lock; an acquirer that meets it waits up to `patience`
seconds, so a momentary look never turns a holder away. flock, not the pid in the file,
decides: a holder that died (even by SIGKILL) holds nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

__all__ = ["LockHeld", "PidLock", "holder"]

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class LockHeld(Exception):
    """Another process holds the lock; `pid` is its pid (-1: unreadable)."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"{path} is held by pid {pid}")
        self.path = path
        self.pid = pid


class PidLock:
    """An exclusive flock on `path`, which holds the holder's pid while it is held."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, patience: float = 0.0) -> None:
        """Take the lock or raise LockHeld, after waiting up to `patience` seconds."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in _BUSY:
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    pid = _pid_in(fd)
                    os.close(fd)
                    raise LockHeld(self.path, pid) from None
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

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: Path) -> int | None:
    """The pid of the process holding `path` (-1 when the file does not say); None when
    no process holds it or there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _pid_in(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else -1
