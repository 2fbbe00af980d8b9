"""ctx_search: lexical ranking, hits, errors, and vector fusion (fake and real embedder)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nanobot_tui.engine.context import index as ix
from nanobot_tui.engine.context import ingest as ing
from nanobot_tui.engine.context import search as sr
from nanobot_tui.engine.context.index import ChunkIndex
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.search import (
    SearchError,
    query_terms,
    search,
    search_with_vectors,
)
from nanobot_tui.engine.context.tokens import simhash, term_hash, tokens
from nanobot_tui.engine.context.volume import Volume
from nanobot_tui.engine.llm.openai import LLMClient
from tests.engine.context.trees import open_volume, write_tree

_WORD_TEXT = """
    alpha beta gamma delta server client request response buffer socket thread queue
    worker config parser token index volume chunk search vector model layer cache
    network packet stream handler retry timeout session cookie header payload
"""
WORDS = _WORD_TEXT.split()
VAULTS = [
    "kestrel",
    "marmot",
    "quasar",
    "ocelot",
    "tamarind",
    "basalt",
    "fennel",
    "juniper",
    "halcyon",
    "lumen",
    "nimbus",
    "obsidian",
]
NEEDLE = "The secret code of project Zephyr is 7731-ALPHA."


def filler(rng: random.Random, kind: int, n_lines: int) -> list[str]:
    lines = []
    for _ in range(n_lines):
        if kind == 0:
            a, b = rng.sample(WORDS, 2)
            lines.append(f"    def {a}_{b}_{rng.randint(0, 99)}(self): return self.{b}")
        elif kind == 1:
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + ".")
        else:
            n = rng.randint(1, 999)
            lines.append(
                f"2024-05-01 12:00 INFO {rng.choice(WORDS)} id={rng.getrandbits(32):x} {n}ms"
            )
    return lines


def haystack(seed: int = 1, n_files: int = 12) -> dict[str, list[str]]:
    rng = random.Random(seed)
    ext = ("py", "md", "log")
    return {
        f"{ext[k % 3]}/f{k:02d}.{ext[k % 3]}": filler(rng, k % 3, rng.randint(150, 300))
        for k in range(n_files)
    }


def as_text(files: dict[str, list[str]]) -> dict[str, str]:
    return {path: "\n".join(lines) + "\n" for path, lines in files.items()}


# --------------------------------------------------------------------------- queries


def test_query_terms_drop_stop_words_unless_nothing_else_is_left() -> None:
    question = "What is the secret code of project Zephyr?"
    assert query_terms(question) == ["secret", "code", "project", "zephyr"]
    assert query_terms("to be or not to be") == ["to", "be", "or", "not"]
    assert query_terms("parseHttpRequest") == ["parsehttprequest", "parse", "http", "request"]


@pytest.mark.parametrize("query", ["", "   \n", "?!", "- x -"])
def test_empty_or_wordless_query_is_a_one_line_error(tmp_path: Path, query: str) -> None:
    with open_volume(tmp_path / "src", {"a.txt": "alpha beta\n"}) as volume:
        with pytest.raises(SearchError) as info:
            search(volume, query)
        assert "\n" not in str(info.value)
        assert "query" in str(info.value)


def test_volume_without_index_is_a_one_line_error(tmp_path: Path) -> None:
    ingest(write_tree(tmp_path / "src", {"a.txt": "alpha beta\n"}), "bare", index=False)
    with Volume.open("bare") as volume, pytest.raises(SearchError) as info:
        search(volume, "alpha")
    assert "no search index" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- ranking


def test_distinctive_question_ranks_the_needle_chunk_first(tmp_path: Path) -> None:
    files = haystack()
    files["md/f04.md"].insert(136, NEEDLE)  # file line 137
    # distractors: the common words of the question, without the needle
    files["md/f07.md"][10:10] = ["the project code review is on friday"] * 5
    files["py/f09.py"][:0] = ["# secret sauce: see the project wiki"]
    with open_volume(tmp_path / "src", as_text(files)) as volume:
        result = search(volume, "what is the secret code of project Zephyr?", top=5)
        assert result.method == "bm25+simhash"
        assert result.seconds > 0  # measured and reported; its size is the benchmark's
        # only three chunks hold any of the query's content words
        assert [h.file for h in result.hits] == ["md/f04.md", "md/f07.md", "py/f09.py"]
        best = result.hits[0]
        assert best.file == "md/f04.md"
        assert best.first_fline <= 137 <= best.last_fline
        assert best.preview == NEEDLE
        (line,) = volume.lines(best.best_vline, best.best_vline)
        assert (line.file, line.fline, line.text) == ("md/f04.md", 137, NEEDLE)
        assert best.best_fline == 137
        scores = [hit.score for hit in result.hits]
        assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]


def test_many_needles_each_found_on_its_line(tmp_path: Path) -> None:
    rng = random.Random(5)
    files = haystack(seed=2, n_files=15)
    planted: dict[str, tuple[str, int, str]] = {}
    paths = sorted(files)
    for vault in VAULTS:
        path = rng.choice(paths)
        code = f"{rng.randint(1000, 9999)}-{rng.choice(WORDS).upper()}"
        text = f"The passphrase for vault {vault} is {code}."
        at = rng.randint(0, len(files[path]))
        files[path].insert(at, text)
        planted[vault] = (path, at, text)
    with open_volume(tmp_path / "src", as_text(files)) as volume:
        for vault, (path, _, text) in planted.items():
            hit = search(volume, f"what is the passphrase for vault {vault}?", top=3).hits[0]
            (line,) = volume.lines(hit.best_vline, hit.best_vline)
            assert (hit.file, line.text, hit.preview) == (path, text, text), vault


LOOKALIKE = "    # the release key for service {name} is {code}; rotate it when the service moves"
TINY = '"""Package marker."""\n'


def lookalike_volume(tmp_path: Path) -> tuple[Volume, dict[str, tuple[str, str]]]:
    """Look-alike passages: the same words but for a compound name whose parts recur
    (amber-quartz-3, amber-velvet-1, coral-quartz-3, ...), half of them in long code
    files, half alone in near-empty files (tiny chunks). Returns the volume and, per name
    planted in a long file, (path, line)."""
    rng = random.Random(13)
    files = haystack(seed=9, n_files=12)
    firsts, seconds = ("amber", "coral", "ivory"), ("quartz", "velvet")
    names = [f"{a}-{b}-{d}" for a in firsts for b in seconds for d in (1, 3)]
    long_files = sorted(path for path in files if path.endswith(".py"))
    in_long: dict[str, tuple[str, str]] = {}
    tiny: dict[str, str] = {}
    for k, name in enumerate(names):
        line = LOOKALIKE.format(name=name, code=f"{rng.randint(1000, 9999)}-K{k}")
        if k % 2:
            tiny[f"pkg{k:02d}/__init__.py"] = TINY + line + "\n"
        else:
            path = rng.choice(long_files)
            files[path].insert(rng.randint(20, len(files[path]) - 20), line)
            in_long[name] = (path, line)
    return open_volume(tmp_path / "src", {**as_text(files), **tiny}), in_long


def test_lookalike_passages_in_long_chunks_beat_tiny_near_empty_files(tmp_path: Path) -> None:
    """BM25 alone ranks a near-empty file holding a look-alike line (same words, another
    compound name) above the long chunk whose line holds the asked name: the compound
    name as one token, and the best line's coverage of the query, put it first."""
    volume, in_long = lookalike_volume(tmp_path)
    with volume:
        for name, (path, line) in in_long.items():
            hits = search(volume, f"What is the release key for service {name}?", top=3).hits
            assert (hits[0].file, hits[0].preview) == (path, line.strip()), name
            (best,) = volume.lines(hits[0].best_vline, hits[0].best_vline)
            assert best.text == line


