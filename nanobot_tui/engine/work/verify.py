"""The user's own checks on working copies: `--verify "CMD"` before and after the edits.

`run_check` runs one command (no shell) in a folder with a time limit and keeps the tail
of its output. `verify_edits` runs it on a pristine copy of the snapshot (before) and on a
copy with every edit (after). If it passed before and fails after, the ordered edit list
is bisected by halves, each probe a fresh working copy built with `build`, to the first
edit whose prefix fails: that edit is reverted and marked with the check's output, and
the search repeats until the check passes again (about log2(n) + 1 runs per culprit). A
check that already fails before is reported as such and nothing is bisected: the edits
stay, unverified.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from nanobot_tui.engine.work.workcopy import (
    Edit,
    Reverted,
    Snapshot,
    WorkCopyError,
    WorkingCopy,
    build,
    first_failing,
)
from nanobot_tui.errors import UsageError
from nanobot_tui.text import printable

TAIL_BYTES = 4096


class CheckError(UsageError):
    """A `--verify` command that cannot be run at all."""


@dataclass(frozen=True)
class CheckResult:
    """One run of a check: its exit code (None if it ran out of time), how long it took,
    and the last ~4 KB of its output (stdout and stderr together, printable)."""

    cmd: str
    exit_code: int | None
    seconds: float
    output: str
    timed_out: bool = False

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def line(self) -> str:
        """How it went, in a few words."""
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        if self.passed:
            return f"passed in {self.seconds:.1f} s"
        return f"failed (exit {self.exit_code}) in {self.seconds:.1f} s"


def _argv(cmd: str) -> list[str]:
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise CheckError(f"cannot read the check command {cmd!r}: {exc}") from None
    if not argv:
        raise CheckError("the check command is empty")
    return argv


def _kill_group(pid: int) -> None:
    """End the check and anything it left running (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(out: IO[bytes]) -> str:
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - TAIL_BYTES))
    data = out.read()
    text = printable(data.decode("utf-8", "replace"))
    if size > TAIL_BYTES and "\n" in text:
        text = text.split("\n", 1)[1]  # drop the partial first line
    return text


def run_check(cmd: str, cwd: Path, timeout: float) -> CheckResult:
    """Run `cmd` (split as a shell would, but run without one) in `cwd` with this
    process's environment; a run past `timeout` seconds is killed and fails."""
    argv = _argv(cmd)
    if not cwd.is_dir():
        raise CheckError(f"no folder to run the check in: {cwd}")
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise CheckError(f"no program {argv[0]!r} to run the check {cmd!r}") from None
        except PermissionError:
            raise CheckError(f"cannot run {argv[0]!r} for the check {cmd!r}") from None
        timed_out = False
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out, code = True, None
        finally:
            _kill_group(proc.pid)  # a timeout, an interrupt, or children left behind
            proc.wait()
        seconds = time.monotonic() - start
        return CheckResult(cmd, code, seconds, _tail(out), timed_out)


@dataclass(frozen=True)
class VerifyReport:
    """What the check said before and after the edits, and what it made us revert.

    `final` is the check's result on `working`, the copy to keep: it passes, or it has no
    edits left, or the check failed before any edit (`baseline_failed`), in which case the
    edits are kept unverified. `reverted` are the edits the check reverted (the compile
    check's are in `working.reverted` with them)."""

    cmd: str
    before: CheckResult
    after: CheckResult
    final: CheckResult
    working: WorkingCopy
    reverted: tuple[Reverted, ...]
    runs: int

    @property
    def baseline_failed(self) -> bool:
        return not self.before.passed

    @property
    def passed(self) -> bool:
        return self.final.passed

    def summary(self) -> str:
        """One line for a status or a log."""
        if self.baseline_failed:
            return (
                f"{self.cmd!r} already {self.before.line()} before any edit, so the edits "
                f"are not verified (after them it {self.after.line()})"
            )
        if self.after.passed:
            return f"{self.cmd!r} passed before and after {len(self.working.applied)} edits"
        steps = ", ".join(str(r.edit.step) for r in self.reverted)
        return (
            f"{self.cmd!r} passed before and {self.after.line()} after the edits; "
            f"{len(self.reverted)} reverted (steps {steps}) in {self.runs} runs; "
            f"now it {self.final.line()}"
        )


