"""Ingest: the walk (.gitignore, binaries, symlinks), bad input, incremental re-ingest,
and an interrupted ingest that leaves the previous volume as it was."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from nanobot_tui.engine.context import writer
from nanobot_tui.engine.context.ingest import IngestProgress, ingest, language_of
from nanobot_tui.engine.context.storage import VolumeError, volume_dir, volumes_dir
from nanobot_tui.engine.context.volume import Volume
from tests.engine.context.trees import py_lines, write_tree


def volume_lines(v: Volume) -> dict[str, list[str]]:
    return {f.path: [x.text for x in v.file_lines(f.path, 1, f.n_lines)] for f in v.files}


def assert_reads_like_python(v: Volume, root: Path) -> None:
    got = volume_lines(v)
    assert got == {p: py_lines((root / p).read_bytes()) for p in got}
    assert [x.text for x in v.lines(1, v.n_lines)] == [t for p in got for t in got[p]]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The source files ingest opens, in order."""
    opened: list[str] = []
    real = writer._open_source

    def spy(path: str):
        opened.append(path)
        return real(path)

    monkeypatch.setattr(writer, "_open_source", spy)
    return opened


def test_the_walk_honours_gitignore_binaries_vcs_and_symlinks(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    write_tree(
        root,
        {
            ".gitignore": "*.log\nbuild/\n/top-only.txt\n",
            "a.py": "print('a')\n",
            "a.log": "ignored\n",
            "top-only.txt": "ignored at the top\n",
            "build/gen.py": "ignored dir\n",
            "sub/.gitignore": "!keep.log\n*.tmp\n",
            "sub/keep.log": "kept by negation\n",
            "sub/other.log": "still ignored\n",
            "sub/top-only.txt": "the anchored pattern does not reach here\n",
            "sub/x.tmp": "ignored by the nested file\n",
            "sub/deeper/y.tmp": "nested patterns apply below too\n",
            "sub/deeper/z.md": "# kept\n",
            "secret.txt": "excluded by .git/info/exclude\n",
            ".git/config": "[core]\n",
            ".git/info/exclude": "secret.txt\n",
            ".hg/store": "vcs\n",
            "image.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "late-nul.txt": b"x" * 9000 + b"\x00",  # NUL after the first 8 KiB: text
        },
    )
    write_tree(outside, {"o.txt": "outside\n"})
    (root / "link-in.py").symlink_to(root / "a.py")
    (root / "link-out.txt").symlink_to(outside / "o.txt")
    (root / "link-dir").symlink_to(root / "sub")
    (root / "broken").symlink_to(root / "nowhere")
    report = ingest(root, index=False)
    with Volume.open("repo") as v:
        paths = [f.path for f in v.files]
    assert paths == [
        ".gitignore",
        "a.py",
        "late-nul.txt",
        "link-in.py",
        "sub/.gitignore",
        "sub/deeper/z.md",
        "sub/keep.log",
        "sub/top-only.txt",
    ]
    assert report.name == "repo" and report.root == str(root.resolve())
    assert report.files == 8 and report.added == 8
    assert report.skipped_binary == 1
    # a.log, top-only.txt, build/, secret.txt, sub/other.log, sub/x.tmp, sub/deeper/y.tmp
    assert report.skipped_ignored == 7
    assert report.skipped_links == 3
    assert report.unreadable == []


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path) -> None:
    data = {
        "ff.txt": b"\xff\xfe",
        "mixed.txt": b"caf\xc3\xa9 \xe2\x82 ok\r\nx\xc3\n\xf0\x9f\x98\x80\n",
        "fine.txt": "naïve\n".encode(),
    }
    write_tree(tmp_path / "u", data)
    report = ingest(tmp_path / "u", index=False)
    assert report.bad_bytes == 2 + 3
    with Volume.open("u") as v:
        assert v.file("ff.txt").bad_bytes == 2
        assert v.file("mixed.txt").bad_bytes == 3
        assert v.file("fine.txt").bad_bytes == 0
        assert v.file_lines("ff.txt", 1, 1)[0].text == "\ufffd\ufffd"
        assert [x.text for x in v.file_lines("mixed.txt", 1, 9)] == [
            "café \ufffd ok",
            "x\ufffd",
            "😀",
        ]
        assert_reads_like_python(v, tmp_path / "u")
    assert writer.to_utf8(b"\xff\xfe") == ("\ufffd\ufffd".encode(), 2)
    same = b"plain"
    assert writer.to_utf8(same)[0] is same