def test_the_line_holding_every_query_word_beats_a_tiny_chunk_holding_most(
    tmp_path: Path,
) -> None:
    """Without compound names (the words are apart): a tiny file with four of the five
    query words outscores, by BM25's length normalisation, the long chunk with a line
    holding all five; re-ranking by the best line's coverage puts that line first."""
    files = haystack(seed=10, n_files=6)
    target = "    # release key for service amber quartz: 7731-ALPHA"
    files["py/f03.py"].insert(100, target)
    tiny = {
        "pkg/a/__init__.py": TINY + "# release key for service amber velvet: 1111-BETA\n",
        "pkg/b/__init__.py": TINY + "# release key for service coral quartz: 2222-GAMMA\n",
    }
    with open_volume(tmp_path / "src", {**as_text(files), **tiny}) as volume:
        query = "release key service amber quartz"
        hashes = [term_hash(w) for w in query_terms(query)]
        index = ChunkIndex.open(volume)
        bm25 = index.bm25(hashes)
        hits = search(volume, query, top=3).hits
        assert (hits[0].file, hits[0].preview) == ("py/f03.py", target.strip())
        # what BM25 alone would have put first: a tiny chunk
        assert {hit.file for hit in hits[1:]} == {"pkg/a/__init__.py", "pkg/b/__init__.py"}
        assert all(bm25[hit.chunk] > bm25[hits[0].chunk] for hit in hits[1:])
        assert search(volume, query, top=0).hits == []


