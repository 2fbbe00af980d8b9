"""Noticing that the terminal went away (an SSH connection dropped, a tmux pane killed, a
pty closed) so that the app can stop its servers and exit quietly.

A terminal can go four ways, and each is caught:

- SIGHUP (the usual one: the kernel or the shell hangs up on the foreground job); its
  default action would kill the process on the spot, servers left running;
- reading the terminal fails with EIO, which Textual's input thread would report as a
  crash, traceback and all;
- reading it gives end-of-file for ever (a pty whose other end closed, without a signal),
  on which Textual's input thread spins: a poll now and then sees the hang-up;
- writing to it fails (EIO, EPIPE), which would kill Textual's writer thread with a
  traceback and later block the app on a full queue.

`HangupDriver` is Textual's Linux/macOS driver with those failures routed to one
callback; writes after the terminal is gone are dropped.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from textual.driver import Driver

HANGUP_EVENTS = select.POLLHUP | select.POLLERR | select.POLLNVAL


def terminal_hung_up(fd: int) -> bool:
    """Whether the terminal on `fd` has hung up (its other end closed), without waiting."""
    poller = select.poll()
    try:
        poller.register(fd, select.POLLIN)
        return any(events & HANGUP_EVENTS for _fd, events in poller.poll(0))
    except (OSError, ValueError):
        return True


class DroppingFile:
    """A text file that stops writing, silently, once a write to it fails: the terminal is
    gone and nothing written now could be seen."""

    def __init__(self, file: IO[str], on_gone: Callable[[], None]) -> None:
        self._file = file
        self._on_gone = on_gone
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._file.write(text)
            except (OSError, ValueError):
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._file.flush()
            except (OSError, ValueError):
                self._lost()

    def _lost(self) -> None:
        self.gone = True
        self._on_gone()

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return True


def hangup_driver_class(base: type[Driver], on_gone: Callable[[], None]) -> type[Driver]:
    """`base` (Textual's LinuxDriver) with a lost terminal reported to `on_gone` (called
    from any thread, maybe more than once) instead of crashing."""

    class HangupDriver(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._gone_once = threading.Event()
            file = getattr(self, "_file", None)
            if file is not None:
                self._file = DroppingFile(file, self._terminal_gone)

        def _terminal_gone(self) -> None:
            if not self._gone_once.is_set():
                self._gone_once.set()
                on_gone()

        def _run_input_thread(self) -> None:
            try:
                self.run_input_thread()
            except OSError:
                self._terminal_gone()  # EIO: the terminal is gone; not a crash
            except BaseException:
                # A real failure: reported as Textual's own input thread does.
                import rich.traceback

                self._app.call_later(self._app.panic, rich.traceback.Traceback())

    HangupDriver.__name__ = HangupDriver.__qualname__ = f"Hangup{base.__name__}"
    return HangupDriver


def stdin_fd() -> int | None:
    """The terminal's file descriptor, or None when stdin is not a terminal."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream = sys.__stdin__
        if stream is not None and os.isatty(stream.fileno()):
            return stream.fileno()
    return None
