"""The chunk index of a volume: ~4K-character chunks, a BM25 inverted index, simhashes.

Everything lives in `volume.dir / "index"` as plain `.npy` files (opened with mmap, so
opening the index of a 1 GB volume reads almost nothing) and one small `meta.json`:

    meta.json        version, parameters, counts, avgdl, the volume's fingerprint
    chunks.npy       the chunk table, one structured row per chunk (CHUNK_DTYPE)
    fwd_terms.npy    forward index: each chunk's sorted term hashes, concatenated
    fwd_tf.npy       ... and their term frequencies in that chunk
    fwd_offsets.npy  chunk i owns fwd_*[fwd_offsets[i]:fwd_offsets[i + 1]]
    vocab.npy        inverted index: the sorted distinct term hashes
    df.npy           document (chunk) frequency of each vocab term
    post_offsets.npy term j owns post_*[post_offsets[j]:post_offsets[j + 1]]
    post_docs.npy    chunk ids, ascending within a term
    post_tf.npy      term frequencies
    vectors*.npy     (search.py) cached chunk embeddings, keyed by chunk hash

The chunk table is an array rather than JSON: a 1 GB volume has ~250,000 chunks.

Chunks: lines are packed greedily while the chunk's bytes (newlines included) stay within
CHUNK_CHARS. Bytes bound characters from above, so a chunk never has more than
CHUNK_CHARS characters; non-ASCII text simply gets somewhat shorter chunks. A chunk never
crosses a file boundary, and a single line longer than CHUNK_CHARS is a chunk on its own.
Cutting needs only the line-offset table: one `searchsorted` per chunk, no text is read.

Tokens, term ids and simhashes come from tokens.py.

Re-indexing reuses work: a chunk whose content hash (blake2b-8 of its bytes) is found in
the previous index gets its forward entry and simhash copied, without re-tokenising; the
inverted postings are then rebuilt from the forward entries with numpy sorts, in
partitions of the term-hash space so that memory stays bounded on huge volumes.

Tokenising streams over chunks: each chunk's entry is appended to the forward files as
soon as it is made, so no more than one chunk's tokens exist as Python objects at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nanobot_tui.engine.context.npy import NpyAppender
from nanobot_tui.engine.context.storage import INDEX_DIR
from nanobot_tui.engine.context.tokens import forward_entry, simhash
from nanobot_tui.errors import NanobotError

if TYPE_CHECKING:
    from nanobot_tui.engine.context.volume import Volume

__all__ = [
    "CHUNK_CHARS",
    "CHUNK_DTYPE",
    "INDEX_VERSION",
    "K1",
    "B",
    "Chunk",
    "ChunkIndex",
    "ChunkIndexError",
    "IndexReport",
    "build_index",
    "plan_chunks",
]

# Version 2: hyphen-joined compounds (`amber-quartz-3`) are tokens as well as their parts.
# An index of another version is refused with a one-line "ingest it again" error.
INDEX_VERSION = 2
TOKENIZER = "words+kebab+snake+camel,lower,min2,blake2b-8"
CHUNK_CHARS = 4000
K1 = 1.2
B = 0.75
# Postings are sorted in partitions of about this many entries (top bits of the term
# hash), so a 1 GB volume's ~100M forward entries never need one giant argsort.
PARTITION_ENTRIES = 1 << 22

CHUNK_DTYPE = np.dtype(
    [
        ("file", "<u4"),  # index into volume.files
        ("first", "<u8"),  # first volume line, 1-based
        ("last", "<u8"),  # last volume line, 1-based inclusive
        ("start", "<u8"),  # byte span in text.bin, end exclusive
        ("end", "<u8"),
        ("hash", "<u8"),  # blake2b-8 of the chunk's bytes
        ("simhash", "<u8"),
        ("length", "<u4"),  # tokens in the chunk (the BM25 document length)
    ]
)

# Called as progress("index", done, total) with done and total in chunks.
ProgressFn = Callable[[str, int, int], None]


class ChunkIndexError(NanobotError):
    """The index is missing, stale or unreadable; the message is one line."""


class LineSpan(Protocol):
    """What chunking needs of a file: where its lines start in the volume, and how many."""

    @property
    def first_line(self) -> int: ...

    @property
    def n_lines(self) -> int: ...


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class Chunk:
    id: int
    file: int  # index into volume.files
    first_vline: int  # 1-based
    last_vline: int  # 1-based, inclusive
    start: int  # byte span in the volume's text, end exclusive
    end: int
    hash: int  # blake2b-8 of the chunk's bytes
    simhash: int
    length: int  # tokens

    @property
    def n_lines(self) -> int:
        return self.last_vline - self.first_vline + 1


@dataclass(frozen=True)
class IndexReport:
    chunks: int
    reused: int  # chunks whose forward entry came from the previous index
    tokenized: int  # chunks tokenised afresh
    terms: int  # distinct terms in the volume
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "chunks": self.chunks,
            "reused": self.reused,
            "tokenized": self.tokenized,
            "terms": self.terms,
            "seconds": round(self.seconds, 3),
        }


def plan_chunks(
    starts: np.ndarray, files: Sequence[LineSpan], chunk_chars: int = CHUNK_CHARS
) -> np.ndarray:
    """Cut every file's lines into chunks; returns (n, 3) int64 rows of
    (file index, first line, end line) with 0-based line indices, end exclusive."""
    rows: list[tuple[int, int, int]] = []
    for fi, f in enumerate(files):
        first, stop = f.first_line, f.first_line + f.n_lines
        if stop <= first:
            continue
        table = starts[first : stop + 1]  # this file's line starts and its end
        s = 0
        n = stop - first
        while s < n:
            # In the table's own dtype: a Python int against uint64 starts makes numpy
            # convert the whole table on every call (quadratic in a big file's lines).
            limit = table.dtype.type(int(table[s]) + chunk_chars)
            # largest e with table[e] <= limit: lines s..e-1 fit within chunk_chars bytes
            e = int(np.searchsorted(table, limit, side="right")) - 1
            e = min(max(e, s + 1), n)
            rows.append((fi, first + s, first + e))
            s = e
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _fingerprint(volume: Volume) -> str:
    """Identifies the volume content an index was built for."""
    h = hashlib.blake2b(digest_size=16)
    for f in volume.files:
        h.update(f"{f.path}\0{f.sha1}\0{f.first_line}\0{f.n_lines}\n".encode())
    return h.hexdigest()


def _load(folder: Path, name: str) -> np.ndarray:
    return np.load(folder / f"{name}.npy", mmap_mode="r")


# --------------------------------------------------------------------------- the index


class ChunkIndex:
    """An opened chunk index: the chunk table, forward entries and BM25 postings, mmapped."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.meta = meta
        self.k1 = float(meta["k1"])
        self.b = float(meta["b"])
        self.avgdl = float(meta["avgdl"])
        self.chunks = _load(folder, "chunks")
        self.fwd_terms = _load(folder, "fwd_terms")
        self.fwd_tf = _load(folder, "fwd_tf")
        self.fwd_offsets = _load(folder, "fwd_offsets")
        self.vocab = _load(folder, "vocab")
        self.df = _load(folder, "df")
        self.post_offsets = _load(folder, "post_offsets")
        self.post_docs = _load(folder, "post_docs")
        self.post_tf = _load(folder, "post_tf")
        self.simhashes = np.ascontiguousarray(self.chunks["simhash"])
        self.hashes = np.ascontiguousarray(self.chunks["hash"])
        self._doclen = np.asarray(self.chunks["length"], dtype=np.float64)

    @classmethod
    def open(cls, volume: Volume) -> ChunkIndex:
        """The volume's index; `ChunkIndexError` when it is missing, from another version,
        or built for other content (the volume was re-ingested without indexing)."""
        folder = volume.dir / INDEX_DIR
        meta = _read_meta(folder)
        if meta is None:
            raise ChunkIndexError(
                f"volume {volume.name!r} has no search index (ingest it again to build one)"
            )
        if meta.get("version") != INDEX_VERSION or meta.get("tokenizer") != TOKENIZER:
            raise ChunkIndexError(
                f"volume {volume.name!r}: the search index is from another version of "
                "nanobot (ingest it again to rebuild it)"
            )
        if meta.get("fingerprint") != _fingerprint(volume):
            raise ChunkIndexError(
                f"volume {volume.name!r}: the search index is out of date with the volume "
                "(ingest it again to rebuild it)"
            )
        try:
            return cls(folder, meta)
        except (OSError, ValueError, KeyError) as exc:
            raise ChunkIndexError(
                f"volume {volume.name!r}: the search index is unreadable ({exc}); "
                "ingest it again to rebuild it"
            ) from None

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def n_terms(self) -> int:
        return len(self.vocab)

    def chunk(self, i: int) -> Chunk:
        if not 0 <= i < len(self.chunks):
            raise ChunkIndexError(f"chunk {i} out of range 0..{len(self.chunks) - 1}")
        row = self.chunks[i]
        return Chunk(
            id=i,
            file=int(row["file"]),
            first_vline=int(row["first"]),
            last_vline=int(row["last"]),
            start=int(row["start"]),
            end=int(row["end"]),
            hash=int(row["hash"]),
            simhash=int(row["simhash"]),
            length=int(row["length"]),
        )

    def chunk_text(self, volume: Volume, i: int) -> str:
        """The chunk's lines joined with "\\n", the CR of CRLF lines dropped: exactly
        `volume.text(first, last)`."""
        row = self.chunks[i]
        return volume.text(int(row["first"]), int(row["last"]))

    def forward(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk i's distinct term ids and their frequencies."""
        lo, hi = int(self.fwd_offsets[i]), int(self.fwd_offsets[i + 1])
        return self.fwd_terms[lo:hi], self.fwd_tf[lo:hi]

    def lookup(self, term: int) -> int:
        """The vocab row of a term id, or -1."""
        j = int(np.searchsorted(self.vocab, np.uint64(term)))
        if j < len(self.vocab) and int(self.vocab[j]) == term:
            return j
        return -1

    def idf(self, term: int) -> float:
        """BM25 idf, the non-negative form ln(1 + (N - df + 0.5) / (df + 0.5)); 0 when the
        term does not occur."""
        j = self.lookup(term)
        if j < 0:
            return 0.0
        df = int(self.df[j])
        n = len(self.chunks)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def bm25(self, terms: list[int]) -> np.ndarray:
        """BM25 scores of every chunk (float64) for query term ids (each counted once)."""
        scores = np.zeros(len(self.chunks), dtype=np.float64)
        if not len(self.chunks) or self.avgdl <= 0:
            return scores
        k1, b = self.k1, self.b
        for term in dict.fromkeys(terms):
            j = self.lookup(term)
            if j < 0:
                continue
            lo, hi = int(self.post_offsets[j]), int(self.post_offsets[j + 1])
            docs = np.asarray(self.post_docs[lo:hi], dtype=np.intp)
            tf = np.asarray(self.post_tf[lo:hi], dtype=np.float64)
            norm = k1 * (1.0 - b + b * self._doclen[docs] / self.avgdl)
            scores[docs] += self.idf(term) * tf * (k1 + 1.0) / (tf + norm)
        return scores


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


class _Previous:
    """The previous index of a volume, for reusing the entries of unchanged chunks."""

    def __init__(self, folder: Path) -> None:
        self.by_hash: dict[int, int] = {}
        self.index: ChunkIndex | None = None
        meta = _read_meta(folder)
        if not meta or meta.get("version") != INDEX_VERSION or meta.get("tokenizer") != TOKENIZER:
            return
        try:
            index = ChunkIndex(folder, meta)
        except (OSError, ValueError, KeyError):
            return
        hashes = index.hashes.tolist()
        # first occurrence wins: iterate backwards so earlier ids overwrite later ones
        for i in range(len(hashes) - 1, -1, -1):
            self.by_hash[hashes[i]] = i
        self.index = index


def build_index(volume: Volume, *, progress: ProgressFn | None = None) -> IndexReport:
    """Chunk the volume, tokenise what changed, and write its index to volume.dir/index.

    A previous index found there lends the forward entries and simhashes of chunks whose
    content hash is unchanged. The new index is written beside the old one and swapped in
    with renames; cached embeddings (vectors*) are carried over, since they are keyed by
    chunk hash.
    """
    started = time.perf_counter()
    folder = volume.dir / INDEX_DIR
    tmp = volume.dir / (INDEX_DIR + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    # A crash between the two renames of _swap_in leaves only index.old: reuse that.
    old = volume.dir / (INDEX_DIR + ".old")
    previous = _Previous(folder if (folder / "meta.json").exists() else old)
    forward = _write_forward(volume, tmp, previous, progress)
    previous.index = None  # release its mmaps before the folder goes away

    table, n = forward.table, len(forward.table)
    np.save(tmp / "chunks.npy", table)
    np.save(tmp / "fwd_offsets.npy", forward.offsets)
    n_terms, n_postings = _write_postings(tmp, forward.offsets)
    lengths = table["length"].astype(np.float64)
    source = folder if folder.is_dir() else old
    for cached in source.glob("vectors*") if source.is_dir() else ():
        shutil.copy2(cached, tmp / cached.name)
    meta = {
        "version": INDEX_VERSION,
        "tokenizer": TOKENIZER,
        "chunk_chars": CHUNK_CHARS,
        "k1": K1,
        "b": B,
        "n_chunks": n,
        "n_terms": n_terms,
        "n_postings": n_postings,
        "avgdl": float(lengths.mean()) if n else 0.0,
        "fingerprint": _fingerprint(volume),
        "n_lines": int(volume.n_lines),
        "n_bytes": int(volume.n_bytes),
        "reused": forward.reused,
        "tokenized": forward.tokenized,
        "seconds": round(time.perf_counter() - started, 3),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    _swap_in(tmp, folder)
    seconds = time.perf_counter() - started
    return IndexReport(n, forward.reused, forward.tokenized, n_terms, seconds)


@dataclass(frozen=True)
class _Forward:
    table: np.ndarray  # CHUNK_DTYPE rows
    offsets: np.ndarray  # fwd_offsets
    reused: int
    tokenized: int


def _write_forward(
    volume: Volume, folder: Path, previous: _Previous, progress: ProgressFn | None
) -> _Forward:
    """Cut the volume into chunks and write their forward entries (fwd_terms.npy and
    fwd_tf.npy in `folder`), one chunk at a time: copied from the previous index when the
    chunk's content hash is there, tokenised otherwise."""
    starts = volume.starts
    plan = plan_chunks(starts, volume.files)
    n = len(plan)
    table = np.zeros(n, dtype=CHUNK_DTYPE)
    fwd_offsets = np.zeros(n + 1, dtype=np.uint64)
    terms_out = NpyAppender(folder / "fwd_terms.npy", "<u8")
    tf_out = NpyAppender(folder / "fwd_tf.npy", "<u4")
    raw = volume.raw()
    reused = tokenized = 0
    step = max(1, n // 100)
    try:
        for i, (fi, first, stop) in enumerate(plan.tolist()):
            start, end = int(starts[first]), int(starts[stop])
            data = raw[start:end]
            digest = hashlib.blake2b(data, digest_size=8).digest()
            chash = int.from_bytes(digest, "little")
            j = previous.by_hash.get(chash, -1)
            if j >= 0 and previous.index is not None:
                terms, freqs = previous.index.forward(j)
                sim = int(previous.index.simhashes[j])
                reused += 1
            else:
                terms, freqs = forward_entry(str(data, "utf-8", "replace"))
                sim = simhash(terms, freqs)
                tokenized += 1
            terms_out.append(terms)
            tf_out.append(freqs)
            fwd_offsets[i + 1] = terms_out.count
            table[i] = (fi, first + 1, stop, start, end, chash, sim, int(np.sum(freqs)))
            if progress is not None and (i % step == 0 or i == n - 1):
                progress("index", i + 1, n)
    finally:
        terms_out.close()
        tf_out.close()
    return _Forward(table, fwd_offsets, reused, tokenized)


def _swap_in(tmp: Path, folder: Path) -> None:
    old = folder.with_name(INDEX_DIR + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _partitions(total: int) -> int:
    parts = 1
    while total > parts * PARTITION_ENTRIES and parts < 256:
        parts *= 2
    return parts


def _write_postings(folder: Path, fwd_offsets: np.ndarray) -> tuple[int, int]:
    """Invert the forward files of `folder` into BM25 postings; (terms, postings)."""
    terms = np.load(folder / "fwd_terms.npy", mmap_mode="r")
    freqs = np.load(folder / "fwd_tf.npy", mmap_mode="r")
    total = len(terms)
    parts = _partitions(total)
    vocab_out = NpyAppender(folder / "vocab.npy", "<u8")
    df_out = NpyAppender(folder / "df.npy", "<u4")
    offsets_out = NpyAppender(folder / "post_offsets.npy", "<u8")
    docs_out = NpyAppender(folder / "post_docs.npy", "<u4")
    tf_out = NpyAppender(folder / "post_tf.npy", "<u4")
    offsets_out.append(np.zeros(1, dtype=np.uint64))
    written = 0
    try:
        if parts == 1:
            selections: Iterator[np.ndarray | None] = iter([None])
        else:
            shift = np.uint64(64 - parts.bit_length() + 1)
            part_of = np.empty(total, dtype=np.uint8)
            block = PARTITION_ENTRIES
            for lo in range(0, total, block):
                part_of[lo : lo + block] = (terms[lo : lo + block] >> shift).astype(np.uint8)
            selections = (np.flatnonzero(part_of == p) for p in range(parts))
        for where in selections:
            if where is None:
                where = np.arange(total, dtype=np.int64)
            if where.size == 0:
                continue
            t = np.asarray(terms[where])
            order = np.argsort(t, kind="stable")  # stable: chunk ids stay ascending
            t = t[order]
            where = where[order]
            docs = np.searchsorted(fwd_offsets, where.astype(np.uint64), side="right") - 1
            cut = np.flatnonzero(t[1:] != t[:-1]) + 1
            heads = np.concatenate(([0], cut))
            ends = np.concatenate((cut, [len(t)]))
            vocab_out.append(t[heads])
            df_out.append(ends - heads)
            offsets_out.append(written + ends)
            docs_out.append(docs)
            tf_out.append(np.asarray(freqs[where]))
            written += len(t)
    finally:
        for out in (vocab_out, df_out, offsets_out, docs_out, tf_out):
            out.close()
    return vocab_out.count, written