def test_camel_case_and_snake_case_meet(tmp_path: Path) -> None:
    rng = random.Random(9)
    files = haystack(seed=3, n_files=6)
    files["py/f00.py"].insert(50, "def parseHttpRequest(raw_bytes):")
    files["py/f03.py"].insert(20, "def load_user_profile(uid):")
    with open_volume(tmp_path / "src", as_text(files)) as volume:
        for query, path, line in [
            ("parse_http_request", "py/f00.py", "def parseHttpRequest(raw_bytes):"),
            ("ParseHTTPRequest", "py/f00.py", "def parseHttpRequest(raw_bytes):"),
            ("http request parsing: parse", "py/f00.py", "def parseHttpRequest(raw_bytes):"),
            ("loadUserProfile", "py/f03.py", "def load_user_profile(uid):"),
            ("user profile", "py/f03.py", "def load_user_profile(uid):"),
        ]:
            hit = search(volume, query, top=1).hits[0]
            assert (hit.file, hit.preview) == (path, line), query
    del rng


def test_hits_agree_with_the_volume(tmp_path: Path) -> None:
    files = as_text(haystack(seed=4, n_files=8))
    with open_volume(tmp_path / "src", files) as volume:
        for query in ("buffer socket", "retry timeout handler", "INFO session"):
            for hit in search(volume, query, top=8).hits:
                lines = volume.lines(hit.first_vline, hit.last_vline)
                assert {line.file for line in lines} == {hit.file}
                assert lines[0].fline == hit.first_fline and lines[-1].fline == hit.last_fline
                assert hit.first_vline <= hit.best_vline <= hit.last_vline
                best = lines[hit.best_vline - hit.first_vline]
                assert hit.preview == best.text.strip()[:200]
                words = set(query.lower().split())
                assert words & set(tokens(best.text))
                index = ChunkIndex.open(volume)
                c = index.chunk(hit.chunk)
                assert (c.first_vline, c.last_vline) == (hit.first_vline, hit.last_vline)


def test_long_line_preview_is_clipped_around_the_match(tmp_path: Path) -> None:
    line = "filler " * 800 + "the zephyr token " + "padding " * 800
    with open_volume(tmp_path / "src", {"min.js": line + "\n", "b.txt": "other\n"}) as volume:
        hit = search(volume, "zephyr").hits[0]
        assert hit.file == "min.js"
        assert len(hit.preview) <= 200 and "zephyr" in hit.preview


def test_score_is_bm25_nudged_by_at_most_five_percent(tmp_path: Path) -> None:
    toy = {
        "d0.txt": "apple banana apple\n",
        "d1.txt": "banana cherry\n",
        "d2.txt": "cherry cherry cherry date\n",
        "d3.txt": "fig grape\n",
    }
    with open_volume(tmp_path / "src", toy) as volume:
        bm25 = ChunkIndex.open(volume).bm25([term_hash("apple"), term_hash("cherry")])
        hits = search(volume, "apple cherry", top=10).hits
        assert [h.chunk for h in hits] == [0, 2, 1]  # d3 has neither word: no hit
        for hit in hits:
            assert bm25[hit.chunk] <= hit.score <= bm25[hit.chunk] * 1.05
        # exactly: bm25 * (1 + 0.05 * max(0, 1 - hamming(query, chunk) / 32))
        q = simhash(np.array([term_hash("apple"), term_hash("cherry")], dtype=np.uint64))
        index = ChunkIndex.open(volume)
        for hit in hits:
            bits = bin(q ^ int(index.simhashes[hit.chunk])).count("1")
            want = bm25[hit.chunk] * (1 + 0.05 * max(0.0, 1 - bits / 32))
            assert hit.score == pytest.approx(want, rel=1e-12)
        assert any(hit.score > bm25[hit.chunk] for hit in hits)


