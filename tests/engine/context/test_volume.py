"""Volumes: slices and greps agree with Python's own reading of the source files."""

from __future__ import annotations

import fnmatch
import json
import mmap
import os
import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nanobot_tui.engine.context import grep
from nanobot_tui.engine.context import volume as volume_module
from nanobot_tui.engine.context.grep import HIT_CHARS
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.storage import (
    FORMAT_VERSION,
    VolumeError,
    delete_volume,
    list_volumes,
    valid_name,
    volume_dir,
    volumes_dir,
)
from nanobot_tui.engine.context.volume import Volume
from tests.engine.context.trees import py_lines

LONG = 200_000


def random_bytes(rng: random.Random, n_pieces: int) -> bytes:
    pieces = [
        b"alpha",
        b"beta",
        b"Gamma",
        b" ",
        b"  ",
        b"\t",
        b"\n",
        b"\n",
        b"\r\n",
        b"\r",
        "é".encode(),
        "ÉCOLE".encode(),
        "日本".encode(),
        "😀".encode(),
        b"\xff",
        b"\xe2\x82",
        b"x1",
        b"42",
        b"def ",
        b"foo",
        b"(",
        b".",
        b"$",
    ]
    return b"".join(rng.choice(pieces) for _ in range(n_pieces))


def build_tree(root: Path) -> None:
    rng = random.Random(7)
    files = {
        "crlf.txt": b"one\r\ntwo\r\n\r\nthree",
        "lone_cr.txt": b"a\rb\nc\r\r\n",
        "empty.txt": b"",
        "only_newlines.md": b"\n\n\n",
        "no_newline.txt": b"last line without newline",
        "long.txt": b"x" * LONG + b" needle\n" + b"short\n",
        "ff.txt": b"\xff\xfe",
        "bad.txt": b"ok \xff\xfe end\nnext \xe2\x82 line\n",
        "code/main.py": b"import os\n\n\ndef foo(x):\n    return x + 1\n\n\nclass Bar:\n    pass\n",
        "code/util.py": b"def bar():\r\n    return 'foo'\r\n",
        "docs/readme.md": "# Title\n\nna\u00efve caf\u00e9 \u00c9COLE \u00e9cole\n".encode(),
        # Letters that re.IGNORECASE matches to ASCII i, s and k.
        "docs/fold.txt": "\u0131f\n\u0130F\n\u017fet\n\u212aILO\nkilo\nIF SET\n".encode(),
        "logs/app.log": b"".join(
            f"2026-01-0{i % 9 + 1} {'ERROR' if i % 7 == 0 else 'INFO'} req={i} ok\n".encode()
            for i in range(500)
        ),
    }
    for i in range(20):
        files[f"rand/r{i:02d}.txt"] = random_bytes(rng, rng.randint(0, 400))
    files["rand/empty2.txt"] = b""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A source tree and a NANOBOT_HOME with it ingested (once for the module)."""
    base = tmp_path_factory.mktemp("vol")
    src, home = base / "src", base / "home"
    build_tree(src)
    mp = pytest.MonkeyPatch()
    mp.setenv("NANOBOT_HOME", str(home))
    try:
        ingest(src, "tree", index=False)
    finally:
        mp.undo()
    return src, home


@pytest.fixture
def tree(built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    src, home = built
    monkeypatch.setenv("NANOBOT_HOME", str(home))
    with Volume.open("tree") as v:
        yield src, v


def expected(src: Path, v: Volume) -> list[tuple[str, int, str]]:
    """(file, fline, text) of every volume line, read by Python from the sources."""
    out = []
    for f in v.files:
        for k, text in enumerate(py_lines((src / f.path).read_bytes()), 1):
            out.append((f.path, k, text))
    return out


def test_the_file_table_matches_the_sources(tree) -> None:
    src, v = tree
    on_disk = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert [f.path for f in v.files] == on_disk
    assert v.n_lines == len(expected(src, v))
    assert v.n_bytes == (v.dir / "text.bin").stat().st_size
    assert v.est_tokens == v.n_bytes // 4
    assert v.file("ff.txt").bad_bytes == 2
    assert v.file("bad.txt").bad_bytes == 4
    assert v.file("empty.txt").n_lines == 0
    assert v.file("only_newlines.md").n_lines == 3
    assert v.file("crlf.txt").n_lines == 4
    assert v.file("lone_cr.txt").n_lines == 2
    assert v.file("code/main.py").language == "python"
    assert v.file("docs/readme.md").language == "markdown"
    assert v.file("logs/app.log").language == "log"
    assert v.file("crlf.txt").language == "text"
    starts = np.load(v.dir / "lines.npy", mmap_mode="r")
    assert starts.dtype == np.uint64 and len(starts) == v.n_lines + 1
    assert int(starts[-1]) == v.n_bytes
    raw = bytes(v.raw())
    raw.decode("utf-8")  # the blob is valid UTF-8
    assert raw.count(b"\n") == v.n_lines
    with pytest.raises(VolumeError, match="no file"):
        v.file("nope.txt")


def test_lines_text_and_file_lines_match_python_on_random_ranges(tree) -> None:
    src, v = tree
    want = expected(src, v)
    n = len(want)
    rng = random.Random(1234)
    for _ in range(200):
        a = rng.randint(-3, n + 3)
        b = a + rng.choice([0, 1, 2, 5, 40, 500, n])
        got = v.lines(a, b)
        s, e = max(1, a), min(n, b)
        ref = [(i, *want[i - 1]) for i in range(s, e + 1)]
        assert [(x.vline, x.file, x.fline, x.text) for x in got] == ref
        assert v.text(a, b) == "\n".join(r[3] for r in ref)
        lo, hi = v.byte_span(a, b)
        if ref:
            assert bytes(v.raw()[lo:hi]).decode().count("\n") == len(ref)
            assert v.file_at(s).path == ref[0][1]
        else:
            assert lo == hi
    for _ in range(200):
        f = rng.choice(v.files)
        a = rng.randint(-2, f.n_lines + 2)
        b = a + rng.randint(0, 30)
        lines = py_lines((src / f.path).read_bytes())
        got = v.file_lines(f.path, a, b)
        s, e = max(1, a), min(len(lines), b)
        assert [(x.file, x.fline, x.text) for x in got] == [
            (f.path, k, lines[k - 1]) for k in range(s, e + 1)
        ]


def test_the_edge_files_read_as_python_reads_them(tree) -> None:
    _, v = tree
    assert [x.text for x in v.file_lines("crlf.txt", 1, 99)] == ["one", "two", "", "three"]
    assert [x.text for x in v.file_lines("lone_cr.txt", 1, 99)] == ["a\rb", "c\r"]
    assert [x.text for x in v.file_lines("only_newlines.md", 1, 99)] == ["", "", ""]
    assert v.file_lines("empty.txt", 1, 99) == []
    assert [x.text for x in v.file_lines("ff.txt", 1, 9)] == ["\ufffd\ufffd"]
    long = v.file_lines("long.txt", 1, 1)[0].text
    assert len(long) == LONG + len(" needle") and long.endswith("needle")
    with pytest.raises(VolumeError, match="outside"):
        v.file_at(v.n_lines + 1)


def python_grep(
    src: Path,
    v: Volume,
    pattern: str,
    *,
    ignore_case: bool = False,
    fixed: bool = False,
    path_glob: str | None = None,
) -> list[tuple[str, int, int, str]]:
    rx = re.compile(re.escape(pattern) if fixed else pattern, re.IGNORECASE if ignore_case else 0)
    out = []
    vline = 0
    for f in v.files:
        base = f.path.rsplit("/", 1)[-1]
        chosen = path_glob is None or fnmatch.fnmatchcase(f.path, path_glob)
        chosen = chosen or ("/" not in (path_glob or "/") and fnmatch.fnmatchcase(base, path_glob))
        for k, text in enumerate(py_lines((src / f.path).read_bytes()), 1):
            vline += 1
            if chosen and rx.search(text):
                clipped = text if len(text) <= HIT_CHARS else text[:HIT_CHARS] + "…"
                out.append((f.path, k, vline, clipped))
    return out


GREPS = [
    ("needle", {}),
    ("foo", {}),
    ("é", {}),
    ("", {}),
    ("ÉCOLE", {"ignore_case": True}),
    ("alpha", {"ignore_case": True}),
    ("if", {"ignore_case": True}),
    ("SET", {"ignore_case": True}),
    ("kilo", {"ignore_case": True}),
    ("lo", {"ignore_case": True}),
    ("a.b", {"fixed": True}),
    ("$", {"fixed": True}),
    ("\r", {"fixed": True}),
    ("^def \\w+", {}),
    ("\\d+ ok$", {}),
    ("two$", {}),
    ("^$", {}),
    ("^", {}),
    ("$", {}),
    ("a$", {}),
    ("\\r$", {}),
    ("e\\Z", {}),
    ("\\Aone", {}),
    ("[aeiou]{2}", {}),
    ("[^a-z]x", {}),
    ("\\s+$", {}),
    ("\\w+\\s*\\n?", {}),
    ("a.b", {}),
    ("(?i)gamma", {}),
    ("ERROR.*req=\\d*7 ", {}),
    ("req=4[0-9]{2}", {}),
    ("\ufffd", {}),
    ("日本|😀", {}),
    ("\\wé", {}),
    ("\\W\\d", {}),
    ("[\\w]{3}\\S$", {}),
    ("\\u00e9|\\U0001F600", {}),
    ("o{,1}k", {}),
    ("(?P<x>alp)ha", {}),
    ("[^\\s]{5,}", {}),
    ("éco", {"ignore_case": True}),
    ("[a-z]ing", {"ignore_case": True}),
    ("def", {"path_glob": "*.py"}),
    ("o", {"path_glob": "code/*"}),
    ("INFO", {"path_glob": "logs/*.log"}),
    ("alpha|beta", {"path_glob": "r0?.txt"}),
    ("e", {"path_glob": "nothing-*"}),
]


@pytest.mark.parametrize(("pattern", "kw"), GREPS, ids=[repr(p) + str(k) for p, k in GREPS])
def test_grep_matches_a_python_loop_over_the_lines(tree, pattern: str, kw: dict) -> None:
    src, v = tree
    want = python_grep(src, v, pattern, **kw)
    got = v.grep(pattern, max_hits=100_000, **kw)
    assert [(h.file, h.fline, h.vline, h.text) for h in got.hits] == want
    assert not got.truncated
    assert got.bytes_searched == sum(f.length for f in grep._select(v.files, kw.get("path_glob")))


def test_grep_stops_at_max_hits_and_says_so(tree) -> None:
    src, v = tree
    for pattern in ("INFO", "IN.O", "req=\\d+"):
        want = python_grep(src, v, pattern)
        assert len(want) > 10
        got = v.grep(pattern, max_hits=7)
        assert [(h.file, h.fline, h.vline, h.text) for h in got.hits] == want[:7]
        assert got.truncated
        assert got.bytes_searched < v.n_bytes
        exact = v.grep(pattern, max_hits=len(want))
        assert len(exact.hits) == len(want) and not exact.truncated
    assert v.grep("zzz-not-there", 5).hits == []
    with pytest.raises(VolumeError, match="max_hits"):
        v.grep("x", max_hits=0)


def test_grep_hits_on_a_long_line_are_clipped(tree) -> None:
    _, v = tree
    for pattern in ("needle", "need.e"):
        (hit,) = v.grep(pattern).hits
        assert hit.file == "long.txt" and hit.fline == 1
        assert len(hit.text) == HIT_CHARS + 1 and hit.text.endswith("…")


def test_an_invalid_pattern_is_one_clear_line(tree) -> None:
    _, v = tree
    with pytest.raises(VolumeError) as err:
        v.grep("def (foo")
    assert str(err.value).startswith("invalid pattern 'def (foo'")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("pattern", "lacking"),
    [
        ("foo(?!\\()", "lookahead and lookbehind"),
        ("(?<=\\s)beta", "lookahead and lookbehind"),
        ("x++", "possessive quantifiers"),
        ("(a)\\1", "backreferences"),
        ("(?P<a>x)(?P=a)", "backreferences"),
        ("(?>ab)", "atomic groups"),
    ],
)
def test_what_a_linear_engine_lacks_is_refused_in_one_line(tree, pattern, lacking) -> None:
    _, v = tree
    with pytest.raises(VolumeError) as err:
        v.grep(pattern)
    assert str(err.value) == (
        f"invalid pattern {pattern!r}: {lacking} are not supported"
        " (patterns run in linear time, with RE2)"
    )


def test_a_backtracking_pattern_runs_in_linear_time(tmp_path: Path, nanobot_home: Path) -> None:
    """(a+)+$ on a's and then a b backtracks in Python's re for hours (2**n ways); the
    grep answers, whichever way it searches (whole pieces, the line pattern, the
    prefilter, ignoring case)."""
    src = tmp_path / "s"
    src.mkdir()
    (src / "a.txt").write_text(("a" * 60 + "b\n") * 50 + "aaa\n" + "x" * 60 + "aaaab\n")
    ingest(src, "evil", index=False)
    v = Volume.open("evil")
    assert [h.vline for h in v.grep("(a+)+$").hits] == [51]
    assert [h.vline for h in v.grep("(a+)+$", ignore_case=True).hits] == [51]
    assert [h.vline for h in v.grep("(x+x+)+y|a(a|aa)+$").hits] == [51]
    assert [h.vline for h in v.grep("xxx(x+x+)+$").hits] == []
    assert [h.vline for h in v.grep("\\B(a|a)+$").hits] == [51]


def test_word_edges_on_ascii_words_and_empty_lines(tmp_path: Path, nanobot_home: Path) -> None:
    """\\b and \\B as in Python on ASCII words (RE2's word edges are ASCII), and \\B
    never matches in an empty line, as Python's does not."""
    src = tmp_path / "s"
    src.mkdir()
    lines = ["def f", "undef", "", "x", "a-def-b", "", "--"]
    (src / "a.txt").write_text("\n".join(lines) + "\n")
    ingest(src, "edges", index=False)
    v = Volume.open("edges")
    for pattern in ("\\bdef\\b", "\\Bdef", "\\B", "\\B|^x", "^\\B$", "\\b"):
        want = [k for k, line in enumerate(lines, 1) if re.search(pattern, line)]
        assert [h.vline for h in v.grep(pattern).hits] == want, pattern


def test_the_fast_paths_agree_with_the_line_by_line_path(tree, monkeypatch) -> None:
    """Each search strategy (literal find, must-literal prefilter, whole-piece scan, line
    by line) finds the same lines, with tiny pieces so that pieces end mid-volume."""
    src, v = tree
    monkeypatch.setattr(grep, "GREP_FIRST_CHUNK", 64)
    monkeypatch.setattr(grep, "GREP_CHUNK", 1000)
    for pattern in ("req=1", "req=1\\d", "ERROR.*1 ok$", "^\\d+", "ok$"):
        want = python_grep(src, v, pattern)
        for spacing in (1, 10**9):  # prefilter given up at once / kept
            monkeypatch.setattr(grep, "PREFILTER_SPACING", spacing)
            got = v.grep(pattern, max_hits=10_000)
            assert [(h.file, h.fline, h.vline, h.text) for h in got.hits] == want


def test_open_errors_are_one_line(tmp_path: Path, nanobot_home: Path) -> None:
    with pytest.raises(VolumeError, match="no volume named 'ghost'"):
        Volume.open("ghost")
    src = tmp_path / "s"
    src.mkdir()
    (src / "a.txt").write_text("hello\nworld\n")
    ingest(src, "v", index=False)
    manifest = volume_dir("v") / "manifest.json"
    good = manifest.read_text()

    breakages = {
        "not json": lambda: manifest.write_text("{not json"),
        "format": lambda: manifest.write_text(good.replace('"format":1', '"format":99')),
        "table": lambda: manifest.write_text(good.replace('"lines":2', '"lines":3')),
        "text.bin": lambda: (volume_dir("v") / "text.bin").write_bytes(b"hello\n"),
        "lines.npy": lambda: np.save(volume_dir("v") / "lines.npy", np.array([0, 6, 13])),
        "missing": lambda: manifest.unlink(),
    }
    for label, breakage in breakages.items():
        ingest(src, "v", index=False)
        breakage()
        with pytest.raises(VolumeError) as err:
            Volume.open("v")
        msg = str(err.value)
        assert "'v'" in msg and "corrupt" in msg and "\n" not in msg, (label, msg)
    (row,) = list_volumes()
    assert row["name"] == "v" and "corrupt" in row["error"]


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x" * 65, "sp ace", "..", "é"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(VolumeError, match="bad volume name"):
        valid_name(name)
    with pytest.raises(VolumeError, match="bad volume name"):
        Volume.open(name)


def test_good_names() -> None:
    for name in ("a", "repo-1.2_x", "x" * 64, "-dash", "_u"):
        assert valid_name(name) == name
    assert volume_dir("abc") == volumes_dir() / "abc"
    assert volumes_dir() == Path(os.environ["NANOBOT_HOME"]) / "volumes"


class RecordingMap:
    """A volume's text map that records the byte ranges read from it. Nothing else may be
    done with it: a use it does not offer fails the test instead of going unseen."""

    def __init__(self, fileno: int, length: int, access: int) -> None:
        self._map = mmap.mmap(fileno, length, access=access)
        self.reads: list[tuple[int, int]] = []

    def __getitem__(self, key: slice) -> bytes:
        start, stop, _ = key.indices(len(self._map))
        self.reads.append((start, stop))
        return self._map[key]

    def __len__(self) -> int:
        return len(self._map)

    def close(self) -> None:
        self._map.close()


def test_opening_a_big_volume_reads_no_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening and slicing a 55 MB, 1,000,000-line volume read only what they must (their
    latency is benchmarks/context_speed.py's)."""
    big = tmp_path / "big.txt"
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    with big.open("wb") as fh:
        for _ in range(10):
            fh.write(line * 100_000)  # 55 MB in all
    ingest(big, "big", index=False)
    maps: list[RecordingMap] = []

    def recording_map(fileno: int, length: int, access: int) -> RecordingMap:
        maps.append(RecordingMap(fileno, length, access))
        return maps[-1]

    monkeypatch.setattr(
        volume_module, "mmap", SimpleNamespace(mmap=recording_map, ACCESS_READ=mmap.ACCESS_READ)
    )
    io_path = Path("/proc/self/io")

    def rchar() -> int:
        return int(io_path.read_text().split("rchar:")[1].split()[0]) if io_path.exists() else 0

    before = rchar()
    v = Volume.open("big")
    read = rchar() - before
    assert read < 1_000_000, f"open read {read} bytes"
    (text,) = maps
    assert text.reads == []  # the text is mapped, not read
    assert v.n_bytes > 50_000_000 and v.n_lines == 1_000_000
    middle = v.lines(500_000, 500_001)
    assert [x.text for x in middle] == [line.decode().rstrip("\n")] * 2
    assert text.reads == [v.byte_span(500_000, 500_001)]
    # A slice is a lookup in the line table and a read of its own lines' bytes.
    text.reads.clear()
    before = rchar()
    starts = range(1, 1_000_000, 9973)
    for k in starts:
        assert len(v.lines(k, k + 20)) == 21
    assert rchar() - before < 1_000_000
    assert text.reads == [v.byte_span(k, k + 20) for k in starts]
    v.close()
    with pytest.raises(VolumeError, match="closed"):
        v.lines(1, 2)


def test_list_and_delete(tmp_path: Path) -> None:
    assert list_volumes() == []
    for name in ("b-vol", "a-vol"):
        src = tmp_path / name
        src.mkdir()
        (src / "f.txt").write_text("one\ntwo\n")
        ingest(src, index=False)
    rows = list_volumes()
    assert [r["name"] for r in rows] == ["a-vol", "b-vol"]
    assert rows[0]["files"] == 1 and rows[0]["lines"] == 2 and rows[0]["bytes"] == 8
    assert rows[0]["est_tokens"] == 2 and rows[0]["root"] == str(tmp_path / "a-vol")
    assert rows[0]["error"] is None and rows[0]["updated"].endswith("Z")
    with Volume.open("a-vol") as v:
        delete_volume("a-vol")
        assert v.text(1, 2) == "one\ntwo"  # still mapped
    assert [r["name"] for r in list_volumes()] == ["b-vol"]
    with pytest.raises(VolumeError, match="no volume named 'a-vol'"):
        delete_volume("a-vol")
    with pytest.raises(VolumeError, match="no volume"):
        Volume.open("a-vol")
    assert sorted(os.listdir(volumes_dir())) == [".lock-a-vol", ".lock-b-vol", "b-vol"]


def test_a_volume_of_empty_files_has_no_lines(tmp_path: Path) -> None:
    src = tmp_path / "blank"
    src.mkdir()
    (src / "a.txt").write_bytes(b"")
    (src / "b.txt").write_bytes(b"")
    report = ingest(src, index=False)
    assert report.files == 2 and report.lines == 0 and report.bytes == 0
    with Volume.open("blank") as v:
        assert v.n_lines == 0 and v.lines(1, 10) == [] and v.text(0, 5) == ""
        assert v.grep("x").hits == [] and v.grep("^").hits == []
        assert bytes(v.raw()) == b""


def test_manifest_is_plain_json(tree) -> None:
    _, v = tree
    m = json.loads((v.dir / "manifest.json").read_text())
    assert m["format"] == FORMAT_VERSION and m["name"] == "tree"
    assert m["lines"] == v.n_lines and m["bytes"] == v.n_bytes
    assert m["file_columns"][0] == "path" and len(m["files"]) == len(v.files)
    assert m["created"].endswith("Z") and m["updated"].endswith("Z")
