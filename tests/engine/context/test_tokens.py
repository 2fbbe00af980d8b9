"""Tokens, term ids and simhashes, shared by the chunk index and its queries."""

from __future__ import annotations

import hashlib
import random

import numpy as np

from nanobot_tui.engine.context.tokens import forward_entry, hamming, simhash, term_hash, tokens
from tests.engine.context.test_index import WORDS

# --------------------------------------------------------------------------- tokens


def test_tokens_words_lowercase_numbers_and_no_one_char_tokens() -> None:
    assert tokens("Hello, World! x = 42; y_ 7 running") == [
        "hello",
        "world",
        "42",
        "y_",
        "running",  # no stemming
    ]


def test_tokens_split_camel_and_snake_case() -> None:
    assert tokens("parseHttpRequest") == ["parsehttprequest", "parse", "http", "request"]
    assert tokens("HTTPServer") == ["httpserver", "http", "server"]
    assert tokens("parse_http_request") == [
        "parse_http_request",
        "parsehttprequest",  # meets the camelCase spelling
        "parse",
        "http",
        "request",
    ]
    assert tokens("__init__") == ["__init__", "init"]
    assert tokens("getV2Data") == ["getv2data", "get", "v2", "data"]
    # hex ids and plain lower-case words stay whole
    assert tokens("a3f9c8e1 DEADBEEF utf8") == ["a3f9c8e1", "deadbeef", "utf8"]


def test_hyphen_compounds_are_units_as_well_as_parts() -> None:
    assert tokens("amber-quartz-3") == ["amber-quartz-3", "amberquartz3", "amber", "quartz"]
    # the unit tells look-alikes apart, whose parts are all shared
    assert "amber-quartz-3" not in tokens("amber-quartz-1 amber-velvet-3 coral-quartz-3")
    # the three spellings of one name meet on the joined form
    for spelling in ("amber_quartz_3", "amberQuartz3", "AMBER-QUARTZ-3"):
        assert "amberquartz3" in tokens(spelling), spelling
    assert tokens("parse-HttpRequest") == [
        "parse-httprequest",
        "parsehttprequest",
        "parse",
        "httprequest",
        "http",
        "request",
    ]
    assert tokens("XK-12A-55 e-mail") == [
        "xk-12a-55",
        "xk12a55",
        "xk",
        "12a",
        "55",
        "e-mail",
        "email",
        "mail",
    ]
    # dashes that join nothing stay separators
    assert tokens("--verbose foo--bar - x") == ["verbose", "foo", "bar"]
    # a very long dashed run is not a unit, only its parts
    long = "-".join(["segment"] * 12)
    assert tokens(long) == ["segment"]


def test_forward_entry_counts_compounds_and_parts() -> None:
    terms, tf = forward_entry("amber-quartz-3 amber-velvet-1")
    got = dict(zip(terms.tolist(), tf.tolist(), strict=True))
    want = {
        "amber-quartz-3": 1,
        "amberquartz3": 1,
        "amber-velvet-1": 1,
        "ambervelvet1": 1,
        "amber": 2,
        "quartz": 1,
        "velvet": 1,
    }
    assert got == {term_hash(t): n for t, n in want.items()}


def test_term_hash_is_blake2b_8_little_endian() -> None:
    digest = hashlib.blake2b(b"zephyr", digest_size=8).digest()
    assert term_hash("zephyr") == int.from_bytes(digest, "little")
    assert 0 <= term_hash("x") < 2**64


def test_forward_entry_counts_terms() -> None:
    terms, tf = forward_entry("apple banana apple parseHttp")
    got = dict(zip(terms.tolist(), tf.tolist(), strict=True))
    want = {"apple": 2, "banana": 1, "parsehttp": 1, "parse": 1, "http": 1}
    assert got == {term_hash(t): n for t, n in want.items()}
    assert terms.dtype == np.uint64 and np.all(np.diff(terms.astype(np.float64)) > 0)


# --------------------------------------------------------------------------- simhash


def _sim(text: str) -> int:
    terms, tf = forward_entry(text)
    return simhash(terms, tf)


def test_simhash_similar_texts_are_closer_than_unrelated_ones() -> None:
    rng = random.Random(3)
    base = [rng.choice(WORDS) + str(rng.randint(0, 50)) for _ in range(300)]
    near = list(base)
    for k in rng.sample(range(300), 15):
        near[k] = "changed" + str(k)
    other = [rng.choice(WORDS) + str(rng.randint(51, 100)) for _ in range(300)]
    a, b, c = _sim(" ".join(base)), _sim(" ".join(near)), _sim(" ".join(other))
    assert int(hamming(a, b)) < 12
    assert int(hamming(a, c)) > 20
    assert _sim(" ".join(base)) == a  # deterministic


def test_simhash_ignores_stop_words_and_empty_is_zero() -> None:
    assert _sim("secret code zephyr") == _sim("the secret code of the zephyr is")
    assert _sim("") == 0
    assert _sim("the of and") == 0


def test_simhash_of_one_term_is_the_term() -> None:
    h = term_hash("zephyr")
    assert simhash(np.array([h], dtype=np.uint64)) == h
