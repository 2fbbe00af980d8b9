"""A grep's hits as columns (hits.py): rg's output parsed in bulk, a GrepHit built when
one is read, and the result the same Sequence of hits on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nanobot_tui.engine.context import ripgrep
from nanobot_tui.engine.context.hits import HIT_CHARS, GrepHit, GrepHits, RowTexts
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.volume import Volume
from tests.engine.context.test_grep_engines import python_grep
from tests.engine.context.trees import write_tree

# More than one _BLOCK (256 KB) of rg output, so that rows are parsed block by block.
N_DEFS = 24_000
LONG = "é" * (HIT_CHARS + 50)
FILES = {
    "a/many.py": "".join(
        f"def f{i}(x): return {i}  # : colon\n" + ("pass\n" if i % 3 else "") for i in range(N_DEFS)
    ),
    "b/few.py": f"def g(y):\n    {LONG} def h(\n\ndef k():\n",
}


@pytest.fixture
def tree(tmp_path: Path, nanobot_home: Path) -> Iterator[tuple[Path, Volume]]:
    src = write_tree(tmp_path / "src", FILES)
    ingest(src, "many", index=False)
    with Volume.open("many") as v:
        yield src, v


def as_tuples(hits: GrepHits) -> list[tuple[str, int, int, str]]:
    return [(h.file, h.fline, h.vline, h.text) for h in hits]


def test_many_hits_are_columns_that_read_as_a_list(tree: tuple[Path, Volume], engine: str) -> None:
    src, v = tree
    want = python_grep(src, v, "def \\w+\\(")
    hits = v.grep("def \\w+\\(", max_hits=10**6).hits
    assert isinstance(hits, GrepHits) and len(hits) == len(want) == N_DEFS + 3
    assert hits.vlines.tolist() == [vline for _, _, vline, _ in want]  # no hit built
    assert as_tuples(hits) == want
    assert hits == [GrepHit(*w) for w in want] and [GrepHit(*w) for w in want] == hits
    assert hits[0] == GrepHit(*want[0]) and hits[-1] == GrepHit(*want[-1])
    assert hits[-2].text == ("    " + LONG)[:HIT_CHARS] + "…"
    assert as_tuples(hits[100:110]) == want[100:110]
    assert as_tuples(hits[::-5000]) == want[::-5000]
    assert next(reversed(hits)) == hits[-1] and hits.index(hits[7]) == 7
    assert hits[5] in hits and hits != [] and hits != hits[1:]
    with pytest.raises(IndexError):
        hits[len(want)]
    assert v.grep("nothing here").hits == [] and not v.grep("nothing here").hits


def test_a_slice_of_many_hits_reads_only_its_rows(tree: tuple[Path, Volume], engine: str) -> None:
    """hits[:100] of 24,000 parses those rows (rg's path), and any slice reads as the list's."""
    src, v = tree
    want = python_grep(src, v, "def \\w+\\(")
    for cut in (
        slice(None, 100),
        slice(100, 110),
        slice(-10, None),
        slice(0, 0),
        slice(5, 3),
        slice(N_DEFS - 2, None),
        slice(None, len(want) + 5),
        slice(7, 8),
    ):
        hits = v.grep("def \\w+\\(", max_hits=10**6).hits
        part = hits[cut]
        assert as_tuples(part) == want[cut] and len(part) == len(want[cut]), cut
        assert as_tuples(part[1:3]) == want[cut][1:3]
        if engine == "rg" and len(want[cut]) < 100:
            assert hits._cols is None  # the whole output was not parsed


def test_a_glob_and_max_hits_across_blocks(tree: tuple[Path, Volume], engine: str) -> None:
    src, v = tree
    for glob, top in (("b/*", 10), ("*.py", N_DEFS - 7), ("a/*", 3)):
        want = python_grep(src, v, "def", path_glob=glob)
        got = v.grep("def", max_hits=top, path_glob=glob)
        assert as_tuples(got.hits) == want[:top]
        assert got.truncated == (len(want) > top)


def test_rows_not_kept_by_a_glob_are_not_held(tree: tuple[Path, Volume]) -> None:
    """With a glob, only the kept rows' bytes stay (rg prints every file's rows)."""
    _, v = tree
    start = next(f.first_line for f in v.files if f.path == "b/few.py")
    keep = [(start + 1, start + 6)]
    found = ripgrep.rg_search(v, "def", fixed=True, ignore_case=False, keep=keep, limit=99)
    assert found is not None
    lines, texts = found.parsed()
    assert lines.tolist() == [start + 1, start + 2, start + 4]
    assert isinstance(texts, RowTexts) and len(texts._buf) < 2_000


def test_hits_read_after_the_volume_closed(tree: tuple[Path, Volume], engine: str) -> None:
    """The CLI reads the hits after its `with Volume.open(...)` has closed the volume."""
    src, _ = tree
    with Volume.open("many") as v:
        result = v.grep("def [gk]")
        want = python_grep(src, v, "def [gk]")
    assert as_tuples(result.hits) == want and len(want) == 2


def rows(pairs: list[tuple[int, bytes]]) -> bytes:
    return b"".join(b"%d:%s\n" % (n, text) for n, text in pairs)


def test_parse_rows_reads_every_width_of_number() -> None:
    pairs = [
        (1, b"a:b"),
        (9, b""),
        (10, "é:😀".encode()),
        (99, b"12:34"),
        (100, b":"),
        (12345, b"x"),
        (1234567, b"7"),
        (123456789012, b"big"),
    ]
    head = b"junk before\n"
    buf = head + rows(pairs) + b"1:partial"
    lines, starts, ends = ripgrep.parse_rows(buf, len(head), buf.rindex(b"\n") + 1)
    assert lines.tolist() == [n for n, _ in pairs]
    texts = [buf[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    assert texts == [t for _, t in pairs]
    assert list(RowTexts(buf, starts, ends)) == [t.decode() for _, t in pairs]
    empty = ripgrep.parse_rows(b"", 0, 0)
    assert [a.tolist() for a in empty] == [[], [], []]


@pytest.mark.parametrize("bad", [b"12 no colon\n", b"5:x\n3:y\n", b":x\n", b"abc\n"])
def test_parse_rows_refuses_what_rg_does_not_print(bad: bytes) -> None:
    with pytest.raises(ValueError):
        ripgrep.parse_rows(bad, 0, len(bad))


def test_an_rg_printing_other_rows_leaves_the_search_to_re2(
    tree: tuple[Path, Volume], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake named as such: an "rg" that prints lines that are not N:text rows."""
    src, v = tree
    fake = tmp_path / "rg-garbage"
    fake.write_text("#!/bin/sh\necho 'not a row'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(ripgrep, "_find_rg", lambda: str(fake))
    assert as_tuples(v.grep("def [gk]").hits) == python_grep(src, v, "def [gk]")


def test_row_texts_decode_and_clip_when_read() -> None:
    raw = "ok é".encode() + b"\xff" + b"x" * (HIT_CHARS + 5)
    buf = b"1:abc\n2:" + raw + b"\n"
    texts = RowTexts(buf, np.asarray([2, 8]), np.asarray([5, 8 + len(raw)]))
    want_long = raw.decode("utf-8", "replace")[:HIT_CHARS] + "…"
    assert list(texts) == ["abc", want_long] == [texts[0], texts[1]]
    assert list(texts[1:]) == [want_long] and len(texts) == 2
