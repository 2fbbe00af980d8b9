"""Creating a run has a bounded cost: a run too large for its store is refused in one
line before a byte is written, bad numbers are refused by the parser, a creation that
fails (here: the file-size limit of the process, which SQLite meets as a full disk)
leaves nothing behind, and what a killed creation left is removed by the next one."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

from nanobot_tui import paths
from nanobot_tui.cli import main as cli
from nanobot_tui.engine.runs.store.places import all_run_ids

SIMULATED = ("--sampler", "simulated:0.99", "--k", "1")


def runs_folder_entries() -> list[str]:
    root = paths.runs_dir()
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--disks", "30", "--max-steps", "10"), "needs 119,304,653 tree nodes, more than"),
        (("--disks", "64"), "more than a run can number"),
        (("--disks", "24", "--fanout", "3"), "take fewer steps or a larger --fanout"),
    ],
)
def test_a_run_too_large_is_refused_before_anything_is_written(
    args: tuple[str, ...], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", "hanoi", *SIMULATED, *args])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert runs_folder_entries() == []


@pytest.mark.parametrize(
    "args",
    [
        ("--k", "0"),
        ("--disks", "0"),
        ("--disks", "-3"),
        ("--words", "0"),
        ("--retries", "-1"),
        ("--fanout", "1"),
        ("--k", "two"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "hanoi", "--sampler", "simulated:0.99", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert f"argument {args[0]}:" in err
    assert runs_folder_entries() == []


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))
from nanobot_tui.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_creation_that_fails_writing_leaves_nothing_behind() -> None:
    # 20 disks: 116,510 tree rows, several MB: past the 1 MB the process may write.
    run = ["run", "hanoi", "--disks", "20", *SIMULATED, "--max-steps", "5"]
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, *run], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("nanobot: could not create run ")
    assert runs_folder_entries() == []
    # Without the limit, the same creation goes through.
    assert cli.main(run) == 1  # a 5-step budget: stopped, not solved
    assert len(all_run_ids()) == 1


def test_the_next_creation_removes_what_a_killed_one_left(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = paths.ensure(paths.runs_dir())
    old = time.time() - 3600
    killed = root / "20260101-000000-hanoi20-dead"  # killed while building its store
    killed.mkdir()
    for name in ("lock", "run.db.new", "run.db.new-wal", "run.db.new-shm"):
        (killed / name).write_bytes(b"x" * 1000)
        os.utime(killed / name, (old, old))
    early = root / "20260101-000000-hanoi20-earl"  # killed before it took its lock
    early.mkdir()
    os.utime(early, (old, old))
    busy = root / "20260101-000000-hanoi20-busy"  # being created right now
    busy.mkdir()
    (busy / "lock").write_text("")
    (busy / "run.db.new").write_bytes(b"x")
    os.utime(busy / "lock", (old, old))
    fd = os.open(busy / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert cli.main(["run", "hanoi", "--disks", "3", *SIMULATED]) == 0
        (done,) = all_run_ids()
        (root / done / "run.db.new-wal").write_bytes(b"x")  # killed between rename and unlink
        assert cli.main(["run", "hanoi", "--disks", "3", *SIMULATED]) == 0
    finally:
        os.close(fd)
    capsys.readouterr()
    assert len(all_run_ids()) == 2
    assert not killed.exists() and not early.exists()
    assert busy.exists()  # its lock is held: never touched
    assert not (root / done / "run.db.new-wal").exists()
