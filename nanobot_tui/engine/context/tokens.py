"""Tokens, term ids and simhashes: what the chunk index and its queries share.

Tokens (see `tokens()`): the words `[A-Za-z0-9_]+`, hyphen-joined runs of them counting as
one word, lower-cased; an identifier written in snake_case, camelCase or kebab-case also
yields its parts and their concatenation (`parseHttpRequest` -> parsehttprequest, parse,
http, request; `parse_http_request` -> parse_http_request, parsehttprequest, parse, http,
request; `amber-quartz-3` -> amber-quartz-3, amberquartz3, amber, quartz), so the spellings
meet, and a compound name is a unit as well as its parts: `amber-quartz-3` is not just
amber and quartz, which many other names may share. Numbers are kept; one-character tokens
are dropped (inside a compound they count); no stemming (code and logs are full of names
that a stemmer would mangle, and exact names are what people search for). A term id is
blake2b(token, digest_size=8) read as a little-endian uint64: stable across runs and
machines, so no vocabulary strings are stored.

A simhash (Charikar's, 64 bits) of a chunk's terms says what it is about, so that near
duplicates lie a few bits apart; stop words are left out of it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np

# A small English stop-word list. Chunks keep these words (the index is language-agnostic
# and BM25's idf already makes them cheap); queries drop them, and simhashes ignore them
# so that they describe what a chunk is about rather than its grammar.
_STOP_TEXT = """
    a an and are as at be been being but by can could did do does doing for from had has
    have having he her here hers him his how i if in into is it its itself me my no nor not
    of off on once only or other our ours out over own same she should so some such than
    that the their theirs them then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your
    yours about above after again against all am any because before below between both
    down during each few further more most just now
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())

# --------------------------------------------------------------------------- tokens

_WORD = re.compile(r"[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*")
_NEEDS_SPLIT = re.compile(r"_|[a-z][A-Z]|[A-Z][A-Z][a-z]")
_CAMEL_EDGE = re.compile(r"[a-z][A-Z]|[A-Z][A-Z][a-z]")
_CAMEL_PART = re.compile(r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z]+[0-9]*|[0-9]+")
# A hyphen-joined run longer than this (a base64 blob, a long dashed id) yields only its
# parts: as a unit it would be a term no one searches for.
COMPOUND_MAX = 64


def _parts(word: str) -> list[str]:
    """The snake/camel parts of a word without hyphens, lower-cased."""
    parts: list[str] = []
    for segment in word.split("_"):
        if not segment:
            continue
        if _CAMEL_EDGE.search(segment):
            parts.extend(p.lower() for p in _CAMEL_PART.findall(segment))
        else:
            parts.append(segment.lower())
    return parts


def _expand(word: str) -> tuple[str, ...]:
    """The tokens one word yields: itself lower-cased, plus its kebab/snake/camel parts."""
    if "-" in word:
        return _expand_compound(word)
    low = word.lower()
    if not _NEEDS_SPLIT.search(word):
        return (low,) if len(low) > 1 else ()
    parts = _parts(word)
    out = dict.fromkeys([low])
    if len(parts) > 1:
        out["".join(parts)] = None
    out.update(dict.fromkeys(parts))
    return tuple(t for t in out if len(t) > 1 and t.strip("_"))


def _expand_compound(word: str) -> tuple[str, ...]:
    """A hyphen-joined word (`amber-quartz-3`): itself and the concatenation of all its
    parts (which meets `amber_quartz_3` and `amberQuartz3`), then each segment's tokens."""
    segments = word.split("-")
    out: dict[str, None] = {}
    if len(word) <= COMPOUND_MAX:
        out[word.lower()] = None
        out["".join(p for s in segments for p in _parts(s))] = None
    for segment in segments:
        out.update(dict.fromkeys(_expand(segment)))
    return tuple(t for t in out if len(t) > 1 and t.strip("_"))


def tokens(text: str) -> list[str]:
    """Every token of `text`, in order, with repeats (a word's parts follow the word)."""
    return [t for word in _WORD.findall(text) for t in _expand(word)]


def term_hash(token: str) -> int:
    """The stable 64-bit id of a token."""
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


# word (as written) -> its token hashes. Vocabularies are far smaller than token counts,
# so each distinct word is split and hashed once; the cache is dropped when it grows past
# _WORD_CACHE_MAX (logs full of unique ids would otherwise grow it without bound).
_WORD_CACHE: dict[str, tuple[int, ...]] = {}
_WORD_CACHE_MAX = 500_000


def _word_hashes(word: str) -> tuple[int, ...]:
    hashes = _WORD_CACHE.get(word)
    if hashes is None:
        if len(_WORD_CACHE) >= _WORD_CACHE_MAX:
            _WORD_CACHE.clear()
        hashes = _WORD_CACHE[word] = tuple(term_hash(t) for t in _expand(word))
    return hashes


def term_hashes(text: str) -> list[int]:
    """The term ids of `text`, in order, with repeats."""
    return [h for word in _WORD.findall(text) for h in _word_hashes(word)]


STOP_HASHES = np.array(sorted(term_hash(w) for w in STOP_WORDS), dtype=np.uint64)


def forward_entry(text: str) -> tuple[np.ndarray, np.ndarray]:
    """A text's forward-index entry: its distinct term ids (sorted uint64) and their
    frequencies (uint32)."""
    tf: dict[int, int] = {}
    get = tf.get
    for word, count in Counter(_WORD.findall(text)).items():
        for h in _word_hashes(word):
            tf[h] = get(h, 0) + count
    terms = np.fromiter(tf.keys(), dtype=np.uint64, count=len(tf))
    freqs = np.fromiter(tf.values(), dtype=np.uint32, count=len(tf))
    order = np.argsort(terms)
    return terms[order], freqs[order]


# --------------------------------------------------------------------------- simhash

_BITS = np.arange(64, dtype=np.uint64)


def simhash(terms: np.ndarray, weights: np.ndarray | None = None) -> int:
    """Charikar's 64-bit simhash of a bag of term ids: bit i is set when the (weighted)
    terms with bit i set outweigh those without. Stop words are left out."""
    terms = np.asarray(terms, dtype=np.uint64)
    w = np.ones(len(terms)) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = ~np.isin(terms, STOP_HASHES)
    terms, w = terms[keep], w[keep]
    if terms.size == 0:
        return 0
    bits = ((terms[:, None] >> _BITS) & np.uint64(1)).astype(np.float64)  # (n, 64)
    votes = 2.0 * (w @ bits) - w.sum()
    return int(np.bitwise_or.reduce(np.where(votes > 0, np.uint64(1) << _BITS, np.uint64(0))))


def hamming(a: int | np.ndarray, b: int | np.ndarray) -> np.ndarray:
    """Bits that differ between simhashes (elementwise on arrays)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x)
