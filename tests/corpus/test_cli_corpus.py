"""The bad-input corpus through the real `nanobot` command, each case in a child process
with its own NANOBOT_HOME: a broken config, a model file that is no model, odd file names
and contents for `ingest`, odd regexes for `grep`. Each fails with exactly one line on
stderr starting `nanobot:` (or succeeds where that is fine), never a traceback, and what
was saved before (the config, a volume) is still there afterwards. No model server is
started: every command here fails before one would be, or needs none."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_cli import nanobot
from tests.corpus.cases import BAD_CONFIG_TEXTS, BAD_GGUF_FILES, CONTROL_TEXTS, ODD_CONFIG_FILES


def assert_clean(proc: subprocess.CompletedProcess[str], codes: tuple[int, ...]) -> None:
    """An exit code from `codes`, no traceback anywhere, and on failure exactly one line on
    stderr that starts `nanobot:`."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    if proc.returncode != 0 and proc.stderr:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("nanobot: "), proc.stderr


def controls(text: str) -> list[str]:
    """The terminal control characters in `text` (newline and tab are fine)."""
    return [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]


def assert_one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert_clean(proc, (code,))
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanobot: "), proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", sorted(BAD_CONFIG_TEXTS))
def test_a_broken_config(name: str, nanobot_home: Path) -> None:
    nanobot_home.mkdir(parents=True, exist_ok=True)
    config = nanobot_home / "config.json"
    config.write_bytes(BAD_CONFIG_TEXTS[name])
    # `agent` reads the config before anything else: a bad one stops it there (no server).
    line = assert_one_line(nanobot(nanobot_home, "agent", "-m", "hi"), 2)
    assert "config.json" in line
    # `doctor` reports it among its problems, on stdout, and exits 1.
    doctor = nanobot(nanobot_home, "doctor")
    assert_clean(doctor, (1,))
    assert "config.json (exists, INVALID)" in doctor.stdout
    assert config.read_bytes() == BAD_CONFIG_TEXTS[name]  # nothing rewrote it


def _make_odd_config(kind: str, config: Path) -> None:
    if kind == "directory":
        config.mkdir()
    elif kind == "fifo":
        os.mkfifo(config)
    elif kind == "dev-zero-link":
        config.symlink_to("/dev/zero")
    elif kind == "self-link":
        config.symlink_to(config.name)
    else:
        config.symlink_to(config.parent / "nowhere.json")


@pytest.mark.parametrize("kind", ODD_CONFIG_FILES)
def test_a_config_that_is_no_regular_file(kind: str, nanobot_home: Path) -> None:
    nanobot_home.mkdir(parents=True, exist_ok=True)
    config = nanobot_home / "config.json"
    _make_odd_config(kind, config)
    doctor = nanobot(nanobot_home, "doctor", timeout=30)
    assert_clean(doctor, (0, 1))
    if kind == "dangling-link":
        # A link to nothing reads as no config at all: the defaults, as on a fresh install.
        assert "(exists, INVALID)" not in doctor.stdout
        return
    assert doctor.returncode == 1 and "config.json (exists, INVALID)" in doctor.stdout
    line = assert_one_line(nanobot(nanobot_home, "agent", "-m", "hi", timeout=30), 2)
    assert "config.json" in line
    assert config.is_symlink() or config.exists()  # left where it was


# --------------------------------------------------------------------------- model files


@pytest.mark.parametrize("name", sorted(BAD_GGUF_FILES))
def test_a_custom_model_file_that_is_no_model(
    name: str, nanobot_home: Path, tmp_path: Path
) -> None:
    model = tmp_path / f"{name}.gguf"
    model.write_bytes(BAD_GGUF_FILES[name])
    nanobot_home.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"local": {"main": {"path": str(model)}}})
    (nanobot_home / "config.json").write_text(text)
    doctor = nanobot(nanobot_home, "doctor")
    assert_clean(doctor, (1,))
    problems = doctor.stdout.split("\nProblems\n", 1)[1]
    assert str(model) in problems and "All is well" not in doctor.stdout
    assert model.read_bytes() == BAD_GGUF_FILES[name]
    assert (nanobot_home / "config.json").read_text() == text


