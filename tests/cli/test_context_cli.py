"""The context commands as a user or a script runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanobot_tui.cli import main as cli


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "server.py").write_text(
        "import socket\n\n\ndef serve(port):\n"
        "    sock = socket.socket()\n    sock.bind(('', port))\n"
    )
    (root / "pkg" / "client.py").write_text("def fetch(url):\n    return url.upper()\n")
    (root / "notes.txt").write_text("deploy on friday\nthe port is 8080\n")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    (root / ".gitignore").write_text("*.tmp\n")
    (root / "scratch.tmp").write_text("ignored\n")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_then_list_grep_slice_search(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ingest", str(repo), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["name"] == "repo" and report["files"] == 4  # 3 sources + .gitignore
    assert report["skipped_binary"] == 1 and report["skipped_ignored"] == 1

    code, out, _ = run(capsys, "ingest", str(repo))
    assert code == 0 and "volume repo: 4 files" in out and "4 unchanged" in out

    code, out, _ = run(capsys, "volumes", "--json")
    assert [v["name"] for v in json.loads(out)] == ["repo"]

    code, out, _ = run(capsys, "grep", "repo", r"port is \d+")
    assert code == 0
    assert out.splitlines() == ["notes.txt:2:the port is 8080"]
    code, out, _ = run(capsys, "grep", "repo", "nothing-like-this")
    assert code == 1 and out == ""

    code, out, _ = run(capsys, "grep", "repo", "def ", "--json")
    hits = json.loads(out)["hits"]
    assert [(h["file"], h["line"]) for h in hits] == [("pkg/client.py", 1), ("pkg/server.py", 4)]

    vline = hits[1]["vline"]
    code, out, _ = run(capsys, "slice", "repo", str(vline), str(vline + 1))
    assert out.splitlines() == ["def serve(port):", "    sock = socket.socket()"]

    code, out, _ = run(capsys, "search", "repo", "socket bind port", "--json")
    result = json.loads(out)
    assert result["method"] == "bm25+simhash"
    assert result["hits"][0]["file"] == "pkg/server.py"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["ingest", "/nonexistent/place"], "/nonexistent/place"),
        (["grep", "no-such-volume", "x"], "no-such-volume"),
        (["slice", "no-such-volume", "1", "2"], "no-such-volume"),
        (["search", "no-such-volume", "x"], "no-such-volume"),
        (["slice", "whatever", "5", "2"], "before START"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("nanobot: ") and needle in err


def test_bad_regex_is_one_line(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "ingest", str(repo), "--no-index")
    code, _, err = run(capsys, "grep", "repo", "([unclosed")
    assert code == 2 and err.count("\n") == 1 and "pattern" in err


@pytest.mark.model
@pytest.mark.timeout(300)  # ingest, a server start and a model call: slow on shared cores
def test_ask_answers_with_sources(repo: Path, nanobot_home: Path) -> None:
    """The whole path through a subprocess: config-less start of the embedded model."""
    env = {**os.environ, "NANOBOT_HOME": str(nanobot_home)}
    nanobot_home.mkdir(parents=True, exist_ok=True)
    # A small context so the server starts quickly.
    (nanobot_home / "config.json").write_text(
        json.dumps({"local": {"main": {"model": "smollm2-135m-instruct", "contextSize": 2048}}})
    )
    subprocess.run([sys.executable, "-m", "nanobot_tui", "ingest", str(repo)], env=env, check=True)
    out = subprocess.run(
        [sys.executable, "-m", "nanobot_tui", "ask", "repo", "Which day do we deploy?", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["answer"]
    assert answer["citations"] and answer["citations"][0]["file"] == "notes.txt"
    assert answer["promptTokens"] < 1000


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["slice", "repo", "100", "120"], "past the end"),  # the volume has 11 lines
        (["slice", "repo", "12", "12"], "past the end"),
        (["slice", "repo", "-3", "2"], "start"),
        (["slice", "repo", "0", "2"], "start"),
        (["slice", "repo", "1", "-1"], "end"),
        (["search", "repo", "port", "--top", "0"], "--top"),
        (["search", "repo", "port", "--top", "-2"], "--top"),
        (["ask", "repo", "which port?", "--top", "0"], "--top"),
    ],
)
def test_a_slice_or_search_that_can_show_nothing_says_why(
    repo: Path, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once these printed nothing and exited 0."""
    run(capsys, "ingest", str(repo))
    try:
        code, out, err = run(capsys, *argv)
    except SystemExit as exc:  # argparse's own check: one usage line, exit 2
        code, captured = exc.code, capsys.readouterr()
        out, err = captured.out, captured.err.splitlines()[-1] + "\n"
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err


def test_a_slice_that_runs_past_the_end_shows_what_there_is(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "ingest", str(repo))
    _, out, _ = run(capsys, "volumes", "--json")
    n_lines = json.loads(out)[0]["lines"]
    assert n_lines == 11
    _, whole, _ = run(capsys, "slice", "repo", "1", str(n_lines))
    code, out, _ = run(capsys, "slice", "repo", str(n_lines - 1), "500")
    assert code == 0 and out.splitlines() == whole.splitlines()[-2:]


def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "here.txt").write_text("not to be ingested\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "ingest", "", "--name", "oops")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no path given" in err
    code, out, _ = run(capsys, "volumes", "--json")
    assert json.loads(out) == []
