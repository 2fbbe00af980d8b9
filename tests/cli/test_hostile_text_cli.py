"""grep and slice print a file's text without its terminal control sequences; a
backtracking pattern answers at once, and what a linear engine lacks is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_context_cli import run

HOSTILE = "one\x1b]0;PWNED\x07two\x1b[5;31mthree\x9b5mfour\x07"


def test_grep_and_slice_print_no_control_sequences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "h.txt").write_text(f"plain\n{HOSTILE}\n\tindented\n")
    run(capsys, "ingest", str(tmp_path / "h.txt"), "--name", "h", "--no-index")
    code, out, _ = run(capsys, "grep", "h", "two")
    assert code == 0 and out == "h.txt:2:onetwothreefour\n"
    code, out, _ = run(capsys, "slice", "h", "1", "3")
    assert code == 0 and out == "plain\nonetwothreefour\n\tindented\n"
    code, out, _ = run(capsys, "slice", "-n", "h", "2", "2")
    assert code == 0 and out == "2\th.txt:2\tonetwothreefour\n"


def test_grep_with_a_backtracking_pattern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text(("a" * 64 + "b\n") * 10 + "aaa\n")
    run(capsys, "ingest", str(tmp_path / "a.txt"), "--name", "vol", "--no-index")
    code, out, _ = run(capsys, "grep", "vol", "(a+)+$")
    assert code == 0 and out == "a.txt:11:aaa\n"
    code, out, err = run(capsys, "grep", "vol", "(a)\\1")
    assert code == 2 and out == ""
    assert err == (
        "nanobot: invalid pattern '(a)\\\\1': backreferences are not supported"
        " (patterns run in linear time, with RE2)\n"
    )


def test_a_newline_in_a_file_name_cannot_break_file_line_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    root = tmp_path / "names"
    root.mkdir()
    (root / "evil\nfake.txt:9:forged").write_text("needle here\n")
    (root / "tab\there\x1b[31m.txt").write_text("needle too\n")
    run(capsys, "ingest", str(root), "--name", "names")
    code, out, _ = run(capsys, "grep", "names", "needle")
    assert code == 0 and out == (
        "evil\\nfake.txt:9:forged:1:needle here\ntab\\there\\x1b[31m.txt:1:needle too\n"
    )
    code, out, _ = run(capsys, "slice", "-n", "names", "1", "1")
    assert code == 0 and out == "1\tevil\\nfake.txt:9:forged:1\tneedle here\n"
    code, out, _ = run(capsys, "search", "names", "needle")
    assert code == 0 and "evil\\nfake.txt:9:forged:1-1" in out
    assert all("\x1b" not in line and line.count("needle") <= 1 for line in out.splitlines())
    code, out, _ = run(capsys, "grep", "--json", "names", "needle")
    files = [h["file"] for h in json.loads(out)["hits"]]
    assert files == ["evil\nfake.txt:9:forged", "tab\there\x1b[31m.txt"]
