"""L0, exact reuse: a verified result is found again for the same step, and missed when
the prompt, the model or the input changes; only verified results are kept, a truth
outranks a voted result, hits are counted, and `forget` removes what it names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobot_tui.engine.learning.reuse import (
    ResultCache,
    canonical_json,
    prompt_fingerprint,
    result_key,
)
from nanobot_tui.engine.learning.store import LearningStore

TEMPLATE_V1 = {"recipe": "wordcase", "version": 1, "system": "Answer `answer = WORD`."}
TEMPLATE_V2 = {**TEMPLATE_V1, "system": "Answer with the word in upper case."}
MODEL = "smollm2-135m"


@pytest.fixture
def cache(nanobot_home: Path) -> Iterator[ResultCache]:
    with LearningStore() as store:
        yield ResultCache(store)


def test_a_cached_result_is_reused_and_misses_once_the_prompt_changes(cache: ResultCache) -> None:
    fp1 = prompt_fingerprint(TEMPLATE_V1)
    assert cache.get("wordcase", "cat", fingerprint=fp1, model=MODEL) is None
    cache.put(
        "wordcase",
        "cat",
        {"answer": "CAT"},
        fingerprint=fp1,
        model=MODEL,
        verified_by="voted+checked",
    )

    first = cache.get("wordcase", "cat", fingerprint=fp1, model=MODEL)
    second = cache.get("wordcase", "cat", fingerprint=fp1, model=MODEL)
    assert first is not None and second is not None
    assert second.output == {"answer": "CAT"} and second.verified_by == "voted+checked"
    assert (first.hits, second.hits) == (1, 2)
    assert second.last_hit is not None and second.last_hit >= second.created

    # The prompt changed: its fingerprint, the key, and so the lookup all change.
    fp2 = prompt_fingerprint(TEMPLATE_V2)
    assert fp2 != fp1
    assert cache.get("wordcase", "cat", fingerprint=fp2, model=MODEL) is None
    # Another model, another step type, another input: misses too.
    assert cache.get("wordcase", "cat", fingerprint=fp1, model="qwen3-0.6b") is None
    assert cache.get("code:fstrings", "cat", fingerprint=fp1, model=MODEL) is None
    assert cache.get("wordcase", "dog", fingerprint=fp1, model=MODEL) is None

    # Every lookup counts for its step type's hit rate; hits only where one was found.
    fstrings, wordcase = cache.summary()
    assert (fstrings.step_type, fstrings.results, fstrings.hits, fstrings.lookups) == (
        "code:fstrings",
        0,
        0,
        1,
    )
    assert (wordcase.step_type, wordcase.results, wordcase.hits, wordcase.lookups) == (
        "wordcase",
        1,
        2,
        6,
    )
    assert wordcase.hit_rate == pytest.approx(2 / 6)


def test_the_key_is_canonical_in_the_input_and_separates_its_parts() -> None:
    fp = prompt_fingerprint(TEMPLATE_V1)
    # Same data, other spelling: the same key.
    assert result_key("t", {"b": 1, "a": [1, 2]}, fp, MODEL) == result_key(
        "t", {"a": (1, 2), "b": 1}, fp, MODEL
    )
    assert prompt_fingerprint({"a": 1, "b": 2}) == prompt_fingerprint({"b": 2, "a": 1})
    # Moving text from one part into the next does not make the same key.
    assert result_key("ab", "c", fp, MODEL) != result_key("a", "bc", fp, MODEL)
    assert canonical_json({"é": (1,)}) == '{"é":[1]}'


def test_structured_inputs_and_outputs_round_trip(cache: ResultCache) -> None:
    step_input = {"function": "def f(x):\n    return '%s' % x\n", "path": "pkg/mod.py"}
    output = {"code": "def f(x):\n    return f'{x}'\n", "changed": True}
    cache.put(
        "code:fstrings", step_input, output, fingerprint="fp", model=MODEL, verified_by="truth"
    )
    hit = cache.get(
        "code:fstrings", dict(reversed(step_input.items())), fingerprint="fp", model=MODEL
    )
    assert hit is not None
    assert (hit.input, hit.output, hit.verified_by) == (step_input, output, "truth")


def test_only_verified_results_are_kept(cache: ResultCache) -> None:
    with pytest.raises(ValueError, match="verified_by"):
        cache.put("wordcase", "cat", "CAT", fingerprint="fp", model=MODEL, verified_by="voted")  # type: ignore[arg-type]
    assert cache.results() == []


def test_a_truth_is_never_replaced_by_a_voted_result_but_replaces_one(cache: ResultCache) -> None:
    kw = {"fingerprint": "fp", "model": MODEL}
    cache.put("wordcase", "cat", "KAT", verified_by="voted+checked", **kw)
    assert cache.put("wordcase", "cat", "CAT", verified_by="truth", **kw).output == "CAT"
    kept = cache.put("wordcase", "cat", "KAT", verified_by="voted+checked", **kw)
    assert (kept.output, kept.verified_by) == ("CAT", "truth")
    hit = cache.get("wordcase", "cat", **kw)
    assert hit is not None and hit.output == "CAT"
    assert len(cache.results()) == 1


def test_forget_removes_what_it_names_and_says_how_many(cache: ResultCache) -> None:
    for step_type in ("wordcase", "code:fstrings"):
        for model in (MODEL, "qwen3-0.6b"):
            for word in ("cat", "dog"):
                cache.put(
                    step_type,
                    word,
                    word.upper(),
                    fingerprint="fp",
                    model=model,
                    verified_by="truth",
                )
                cache.get(step_type, word, fingerprint="fp", model=model)
    assert cache.forget(step_type="wordcase", model="qwen3-0.6b") == 2
    assert cache.get("wordcase", "cat", fingerprint="fp", model="qwen3-0.6b") is None
    assert cache.get("wordcase", "cat", fingerprint="fp", model=MODEL) is not None
    assert cache.forget(fingerprint="other") == 0
    assert cache.forget(step_type="code:fstrings") == 4
    # A step type's counters go with its results; the other's stay.
    assert [s.step_type for s in cache.summary()] == ["wordcase"]
    assert cache.forget() == 2
    assert cache.results() == [] and cache.summary() == []
