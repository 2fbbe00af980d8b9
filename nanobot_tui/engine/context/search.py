"""ctx_search: rank a volume's chunks for a query.

`search` is lexical: BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5)))
over the chunk index, with a small simhash nudge. `search_with_vectors` adds an embedding
model: chunk vectors are computed lazily on the first vector search (from each chunk's
first EMBED_CHARS characters), cached beside the index by chunk hash and model name (a
re-ingest re-embeds only the chunks that changed), and the BM25 and cosine rankings are
fused by reciprocal rank fusion. Query vectors are kept in a small in-process LRU, so a
repeated query costs no request at all.

Queries go through the index's own tokenizer (so `parseHttpRequest` meets
`parse_http_request`), and a small English stop-word list is dropped from them, so that
natural-language questions ("what is the secret code of project Zephyr?") rank on their
content words. A query made only of stop words keeps them all.

Each hit names the chunk and also its best line (`best_vline`): the line of the chunk
whose words cover the most query idf. Readers of a hit (ask, the volume browser) read a
narrow window around it instead of the whole chunk.

The best RERANK lexical candidates are then ordered by that coverage (the idf of the
query's terms that the best line holds), with the nudged BM25 score breaking ties; a hit's
`score` stays that BM25 score. BM25 alone ranks a tiny chunk (a near-empty file plus one
line with most of the query's words) above a long chunk with a line holding all of them;
rerank.py says why and how it stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nanobot_tui.engine.context.index import ChunkIndex, ChunkIndexError
from nanobot_tui.engine.context.rerank import (
    RERANK,
    Best,
    best_line,
    chunk_lines,
    make_query,
    rerank,
)
from nanobot_tui.engine.context.storage import INDEX_DIR
from nanobot_tui.engine.context.tokens import (
    STOP_WORDS,
    hamming,
    simhash,
    term_hash,
    tokens,
)
from nanobot_tui.errors import NanobotError, UsageError

if TYPE_CHECKING:
    from nanobot_tui.engine.context.volume import Volume

__all__ = [
    "EMBED_CHARS",
    "RRF_K",
    "SIMHASH_NUDGE",
    "Embedder",
    "Embeddings",
    "QueryError",
    "SearchError",
    "SearchHit",
    "SearchResult",
    "VectorReport",
    "ensure_vectors",
    "query_terms",
    "search",
    "search_with_vectors",
]

# The simhash nudge: final score = bm25 * (1 + SIMHASH_NUDGE * similarity), where
# similarity = max(0, 1 - hamming(query, chunk) / 32) is 0 for unrelated 64-bit simhashes
# (32 bits apart on average) and 1 for identical ones. At most +5 %: it breaks ties and
# reorders near-equal chunks, never lifts a weak lexical match over a strong one.
SIMHASH_NUDGE = 0.05
# Reciprocal rank fusion constant (Cormack et al. 2009): score = sum 1 / (RRF_K + rank).
RRF_K = 60
# The lexical ranking considered for reranking and fusion.
CANDIDATES = 200
PREVIEW_CHARS = 200
# Embedding servers take at most one physical batch per input (llama.cpp: 512 tokens by
# default), so each chunk is embedded from its first EMBED_CHARS characters (~400 tokens
# of code). A server that still says "too large" gets half as much, down to
# MIN_EMBED_CHARS; the length that worked is remembered in the cache.
EMBED_CHARS = 1500
MIN_EMBED_CHARS = 100
EMBED_BATCH = 8
# The cache, in the index folder: vectors.npy holds one row per chunk, (hash, unit
# vector) as a structured array, so hashes and vectors can never be torn apart;
# vectors.json names the model that made them and the clip that worked.
VECTORS_FILE = "vectors.npy"
VECTORS_META = "vectors.json"


class SearchError(NanobotError):
    """The volume cannot be searched (no index, the embedding model failed); one line."""


class QueryError(SearchError, UsageError):
    """The query itself cannot be searched: empty, or without a word."""


class Embeddings(Protocol):
    """An embedding server's answer: one vector per input, and the model's name."""

    @property
    def vectors(self) -> Sequence[Sequence[float]]: ...

    @property
    def model(self) -> str: ...


class Embedder(Protocol):
    async def embeddings(self, inputs: list[str]) -> Embeddings: ...


# Called as progress("embed", done, total) while chunks are embedded.
EmbedProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SearchHit:
    chunk: int
    file: str
    first_fline: int  # lines in the file, 1-based inclusive
    last_fline: int
    first_vline: int  # lines in the volume, 1-based inclusive
    last_vline: int
    score: float
    preview: str  # the best-matching line, stripped, at most PREVIEW_CHARS
    best_vline: int  # the volume line that matched the query best

    @property
    def best_fline(self) -> int:
        return self.first_fline + (self.best_vline - self.first_vline)

    def to_dict(self) -> dict[str, object]:
        return {
            "chunk": self.chunk,
            "file": self.file,
            "firstLine": self.first_fline,
            "lastLine": self.last_fline,
            "bestLine": self.best_fline,
            "firstVline": self.first_vline,
            "lastVline": self.last_vline,
            "bestVline": self.best_vline,
            "score": round(self.score, 6),
            "preview": self.preview,
        }


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    method: str  # "bm25+simhash" or "bm25+vector"
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "seconds": round(self.seconds, 4),
            "hits": [hit.to_dict() for hit in self.hits],
        }


@dataclass(frozen=True)
class VectorReport:
    chunks: int
    embedded: int  # chunks embedded by this call
    reused: int  # chunks whose vector came from the cache
    model: str
    dim: int
    requests: int
    seconds: float


# --------------------------------------------------------------------------- the index


# One opened index per volume object, dropped with the volume; reopened when the index
# folder was rebuilt (its meta.json changed).
_INDEXES: weakref.WeakKeyDictionary[Volume, tuple[tuple[int, int], ChunkIndex]] = (
    weakref.WeakKeyDictionary()
)


def _index(volume: Volume) -> ChunkIndex:
    meta = volume.dir / INDEX_DIR / "meta.json"
    try:
        st = meta.stat()
        stamp = (st.st_ino, st.st_mtime_ns)
    except OSError:
        stamp = (0, 0)
    try:
        cached = _INDEXES.get(volume)
    except TypeError:  # not weak-referenceable: no caching
        cached = None
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        index = ChunkIndex.open(volume)
    except ChunkIndexError as exc:
        raise SearchError(str(exc)) from None
    with contextlib.suppress(TypeError):  # not weak-referenceable: no caching
        _INDEXES[volume] = (stamp, index)
    return index


def query_terms(query: str) -> list[str]:
    """The query's tokens, de-duplicated, stop words dropped (unless nothing else is left)."""
    all_tokens = list(dict.fromkeys(tokens(query)))
    content = [t for t in all_tokens if t not in STOP_WORDS]
    return content or all_tokens