@pytest.mark.parametrize(
    "kind", ["directory", "fifo", "missing", "lone-surrogate", "control-sequence"]
)
def test_a_custom_model_path_that_is_no_file(kind: str, nanobot_home: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    written = {"lone-surrogate": "\\ud800", "control-sequence": "/x\\u001b]0;PWNED\\u0007y"}
    shown = {"lone-surrogate": "\\ud800", "control-sequence": "/xy"}
    nanobot_home.mkdir(parents=True, exist_ok=True)
    text = '{"local": {"main": {"path": "PATH"}}}'.replace("PATH", written.get(kind, str(target)))
    (nanobot_home / "config.json").write_text(text)
    doctor = nanobot(nanobot_home, "doctor", timeout=30)
    assert_clean(doctor, (0, 1))
    assert shown.get(kind, str(target)) in doctor.stdout
    assert not controls(doctor.stdout) and "PWNED" not in doctor.stdout
    assert (nanobot_home / "config.json").read_text() == text


HOSTILE_NAME = "x\x1b]0;PWNED\x07\x1b[31my"


@pytest.mark.parametrize(
    "argv",
    [
        ["ingest", f"/nonexistent/{HOSTILE_NAME}"],
        ["grep", HOSTILE_NAME, "x"],
        ["slice", HOSTILE_NAME, "1", "2"],
        ["search", HOSTILE_NAME, "x"],
        ["status", HOSTILE_NAME],
        ["sessions", "--help"],
    ],
    ids=["ingest", "grep", "slice", "search", "status", "help"],
)
def test_an_error_line_carries_no_control_sequences(argv: list[str], nanobot_home: Path) -> None:
    proc = nanobot(nanobot_home, *argv)
    assert_clean(proc, (0, 1, 2))
    if proc.returncode:
        assert_one_line(proc, proc.returncode)
    # Shown escaped ('x\\x1b]0;…') or dropped, never as the bytes a terminal acts on.
    assert not controls(proc.stderr + proc.stdout), proc.stderr


# --------------------------------------------------------------------------- ingest


@pytest.fixture
def kept(nanobot_home: Path, tmp_path: Path) -> Path:
    """A volume `keep` saved before the bad input: it must answer the same afterwards."""
    source = tmp_path / "keep"
    source.mkdir()
    (source / "notes.txt").write_text("the saved line\n")
    assert_clean(nanobot(nanobot_home, "ingest", str(source), "--name", "keep", "--no-index"), (0,))
    return source


def assert_kept(home: Path) -> None:
    proc = nanobot(home, "grep", "keep", "saved")
    assert_clean(proc, (0,))
    assert proc.stdout == "notes.txt:1:the saved line\n"


def _odd_tree(root: Path, kind: str) -> Path:
    """A folder (or a file) holding one kind of odd name or content; returns what to ingest."""
    root.mkdir()
    (root / "ok.txt").write_text("fine\n")
    if kind == "non-utf8-name":
        os.close(os.open(os.fsencode(root) + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY))
    elif kind == "newline-in-name":
        (root / "new\nline.txt").write_text("x\n")
    elif kind == "control-in-name":
        (root / "a\x1b]0;T\x07b.txt").write_text("x\n")
    elif kind == "binary":
        (root / "blob.dat").write_bytes(bytes(range(256)) * 40)
    elif kind == "non-utf8-content":
        (root / "latin1.txt").write_bytes(b"caf\xe9 cr\xe8me\n")
    elif kind == "huge-single-line":
        (root / "long.txt").write_text("a" * 3_000_000)
    elif kind == "symlink-loop":
        (root / "l1").symlink_to("l2")
        (root / "l2").symlink_to("l1")
        (root / "sub").mkdir()
        (root / "sub" / "up").symlink_to("..")
    elif kind == "dangling-link":
        (root / "gone").symlink_to(root / "nowhere")
    elif kind == "fifo-inside":
        os.mkfifo(root / "pipe")
    elif kind == "empty-files":
        (root / "empty.txt").write_bytes(b"")
    elif kind == "control-content":
        (root / "ctl.txt").write_text("".join(CONTROL_TEXTS.values()) + "\n")
    elif kind == "only-a-fifo":
        os.mkfifo(root / "pipe")
        return root / "pipe"
    elif kind == "link-loop-itself":
        (root / "l1").symlink_to("l1")
        return root / "l1"
    elif kind == "missing":
        return root / "not-there"
    return root


INGEST_OK = [
    "non-utf8-name",
    "newline-in-name",
    "control-in-name",
    "binary",
    "non-utf8-content",
    "huge-single-line",
    "symlink-loop",
    "dangling-link",
    "fifo-inside",
    "empty-files",
    "control-content",
]
INGEST_REFUSED = ["only-a-fifo", "link-loop-itself", "missing"]


@pytest.mark.parametrize("kind", INGEST_OK + INGEST_REFUSED)
def test_ingest_odd_names_and_contents(
    kind: str, kept: Path, nanobot_home: Path, tmp_path: Path
) -> None:
    target = _odd_tree(tmp_path / "odd", kind)
    proc = nanobot(nanobot_home, "ingest", str(target), "--name", "odd", "--no-index", timeout=60)
    if kind in INGEST_REFUSED:
        assert_one_line(proc, 2)
    else:
        assert_clean(proc, (0,))
        found = nanobot(nanobot_home, "grep", "odd", ".")
        assert_clean(found, (0,))
        assert not controls(found.stdout)
        shown = nanobot(nanobot_home, "slice", "odd", "1", "10")
        assert_clean(shown, (0,))
        assert not controls(shown.stdout)
        assert "ok.txt:1:fine" in found.stdout.splitlines()
        # A second ingest of the same tree (an update) works the same way.
        assert_clean(nanobot(nanobot_home, "ingest", str(target), "--name", "odd"), (0,))
    assert_kept(nanobot_home)


@pytest.mark.parametrize("name", ["", "../x", "a\nb", ".hidden", "x" * 65, "a/b", "\udcff"])
def test_ingest_with_a_bad_volume_name(name: str, kept: Path, nanobot_home: Path) -> None:
    proc = nanobot(nanobot_home, "ingest", str(kept), "--name", name)
    assert "volume name" in assert_one_line(proc, 2)
    assert_kept(nanobot_home)


# --------------------------------------------------------------------------- regexes

GREP_OK = [
    "(a+)+$",
    "(x+x+)+y",
    "(a|aa)*c",
    "",
    "^$",
    "\\x{1F600}",
    "(?i)SAVED",
    "[[:alpha:]]+",
    "\udcff",
]
GREP_REFUSED = [
    "(",
    ")",
    "[z-a]",
    "a{99999}",
    "\\1",
    "(a)\\1",
    "(?<=a)b",
    "(?=a)",
    "(?P<n>a)(?P=n)",
    "\\",
    "*",
    "a**",
    "(?i",
    "[",
    "\\p{NotAClass}",
]


@pytest.mark.parametrize("pattern", GREP_OK + GREP_REFUSED)
def test_grep_with_odd_patterns(pattern: str, kept: Path, nanobot_home: Path) -> None:
    # A long run of "a" and "x" beside the saved line makes a backtracking engine hang.
    (kept / "trap.txt").write_text("a" * 5000 + "\n" + "x" * 5000 + "\n")
    assert_clean(nanobot(nanobot_home, "ingest", str(kept), "--name", "keep"), (0,))
    proc = nanobot(nanobot_home, "grep", "keep", pattern, timeout=60)
    if pattern in GREP_REFUSED:
        assert "invalid pattern" in assert_one_line(proc, 2)
    else:
        assert_clean(proc, (0, 1))
    assert_kept(nanobot_home)
