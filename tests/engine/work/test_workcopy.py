"""Snapshots, working copies, the compile bisection, diff, apply and undo, on real files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanobot_tui.engine.work.workcopy import (
    Edit,
    OverlappingEdits,
    Snapshot,
    UserFilesChanged,
    WorkCopyError,
    WorkingCopy,
    apply,
    apply_to_text,
    build,
    diff,
    undo,
)
from nanobot_tui.errors import UsageError

CALC = """def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b
"""


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "calc.py").write_text(CALC)
    (root / "notes.txt").write_text("one\ntwo\nthree")  # no final line break
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "build").mkdir()  # a package named build below the top is kept
    (root / "pkg" / "build" / "x.py").write_text("X = 1\n")
    for junk in (".git", "__pycache__", "node_modules", ".venv", "build", ".pytest_cache"):
        (root / junk).mkdir()
        (root / junk / "junk.py").write_text("junk\n")
    (root / "myenv").mkdir()  # a virtual environment under any name
    (root / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "myenv" / "site.py").write_text("x\n")
    return root


@pytest.fixture
def snap(tmp_path: Path) -> Snapshot:
    return Snapshot.take(_project(tmp_path / "repo"), tmp_path / "run")


def doc(step: int, line: int, text: str = '"""Doc."""') -> Edit:
    """Insert a docstring after the `def` on `line` (an insertion before line + 1)."""
    return Edit("calc.py", line + 1, line, f"    {text}\n", step)


def test_manifest_lists_the_copied_files_and_skips_vcs_caches_and_venvs(tmp_path: Path) -> None:
    seen: list[int] = []
    snap = Snapshot.take(_project(tmp_path / "repo"), tmp_path / "run", progress=seen.append)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    paths = [f["path"] for f in manifest["files"]]
    assert sorted(paths) == ["calc.py", "notes.txt", "pkg/__init__.py", "pkg/build/x.py"]
    assert manifest["source"] == str((tmp_path / "repo").resolve())
    calc = next(f for f in manifest["files"] if f["path"] == "calc.py")
    assert calc["size"] == len(CALC)
    assert calc["sha256"] == hashlib.sha256(CALC.encode()).hexdigest()
    assert seen == [1, 2, 3, 4]
    assert (snap.base / "calc.py").read_text() == CALC
    assert not (snap.base / ".git").exists() and not (snap.base / "myenv").exists()
    assert Snapshot.open(tmp_path / "run").files == snap.files


def test_links_out_of_the_tree_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n")
    repo = _project(tmp_path / "repo")
    (repo / "out.txt").symlink_to(outside)
    (repo / "in.txt").symlink_to(repo / "notes.txt")  # absolute, but inside
    snap = Snapshot.take(repo, tmp_path / "run")
    assert not (snap.base / "out.txt").exists() and not (snap.base / "out.txt").is_symlink()
    link = snap.base / "in.txt"
    assert not os.path.isabs(os.readlink(link))  # points at the copy, not the user's file
    assert link.resolve() == (snap.base / "notes.txt").resolve()
    assert "in.txt" not in snap.files  # a link is never edited


def test_a_snapshot_inside_its_own_source_does_not_copy_itself(tmp_path: Path) -> None:
    repo = _project(tmp_path / "repo")
    snap = Snapshot.take(repo, repo / "runs" / "r1")
    assert not (snap.base / "runs" / "r1").exists()  # the empty "runs" folder is copied
    assert all(not p.startswith("runs/") for p in snap.files)


def test_line_breaks_and_insertion_order_are_kept() -> None:
    crlf = "a\r\nb\r\nc"
    edits = [Edit("f", 2, 1, "x\n", 1), Edit("f", 2, 1, "y", 2), Edit("f", 3, 3, "C\nD", 3)]
    assert apply_to_text(crlf, edits) == "a\r\nx\r\ny\r\nb\r\nC\r\nD"
    assert apply_to_text("a\nb", [Edit("f", 3, 2, "c", 1)]) == "a\nb\nc\n"
    assert apply_to_text("a\nb\n", [Edit("f", 1, 1, "", 1)]) == "b\n"  # a deletion


def test_a_source_that_is_not_a_folder_is_a_one_line_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"not a folder to snapshot: .*nope"):
        Snapshot.take(tmp_path / "nope", tmp_path / "run")


def test_build_applies_edits_bottom_up_and_leaves_base_alone(
    snap: Snapshot, tmp_path: Path
) -> None:
    edits = [doc(1, 1), doc(2, 5), Edit("calc.py", 10, 10, "    return a * b  # times", 3)]
    wc = build(snap, edits, tmp_path / "wc")
    text = (wc.tree / "calc.py").read_text()
    assert text.splitlines()[1] == '    """Doc."""'
    assert text.splitlines()[6] == '    """Doc."""'
    assert text.endswith("return a * b  # times\n")  # the span's line break was kept
    assert (snap.base / "calc.py").read_text() == CALC
    assert wc.applied == tuple(edits) and wc.reverted == () and wc.changed == ("calc.py",)
    assert (wc.tree / "notes.txt").read_text() == "one\ntwo\nthree"
    assert WorkingCopy.open(tmp_path / "wc") == wc


def test_overlapping_edits_are_refused_naming_both_steps(snap: Snapshot, tmp_path: Path) -> None:
    edits = [Edit("calc.py", 1, 2, "x = 1\n", 4), Edit("calc.py", 2, 3, "y = 2\n", 9)]
    with pytest.raises(OverlappingEdits, match="steps 4 and 9"):
        build(snap, edits, tmp_path / "wc")
    inside = [Edit("calc.py", 1, 3, "x = 1\n", 4), Edit("calc.py", 3, 2, "y = 2\n", 7)]
    with pytest.raises(OverlappingEdits, match="steps 4 and 7"):
        build(snap, inside, tmp_path / "wc")
    # Touching spans and an insertion right before a span are fine.
    apply_to_text(CALC, [Edit("calc.py", 1, 2, "a\n", 1), Edit("calc.py", 3, 2, "b\n", 2)])


@pytest.mark.parametrize("path", ["../x.py", "/etc/passwd", "pkg/../../x.py", "a\\b.py", ""])
def test_an_edit_path_that_escapes_the_tree_is_refused(path: str) -> None:
    with pytest.raises(WorkCopyError, match="not a relative path inside the tree"):
        Edit(path, 1, 1, "x\n", 1)


def test_an_edit_of_a_file_the_snapshot_lacks_is_refused(snap: Snapshot, tmp_path: Path) -> None:
    with pytest.raises(WorkCopyError, match=r"\.git/junk\.py is not a file of the snapshot"):
        build(snap, [Edit(".git/junk.py", 1, 1, "x\n", 3)], tmp_path / "wc")


def test_an_edit_that_breaks_compilation_is_found_and_reverted(
    snap: Snapshot, tmp_path: Path
) -> None:
    bad = Edit("calc.py", 6, 6, "    return a -\n", 2)  # does not parse
    good = [doc(1, 1), doc(3, 9), Edit("pkg/__init__.py", 1, 0, "VERSION = 1\n", 4)]
    edits = [good[0], bad, good[1], good[2]]
    wc = build(snap, edits, tmp_path / "wc")
    assert wc.applied == tuple(good)
    assert [r.edit for r in wc.reverted] == [bad]
    assert "does not compile" in wc.reverted[0].reason
    text = (wc.tree / "calc.py").read_text()
    compile(text, "calc.py", "exec")
    assert text.count('"""Doc."""') == 2 and "return a - b" in text
    assert wc.changed == ("calc.py", "pkg/__init__.py")


def test_diff_is_a_git_style_patch_that_git_applies(snap: Snapshot, tmp_path: Path) -> None:
    edits = [doc(1, 1), Edit("notes.txt", 3, 3, "THREE\n", 2)]
    wc = build(snap, edits, tmp_path / "wc")
    patch = diff(snap, wc)
    assert patch.startswith("diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n")
    assert '+    """Doc."""\n' in patch
    assert "-three\n\\ No newline at end of file\n+THREE\n" in patch
    assert diff(snap, wc) == patch  # stable
    # git itself accepts it and produces the working copy's bytes
    target = tmp_path / "gitcheck"
    subprocess.run(["cp", "-r", str(snap.base), str(target)], check=True)
    (tmp_path / "p.diff").write_text(patch)
    subprocess.run(
        ["git", "apply", "--unsafe-paths", str(tmp_path / "p.diff")],
        cwd=target,
        check=True,
        capture_output=True,
    )
    for path in wc.changed:
        assert (target / path).read_bytes() == (wc.tree / path).read_bytes()


def test_apply_then_undo_restores_the_bytes_exactly(snap: Snapshot, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    os.chmod(repo / "calc.py", 0o640)
    before = {p: (repo / p).read_bytes() for p in snap.files}
    wc = build(snap, [doc(1, 1), Edit("notes.txt", 1, 1, "ONE\n", 2)], tmp_path / "wc")
    written = apply(snap, wc, repo, tmp_path / "backup")
    assert written == ["calc.py", "notes.txt"]
    assert (repo / "calc.py").read_bytes() == (wc.tree / "calc.py").read_bytes()
    assert (repo / "notes.txt").read_text() == "ONE\ntwo\nthree"
    assert (repo / "calc.py").stat().st_mode & 0o777 == 0o640
    assert undo(tmp_path / "backup", repo) == ["calc.py", "notes.txt"]
    assert {p: (repo / p).read_bytes() for p in snap.files} == before
    assert (repo / "calc.py").stat().st_mode & 0o777 == 0o640
    with pytest.raises(WorkCopyError, match="already undone"):
        undo(tmp_path / "backup", repo)


def test_apply_is_refused_when_a_user_file_changed_since_the_snapshot(
    snap: Snapshot, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    wc = build(snap, [doc(1, 1), Edit("notes.txt", 1, 1, "ONE\n", 2)], tmp_path / "wc")
    (repo / "calc.py").write_text(CALC + "# mine\n")
    (repo / "notes.txt").unlink()
    with pytest.raises(UserFilesChanged) as err:
        apply(snap, wc, repo, tmp_path / "backup")
    assert str(err.value) == (
        "apply refused: 2 files (calc.py, notes.txt) changed since the snapshot"
    )
    assert (repo / "calc.py").read_text() == CALC + "# mine\n"  # nothing written
    assert not (tmp_path / "backup").exists()


def test_apply_is_not_refused_for_files_it_does_not_change(snap: Snapshot, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    wc = build(snap, [doc(1, 1)], tmp_path / "wc")
    (repo / "notes.txt").write_text("the user's own work\n")
    assert apply(snap, wc, repo, tmp_path / "backup") == ["calc.py"]


def test_undo_is_refused_when_the_user_changed_an_applied_file(
    snap: Snapshot, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    wc = build(snap, [doc(1, 1)], tmp_path / "wc")
    apply(snap, wc, repo, tmp_path / "backup")
    (repo / "calc.py").write_text("edited after the apply\n")
    with pytest.raises(
        UserFilesChanged, match=r"undo refused: 1 file \(calc\.py\) changed since the apply"
    ):
        undo(tmp_path / "backup", repo)
    assert (repo / "calc.py").read_text() == "edited after the apply\n"


def test_many_changed_files_are_named_five_and_a_count(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(8):
        (repo / f"m{i}.py").write_text(f"X = {i}\n")
    snap = Snapshot.take(repo, tmp_path / "run")
    wc = build(
        snap, [Edit(f"m{i}.py", 1, 1, f"X = {i + 1}\n", i) for i in range(8)], tmp_path / "wc"
    )
    for i in range(8):
        (repo / f"m{i}.py").write_text("changed\n")
    with pytest.raises(
        UserFilesChanged, match=r"8 files \(m0.py, m1.py, m2.py, m3.py, m4.py and 3 more\)"
    ):
        apply(snap, wc, repo, tmp_path / "backup")


def test_a_working_copy_builds_with_a_python_that_runs_it(snap: Snapshot, tmp_path: Path) -> None:
    wc = build(snap, [Edit("calc.py", 2, 2, "    return a + b + 0\n", 1)], tmp_path / "wc")
    out = subprocess.run(
        [sys.executable, "-c", "import calc; print(calc.add(2, 3))"],
        cwd=wc.tree,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "5\n"
