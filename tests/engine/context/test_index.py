"""The chunk index: chunk boundaries, BM25 maths, incremental rebuilds."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from nanobot_tui.engine.context import index as ix
from nanobot_tui.engine.context import ingest as ing
from nanobot_tui.engine.context.index import CHUNK_CHARS, ChunkIndex, ChunkIndexError, build_index
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.tokens import term_hash
from nanobot_tui.engine.context.volume import Volume
from tests.engine.context.trees import open_volume, write_tree

_WORD_TEXT = """
    alpha beta gamma delta server client request response buffer socket thread queue
    worker config parser token index volume chunk search vector model layer cache
"""
WORDS = _WORD_TEXT.split()


def prose(rng: random.Random, n_lines: int, width: tuple[int, int] = (3, 20)) -> str:
    return "".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(*width))) + "\n"
        for _ in range(n_lines)
    )


# --------------------------------------------------------------------------- chunks


def chunk_files(rng: random.Random) -> dict[str, str | bytes]:
    return {
        "a/code.py": "".join(
            f"def {rng.choice(WORDS)}_{i}(x):\n    return x * {i}\n" for i in range(300)
        ),
        "a/empty.txt": "",
        "b/notes.md": prose(rng, 400),
        "b/one_long_line.txt": "short first line\n" + "long " * 2000 + "\nshort last line",
        "c/crlf.log": prose(rng, 120).replace("\n", "\r\n"),
        "c/tiny.txt": "just one line without newline",
        "d/unicode.txt": "".join(
            f"ligne {i}: été, naïve, 東京, ✓ {'é' * 30}\n" for i in range(300)
        ),
        "e/bad.bin.txt": b"valid start\n\xff\xfe broken bytes \x80 here\n" * 100,
    }


def test_chunks_cover_every_line_once_within_files_and_size(tmp_path: Path) -> None:
    volume = open_volume(tmp_path / "src", chunk_files(random.Random(1)))
    with volume:
        index = ChunkIndex.open(volume)
        raw = volume.raw()
        assert len(index) > 10
        next_line = 1
        for i in range(len(index)):
            c = index.chunk(i)
            assert c.id == i
            assert c.first_vline == next_line  # contiguous: every line exactly once
            assert c.first_vline <= c.last_vline
            next_line = c.last_vline + 1
            f = volume.files[c.file]
            assert volume.file_at(c.first_vline) == f == volume.file_at(c.last_vline)
            assert (c.start, c.end) == volume.byte_span(c.first_vline, c.last_vline)
            data = bytes(raw[c.start : c.end])
            assert c.hash == int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
            text = index.chunk_text(volume, i)
            assert text == volume.text(c.first_vline, c.last_vline)
            if c.n_lines > 1:
                assert len(data) <= CHUNK_CHARS
                assert len(text) <= CHUNK_CHARS
            else:
                assert c.n_lines == 1
            # greedy: the next line of the same file would not have fitted
            if c.last_vline < f.first_line + f.n_lines:
                end_with_next = volume.byte_span(c.last_vline + 1, c.last_vline + 1)[1]
                assert end_with_next - c.start > CHUNK_CHARS
        assert next_line == volume.n_lines + 1
        # the long line is a chunk of its own, and bigger than CHUNK_CHARS
        long_file = volume.file("b/one_long_line.txt")
        singles = [index.chunk(i) for i in range(len(index)) if index.chunk(i).n_lines == 1]
        long_chunks = [c for c in singles if c.end - c.start > CHUNK_CHARS]
        assert [(c.first_vline, volume.files[c.file]) for c in long_chunks] == [
            (long_file.first_line + 2, long_file)
        ]
        # each file's chunks are in volume order and the empty file has none
        files_seen = [volume.files[index.chunk(i).file].path for i in range(len(index))]
        assert "a/empty.txt" not in files_seen
        assert files_seen == sorted(files_seen)


def test_plan_chunks_on_a_plain_line_table() -> None:
    class F:
        def __init__(self, first: int, n: int) -> None:
            self.first_line, self.n_lines = first, n

    lengths = [10, 10, 10, 50, 5, 5]
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.uint64)
    files = [F(0, 4), F(4, 0), F(4, 2)]
    plan = ix.plan_chunks(starts, files, chunk_chars=25)
    # file 0: lines 0-1 (20 bytes), line 2 (10, as 2-3 would be 60), line 3 (50, alone)
    assert plan.tolist() == [[0, 0, 2], [0, 2, 3], [0, 3, 4], [2, 4, 6]]


def test_cutting_a_big_file_never_copies_its_line_table() -> None:
    """One file of 300,000 lines (a log): the cut looks each chunk's end up in the line
    table as it is. It once compared a Python int with the uint64 table, which made numpy
    convert the whole table for every chunk: 4 s of a 60 MB ingest with no progress."""
    import tracemalloc

    class F:
        first_line, n_lines = 0, 300_000

    starts = np.arange(0, 41 * 300_001, 41, dtype=np.uint64)
    tracemalloc.start()
    try:
        plan = ix.plan_chunks(starts, [F()], chunk_chars=4100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.tolist()[:2] == [[0, 0, 100], [0, 100, 200]] and len(plan) == 3000
    assert peak < starts.nbytes // 4  # no copy of the table, not even one


# --------------------------------------------------------------------------- BM25


def test_bm25_matches_a_hand_computation(tmp_path: Path) -> None:
    toy = {
        "d0.txt": "apple banana apple\n",
        "d1.txt": "banana cherry\n",
        "d2.txt": "cherry cherry cherry date\n",
    }
    with open_volume(tmp_path / "toy", toy) as volume:
        index = ChunkIndex.open(volume)
        assert len(index) == 3
        assert [index.chunk(i).length for i in range(3)] == [3, 2, 4]
        assert index.avgdl == pytest.approx(3.0)
        # idf = ln(1 + (N - df + 0.5) / (df + 0.5)), N = 3; k1 = 1.2, b = 0.75
        idf_apple = math.log(1 + 2.5 / 1.5)  # df 1
        idf_cherry = math.log(1 + 1.5 / 2.5)  # df 2
        # tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        d0 = idf_apple * (2 * 2.2) / (2 + 1.2 * (0.25 + 0.75 * 3 / 3))
        d1 = idf_cherry * (1 * 2.2) / (1 + 1.2 * (0.25 + 0.75 * 2 / 3))
        d2 = idf_cherry * (3 * 2.2) / (3 + 1.2 * (0.25 + 0.75 * 4 / 3))
        scores = index.bm25([term_hash("apple"), term_hash("cherry")])
        assert scores.tolist() == pytest.approx([d0, d1, d2], rel=1e-12)
        assert d0 == pytest.approx(1.348640, rel=1e-6)  # the numbers themselves, by hand
        assert index.bm25([term_hash("date")]).tolist() == pytest.approx(
            [0, 0, math.log(1 + 2.5 / 1.5) * 2.2 / (1 + 1.5)]
        )
        assert index.bm25([term_hash("nothing")]).tolist() == [0, 0, 0]
        assert index.idf(term_hash("banana")) == pytest.approx(idf_cherry)


# --------------------------------------------------------------------------- rebuilds


def _arrays(volume: Volume) -> dict[str, np.ndarray]:
    folder = volume.dir / "index"
    return {p.stem: np.load(p) for p in sorted(folder.glob("*.npy"))}


def test_reindex_reuses_unchanged_chunks_and_gives_the_same_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    files = {f"f{k}.md": prose(rng, 150) for k in range(6)}
    src = write_tree(tmp_path / "src", files)
    reports: list[ix.IndexReport] = []
    real_build = ix.build_index

    def recording_build(volume: Volume, *, progress=None) -> ix.IndexReport:
        reports.append(real_build(volume, progress=progress))
        return reports[-1]

    monkeypatch.setattr(ing, "build_index", recording_build)
    calls = []
    real_forward = ix.forward_entry
    monkeypatch.setattr(ix, "forward_entry", lambda text: calls.append(1) or real_forward(text))

    ingest(src, "vol")
    first = reports[-1]
    assert first.reused == 0 and first.tokenized == first.chunks == len(calls)

    # Change the last line of one file and append a new file.
    (src / "f2.md").write_text(files["f2.md"] + "a brand new zephyr line\n")
    (src / "g.md").write_text(prose(rng, 40))
    calls.clear()
    ingest(src, "vol")
    second = reports[-1]
    with Volume.open("vol") as volume:
        index = ChunkIndex.open(volume)
        by_file = [volume.files[index.chunk(i).file].path for i in range(len(index))]
        changed = 1 + by_file.count("g.md")  # f2's last chunk, and the new file's chunks
        assert second.chunks == len(index)
        assert second.tokenized == changed == len(calls)
        assert second.reused == second.chunks - changed
        incremental = _arrays(volume)
        # Building again over it reuses everything; from scratch gives the same arrays.
        again = build_index(volume)
        assert again.reused == again.chunks and again.tokenized == 0
        shutil.rmtree(volume.dir / "index")
        scratch = build_index(volume)
        assert scratch.reused == 0 and scratch.tokenized == scratch.chunks
        fresh = _arrays(volume)
    assert incremental.keys() == fresh.keys()
    for name in incremental:
        np.testing.assert_array_equal(incremental[name], fresh[name], err_msg=name)


def test_partitioned_postings_equal_a_single_sort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(11)
    with open_volume(tmp_path / "src", {f"f{k}.txt": prose(rng, 200) for k in range(4)}) as v:
        whole = _arrays(v)
        monkeypatch.setattr(ix, "PARTITION_ENTRIES", 16)  # forces many partitions
        assert ix._partitions(len(whole["fwd_terms"])) > 8
        build_index(v)
        parted = _arrays(v)
    for name in ("vocab", "df", "post_offsets", "post_docs", "post_tf"):
        np.testing.assert_array_equal(whole[name], parted[name], err_msg=name)
    # and the postings agree with the forward index
    vocab, offsets = whole["vocab"], whole["post_offsets"]
    assert np.all(vocab[1:] > vocab[:-1])
    for doc in (0, 5, len(whole["chunks"]) - 1):
        lo, hi = whole["fwd_offsets"][doc], whole["fwd_offsets"][doc + 1]
        for term, tf in zip(whole["fwd_terms"][lo:hi], whole["fwd_tf"][lo:hi], strict=True):
            j = int(np.searchsorted(vocab, term))
            docs = whole["post_docs"][offsets[j] : offsets[j + 1]]
            k = int(np.searchsorted(docs, doc))
            assert docs[k] == doc and whole["post_tf"][offsets[j] + k] == tf


def test_open_without_index_or_with_a_stale_one_is_a_one_line_error(tmp_path: Path) -> None:
    write_tree(tmp_path / "a", {"x.txt": "alpha beta\n"})
    write_tree(tmp_path / "b", {"y.txt": "gamma delta\n"})
    ingest(tmp_path / "a", "a", index=False)
    ingest(tmp_path / "b", "b", index=True)
    with Volume.open("a") as a, Volume.open("b") as b:
        with pytest.raises(ChunkIndexError, match="no search index") as info:
            ChunkIndex.open(a)
        assert "\n" not in str(info.value)
        # b's index put into a's folder does not pass for a's
        shutil.copytree(b.dir / "index", a.dir / "index")
        with pytest.raises(ChunkIndexError, match="out of date"):
            ChunkIndex.open(a)
        index = ChunkIndex.open(b)
        with pytest.raises(ChunkIndexError, match="out of range"):
            index.chunk(5)


def test_an_index_of_the_previous_tokenizer_is_refused_in_one_line(tmp_path: Path) -> None:
    """Version 1 indexes lack the compound-name tokens that queries now look up: rather
    than rank quietly worse, they ask for a re-ingest, which rebuilds them."""
    from nanobot_tui.engine.context.search import SearchError, search

    src = write_tree(tmp_path / "a", {"x.txt": "service amber-quartz-3\n"})
    ingest(src, "a")
    with Volume.open("a") as volume:
        meta_path = volume.dir / "index" / "meta.json"
        meta = json.loads(meta_path.read_text())
        assert meta["version"] == ix.INDEX_VERSION == 2
        meta.update(version=1, tokenizer="words+snake+camel,lower,min2,blake2b-8")
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(ChunkIndexError, match="another version") as info:
            ChunkIndex.open(volume)
        assert "\n" not in str(info.value) and "ingest it again" in str(info.value)
        with pytest.raises(SearchError, match="another version"):
            search(volume, "amber-quartz-3")
    ingest(src, "a")  # the re-ingest rebuilds it, tokenising afresh
    with Volume.open("a") as volume:
        assert search(volume, "amber-quartz-3").hits[0].file == "x.txt"


def test_build_reports_progress_in_chunks(tmp_path: Path) -> None:
    rng = random.Random(2)
    with open_volume(tmp_path / "src", {"a.txt": prose(rng, 600)}) as volume:
        seen: list[tuple[str, int, int]] = []
        report = build_index(volume, progress=lambda *a: seen.append(a))
        assert seen[-1] == ("index", report.chunks, report.chunks)
        assert all(phase == "index" for phase, _, _ in seen)
        assert report.terms == ChunkIndex.open(volume).n_terms > 0


def test_a_crash_mid_swap_still_lets_the_next_build_reuse_the_old_index(tmp_path: Path) -> None:
    rng = random.Random(4)
    with open_volume(tmp_path / "src", {"a.txt": prose(rng, 300)}) as volume:
        folder = volume.dir / "index"
        (folder / "vectors.json").write_text("{}")  # stands for a vector cache
        folder.rename(volume.dir / "index.old")  # as if killed between the two renames
        with pytest.raises(ChunkIndexError):
            ChunkIndex.open(volume)
        report = build_index(volume)
        assert report.reused == report.chunks > 1
        assert (folder / "vectors.json").exists()
        assert not (volume.dir / "index.old").exists()
        assert len(ChunkIndex.open(volume)) == report.chunks
