"""Recall over past sessions: exported, ingested as a volume, searched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nanobot_tui.engine.agent.recall import RECALL_VOLUME, SessionRecall, recall_tool
from nanobot_tui.engine.agent.sessions import SessionStore
from nanobot_tui.engine.agent.tools.registry import ToolError
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.storage import volume_dir
from nanobot_tui.engine.context.volume import Volume
from nanobot_tui.engine.llm.openai import LLMClient
from tests.engine.context.trees import write_tree


def make_session(store: SessionStore, name: str, turns: list[tuple[str, str]]) -> None:
    with store.create(name) as session:
        for user, assistant in turns:
            session.append_message({"role": "user", "content": user})
            session.append_message({"role": "assistant", "content": assistant})


@pytest.fixture
def past(nanobot_home: Path) -> SessionStore:
    store = SessionStore()
    make_session(
        store,
        "cabin-trip",
        [
            ("We are going to the cabin next week.", "Sounds lovely."),
            (
                "Remember: the wifi password at the cabin is PURPLE-HERON-42.",
                "Noted, the cabin wifi password is PURPLE-HERON-42.",
            ),
            ("Also bring the kayak.", "Kayak on the list."),
        ],
    )
    make_session(
        store,
        "taxes",
        [("Help me with the tax forms for 2025.", "Start with form 1040 and your W-2.")],
    )
    return store


@pytest.fixture
async def recall(past: SessionStore) -> AsyncIterator[SessionRecall]:
    handle = SessionRecall(past, current="now")
    yield handle
    handle.close()


async def test_recall_finds_a_fact_from_an_earlier_session(recall: SessionRecall) -> None:
    hits = await recall.search("what was the cabin wifi password?")
    assert hits[0].session == "cabin-trip"
    assert any("PURPLE-HERON-42" in line for line in hits[0].lines)
    assert all(line.startswith(("[user]", "[assistant]", "session ")) for line in hits[0].lines)

    tool = recall_tool(recall)
    assert tool.name == "recall" and tool.read_only
    text = await tool.handler({"query": "tax form 1040"})
    assert text.startswith("session taxes:") and "form 1040" in text


async def test_reingest_only_when_sessions_changed(past: SessionStore) -> None:
    recall = SessionRecall(past)
    assert recall.refresh() is True
    assert recall.ingests == 1
    assert recall.refresh() is False  # nothing changed: no export, no ingest
    assert SessionRecall(past).refresh() is False  # the state outlives the object

    with past.open("taxes") as taxes:
        taxes.append_message({"role": "user", "content": "My accountant is Dana Okafor."})
    assert recall.refresh() is True
    hits = await recall.search("who is the accountant")
    assert hits[0].session == "taxes" and "Dana Okafor" in hits[0].lines[0]

    (past.root / "cabin-trip.jsonl").unlink()
    assert recall.refresh() is True
    with Volume.open(RECALL_VOLUME) as volume:
        assert [f.path for f in volume.files] == ["taxes.txt"]
    recall.close()


async def test_the_current_session_is_not_indexed(past: SessionStore) -> None:
    with past.create("now") as current:
        current.append_message({"role": "user", "content": "The ferry leaves at 7:45 from pier 9."})
    recall = SessionRecall(past, current="now")
    recall.refresh()
    with Volume.open(RECALL_VOLUME) as volume:
        assert sorted(f.path for f in volume.files) == ["cabin-trip.txt", "taxes.txt"]
    with past.open("now") as current:  # the session goes on: no re-ingest for it
        current.append_message({"role": "assistant", "content": "Pier 9 it is."})
    assert recall.refresh() is False
    assert await recall.search("ferry pier") == []
    recall.close()


async def test_a_users_volume_of_the_same_name_is_left_alone(
    past: SessionStore, tmp_path: Path
) -> None:
    ingest(
        write_tree(tmp_path / "notes", {"a.md": "my own notes about the cabin\n"}), RECALL_VOLUME
    )
    tool = recall_tool(SessionRecall(past))
    with pytest.raises(ToolError, match=r"volume 'sessions' holds .*notes, not past sessions"):
        await tool.handler({"query": "cabin"})
    with Volume.open(RECALL_VOLUME) as volume:
        assert [f.path for f in volume.files] == ["a.md"]


async def test_no_past_sessions(nanobot_home: Path) -> None:
    recall = SessionRecall(SessionStore())
    assert await recall.search("anything") == []
    tool = recall_tool(recall)
    assert await tool.handler({"query": "anything"}) == "Nothing found in past sessions."


async def test_bad_arguments_are_tool_errors(recall: SessionRecall) -> None:
    tool = recall_tool(recall)
    with pytest.raises(ToolError, match="query must be a non-empty string"):
        await tool.handler({"query": "  "})
    with pytest.raises(ToolError, match="top must be a whole number from 1 to 10"):
        await tool.handler({"query": "cabin", "top": 50})
    with pytest.raises(ToolError, match="no searchable words"):
        await tool.handler({"query": "?!"})


async def test_recall_fuses_vectors_with_an_embedding_model(
    past: SessionStore, embedding_server: str
) -> None:
    async with LLMClient(embedding_server) as client:
        recall = SessionRecall(past, embedder=client)
        hits = await recall.search("cabin wifi password", top=2)
        recall.close()
    assert hits[0].session == "cabin-trip"
    assert any("PURPLE-HERON-42" in line for line in hits[0].lines)
    assert (volume_dir(RECALL_VOLUME) / "index" / "vectors.npy").is_file()
