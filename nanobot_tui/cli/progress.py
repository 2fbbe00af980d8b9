"""A one-line progress bar for the terminal: redrawn at most 10 times a second, with rate
and ETA, and silent when stderr is not a terminal (scripts, CI, --json)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from nanobot_tui.units import format_seconds

BAR_WIDTH = 24


class TerminalProgress:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last_draw = 0.0
        self._phase = ""
        self._phase_started = time.monotonic()
        self._width = 0

    def update(self, phase: str, done: int, total: int, detail: str = "") -> None:
        """Draw `done` of `total` (`total` <= 0: not known yet, so a count and no bar)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if phase != self._phase:
            self._phase, self._phase_started = phase, now
        elif now - self._last_draw < 0.1 and (total <= 0 or done < total):
            return
        self._last_draw = now
        if total <= 0:
            self._draw(f"{phase:<6} {done:,} {detail}")
            return
        fraction = done / total if total else 0.0
        filled = int(fraction * BAR_WIDTH)
        elapsed = now - self._phase_started
        eta = ""
        if 0 < done < total and elapsed > 0.5:
            eta = f" ETA {format_seconds(elapsed / done * (total - done))}"
        bar = "█" * filled + "░" * (BAR_WIDTH - filled)
        self._draw(f"{phase:<6} {bar} {done}/{total}{eta} {detail}")

    def _draw(self, text: str) -> None:
        line = text[:100]
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