def test_results_identical_after_reingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = as_text(haystack(seed=6, n_files=6))
    src = write_tree(tmp_path / "src", files)
    ingest(src, "vol")
    queries = ("buffer socket", "what is the retry timeout", "INFO session cookie")
    with Volume.open("vol") as volume:
        before = [search(volume, q, top=6).hits for q in queries]
    reports: list[ix.IndexReport] = []
    real = ix.build_index
    monkeypatch.setattr(
        ing, "build_index", lambda v, progress=None: reports.append(real(v)) or reports[-1]
    )
    # A new mtime makes ingest read the file again; its text, so its chunks, are unchanged.
    os.utime(src / "md/f01.md", ns=(1, 1))
    ingest(src, "vol")
    assert reports[-1].reused == reports[-1].chunks > 0
    with Volume.open("vol") as volume:
        after = [search(volume, q, top=6).hits for q in queries]
    assert after == before


def test_searches_are_answered_from_the_index_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What keeps a search cheap (its latency is benchmarks/context_speed.py's): the index
    is opened once for all queries, the source files are never read, and of the volume's
    text only the hits' own chunks and those of the head that the re-ranking scans (each
    read once, at most RERANK of them)."""
    files = as_text(haystack(seed=8, n_files=40))
    with open_volume(tmp_path / "src", files) as volume:
        index = ChunkIndex.open(volume)
        n_chunks = len(index)
        assert n_chunks > 100
        chunk_spans = {(int(c["first"]), int(c["last"])) for c in index.chunks}
        shutil.rmtree(tmp_path / "src")
        opened: list[Volume] = []
        real_open = ChunkIndex.open
        monkeypatch.setattr(
            ChunkIndex, "open", classmethod(lambda cls, v: opened.append(v) or real_open(v))
        )
        spans: list[tuple[int, int]] = []  # the volume lines each read asked for
        real_lines, real_text = volume.lines, volume.text
        monkeypatch.setattr(volume, "lines", lambda a, b: spans.append((a, b)) or real_lines(a, b))
        monkeypatch.setattr(volume, "text", lambda a, b: spans.append((a, b)) or real_text(a, b))
        monkeypatch.setattr(volume, "raw", lambda: pytest.fail("a search read the whole text"))
        rng = random.Random(1)
        for _ in range(21):
            spans.clear()
            result = search(volume, " ".join(rng.sample(WORDS, 3)))
            assert result.method == "bm25+simhash" and len(result.hits) == 10
            assert all(0 <= hit.chunk < n_chunks for hit in result.hits)
            in_hits = {(hit.first_vline, hit.last_vline) for hit in result.hits}
            assert in_hits <= set(spans) <= chunk_spans
            assert len(spans) == len(set(spans)) <= sr.RERANK, spans
        assert opened == [volume]


# --------------------------------------------------------------------------- vectors


class FakeResult:
    def __init__(self, vectors: list[list[float]], model: str) -> None:
        self.vectors = vectors
        self.model = model


class FakeEmbedder:
    """Bag-of-words vectors (64 hashed buckets): deterministic, and similar texts get
    similar vectors. Records every request; refuses texts longer than `max_chars`."""

    def __init__(self, model: str = "fake-embed", max_chars: int = 10**9) -> None:
        self.model_name = model
        self.max_chars = max_chars
        self.requests: list[list[str]] = []

    async def embeddings(self, inputs: list[str]) -> FakeResult:
        self.requests.append(list(inputs))
        if any(len(t) > self.max_chars for t in inputs):
            raise RuntimeError("input (900 tokens) is too large to process")
        out = []
        for text in inputs:
            v = np.zeros(64)
            for token in tokens(text):
                v[int(hashlib.md5(token.encode()).hexdigest(), 16) % 64] += 1.0
            out.append(v.tolist())
        return FakeResult(out, self.model_name)

    @property
    def texts(self) -> int:
        return sum(len(r) for r in self.requests)


@pytest.fixture(autouse=True)
def fresh_query_cache() -> Iterator[None]:
    sr._QUERY_VECTORS.clear()
    yield
    sr._QUERY_VECTORS.clear()


async def test_vectors_are_cached_by_chunk_hash_and_reused(tmp_path: Path) -> None:
    files = as_text(haystack(seed=10, n_files=6))
    src = write_tree(tmp_path / "src", files)
    ingest(src, "vol")
    embedder = FakeEmbedder()
    with Volume.open("vol") as volume:
        n = len(ChunkIndex.open(volume))
        result = await search_with_vectors(volume, "buffer socket", 5, embedder)
        assert result.method == "bm25+vector" and len(result.hits) == 5
        assert embedder.texts == n + 1  # every chunk, and the query
        cached = np.load(volume.dir / "index" / "vectors.npy")
        np.testing.assert_array_equal(cached["hash"], ChunkIndex.open(volume).hashes)
        cached = cached["vector"]
        assert cached.shape == (n, 64)
        np.testing.assert_allclose(np.linalg.norm(cached, axis=1), 1.0, rtol=1e-5)
        meta = json.loads((volume.dir / "index" / "vectors.json").read_text())
        assert meta["model"] == "fake-embed" and meta["chunks"] == n

        embedder.requests.clear()
        again = await search_with_vectors(volume, "buffer socket", 5, embedder)
        assert embedder.requests == []  # nothing embedded: chunks and query are cached
        assert [h.chunk for h in again.hits] == [h.chunk for h in result.hits]
        await search_with_vectors(volume, "retry timeout", 5, embedder)
        assert embedder.requests == [["retry timeout"]]  # only the new query

    # Change one file: only its chunks are embedded again.
    (src / "log/f02.log").write_text(files["log/f02.log"] + "one more line\n")
    ingest(src, "vol")
    embedder.requests.clear()
    with Volume.open("vol") as volume:
        index = ChunkIndex.open(volume)
        k = [f.path for f in volume.files].index("log/f02.log")
        last = max(i for i in range(len(index)) if index.chunk(i).file == k)
        await search_with_vectors(volume, "buffer socket", 5, embedder)
        # the query is cached; of the chunks, only the file's last one changed
        assert embedder.requests == [[index.chunk_text(volume, last)[: sr.EMBED_CHARS]]]
        cached = np.load(volume.dir / "index" / "vectors.npy")
        np.testing.assert_array_equal(cached["hash"], index.hashes)


async def test_another_model_replaces_the_cache(tmp_path: Path) -> None:
    with open_volume(tmp_path / "src", as_text(haystack(seed=11, n_files=3))) as volume:
        n = len(ChunkIndex.open(volume))
        await search_with_vectors(volume, "buffer", 3, FakeEmbedder("model-a"))
        other = FakeEmbedder("model-b")
        await search_with_vectors(volume, "buffer", 3, other)
        assert other.texts == n + 1
        meta = json.loads((volume.dir / "index" / "vectors.json").read_text())
        assert meta["model"] == "model-b"


async def test_too_large_inputs_are_clipped_until_the_server_takes_them(tmp_path: Path) -> None:
    with open_volume(tmp_path / "src", as_text(haystack(seed=12, n_files=3))) as volume:
        embedder = FakeEmbedder(max_chars=400)
        result = await search_with_vectors(volume, "buffer socket", 3, embedder)
        assert result.hits
        meta = json.loads((volume.dir / "index" / "vectors.json").read_text())
        assert meta["clip"] <= 400
        assert all(len(t) <= 400 for t in embedder.requests[-1])


async def test_vector_fusion_is_reciprocal_rank_fusion(tmp_path: Path) -> None:
    files = {"a.txt": "alpha beta\n", "b.txt": "gamma delta\n", "c.txt": "alpha alpha gamma\n"}
    with open_volume(tmp_path / "src", files) as volume:
        result = await search_with_vectors(volume, "alpha", 3, FakeEmbedder())
        lexical = [h.chunk for h in search(volume, "alpha", 3).hits]
        index = ChunkIndex.open(volume)
        q = np.zeros(64)
        q[int(hashlib.md5(b"alpha").hexdigest(), 16) % 64] = 1
        vectors = np.load(volume.dir / "index" / "vectors.npy")["vector"]
        vector = list(np.argsort(-(vectors @ q), kind="stable"))
        want = {
            i: (1 / (61 + lexical.index(i)) if i in lexical else 0) + 1 / (61 + vector.index(i))
            for i in range(len(index))
        }
        assert {h.chunk: h.score for h in result.hits} == pytest.approx(want)
        assert [h.chunk for h in result.hits] == sorted(want, key=lambda i: (-want[i], i))


async def test_embedder_failure_is_a_one_line_search_error(tmp_path: Path) -> None:
    class Down:
        async def embeddings(self, inputs: list[str]) -> Any:
            raise ConnectionError("cannot connect to http://127.0.0.1:9\n(refused)")

    with open_volume(tmp_path / "src", {"a.txt": "alpha\n"}) as volume:
        with pytest.raises(SearchError, match="embedding model failed") as info:
            await search_with_vectors(volume, "alpha", 3, Down())
        assert isinstance(info.value.__cause__, ConnectionError)
        assert "\n" not in str(info.value) and "(refused)" in str(info.value)


async def test_a_volume_of_empty_files_has_no_chunks_and_no_hits(tmp_path: Path) -> None:
    with open_volume(tmp_path / "src", {"a.txt": "", "b.txt": ""}) as volume:
        assert len(ChunkIndex.open(volume)) == 0
        assert search(volume, "alpha").hits == []
        embedder = FakeEmbedder()
        assert (await search_with_vectors(volume, "alpha", 3, embedder)).hits == []
        assert embedder.requests == [["alpha"]]


# --------------------------------------------------------------------------- the real model


class Counting:
    """Wraps an embedder and counts its requests and texts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.base_url = inner.base_url
        self.model = inner.model
        self.requests: list[list[str]] = []

    async def embeddings(self, inputs: list[str]) -> Any:
        self.requests.append(list(inputs))
        return await self.inner.embeddings(inputs)