def _check_query(query: str) -> None:
    if not query or not query.strip():
        raise QueryError("the search query is empty")


# --------------------------------------------------------------------------- lexical


def _lexical(index: ChunkIndex, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Candidate chunk ids ranked best first, and their nudged scores."""
    hashes = [term_hash(w) for w in words]
    scores = index.bm25(hashes)
    found = np.flatnonzero(scores > 0)
    if found.size == 0:
        return found, np.zeros(0)
    if found.size > CANDIDATES:
        best = np.argpartition(-scores[found], CANDIDATES - 1)[:CANDIDATES]
        found = found[best]
    q_sim = simhash(np.array(hashes, dtype=np.uint64))
    similarity = np.maximum(0.0, 1.0 - hamming(q_sim, index.simhashes[found]) / 32.0)
    nudged = scores[found] * (1.0 + SIMHASH_NUDGE * similarity)
    order = np.lexsort((found, -nudged))  # score descending, then chunk id ascending
    return found[order], nudged[order]


def search(volume: Volume, query: str, top: int = 10) -> SearchResult:
    """The `top` chunks of the volume for `query`: BM25 nudged by simhash, the head
    re-ordered by how much of the query the chunk's best line covers."""
    started = time.perf_counter()
    _check_query(query)
    words = query_terms(query)
    if not words:
        raise QueryError(f"the query {query!r} has no searchable words (letters or digits)")
    index = _index(volume)
    ids, scores = _lexical(index, words)
    top = max(0, int(top))
    ranked = rerank(volume, index, ids, scores, words, top)
    hits = [
        _hit(volume, index, int(ids[p]), float(scores[p]), words, best) for p, best in ranked[:top]
    ]
    return SearchResult(hits, "bm25+simhash", time.perf_counter() - started)


# --------------------------------------------------------------------------- hits


def _hit(
    volume: Volume,
    index: ChunkIndex,
    i: int,
    score: float,
    words: list[str],
    best: Best | None = None,
) -> SearchHit:
    chunk = index.chunk(i)
    vf = volume.files[chunk.file]
    if best is None:
        best = best_line(chunk_lines(volume, index, i), make_query(index, words))
    lines = best.lines
    text = lines[best.offset] if best.offset < len(lines) else ""
    base = vf.first_line  # 0-based index of the file's first line in the volume
    return SearchHit(
        chunk=i,
        file=vf.path,
        first_fline=chunk.first_vline - base,
        last_fline=chunk.last_vline - base,
        first_vline=chunk.first_vline,
        last_vline=chunk.last_vline,
        score=score,
        preview=_preview(text, words),
        best_vline=chunk.first_vline + best.offset,
    )


def _preview(text: str, words: list[str]) -> str:
    text = text.strip()
    if len(text) <= PREVIEW_CHARS:
        return text
    # A long line: show the part around the first query word rather than its start.
    lowered = text.lower()
    positions = [p for p in (lowered.find(w) for w in words) if p >= 0]
    start = max(0, min(positions) - PREVIEW_CHARS // 4) if positions else 0
    start = min(start, len(text) - PREVIEW_CHARS)
    return text[start : start + PREVIEW_CHARS].strip()


# --------------------------------------------------------------------------- vectors


# (embedder key, query) -> (model, unit vector): a repeated query costs no request.
_QUERY_VECTORS: OrderedDict[tuple[Hashable, str], tuple[str, np.ndarray]] = OrderedDict()
_QUERY_CACHE_MAX = 256


def _embedder_key(embedder: Embedder) -> Hashable:
    base = getattr(embedder, "base_url", None)
    return (
        (type(embedder).__qualname__, base, getattr(embedder, "model", None))
        if base
        else id(embedder)
    )


def _is_too_large(exc: Exception) -> bool:
    text = str(exc).lower()
    return "too large" in text or "batch size" in text or "context length" in text


def _unit(rows: Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms > 0, norms, 1.0)


class _Embedding:
    """Calls the embedder, learning how much text per input the server accepts."""

    def __init__(self, embedder: Embedder, clip: int) -> None:
        self.embedder = embedder
        self.clip = clip
        self.requests = 0
        self.model = ""

    async def __call__(self, texts: list[str]) -> np.ndarray:
        while True:
            try:
                self.requests += 1
                result = await self.embedder.embeddings([t[: self.clip] for t in texts])
            except Exception as exc:
                if _is_too_large(exc) and self.clip > MIN_EMBED_CHARS:
                    self.clip = max(MIN_EMBED_CHARS, self.clip // 2)
                    continue
                # One line for the user; the cause (an LLMError) stays on __cause__.
                line = " ".join(str(exc).split()) or type(exc).__name__
                raise SearchError(f"the embedding model failed: {line}") from exc
            vectors = result.vectors
            if len(vectors) != len(texts):
                raise SearchError(
                    f"the embedding model returned {len(vectors)} vectors for {len(texts)} texts"
                )
            self.model = self.model or str(result.model or "")
            return _unit(vectors)


def _read_vector_cache(folder: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray] | None:
    """(meta, vectors, hashes) of the cache, or None when there is none usable."""
    try:
        meta = json.loads((folder / VECTORS_META).read_text())
        rows = np.load(folder / VECTORS_FILE, mmap_mode="r")
        vectors, hashes = rows["vector"], rows["hash"]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    if not isinstance(meta, dict) or vectors.ndim != 2:
        return None
    return meta, vectors, hashes


def _write_vector_cache(
    folder: Path, meta: dict[str, Any], vectors: np.ndarray, hashes: np.ndarray
) -> None:
    """Write the cache with renames: the rows first, then the meta that names them."""
    dtype = np.dtype([("hash", "<u8"), ("vector", "<f4", (vectors.shape[1],))])
    rows = np.empty(len(hashes), dtype=dtype)
    rows["hash"] = hashes
    rows["vector"] = vectors
    tmp = folder / f".{VECTORS_FILE}.tmp"
    with tmp.open("wb") as out:
        np.save(out, rows)
    os.replace(tmp, folder / VECTORS_FILE)
    tmp = folder / f".{VECTORS_META}.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, folder / VECTORS_META)


async def _query_vector(call: _Embedding, embedder: Embedder, query: str) -> tuple[str, np.ndarray]:
    key = (_embedder_key(embedder), query)
    cached = _QUERY_VECTORS.get(key)
    if cached is not None:
        _QUERY_VECTORS.move_to_end(key)
        return cached
    vector = (await call([query]))[0]
    entry = (call.model, vector)
    _QUERY_VECTORS[key] = entry
    while len(_QUERY_VECTORS) > _QUERY_CACHE_MAX:
        _QUERY_VECTORS.popitem(last=False)
    return entry


async def ensure_vectors(
    volume: Volume,
    embedder: Embedder,
    model: str,
    *,
    progress: EmbedProgress | None = None,
    batch: int = EMBED_BATCH,
) -> tuple[np.ndarray, VectorReport]:
    """Unit vectors of every chunk (rows in chunk order), embedding only the chunks whose
    hash is not cached yet for `model` (the name the embedding server reports; a cache
    made with another model is ignored and replaced). The cache is saved every 32
    batches, so an interrupted first run keeps most of its work."""
    started = time.perf_counter()
    index = _index(volume)
    folder = index.folder
    n = len(index)
    hashes = np.asarray(index.hashes, dtype=np.uint64)
    cache = _read_vector_cache(folder)
    clip = EMBED_CHARS
    rows: dict[int, int] = {}
    dim = 0
    if cache is not None and cache[0].get("model") == model:
        clip = int(cache[0].get("clip") or EMBED_CHARS)
        dim = cache[1].shape[1]
        for row, h in enumerate(cache[2].tolist()):
            rows.setdefault(h, row)
    call = _Embedding(embedder, clip)
    done = np.array([h in rows for h in hashes.tolist()], dtype=bool)
    missing = np.flatnonzero(~done).tolist()
    out = np.zeros((n, dim), dtype=np.float32)
    if cache is not None and done.any():
        out[done] = cache[1][[rows[h] for h in hashes[done].tolist()]]

    def save() -> None:
        if out.shape[1] == 0:  # nothing embedded yet (a volume without chunks)
            return
        meta = {"model": model, "dim": int(out.shape[1]), "clip": call.clip}
        meta["chunks"] = int(done.sum())
        _write_vector_cache(folder, meta, out[done], hashes[done])

    for k, lo in enumerate(range(0, len(missing), batch)):
        ids = missing[lo : lo + batch]
        vectors = await call([index.chunk_text(volume, i) for i in ids])
        if out.shape[1] == 0:
            out = np.zeros((n, vectors.shape[1]), dtype=np.float32)
        elif vectors.shape[1] != out.shape[1]:
            raise SearchError(
                f"the embedding model returned {vectors.shape[1]}-dimensional vectors, "
                f"the cache holds {out.shape[1]}-dimensional ones"
            )
        out[ids] = vectors
        done[ids] = True
        if progress is not None:
            progress("embed", lo + len(ids), len(missing))
        if k % 32 == 31:
            save()
    if missing or cache is None or cache[0].get("chunks") != n or len(cache[2]) != n:
        save()
    report = VectorReport(
        chunks=n,
        embedded=len(missing),
        reused=n - len(missing),
        model=model,
        dim=int(out.shape[1]),
        requests=call.requests,
        seconds=time.perf_counter() - started,
    )
    return out, report


async def search_with_vectors(
    volume: Volume, query: str, top: int, embedder: Embedder
) -> SearchResult:
    """BM25 (+ simhash nudge) and cosine similarity of embeddings, fused by reciprocal
    rank fusion (k = RRF_K). The first call embeds every chunk (cached by hash in the
    index folder); later calls embed at most the query."""
    started = time.perf_counter()
    _check_query(query)
    words = query_terms(query)
    index = _index(volume)
    lexical_ids = np.zeros(0, dtype=np.intp)
    if words:
        ids, scores = _lexical(index, words)
        ranked = rerank(volume, index, ids, scores, words, RERANK)
        lexical_ids = ids[[p for p, _ in ranked]] if ranked else ids

    meta_path = index.folder / VECTORS_META
    try:
        clip = int(json.loads(meta_path.read_text()).get("clip") or EMBED_CHARS)
    except (OSError, ValueError, AttributeError):
        clip = EMBED_CHARS
    call = _Embedding(embedder, clip)
    model, q = await _query_vector(call, embedder, query)
    vectors, _report = await ensure_vectors(volume, embedder, model)

    n = len(index)
    fused = np.zeros(n, dtype=np.float64)
    if n and vectors.shape[1] == q.shape[0]:
        cosine = vectors @ q
        vector_ids = np.argsort(-cosine, kind="stable")[:CANDIDATES]
        fused[vector_ids] += 1.0 / (RRF_K + 1 + np.arange(len(vector_ids)))
    elif n:
        raise SearchError(
            f"the query vector has {q.shape[0]} dimensions, the chunk vectors {vectors.shape[1]}"
        )
    fused[lexical_ids] += 1.0 / (RRF_K + 1 + np.arange(len(lexical_ids)))
    candidates = np.flatnonzero(fused > 0)
    order = candidates[np.lexsort((candidates, -fused[candidates]))]
    top = max(0, int(top))
    hits = [_hit(volume, index, int(i), float(fused[i]), words) for i in order[:top]]
    return SearchResult(hits, "bm25+vector", time.perf_counter() - started)