def verify_edits(
    snapshot: Snapshot,
    edits: Sequence[Edit],
    cmd: str,
    work_dir: Path,
    timeout: float,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Run `cmd` before and after `edits` and revert the edits that break it (see the
    module's notes). Copies are built under `work_dir`; the one kept is `work_dir/final`."""
    _argv(cmd)  # a command that cannot be read fails before any copy is made
    if work_dir.exists() and any(work_dir.iterdir()):
        raise WorkCopyError(f"verify folder is not empty: {work_dir}")
    probe = _Prober(snapshot, cmd, work_dir, timeout, progress)
    before = probe.run([], "before")
    after_wc = build(snapshot, edits, work_dir / "after")
    after = probe.check(after_wc, "after")
    if not before.passed or after.passed:
        return probe.report(before, after, after, after_wc, after_wc.reverted, ())
    kept = list(after_wc.applied)
    reverted: list[Reverted] = []
    last, last_wc = after, after_wc
    while kept and not last.passed:
        failing = {len(kept): last}  # prefix length -> its failing result
        idx = first_failing(kept, functools.partial(probe.record, failing=failing))
        bad = failing[idx + 1]
        reverted.append(Reverted(kept[idx], f"{cmd!r} {bad.line()}", bad.output))
        del kept[idx]
        _remove(last_wc)
        if not kept:
            last, last_wc = before, build(snapshot, [], work_dir / f"probe-{probe.n:03d}")
            break
        last_wc = build(snapshot, kept, work_dir / f"probe-{probe.n:03d}")
        last = probe.check(last_wc, f"{len(kept)} edits")
    every = after_wc.reverted + tuple(reverted) + last_wc.reverted
    return probe.report(before, after, last, last_wc, every, tuple(reverted))


def _remove(wc: WorkingCopy) -> None:
    shutil.rmtree(wc.root, ignore_errors=True)


class _Prober:
    """Builds copies under one folder and runs the check on them, counting the runs."""

    def __init__(
        self,
        snapshot: Snapshot,
        cmd: str,
        work_dir: Path,
        timeout: float,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.snapshot, self.cmd, self.work_dir = snapshot, cmd, work_dir
        self.timeout, self.progress = timeout, progress
        self.n = 0  # runs so far, also naming each probe's folder

    def check(self, wc: WorkingCopy, label: str) -> CheckResult:
        self.n += 1
        result = run_check(self.cmd, wc.tree, self.timeout)
        if self.progress is not None:
            self.progress(f"check {self.n} ({label}): {result.line()}")
        return result

    def run(self, edits: list[Edit], label: str) -> CheckResult:
        """Build a throwaway copy with `edits`, run the check on it, remove it."""
        wc = build(self.snapshot, edits, self.work_dir / f"probe-{self.n:03d}")
        try:
            return self.check(wc, label)
        finally:
            _remove(wc)

    def record(self, edits: list[Edit], failing: dict[int, CheckResult]) -> bool:
        result = self.run(edits, f"first {len(edits)} edits")
        if not result.passed:
            failing[len(edits)] = result
        return result.passed

    def report(
        self,
        before: CheckResult,
        after: CheckResult,
        final: CheckResult,
        wc: WorkingCopy,
        every: tuple[Reverted, ...],
        reverted: tuple[Reverted, ...],
    ) -> VerifyReport:
        """The report, with the kept copy moved to `work_dir/final` and `every` reverted
        edit (the compile check's, then the check's) on its record."""
        root = self.work_dir / "final"
        os.replace(wc.root, root)
        kept = replace(wc, root=root, reverted=every)
        kept.save()
        return VerifyReport(self.cmd, before, after, final, kept, reverted, self.n)
