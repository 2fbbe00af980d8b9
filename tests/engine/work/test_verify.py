"""The user's own checks on working copies: real commands, a real pytest on a tiny project."""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from nanobot_tui.engine.work.verify import CheckError, run_check, verify_edits
from nanobot_tui.engine.work.workcopy import Edit, Snapshot
from nanobot_tui.errors import UsageError

MATHX = """def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b


def neg(a):
    return -a
"""

TESTS = """from mathx import add, mul, neg, sub


def test_add():
    assert add(2, 3) == 5


def test_sub():
    assert sub(5, 3) == 2


def test_mul_and_neg():
    assert mul(2, 4) == 8
    assert neg(2) == -2
"""

PYTEST = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider"


@pytest.fixture(autouse=True)
def _bare_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks' own pytest loads no plugins (they see this environment: it is kept)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def snap(tmp_path: Path) -> Snapshot:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "mathx.py").write_text(MATHX)
    (repo / "test_mathx.py").write_text(TESTS)
    (repo / "README").write_text("mathx\n")
    return Snapshot.take(repo, tmp_path / "run")


def doc(step: int, def_line: int) -> Edit:
    return Edit("mathx.py", def_line + 1, def_line, '    """Doc."""\n', step)


GOOD = [doc(1, 1), doc(2, 5), doc(4, 9), doc(5, 13), Edit("README", 1, 1, "mathx!\n", 6)]


def test_the_one_bad_edit_among_good_ones_is_bisected_and_reverted(
    snap: Snapshot, tmp_path: Path
) -> None:
    bad = Edit("mathx.py", 6, 6, "    return a + b\n", 3)  # sub now adds: test_sub fails
    edits = [*GOOD[:2], bad, *GOOD[2:]]
    seen: list[str] = []
    report = verify_edits(snap, edits, PYTEST, tmp_path / "verify", 120, progress=seen.append)
    assert report.before.passed and not report.after.passed
    assert [r.edit for r in report.reverted] == [bad]
    assert "failed (exit 1)" in report.reverted[0].reason
    assert "test_sub" in report.reverted[0].output  # marked with the check's output tail
    assert report.final.passed and report.passed
    assert report.working.applied == tuple(GOOD)
    assert [r.edit for r in report.working.reverted] == [bad]
    assert report.working.root == tmp_path / "verify" / "final"
    text = (report.working.tree / "mathx.py").read_text()
    assert text.count('"""Doc."""') == 4 and "return a - b" in text
    # before, after, the bisection by halves, and the run that confirms the fix
    assert report.runs <= 2 + math.ceil(math.log2(len(edits))) + 1
    assert len(seen) == report.runs
    assert "1 reverted (steps 3)" in report.summary()
    assert sorted(os.listdir(tmp_path / "verify")) == ["final"]  # probes cleaned up


def test_two_bad_edits_are_both_reverted_until_the_check_passes(
    snap: Snapshot, tmp_path: Path
) -> None:
    bad_sub = Edit("mathx.py", 6, 6, "    return 0\n", 3)
    bad_neg = Edit("mathx.py", 14, 14, "    return a\n", 8)
    edits = [GOOD[0], bad_sub, *GOOD[1:4], bad_neg]
    report = verify_edits(snap, edits, PYTEST, tmp_path / "verify", 120)
    assert {r.edit for r in report.reverted} == {bad_sub, bad_neg}
    assert report.passed and report.working.applied == tuple(GOOD[:4])


def test_all_good_edits_pass_with_two_runs(snap: Snapshot, tmp_path: Path) -> None:
    report = verify_edits(snap, GOOD, PYTEST, tmp_path / "verify", 120)
    assert report.before.passed and report.after.passed and report.runs == 2
    assert report.reverted == () and report.working.applied == tuple(GOOD)


def test_a_check_that_fails_before_any_edit_is_not_bisected(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "mathx.py").write_text(MATHX.replace("a * b", "a * b + 1"))  # already broken
    (repo / "test_mathx.py").write_text(TESTS)
    snap = Snapshot.take(repo, tmp_path / "run")
    bad = Edit("mathx.py", 6, 6, "    return 0\n", 3)
    report = verify_edits(snap, [GOOD[0], bad], PYTEST, tmp_path / "verify", 120)
    assert report.baseline_failed and not report.after.passed
    assert report.runs == 2 and report.reverted == ()
    assert report.working.applied == (GOOD[0], bad)  # kept, unverified
    assert "already failed (exit 1)" in report.summary()


def test_compile_reverts_and_check_reverts_are_both_on_record(
    snap: Snapshot, tmp_path: Path
) -> None:
    broken = Edit("mathx.py", 10, 10, "    return a *\n", 4)  # does not compile
    bad = Edit("mathx.py", 2, 2, "    return a * b\n", 1)
    edits = [bad, doc(2, 5), broken, doc(5, 13)]
    report = verify_edits(snap, edits, PYTEST, tmp_path / "verify", 120)
    reasons = {r.edit.step: r.reason for r in report.working.reverted}
    assert set(reasons) == {1, 4}
    assert "does not compile" in reasons[4] and "failed" in reasons[1]
    assert [r.edit for r in report.reverted] == [bad]
    assert report.passed and report.working.applied == (doc(2, 5), doc(5, 13))


def test_run_check_keeps_the_exit_code_and_the_output_tail(tmp_path: Path) -> None:
    code = "import sys; print('x' * 10000); print('the end'); sys.exit(3)"
    result = run_check(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}", tmp_path, 60)
    assert result.exit_code == 3 and not result.passed and not result.timed_out
    assert result.output.endswith("the end\n") and len(result.output) <= 4096
    assert result.line().startswith("failed (exit 3)")
    ok = run_check("true", tmp_path, 60)
    assert ok.passed and ok.exit_code == 0


def test_run_check_keeps_the_environment_and_runs_no_shell(tmp_path: Path) -> None:
    os.environ["NANOBOT_VERIFY_PROBE"] = "seen"
    try:
        result = run_check("sh -c 'echo $NANOBOT_VERIFY_PROBE; echo *'", tmp_path, 60)
    finally:
        del os.environ["NANOBOT_VERIFY_PROBE"]
    assert result.output.startswith("seen\n")
    literal = run_check("echo $HOME '*'", tmp_path, 60)
    assert literal.output == "$HOME *\n"  # no shell expanded anything


def test_a_check_past_its_time_is_killed_and_fails_saying_so(tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    code = f"import time, pathlib; time.sleep(2); pathlib.Path({str(marker)!r}).touch()"
    # the sleeping grandchild is killed with its parent's process group
    cmd = f"sh -c {shlex.quote(f'{shlex.quote(sys.executable)} -c {shlex.quote(code)} & wait')}"
    result = run_check(cmd, tmp_path, 0.5)
    assert result.timed_out and not result.passed and result.exit_code is None
    assert result.line().startswith("timed out after")
    time.sleep(3)
    assert not marker.exists()


def test_a_missing_program_is_a_one_line_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CheckError, match="no program 'no-such-checker-x'") as err:
        run_check("no-such-checker-x --all", tmp_path, 10)
    assert isinstance(err.value, UsageError) and "\n" not in str(err.value)
    with pytest.raises(UsageError, match="empty"):
        run_check("  ", tmp_path, 10)