def test_big_files_are_read_in_blocks_without_changing_a_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks cut anywhere (inside UTF-8 sequences, CRLF, invalid bytes) give the text,
    lines and bad-byte count of reading the file whole."""
    rng = random.Random(3)
    pieces = [
        b"ab",
        b"\n",
        b"\r\n",
        "é".encode(),
        "日本".encode(),
        "😀".encode(),
        b"\xff",
        b"\xe2\x82",
    ]
    data = b"".join(rng.choice(pieces) for _ in range(20_000))
    write_tree(tmp_path / "b", {"big.txt": data})
    monkeypatch.setattr(writer, "BLOCK", 997)
    report = ingest(tmp_path / "b" / "big.txt", index=False)
    _, bad = writer.to_utf8(data)
    assert report.bad_bytes == bad > 0
    assert report.name == "big.txt" and report.files == 1
    with Volume.open("big.txt") as v:
        assert v.files[0].path == "big.txt" and v.root == str(tmp_path / "b" / "big.txt")
        assert bytes(v.raw()) == data.decode("utf-8", "replace").encode() + (
            b"" if data.endswith(b"\n") else b"\n"
        )
        assert [x.text for x in v.lines(1, v.n_lines)] == py_lines(data)


def test_languages() -> None:
    assert language_of("a/b.py") == "python"
    assert language_of("README.md") == "markdown"
    assert language_of("x.log") == "log"
    assert language_of("Makefile") == "make"
    assert language_of("CMakeLists.txt") == "cmake"
    assert language_of("notes.txt") == "text"
    assert language_of("data.unknownext") == "text"
    assert language_of("LICENSE") == "text"


def test_default_names_are_sanitised(tmp_path: Path) -> None:
    write_tree(tmp_path, {"My Project (v2)/a.txt": "a\n", ".dotted/b.txt": "b\n"})
    assert ingest(tmp_path / "My Project (v2)", index=False).name == "My-Project-v2"
    assert ingest(tmp_path / ".dotted", index=False).name == "dotted"
    assert ingest(tmp_path / ".dotted", "custom_1.x", index=False).name == "custom_1.x"


def one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(VolumeError, match=match) as err:
        ingest(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    one_line_error("no such file or folder", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    one_line_error("nothing to ingest in .*empty", tmp_path / "empty")
    write_tree(tmp_path / "bin", {"x.bin": b"\x00\x01", ".gitignore": b"*.txt\n"})
    (tmp_path / "bin" / ".gitignore").unlink()
    msg = one_line_error("nothing to ingest", tmp_path / "bin")
    assert "1 binary" in msg
    one_line_error("is a binary file", tmp_path / "bin" / "x.bin")
    os.mkfifo(tmp_path / "fifo")
    one_line_error("not a file or a folder", tmp_path / "fifo")
    write_tree(tmp_path / "ok", {"a.txt": "a\n"})
    one_line_error("bad volume name", tmp_path / "ok", ".hidden")
    one_line_error("bad volume name", tmp_path / "ok", "a/b")
    assert not any(p.name.startswith(".tmp-") for p in volumes_dir().iterdir())


def test_an_unreadable_file_is_listed_and_the_rest_ingested(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(tmp_path / "p", {"a.txt": "a\n", "locked.txt": "secret\n", "z.txt": "z\n"})
    real = writer._open_source

    def deny(path: str):
        if path.endswith("locked.txt"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(writer, "_open_source", deny)
    report = ingest(tmp_path / "p", index=False)
    assert report.unreadable == [("locked.txt", "permission denied")]
    assert report.to_dict()["unreadable"] == [{"path": "locked.txt", "reason": "permission denied"}]
    with Volume.open("p") as v:
        assert [f.path for f in v.files] == ["a.txt", "z.txt"]
        assert v.text(1, 9) == "a\nz"
    one_line_error("cannot read .*locked.txt: permission denied", tmp_path / "p" / "locked.txt")


def test_reingest_reads_only_what_changed(tmp_path: Path, reads: list[str]) -> None:
    root = tmp_path / "r"
    files: dict[str, bytes | str] = {f"f{i:02d}.txt": f"file {i}\n" * (i + 1) for i in range(10)}
    files["crlf.txt"] = "one\r\ntwo"
    write_tree(root, files)
    first = ingest(root, index=False)
    with Volume.open("r") as v:
        created = v.created
    assert first.added == 11 and first.unchanged == first.changed == first.removed == 0
    assert len(reads) == 11
    reads.clear()

    # Modify one, touch one (same content, new mtime), add one, delete one.
    (root / "f03.txt").write_text("changed\ncontent\n")
    st = (root / "f05.txt").stat()
    os.utime(root / "f05.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    (root / "new.txt").write_text("brand new\n")
    (root / "f07.txt").unlink()
    again = ingest(root, index=False)
    assert sorted(Path(p).name for p in reads) == ["f03.txt", "f05.txt", "new.txt"]
    assert (again.added, again.changed, again.removed, again.unchanged) == (1, 1, 1, 9)
    assert again.files == 11 and not again.replaced
    assert again.read_bytes == sum(
        (root / n).stat().st_size for n in ("f03.txt", "f05.txt", "new.txt")
    )
    with Volume.open("r") as v:
        assert "f07.txt" not in [f.path for f in v.files]
        assert v.created == created and v.updated >= created
        assert_reads_like_python(v, root)
        starts = np.load(v.dir / "lines.npy")
        assert (np.diff(starts.astype(np.int64)) > 0).all()
    reads.clear()
    nothing = ingest(root, index=False)
    assert reads == [] and nothing.unchanged == 11 and nothing.read_bytes == 0


def test_another_root_under_the_same_name_replaces_it(tmp_path: Path) -> None:
    write_tree(tmp_path / "one", {"a.txt": "a\n"})
    write_tree(tmp_path / "two", {"b.txt": "b\n", "c.txt": "c\n"})
    ingest(tmp_path / "one", "same", index=False)
    report = ingest(tmp_path / "two", "same", index=False)
    assert report.replaced and report.added == 2 and report.removed == 1
    with Volume.open("same") as v:
        assert v.root == str(tmp_path / "two") and [f.path for f in v.files] == ["b.txt", "c.txt"]


PHASES = ["read", "write", "index"]


@pytest.mark.parametrize("phase", PHASES)
def test_an_interrupted_ingest_leaves_the_previous_volume(tmp_path: Path, phase: str) -> None:
    root = tmp_path / "i"
    write_tree(root, {f"f{i}.txt": f"old {i}\n" for i in range(50)})
    ingest(root)
    with Volume.open("i") as v:
        before = v.text(1, v.n_lines)
    for i in range(50):
        (root / f"f{i}.txt").write_text(f"new {i}\n" * 3)
    (root / "extra.txt").write_text("extra\n")

    class Stop(Exception):
        pass

    def progress(p: IngestProgress) -> None:
        if p.phase == phase and p.done >= 1:
            raise Stop

    with pytest.raises(Stop):
        ingest(root, progress=progress)
    with Volume.open("i") as v:
        assert v.text(1, v.n_lines) == before and len(v.files) == 50
    assert sorted(p.name for p in volumes_dir().iterdir()) == [".lock-i", "i"]


def test_a_crash_between_the_two_renames_is_repaired(tmp_path: Path) -> None:
    """A previous volume set aside by a process that died is put back on the next open."""
    write_tree(tmp_path / "c", {"a.txt": "a\n"})
    ingest(tmp_path / "c", index=False)
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    os.rename(volume_dir("c"), volumes_dir() / f".old-c-{dead_pid}-abcd1234")
    (volumes_dir() / f".tmp-c-{dead_pid}-0000ffff").mkdir()
    with Volume.open("c") as v:
        assert v.text(1, 1) == "a"
    assert sorted(p.name for p in volumes_dir().iterdir()) == [".lock-c", "c"]


def test_an_edit_that_keeps_size_and_mtime_is_reingested(tmp_path: Path, reads: list[str]) -> None:
    root = tmp_path / "same"
    write_tree(root, {"a.txt": "alpha\n", "b.txt": "bravo\n"})
    ingest(root, index=False)
    st = (root / "a.txt").stat()
    (root / "a.txt").write_text("ALPHA\n")  # same size
    os.utime(root / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    reads.clear()
    again = ingest(root, index=False)
    assert [Path(p).name for p in reads] == ["a.txt"]
    assert (again.changed, again.unchanged) == (1, 1)
    with Volume.open("same") as v:
        assert volume_lines(v) == {"a.txt": ["ALPHA"], "b.txt": ["bravo"]}


def test_progress_is_throttled_and_has_totals(tmp_path: Path) -> None:
    root = tmp_path / "many"
    write_tree(root, {f"d{i % 7}/f{i:03d}.txt": f"line {i}\n" * 50 for i in range(400)})
    events: list[IngestProgress] = []
    report = ingest(root, progress=events.append, index=False)
    phases = [e.phase for e in events]
    assert phases[0] == "scan" and "read" in phases and phases[-1] == "write"
    reads = [e for e in events if e.phase == "read"]
    assert reads[-1].done == reads[-1].total == sum(p.stat().st_size for p in root.rglob("*.txt"))
    assert all(e.total == reads[-1].total for e in reads)
    assert len(events) <= 6 + 20 * (report.seconds + 0.1) * 2  # at most ~20 a second per phase


def test_indexing_is_optional(tmp_path: Path) -> None:
    write_tree(tmp_path / "x", {"a.py": "def f():\n    return 1\n" * 50})
    report = ingest(tmp_path / "x", index=False)
    assert not report.indexed and not (volume_dir("x") / "index").exists()
    report = ingest(tmp_path / "x")
    assert report.indexed
    assert (volume_dir("x") / "index").is_dir()
    d = report.to_dict()
    assert d["name"] == "x" and d["files"] == 1 and d["lines"] == 100 and d["seconds"] > 0


def test_nanobot_home_inside_the_root_is_not_ingested(tmp_path: Path, nanobot_home: Path) -> None:
    # conftest puts NANOBOT_HOME at tmp_path / "nanobot-home"
    write_tree(tmp_path, {"real.txt": "real\n"})
    write_tree(tmp_path / "first", {"a.txt": "a\n"})
    ingest(tmp_path / "first", index=False)
    report = ingest(tmp_path, "outer", index=False)
    with Volume.open("outer") as v:
        assert not any(f.path.startswith("nanobot-home/") for f in v.files)
        assert "real.txt" in [f.path for f in v.files]
    assert report.skipped_ignored >= 1
