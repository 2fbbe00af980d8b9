"""Re-ranking the head of a lexical ranking by how much of the query the best line covers.

BM25 alone ranks a tiny chunk (a near-empty file plus one line with most of the query's
words) above a long chunk with a line holding all of them: its length normalisation lifts
short chunks, and where many passages differ only in a compound name (`amber-quartz-3`
against `amber-velvet-1`) that is what decides. So the best RERANK candidates are ordered
by the query idf that their best line covers, the nudged BM25 score breaking ties.

Reading and scanning a chunk costs far more than its postings, so each candidate is first
bounded from above by the query tokens it holds anywhere (from the postings), candidates
go in bound order, and the scan stops at the first that cannot reach the top; within a
chunk, only the lines where a query token may occur (a substring test on the squashed
text) are tokenised.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np

from nanobot_tui.engine.context.index import ChunkIndex
from nanobot_tui.engine.context.tokens import term_hash, term_hashes

if TYPE_CHECKING:
    from nanobot_tui.engine.context.volume import Volume

__all__ = ["RERANK", "Best", "Query", "best_line", "chunk_lines", "make_query", "rerank"]

# The head of the lexical ranking that is re-ordered by best-line coverage.
RERANK = 40


@dataclass(frozen=True)
class Best:
    """A chunk's best line: its offset in the chunk and the query idf it covers; and the
    chunk's lines, so that a hit does not read them again."""

    offset: int
    covered: float
    lines: list[str]


@dataclass(frozen=True)
class Query:
    """What scoring lines needs of a query: each token's idf by term id, in query order (a
    token the volume lacks weighs almost nothing), and a pattern that finds the lines
    that may hold a query token (see _squash)."""

    weights: dict[int, float]
    sift: re.Pattern[str]


def make_query(index: ChunkIndex, words: list[str]) -> Query:
    weights = {term_hash(w): index.idf(term_hash(w)) or 1e-3 for w in words}
    atoms = sorted({_squash(w) for w in words}, key=len, reverse=True)
    return Query(weights, re.compile("|".join(re.escape(a) for a in atoms)))


def _bounds(index: ChunkIndex, ids: np.ndarray, query: Query) -> np.ndarray:
    """Per chunk, the idf of the query tokens it holds anywhere: no line of it covers more.
    Summed in query order, as best_line sums, so equal sets give equal floats."""
    bounds = np.zeros(len(ids), dtype=np.float64)
    for term, weight in query.weights.items():
        j = index.lookup(term)
        if j < 0:
            continue
        lo, hi = int(index.post_offsets[j]), int(index.post_offsets[j + 1])
        docs = index.post_docs[lo:hi]  # ascending chunk ids
        at = np.minimum(np.searchsorted(docs, ids), len(docs) - 1)
        bounds += np.where(docs[at] == ids, weight, 0.0)
    return bounds


def rerank(
    volume: Volume,
    index: ChunkIndex,
    ids: np.ndarray,
    scores: np.ndarray,
    words: list[str],
    top: int,
) -> list[tuple[int, Best | None]]:
    """Positions into `ids` best first, with the best line where it was found: the head
    (RERANK) by (coverage, score, chunk id), the rest as BM25 ranked them. A candidate is
    scanned only while its bound can still put it among the `top`: candidates go in
    bound order, and the scan stops at the first that cannot beat the top-th found."""
    head = min(len(ids), RERANK)
    if head == 0 or top <= 0:
        return [(p, None) for p in range(len(ids))]
    query = make_query(index, words)
    bounds = _bounds(index, ids[:head], query).tolist()
    score_list, id_list = scores[:head].tolist(), ids[:head].tolist()
    order = sorted(range(head), key=lambda p: (-bounds[p], -score_list[p], id_list[p]))
    found: list[tuple[tuple[float, float, int], int, Best]] = []  # kept sorted, best first
    for p in order:
        reach = (bounds[p], score_list[p], -id_list[p])
        if len(found) >= top and reach < found[top - 1][0]:
            break
        best = best_line(chunk_lines(volume, index, id_list[p]), query)
        found.append(((best.covered, score_list[p], -id_list[p]), p, best))
        found.sort(key=lambda entry: entry[0], reverse=True)
    seen = {p for _, p, _ in found}
    ranked: list[tuple[int, Best | None]] = [(p, best) for _, p, best in found]
    ranked += [(p, None) for p in range(len(ids)) if p not in seen]
    return ranked


def chunk_lines(volume: Volume, index: ChunkIndex, i: int) -> list[str]:
    row = index.chunks[i]
    return volume.text(int(row["first"]), int(row["last"])).split("\n")


def _squash(text: str) -> str:
    """Lower-cased without "_" and "-": a line can yield a token only if its squashed
    text holds the token's squashed form (parts and joins are substrings of a word)."""
    return text.lower().replace("_", "").replace("-", "")


def best_line(lines: list[str], query: Query) -> Best:
    """The line covering the most query idf (then the most query tokens); the first
    non-blank line, covering nothing, when none matches. Only the lines where the sift
    pattern matches are tokenised."""
    weights = query.weights
    squashed = _squash("\n".join(lines))
    starts = list(accumulate((len(t) + 1 for t in squashed.split("\n")), initial=0))
    if len(starts) != len(lines) + 1:  # lower() made a line break: tokenise every line
        maybe: Iterable[int] = range(len(lines))
    else:
        maybe = _sifted(squashed, starts, query.sift)
    best, best_key = -1, (0.0, 0)
    for k in maybe:
        found = [h for h in term_hashes(lines[k]) if h in weights]
        if not found:
            continue
        present = set(found)
        key = (sum(w for h, w in weights.items() if h in present), len(found))
        if key > best_key:
            best, best_key = k, key
    if best >= 0:
        return Best(best, best_key[0], lines)
    return Best(next((k for k, line in enumerate(lines) if line.strip()), 0), 0.0, lines)


def _sifted(text: str, starts: list[int], sift: re.Pattern[str]) -> Iterator[int]:
    """Indexes of the lines of `text` (starting at `starts`) where `sift` matches."""
    at = 0
    while (found := sift.search(text, at)) is not None:
        k = bisect_right(starts, found.start()) - 1
        yield k
        at = starts[k + 1]  # on to the next line
