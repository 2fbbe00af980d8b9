"""Agent sessions: JSONL files that survive crashes and keep every original message."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from nanobot_tui import paths
from nanobot_tui.engine.agent.sessions import (
    Session,
    SessionError,
    SessionNotFound,
    SessionStore,
    summary_range,
)
from nanobot_tui.engine.agent.tools.registry import ToolResult


def test_create_append_resume_list(nanobot_home: Path) -> None:
    store = SessionStore()
    with store.create("trip") as session:
        assert session.path == paths.sessions_dir() / "trip.jsonl"
        assert session.append_message({"role": "user", "content": "Plan a trip\nto Lisbon"}) == 0
        assert session.append_message({"role": "assistant", "content": "Sure."}) == 1
        session.append({"type": "meta", "model": "smollm2"})
        session.sync()
    with store.create() as other:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d{4}-[0-9a-f]{4}", other.name)
        other.append_message({"role": "user", "content": "x" * 200})

    resumed = store.open("trip")
    assert resumed.messages() == [
        {"role": "user", "content": "Plan a trip\nto Lisbon"},
        {"role": "assistant", "content": "Sure."},
    ]
    assert resumed.warnings == []
    listed = {info.name: info for info in store.list()}
    assert set(listed) == {"trip", other.name}
    assert listed["trip"].messages == 2
    assert listed["trip"].title == "Plan a trip"
    assert listed[other.name].title == "x" * 59 + "…"
    assert listed["trip"].created.endswith("Z")
    latest = store.latest()
    assert latest is not None and latest.name == other.name

    # Every line is one record, "type" first, with a timestamp.
    lines = (paths.sessions_dir() / "trip.jsonl").read_text().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["meta", "message", "message", "meta"]
    assert all(x.startswith('{"type":') and '"ts":' in x for x in lines)


def test_files_are_private(nanobot_home: Path) -> None:
    session = SessionStore().create("private")
    session.append_message({"role": "user", "content": "hi"})
    assert stat.S_IMODE(os.stat(session.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(paths.sessions_dir()).st_mode) == 0o700


def test_meta_records_never_carry_secrets(nanobot_home: Path) -> None:
    session = SessionStore().create("s")
    session.append(
        {"type": "meta", "apiKey": "sk-123", "slot": {"api_key": "sk-456", "model": "m"}}
    )
    text = session.path.read_text()
    assert "sk-123" not in text and "sk-456" not in text
    assert session.records()[-1]["slot"] == {"model": "m"}


def test_unknown_session_says_which_exist(nanobot_home: Path) -> None:
    store = SessionStore()
    with pytest.raises(SessionNotFound, match=r"no session named 'nope' \(recent: none yet\)"):
        store.open("nope")
    store.create("alpha")
    store.create("beta")
    with pytest.raises(SessionNotFound) as info:
        store.open("nope")
    message = str(info.value)
    assert "\n" not in message and "alpha" in message and "beta" in message


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 65, "sp ace"])
def test_bad_names_are_refused(nanobot_home: Path, name: str) -> None:
    with pytest.raises(SessionError, match="bad session name"):
        SessionStore().create(name)


def test_create_refuses_an_existing_name(nanobot_home: Path) -> None:
    store = SessionStore()
    store.create("once").append_message({"role": "user", "content": "keep me"})
    with pytest.raises(SessionError, match="exists already"):
        store.create("once")
    assert store.open("once").messages() == [{"role": "user", "content": "keep me"}]


def test_crash_truncated_last_line_is_skipped_and_next_append_works(nanobot_home: Path) -> None:
    session = SessionStore().create("crash")
    session.append_message({"role": "user", "content": "first"})
    session.append_message({"role": "assistant", "content": "second"})
    session.close()
    # A crash mid-write: half a record, no newline.
    with session.path.open("ab") as fh:
        fh.write(b'{"type":"message","message":{"role":"user","cont')

    resumed = SessionStore().open("crash")
    assert [m["content"] for m in resumed.messages()] == ["first", "second"]
    assert len(resumed.warnings) == 1 and "last line skipped" in resumed.warnings[0]
    resumed.append_message({"role": "user", "content": "third"})
    resumed.close()

    again = SessionStore().open("crash")
    assert [m["content"] for m in again.messages()] == ["first", "second", "third"]
    assert again.message_count == 3
    # The garbage line stays where it was, the new record is on a line of its own.
    lines = again.path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and json.loads(lines[-2])["message"]["content"] == "third"
    info = next(i for i in SessionStore().list() if i.name == "crash")
    assert info.messages == 3


def one_message_then(name: str, raw: bytes) -> Session:
    """Session `name` with one user message "a", then `raw` appended to its file as is."""
    session = SessionStore().create(name)
    session.append_message({"role": "user", "content": "a"})
    session.close()
    with session.path.open("ab") as fh:
        fh.write(raw)
    return Session(session.path)


def test_garbage_in_the_middle_is_not_fatal(nanobot_home: Path) -> None:
    reopened = one_message_then("garbage", b"\x00\xffnot json\n[1, 2]\n")
    reopened.append_message({"role": "assistant", "content": "b"})
    assert [m["content"] for m in Session(reopened.path).messages()] == ["a", "b"]
    assert len(Session(reopened.path).warnings) == 2


def test_compaction_records_replace_ranges_but_keep_the_originals(nanobot_home: Path) -> None:
    session = SessionStore().create("long")
    for i in range(6):
        session.append_message({"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"})
    session.append({"type": "compaction", "summary": "first four", "first": 0, "last": 3})
    live = session.messages()
    assert summary_range(live[0]) == (0, 3) and live[0]["content"].endswith("first four")
    assert [m["content"] for m in live[1:]] == ["m4", "m5"]

    session.append_message({"role": "user", "content": "m6"})
    # A later compaction folds the earlier summary in.
    session.append({"type": "compaction", "summary": "all but the last", "first": 0, "last": 5})
    live = Session(session.path).messages()
    assert summary_range(live[0]) == (0, 5)
    assert [m["content"] for m in live[1:]] == ["m6"]
    assert [m["content"] for m in session.all_messages()] == [f"m{i}" for i in range(7)]

    with pytest.raises(SessionError, match="does not fit"):
        session.append({"type": "compaction", "summary": "x", "first": 2, "last": 9})


def test_clipped_messages_are_clipped_in_the_live_view(nanobot_home: Path) -> None:
    session = SessionStore().create("clip")
    session.append_message({"role": "user", "content": "y" * 5000})
    session.append({"type": "compaction", "summary": "", "first": None, "last": None,
                    "clipped": [[0, 300]]})  # fmt: skip
    (live,) = Session(session.path).messages()
    assert live["content"].startswith("y" * 300) and "clipped: 300 of 5000" in live["content"]
    assert session.all_messages()[0]["content"] == "y" * 5000


def test_tool_records_are_for_display_only(nanobot_home: Path) -> None:
    session = SessionStore().create("tools")
    call = {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
    session.append_message({"role": "assistant", "content": "", "tool_calls": [call]})
    session.append_tool(ToolResult("c1", "ls", {}, "a.txt", True, 0.01234))
    session.append_message({"role": "tool", "tool_call_id": "c1", "content": "a.txt"})
    record = next(r for r in session.records() if r["type"] == "tool")
    assert record["name"] == "ls" and record["ok"] is True and record["elapsed_s"] == 0.0123
    assert [m["role"] for m in session.messages()] == ["assistant", "tool"]


def test_bad_records_are_refused(nanobot_home: Path) -> None:
    session = SessionStore().create("strict")
    with pytest.raises(SessionError, match="unknown session record type"):
        session.append({"type": "config", "apiKey": "x"})
    with pytest.raises(SessionError, match="role"):
        session.append({"type": "message", "message": {"content": "no role"}})


def test_a_store_can_live_elsewhere(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "elsewhere")
    assert store.create("x").path == tmp_path / "elsewhere" / "x.jsonl"
    assert [i.name for i in store.list()] == ["x"]
    assert SessionStore().list() == []


def test_a_malformed_compaction_record_is_skipped(nanobot_home: Path) -> None:
    reopened = one_message_then(
        "odd",
        b'{"type":"compaction","summary":"s","first":0,"last":7}\n'
        b'{"type":"compaction","summary":"s","first":0,"last":0,"clipped":"x"}\n',
    )
    assert reopened.messages() == [{"role": "user", "content": "a"}]
    assert len(reopened.warnings) == 2 and "only 1 messages precede it" in reopened.warnings[0]


def test_returned_messages_are_copies(nanobot_home: Path) -> None:
    session = SessionStore().create("copies")
    session.append_message({"role": "user", "content": "a"})
    session.messages()[0]["content"] = "changed"
    session.all_messages()[0]["content"] = "changed"
    assert session.messages() == [{"role": "user", "content": "a"}]
