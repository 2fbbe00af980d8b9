"""The micro-tools and `ask`, on real volumes and the real embedded model."""

from __future__ import annotations

import pytest

from nanobot_tui.engine.context.ask import ask, excerpt_for
from nanobot_tui.engine.context.micro_tools import MAX_SLICE_LINES, ContextStore
from nanobot_tui.engine.context.search import search
from nanobot_tui.engine.context.storage import VolumeError
from nanobot_tui.engine.llm.openai import LLMClient


def test_length_slice_grep(notes: str) -> None:
    with ContextStore() as store:
        length = store.ctx_length(notes)
        assert length.files == 2 and length.lines == 601 + 60
        assert length.to_dict()["estTokens"] == length.bytes // 4
        hits = store.ctx_grep(notes, r"rocket \w+", max_hits=5).hits
        assert [(h.file, h.fline) for h in hits] == [("README.md", 301)]
        (line,) = store.ctx_slice(notes, hits[0].vline, hits[0].vline)
        assert line.text == "The launch password for rocket Albatross is ZX-991-QT."
        assert [x.text for x in store.ctx_slice(notes, 1, 2)] == [
            "Line 0 about the weather and the sea.",
            "Line 1 about the weather and the sea.",
        ]
        with pytest.raises(VolumeError, match="at most"):
            store.ctx_slice(notes, 1, MAX_SLICE_LINES + 1)
        with pytest.raises(VolumeError, match="before start"):
            store.ctx_slice(notes, 5, 4)
        with pytest.raises(VolumeError):
            store.ctx_length("no-such-volume")


async def test_search_without_embeddings_says_lexical(notes: str) -> None:
    with ContextStore() as store:
        result = await store.ctx_search(notes, "launch password rocket Albatross", top=3)
        assert result.method == "bm25+simhash"
        assert result.hits[0].file == "README.md"
        best = store.ctx_slice(notes, result.hits[0].best_vline, result.hits[0].best_vline)
        assert "Albatross" in best[0].text


def test_mem_store_and_recall() -> None:
    store = ContextStore()
    store.mem_store("plan", "read README first")
    assert store.mem_recall("plan") == "read README first"
    assert store.mem_recall() == {"plan": "read README first"}
    with pytest.raises(KeyError, match="stored: plan"):
        store.mem_recall("other")
    with pytest.raises(ValueError):
        store.mem_store("", "x")


@pytest.mark.timeout(300)  # three model calls: slow only when other jobs share the cores
async def test_summarize_with_the_real_model(notes: str, llama_server: str) -> None:
    async with LLMClient(llama_server) as client:
        with ContextStore(summarizer=client, summary_tokens=24) as store:
            summary = await store.ctx_summarize(notes, 1, 5)
            assert summary.text and summary.model_calls == 1
            assert (summary.start, summary.end) == (1, 5)
            # A long range is summarised in pieces, then the pieces' summaries together.
            long = await store.ctx_summarize(notes, 1, 200)  # ~7.6K characters
            assert long.model_calls == 3  # two pieces, then their summaries together
    with pytest.raises(VolumeError, match="memory slot"):
        await ContextStore().ctx_summarize(notes, 1, 2)


async def test_ask_reads_only_excerpts_and_cites(notes: str, llama_server: str) -> None:
    from nanobot_tui.engine.context.volume import Volume

    with Volume.open(notes) as volume:
        hit = search(volume, "launch password rocket Albatross", top=1).hits[0]
        window = excerpt_for(volume, hit, window=2)
        assert len(window) <= 5
        assert any("ZX-991-QT" in line.text for line in window)
        async with LLMClient(llama_server) as client:
            result = await ask(volume, "What is the launch password for rocket Albatross?", client)
        assert result.citations[0].file == "README.md"
        assert result.citations[0].first_line <= 301 <= result.citations[0].last_line
        assert "ZX-991-QT" in result.prompt  # the model was given the needle ...
        assert len(result.prompt) < 4000  # ... and not the volume
        assert result.usage is not None and result.usage.prompt_tokens < 1500
        assert result.to_dict()["citations"][0]["file"] == "README.md"
