"""pidlock: one holder at a time, the holder's pid for a look, and nothing held once the
holder is gone (even killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nanobot_tui.pidlock import LockHeld, PidLock, holder

HOLD = (
    "import sys, time; from pathlib import Path; from nanobot_tui.pidlock import PidLock; "
    "PidLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"
)


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    assert holder(path) is None  # no file: nobody
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert holder(path) == child.pid
        with pytest.raises(LockHeld) as caught:
            PidLock(path).acquire(patience=0.1)
        assert caught.value.pid == child.pid
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # A killed holder holds nothing, whatever its file still says.
    assert holder(path) is None
    with PidLock(path) as lock:
        assert lock.fd is not None and holder(path) == os.getpid()
        assert path.read_text().strip() == str(os.getpid())
    assert path.read_text() == ""
