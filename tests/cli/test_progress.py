"""The terminal progress line: a count while the total is not known, a bar once it is."""

from __future__ import annotations

import io

from nanobot_tui.cli.progress import TerminalProgress


def test_an_unknown_total_shows_a_count_and_a_known_one_a_bar() -> None:
    out = io.StringIO()
    bar = TerminalProgress(out, enabled=True)
    bar.update("copy", 7, 0, "files")
    assert out.getvalue().strip() == "copy   7 files"
    bar.update("steps", 3, 12, "functions")
    last = out.getvalue().split("\r")[-1]
    assert "3/12 functions" in last and "█" in last and "/0" not in out.getvalue()
    bar.finish()
    assert out.getvalue().endswith("\r")


def test_a_count_without_a_total_is_not_redrawn_for_every_file() -> None:
    out = io.StringIO()
    bar = TerminalProgress(out, enabled=True)
    for n in range(1, 2001):
        bar.update("copy", n, 0, "files")
    assert 1 <= out.getvalue().count("\r") < 2000
