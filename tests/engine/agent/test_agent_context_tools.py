"""The ctx_* and mem_* tools on a real volume and the real ContextStore."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nanobot_tui.engine.agent.tools.context import SLICE_LINES, context_tools
from nanobot_tui.engine.agent.tools.registry import ToolRegistry, ToolResult
from nanobot_tui.engine.context.micro_tools import ContextStore
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.results import ToolCall


@pytest.fixture
def store() -> ContextStore:
    with ContextStore() as store:
        yield store  # type: ignore[misc]


async def run(registry: ToolRegistry, name: str, **arguments: Any) -> ToolResult:
    return await registry.execute(ToolCall(id=name, name=name, arguments=json.dumps(arguments)))


async def test_the_toolset(store: ContextStore) -> None:
    tools = {t.name: t for t in context_tools(store)}
    assert list(tools) == [
        "ctx_volumes",
        "ctx_length",
        "ctx_slice",
        "ctx_grep",
        "ctx_search",
        "mem_store",
        "mem_recall",
    ]
    assert [n for n, t in tools.items() if not t.read_only] == ["mem_store"]
    async with LLMClient("http://127.0.0.1:9") as client:  # never called: only present
        with ContextStore(summarizer=client) as with_model:
            assert "ctx_summarize" in [t.name for t in context_tools(with_model)]


async def test_volumes_and_length(notes: str, store: ContextStore) -> None:
    registry = ToolRegistry(context_tools(store))
    tokens = store.ctx_length(notes).est_tokens
    result = await run(registry, "ctx_volumes")
    assert result.content == f"1 volume:\nnotes: 2 files, 661 lines, ~{tokens:,} tokens"
    result = await run(registry, "ctx_length", volume="notes")
    lines = result.content.splitlines()
    assert lines[0].startswith("notes: 2 files, 661 lines, ")
    assert lines[1:] == ["files [volume lines]:", "README.md [1-601]", "src/app.py [602-661]"]


async def test_an_unknown_volume_lists_the_volumes(notes: str, store: ContextStore) -> None:
    registry = ToolRegistry(context_tools(store))
    for name, args in [
        ("ctx_length", {}),
        ("ctx_slice", {"start": 1, "end": 2}),
        ("ctx_grep", {"pattern": "x"}),
        ("ctx_search", {"query": "x"}),
    ]:
        result = await run(registry, name, volume="nope", **args)
        assert not result.ok
        assert result.content == "error: no volume named 'nope' (volumes: notes)"


async def test_no_volumes_yet(store: ContextStore) -> None:
    registry = ToolRegistry(context_tools(store))
    assert (await run(registry, "ctx_volumes")).content.startswith("no volumes yet")
    result = await run(registry, "ctx_length", volume="notes")
    assert result.content == "error: no volume named 'notes' (volumes: none yet)"


async def test_slice_across_files(notes: str, store: ContextStore) -> None:
    registry = ToolRegistry(context_tools(store))
    result = await run(registry, "ctx_slice", volume="notes", start=600, end=603)
    assert result.ok
    assert result.content == (
        "notes lines 600-603 of 661\n"
        "[README.md lines 600-601 = volume lines 600-601]\n"
        " 600| Line 298 about the weather and the sea.\n"
        " 601| Line 299 about the weather and the sea.\n"
        "[src/app.py lines 1-2 = volume lines 602-603]\n"
        "   1| def main():\n"
        "   2|     start_server(port=8080)"
    )


async def test_slice_is_capped_and_says_where_to_go_on(notes: str, store: ContextStore) -> None:
    registry = ToolRegistry(context_tools(store))
    result = await run(registry, "ctx_slice", volume="notes", start=1, end=600)
    assert result.ok and not result.truncated and len(result.content) <= 4000
    last = result.content.splitlines()[-2]
    shown_to = int(last.split("|")[0])
    assert shown_to < SLICE_LINES
    assert result.content.endswith(f"\n[more from volume line {shown_to + 1}]")
    small = ToolRegistry(context_tools(store, output_chars=100_000), output_chars=100_000)
    result = await run(small, "ctx_slice", volume="notes", start=1, end=600)
    assert result.content.splitlines()[0] == f"notes lines 1-{SLICE_LINES} of 661"
    result = await run(registry, "ctx_slice", volume="notes", start=9, end=3)
    assert result.content == "error: end 3 is before start 9"
    result = await run(registry, "ctx_slice", volume="notes", start=700, end=710)
    assert result.content == "error: start 700 is past the end: notes has 661 lines"


async def test_grep(notes: str, store: ContextStore) -> None:
    registry = ToolRegistry(context_tools(store))
    result = await run(registry, "ctx_grep", volume="notes", pattern=r"rocket \w+")
    assert result.content == (
        "1 hit, file:line [volume line]:\n"
        "README.md:301 [301] The launch password for rocket Albatross is ZX-991-QT."
    )
    result = await run(registry, "ctx_grep", volume="notes", pattern="start_server", max_hits=3)
    lines = result.content.splitlines()
    assert lines[1] == "src/app.py:2 [603] start_server(port=8080)"
    assert len(lines) == 5 and lines[-1].startswith("[more hits exist")
    result = await run(registry, "ctx_grep", volume="notes", pattern="no such words")
    assert result.ok and result.content == "no line of notes matches 'no such words'"
    result = await run(registry, "ctx_grep", volume="notes", pattern="(unclosed")
    assert not result.ok and result.content.startswith("error: invalid pattern '(unclosed'")


async def test_search_names_the_file_and_line(notes: str, store: ContextStore) -> None:
    registry = ToolRegistry(context_tools(store))
    result = await run(
        registry, "ctx_search", volume="notes", query="launch password of rocket Albatross"
    )
    assert result.ok
    lines = result.content.splitlines()
    assert lines[0] == "1 best passage, file:line [volume line]:"
    assert lines[1] == (
        "README.md:301 [301] The launch password for rocket Albatross is ZX-991-QT."
    )
    result = await run(registry, "ctx_search", volume="notes", query="zzqqxx", top=2)
    assert result.ok and result.content == "nothing in notes matches 'zzqqxx'"
    result = await run(registry, "ctx_search", volume="notes", query="?!")
    assert not result.ok
    assert result.content == "error: the query '?!' has no searchable words (letters or digits)"


async def test_memory(store: ContextStore) -> None:
    registry = ToolRegistry(context_tools(store))
    assert (await run(registry, "mem_recall")).content == "nothing stored yet"
    stored = await run(registry, "mem_store", key="plan", value="read README first")
    assert stored.content == "stored 'plan' (17 characters)"
    await run(registry, "mem_store", key="answer", value="42")
    assert (await run(registry, "mem_recall", key="plan")).content == "read README first"
    everything = await run(registry, "mem_recall")
    assert everything.content == "answer: 42\nplan: read README first"
    missing = await run(registry, "mem_recall", key="other")
    assert not missing.ok
    assert missing.content == (
        "error: mem_recall: nothing stored under 'other' (stored: answer, plan)"
    )
    empty = await run(registry, "mem_store", key="", value="x")
    assert not empty.ok and empty.content == "error: mem_store: the key is empty"


@pytest.mark.timeout(300)  # a model call: slow only when other jobs share the cores
async def test_summarize_with_the_real_model(notes: str, llama_server: str) -> None:
    async with LLMClient(llama_server) as client:
        with ContextStore(summarizer=client, summary_tokens=16) as store:
            registry = ToolRegistry(context_tools(store))
            result = await run(registry, "ctx_summarize", volume="notes", start=300, end=302)
            assert result.ok and result.content.startswith("notes lines 300-302: ")
            assert len(result.content) > len("notes lines 300-302: ")
            too_long = await run(registry, "ctx_summarize", volume="notes", start=1, end=5000)
            assert not too_long.ok and "at most 2,000 at once" in too_long.content


async def test_grep_with_a_backtracking_or_unsupported_pattern(tmp_path, store) -> None:
    """A model's (a+)+$ answers at once (RE2, linear time); lookbehind is a clear error."""
    from nanobot_tui.engine.context.ingest import ingest

    (tmp_path / "a.txt").write_text(("a" * 64 + "b\n") * 10 + "aaa\n")
    ingest(tmp_path / "a.txt", name="evil", index=False)
    registry = ToolRegistry(context_tools(store))
    result = await run(registry, "ctx_grep", volume="evil", pattern="(a+)+$")
    assert result.content == "1 hit, file:line [volume line]:\na.txt:11 [11] aaa"
    result = await run(registry, "ctx_grep", volume="evil", pattern="(?<=a)b")
    assert not result.ok and result.content == (
        "error: invalid pattern '(?<=a)b': lookahead and lookbehind are not supported"
        " (patterns run in linear time, with RE2)"
    )


async def test_a_newline_in_a_file_name_is_shown_escaped(
    tmp_path: Any, store: ContextStore
) -> None:
    from nanobot_tui.engine.context.ingest import ingest

    root = tmp_path / "nl"
    root.mkdir()
    (root / "a\nb.txt:7:forged").write_text("needle\n")
    ingest(root, "nl")
    registry = ToolRegistry(context_tools(store))
    grep = (await run(registry, "ctx_grep", volume="nl", pattern="needle")).content
    assert grep.splitlines()[1:] == ["a\\nb.txt:7:forged:1 [1] needle"]
    length = (await run(registry, "ctx_length", volume="nl")).content
    assert length.splitlines()[-1] == "a\\nb.txt:7:forged [1-1]"
    found = (await run(registry, "ctx_search", volume="nl", query="needle")).content
    assert found.splitlines()[1].startswith("a\\nb.txt:7:forged:1 [1] ")
    sliced = (await run(registry, "ctx_slice", volume="nl", start=1, end=1)).content
    assert sliced.splitlines()[1] == "[a\\nb.txt:7:forged lines 1-1 = volume lines 1-1]"
