"""The `nanobot` command: exit codes, one-line errors, --json, and a real answer."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from nanobot_tui import __version__, paths
from nanobot_tui.cli import agent as cli_agent
from nanobot_tui.cli import main as cli
from nanobot_tui.cli.common import EXIT_FAIL, EXIT_USAGE

BROKEN_CONFIGS = {
    "bad-json": '{"local": {"main": {"contextSize": 8192,}}}',
    "wrong-type": '{"local": {"main": {"contextSize": "big"}}}',
    "unknown-key": '{"local": {"main": {"colour": "red"}}}',
    "unknown-model": '{"local": {"main": {"model": "gpt-5"}}}',
}


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.json"
    path.write_text(text, encoding="utf-8")
    return path


def nanobot(
    home: Path, *args: str, console_script: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real command in a child process with its own NANOBOT_HOME."""
    if console_script:
        script = Path(sys.executable).parent / "nanobot"
        if not script.exists():
            pytest.skip("the nanobot console script is not installed next to this python")
        command = [str(script), *args]
    else:
        command = [sys.executable, "-m", "nanobot_tui", *args]
    env = {**os.environ, "NANOBOT_HOME": str(home)}
    return subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_error_line(stderr: str, *parts: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nanobot: "), stderr
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


def llama_hosts_for(home: Path) -> list[psutil.Process]:
    """llama_host processes started under this NANOBOT_HOME (found through their env)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if "nanobot_tui.engine.serving.llama_host" not in cmdline:
                continue
            if proc.environ().get("NANOBOT_HOME") == str(home):
                found.append(proc)
        except psutil.Error:
            continue
    return found


# --- in-process ---------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"nanobot {__version__}\n"


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "doctor" in out and "agent" in out


@pytest.mark.parametrize("message", ["", "   ", "\n\t"])
def test_empty_message_is_bad_input(message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["agent", "-m", message]) == EXIT_USAGE == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_error_line(captured.err, "agent: the message is empty")


def test_empty_stdin_message_is_bad_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert cli.main(["agent", "-m", "-"]) == 2
    assert_one_error_line(capsys.readouterr().err, "the message is empty")


@pytest.mark.parametrize("name", sorted(BROKEN_CONFIGS))
def test_agent_with_broken_config_exits_2_in_one_line(
    name: str, nanobot_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(nanobot_home, BROKEN_CONFIGS[name])
    assert cli.main(["agent", "-m", "hi"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_error_line(captured.err, f"nanobot: {path}: ")
    # Nothing was started, so nothing was recorded.
    assert not paths.run_dir().exists()


def test_doctor_flags_a_configured_model_that_is_not_downloaded(
    nanobot_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A model of the user's own choice (no tier recommends the 3B for memory); the tier's
    # own recommendation not yet downloaded is only a suggestion (tests/setup/test_doctor).
    write_config(nanobot_home, '{"local": {"memory": {"model": "nanbeige4.1-3b"}}}')
    assert cli.main(["doctor"]) == EXIT_FAIL
    out = capsys.readouterr().out
    assert "  - slot memory: nanbeige4.1-3b is not downloaded" in out
    assert out.rstrip().endswith("1 problem(s).")


def test_doctor_json_in_process_matches_exit_status(
    nanobot_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(nanobot_home, '{"runtime": "/nonexistent/llama-server"}')
    assert cli.main(["doctor", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert data["runtime"]["setting"] == "/nonexistent/llama-server"


def test_agent_with_missing_runtime_exits_1_in_one_line(
    nanobot_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(nanobot_home, '{"runtime": "/nonexistent/llama-server"}')
    assert cli.main(["agent", "-m", "hi"]) == EXIT_FAIL
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_error_line(captured.err, "/nonexistent/llama-server", "no executable")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_non_positive_max_tokens_is_bad_input(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[int] = []

    async def fake_agent(args: object, message: str) -> int:
        started.append(1)  # must not get here: no server for bad input
        return 0

    monkeypatch.setattr(cli_agent, "_run_agent", fake_agent)
    try:
        code = cli.main(["agent", "-m", "hi", "--max-tokens", value])
    except SystemExit as exc:  # argparse's own error exit is fine too
        code = exc.code
    assert code == 2
    assert started == []
    assert "max-tokens" in capsys.readouterr().err


# --- subprocesses -------------------------------------------------------------------------


def test_doctor_json_on_this_machine_without_config(nanobot_home: Path) -> None:
    result = nanobot(nanobot_home, "doctor", "--json", console_script=True)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["home"] == str(nanobot_home)
    assert data["config"] == {
        "path": str(nanobot_home / "config.json"),
        "exists": False,
        "valid": True,
    }
    assert data["tier"]["name"] in {"potato", "sweet", "hybrid", "power", "beast"}
    assert data["warnings"][0].startswith("no config at ")
    assert "Traceback" not in result.stderr
    assert not (nanobot_home / "config.json").exists()


def test_broken_config_exit_codes_in_child_processes(nanobot_home: Path) -> None:
    path = write_config(nanobot_home, BROKEN_CONFIGS["wrong-type"])
    expected = f"nanobot: {path}: local.main.contextSize: Input should be a valid integer"

    doctor = nanobot(nanobot_home, "doctor")
    assert doctor.returncode == 1
    assert f"{path} (exists, INVALID)" in doctor.stdout
    assert doctor.stdout.rstrip().endswith("1 problem(s).")
    assert "Traceback" not in doctor.stdout + doctor.stderr

    agent = nanobot(nanobot_home, "agent", "-m", "hi")
    assert agent.returncode == 2
    assert agent.stdout == ""
    assert_one_error_line(agent.stderr, expected)
    assert "Traceback" not in agent.stdout + agent.stderr


def test_agent_empty_message_in_a_child_process(nanobot_home: Path) -> None:
    result = nanobot(nanobot_home, "agent", "-m", "")
    assert result.returncode == 2
    assert result.stderr == "nanobot: agent: the message is empty\n"


@pytest.mark.model
def test_agent_answers_with_the_embedded_model_and_cleans_up(nanobot_home: Path) -> None:
    # Small contexts keep the KV cache, and so the server's start, short.
    write_config(
        nanobot_home,
        json.dumps(
            {
                "local": {
                    "main": {"model": "smollm2-135m-instruct", "contextSize": 1024},
                    "rlm": {"contextSize": 1024, "parallel": 1},
                    "memory": {"contextSize": 1024},
                }
            }
        ),
    )
    result = nanobot(nanobot_home, "agent", "-m", "Say hi", "--max-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert data["answer"].strip()
    assert data["model"] == "SmolLM2-135M-Instruct"
    # One round with prompted tools unless the model wrote something call-like.
    assert 1 <= data["usage"]["completionTokens"] <= 8 * data["rounds"]
    assert 0 < data["usage"]["lastPromptTokens"] < 1000  # the tools are in the prompt
    assert (nanobot_home / "sessions" / f"{data['session']}.jsonl").is_file()

    # No pid record and no server left behind, and its port is free again.
    run_dir = nanobot_home / "run"
    assert list(run_dir.glob("servers-*.json")) == []
    assert llama_hosts_for(nanobot_home) == []
    log = (nanobot_home / "logs" / "server-main+rlm+memory.log").read_text()
    # The manager's own header line names the port exactly (server output may interleave).
    port = int(re.search(r"'--port', '(\d+)'", log).group(1))
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
