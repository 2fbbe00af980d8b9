"""The commands of durable runs: a detached run outlives its terminal and `status`
follows it; pause, resume and cancel from the command line; runs, traces, attach, and
one-line errors for unknown ids. A test that acts on a run in the middle holds its runner
still meanwhile (see tests/engine/runs/runner_hold.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.runs.store.places import all_run_ids
from tests.engine.runs.runner_hold import HANG_GUARD_S, held_when, hold, let_go, wait_pending


def nanobot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanobot_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def status_json(run_id: str) -> dict[str, Any]:
    out = nanobot("status", run_id, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(run_id: str, predicate: Any, timeout: float = HANG_GUARD_S) -> dict[str, Any]:
    """`nanobot status RUN --json` once `predicate` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        st = status_json(run_id)
        if predicate(st):
            return st
        assert time.monotonic() < deadline, f"condition not met: {st}"
        time.sleep(0.1)


def runner_pid(output: str) -> int:
    """The pid in a detached start's first line, "detached runner pid P; log: PATH"."""
    found = re.search(r"detached runner pid (\d+);", output)
    assert found, output
    return int(found[1])


def start(*args: str) -> subprocess.Popen[str]:
    """`nanobot ARGS` started, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "nanobot_tui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


@contextmanager
def in_a_terminal(
    args: list[str], on_output: Callable[[str], object] = lambda _: None
) -> Iterator[tuple[int, str]]:
    """Run `nanobot ARGS` as the session leader of a fresh pseudo-terminal and read what
    it prints until it exits (`on_output` sees all of it so far after every read); yield
    (its pid, its output), then hang the terminal up (as a closed SSH session does)."""
    pid, fd = os.forkpty()
    if pid == 0:  # the child: its own session, the pty its controlling terminal
        try:
            os.execv(sys.executable, [sys.executable, "-m", "nanobot_tui", *args])
        finally:
            os._exit(127)
    try:
        chunks = []
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not data:
                break
            chunks.append(data)
            on_output(b"".join(chunks).decode(errors="replace"))
        _, code = os.waitpid(pid, 0)
        output = b"".join(chunks).decode(errors="replace")
        assert os.waitstatus_to_exitcode(code) == 0, output
        yield pid, output
    finally:
        os.close(fd)  # the hangup: SIGHUP for whatever is left in that terminal's session


def test_a_detached_run_outlives_its_terminal_and_status_follows_it() -> None:
    held: list[int] = []

    def hold_the_runner(output: str) -> None:  # from the moment the terminal names it
        if not held and "detached runner pid" in output:
            held.append(runner_pid(output))
            hold(held[0])

    args = ["run", "hanoi", "--disks", "16", "--sampler", "simulated:0.99", "--detach"]
    try:
        with in_a_terminal(args, hold_the_runner) as (terminal_pid, output):
            run_id = output.strip().splitlines()[-1].strip()  # the run id is the last line
            assert "hanoi16" in run_id and held
        worker = held[0]
        # The terminal has exited and hung up while the runner was held mid-run: it is
        # still there, in a session of its own, not the terminal's.
        assert worker != terminal_pid and psutil.pid_exists(worker)
        assert os.getsid(worker) == worker
        let_go(worker)
        with held_when(run_id, lambda st: st.status == "running") as seen:
            assert seen.pid == worker
            st = status_json(run_id)
            assert st["status"] == "running" and st["pid"] == worker
            assert 0 <= st["steps_done"] < st["steps_total"] == 65_535
    finally:
        for pid in held:
            let_go(pid)
    st = wait_for(run_id, lambda st: st["status"] != "running")
    assert st["status"] == "completed", st
    assert st["reason"] == "solved" and st["steps_done"] == 65_535 and st["errors"] == 0
    assert st["pid"] is None and st["eta_s"] == 0.0
    assert st["nodes"]["completed"] > 65_535 and st["votes"]["mean"] >= 3


def test_pause_resume_and_cancel_from_the_command_line() -> None:
    out = nanobot("run", "hanoi", "--disks", "19", "--sampler", "simulated:0.99", "--detach")
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().splitlines()[-1]
    worker = runner_pid(out.stdout)
    with held_when(run_id, lambda st: st.steps_done > 0) as seen:
        assert seen.pid == worker
        pausing = start("pause", run_id[:-2])  # a unique prefix will do
        wait_pending(worker, signal.SIGUSR1)
    out_text, err_text = pausing.communicate(timeout=HANG_GUARD_S)
    assert pausing.returncode == 0 and "paused" in out_text, err_text
    st = status_json(run_id)
    assert st["status"] == "paused" and st["pid"] is None
    assert 0 < st["steps_done"] < st["steps_total"]
    at = st["steps_done"]

    resumed = nanobot("resume", run_id, "--detach")
    assert resumed.returncode == 0 and resumed.stdout.strip().splitlines()[-1] == run_id
    worker = runner_pid(resumed.stdout)
    with held_when(run_id, lambda st: st.steps_done > at) as seen:
        assert seen.pid == worker
        st = status_json(run_id)
        assert st["status"] == "running" and st["steps_done"] > at
        assert nanobot("resume", run_id).returncode == 1  # a runner is on it already
        listed = json.loads(nanobot("runs", "--json").stdout)
        assert [r["status"] for r in listed if r["id"] == run_id] == ["running"]
        cancelling = start("cancel", run_id)
        wait_pending(worker, signal.SIGTERM)
    out_text, err_text = cancelling.communicate(timeout=HANG_GUARD_S)
    assert cancelling.returncode == 0 and "cancelled" in out_text, err_text
    st = status_json(run_id)
    assert st["status"] == "cancelled" and st["pid"] is None
    again = nanobot("resume", run_id)
    assert again.returncode == 1 and "cancelled" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_cancel_without_a_runner_just_records_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "hanoi", "--disks", "12", "--sampler", "simulated:0.99",
                     "--max-steps", "100", "--json"]) == 1  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run_id = result["run_id"]
    assert result["status"] == "stopped" and result["steps"] == 100
    assert cli.main(["cancel", run_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert cli.main(["status", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"


def test_run_json_traces_and_resume_in_the_foreground(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["run", "hanoi", "--disks", "8", "--sampler", "simulated:0.99", "--max-steps", "200",
         "--json"]
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and out["status"] == "stopped" and "budget" in out["stopped"]
    run_id = out["run_id"]
    assert cli.main(["resume", run_id, "--json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("steps", "errors", "solved", "k", "votes_per_step", "mean_red_flags_per_step"):
        assert key in done
    assert done["steps"] == 255 and done["solved"] and done["errors"] == 0
    assert done["k"] == 2  # k_min(0.99, 200 steps planned, 0.95)
    assert cli.main(["traces", "--last", "3"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["step"] for x in lines] == [252, 253, 254] and lines[0]["status"] == "completed"
    assert cli.main(["traces", "--run", run_id, "--last", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 254
    assert cli.main(["resume", run_id]) == 0  # completed already: says so
    assert "completed already" in capsys.readouterr().out
    assert cli.main(["runs"]) == 0 and run_id in capsys.readouterr().out


@pytest.mark.parametrize("command", ["status", "resume", "pause", "cancel", "attach", "export"])
def test_unknown_ids_are_one_line_errors(
    command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = [command, "no-such-run"] + ([str(tmp_path / "x.json")] if command == "export" else [])
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nanobot: no run 'no-such-run' (see `nanobot runs`)"]


def test_attach_opens_the_app_on_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "hanoi", "--disks", "4", "--sampler", "simulated:0.99"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    opened: list[str | None] = []

    class FakeApp:
        def __init__(self, config: Any, *, attach_run: str | None = None) -> None:
            opened.append(attach_run)

        def run(self) -> None:
            opened.append("ran")

    import nanobot_tui.ui.app

    monkeypatch.setattr(nanobot_tui.ui.app, "NanobotApp", FakeApp)
    assert cli.main(["attach", run_id[:12]]) == 0
    assert opened == [run_id, "ran"]


def test_ctrl_c_stops_a_foreground_run_cleanly_and_resume_goes_on() -> None:
    proc = start("run", "hanoi", "--disks", "19", "--sampler", "simulated:0.99")
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while not all_run_ids():  # the run is created before it runs
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        [run_id] = all_run_ids()
        with held_when(run_id, lambda st: st.status == "running" and st.steps_done > 0) as seen:
            assert seen.pid == proc.pid  # a foreground run: the command is its runner
            proc.send_signal(signal.SIGINT)
            wait_pending(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err  # not solved (yet): a clean stop, not a traceback
    assert "Traceback" not in err and out.strip().splitlines()[-1] == run_id
    st = status_json(run_id)
    assert st["status"] == "stopped" and "SIGINT" in st["reason"] and st["pid"] is None
    before = st["steps_done"]
    resumed = nanobot("resume", run_id, "--max-steps", "1000", "--json")
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["status"] == "stopped" and result["steps"] == before + 1000