async def test_vector_search_with_the_real_embedded_model(
    tmp_path: Path, embedding_server: str
) -> None:
    rng = random.Random(13)
    files = {
        f"notes/n{k}.md": " ".join(rng.choice(WORDS) for _ in range(60)) + "\n" for k in range(6)
    }
    files["notes/zephyr.md"] = NEEDLE + "\nKeep it safe and tell nobody.\n"
    with open_volume(tmp_path / "src", files) as volume:
        n = len(ChunkIndex.open(volume))
        assert n == 7
        async with LLMClient(embedding_server) as client:
            embedder = Counting(client)
            result = await search_with_vectors(
                volume, "what is the secret code of project Zephyr?", 3, embedder
            )
            assert result.method == "bm25+vector"
            assert result.hits[0].file == "notes/zephyr.md"
            assert result.hits[0].preview == NEEDLE
            assert sum(len(r) for r in embedder.requests) == n + 1
            vectors = np.load(volume.dir / "index" / "vectors.npy")["vector"]
            assert vectors.shape == (n, 576) and np.all(np.isfinite(vectors))
            meta = json.loads((volume.dir / "index" / "vectors.json").read_text())
            assert meta["model"].endswith(".gguf")

            embedder.requests.clear()
            again = await search_with_vectors(
                volume, "what is the secret code of project Zephyr?", 3, embedder
            )
            assert embedder.requests == []
            assert [(h.chunk, h.score) for h in again.hits] == [
                (h.chunk, h.score) for h in result.hits
            ]
            # A query with no word in the volume still gets hits, from the vectors alone.
            other = await search_with_vectors(volume, "zzzqqq", 3, embedder)
            assert embedder.requests == [["zzzqqq"]]
            assert len(other.hits) == 3
