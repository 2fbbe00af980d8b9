"""Text that is not UTF-8 on the way in (issue 12, item 14): bytes on stdin or in argv
that Python keeps as lone surrogates, written to a session; never a traceback, never a
session file left without the message."""

from __future__ import annotations

import argparse
import io
import json
import sys

import pytest

from nanobot_tui.cli import agent as cli_agent
from nanobot_tui.cli import main as cli
from nanobot_tui.engine.agent.sessions import SessionStore


def test_a_session_keeps_a_message_with_a_lone_surrogate() -> None:
    store = SessionStore()
    session = store.create("latin")
    session.append_message({"role": "user", "content": "caf\udce9 au lait"})
    session.append_message({"role": "assistant", "content": "ok"})
    lines = session.path.read_bytes().decode("utf-8").splitlines()  # valid UTF-8
    assert [json.loads(line)["type"] for line in lines] == ["meta", "message", "message"]
    again = store.open("latin")
    assert [m["content"] for m in again.messages()] == ["caf\ufffd au lait", "ok"]
    assert [m["content"] for m in session.messages()] == ["caf\ufffd au lait", "ok"]


def _capture_message(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    got: list[str] = []

    async def fake_run(args: argparse.Namespace, message: str) -> int:  # FAKE: no servers
        got.append(message)
        return 0

    monkeypatch.setattr(cli_agent, "_run_agent", fake_run)
    return got


def test_stdin_that_is_not_utf8_becomes_replacement_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got = _capture_message(monkeypatch)
    # As under a C/POSIX locale, where Python decodes stdin with surrogateescape.
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9\n"), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert cli.main(["agent", "-m", "-"]) == 0
    assert got == ["caf\ufffd\n"]


def test_an_argument_that_is_not_utf8_becomes_replacement_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got = _capture_message(monkeypatch)
    assert cli.main(["agent", "-m", "caf\udce9"]) == 0  # argv keeps bad bytes this way
    assert got == ["caf\ufffd"]
