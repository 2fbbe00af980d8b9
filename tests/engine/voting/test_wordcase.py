"""The word-case micro-step domain: prompts, parsers, truth, wrong answers, stepping."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.voting.domains.wordcase import EXAMPLES, PROMPTS, VOCABULARY, WordCase


def test_words_are_deterministic_common_and_never_the_examples() -> None:
    a, b = WordCase(count=50, seed=7), WordCase(count=50, seed=7)
    assert a.words == b.words
    assert a.words != WordCase(count=50, seed=8).words
    assert len(set(a.words)) == 50  # no repeats within one pass of the vocabulary
    assert all(w in VOCABULARY for w in a.words)
    assert not set(EXAMPLES) & set(VOCABULARY)
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 6 for w in VOCABULARY)
    # More words than the vocabulary: every word once per pass.
    big = WordCase(count=len(VOCABULARY) + 5, seed=1)
    assert sorted(big.words[: len(VOCABULARY)]) == sorted(VOCABULARY)
    assert big.total_steps() == len(VOCABULARY) + 5


def test_explicit_words_and_bad_input() -> None:
    d = WordCase(["cat", " dog "])
    assert d.words == ["cat", "dog"]
    with pytest.raises(ValueError, match="plain word"):
        WordCase(["two words"])
    with pytest.raises(ValueError, match="empty"):
        WordCase([])
    with pytest.raises(ValueError, match="count"):
        WordCase(count=0)
    with pytest.raises(ValueError, match="prompt"):
        WordCase(prompt="poem")


def test_steps_next_step_and_is_solved() -> None:
    d = WordCase(["cat", "dog", "sun"])
    steps = list(d.steps())
    assert steps == [Step(0, "cat"), Step(1, "dog"), Step(2, "sun")]
    # The next word comes whatever the answer was.
    assert d.next_step(steps[0], "WRONG") == steps[1]
    assert d.next_step(steps[1], "DOG") == steps[2]
    assert d.next_step(steps[2], "SUN") is None
    assert d.is_solved(None, "SUN")
    assert not d.is_solved(steps[2], "SUN")
    assert not d.is_solved(None, None)


def test_random_step_takes_random_and_numpy_generators() -> None:
    d = WordCase(count=20, seed=3)
    s1 = [d.random_step(random.Random(5)) for _ in range(3)]
    assert s1 == [d.random_step(random.Random(5)) for _ in range(3)]
    for s in [*s1, d.random_step(np.random.default_rng(1))]:
        assert d.words[s.index] == s.input


def test_truth_key_and_describe() -> None:
    d = WordCase(["orange"])
    step = Step(0, "orange")
    assert d.truth(step) == "ORANGE"
    assert d.key("ORANGE") == d.key(" ORANGE ")
    # Casing is the task: a lower-case answer must not vote with the right one.
    assert d.key("orange") != d.key("ORANGE")
    assert d.describe("ORANGE") == "ORANGE"


@pytest.mark.parametrize("text", ["answer = APPLE", "  answer = APPLE\n", "answer = A"])
def test_strict_parser_accepts_exactly_the_format(text: str) -> None:
    assert WordCase(["apple"]).parse_strict(text) == text.strip().split("= ")[1]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("APPLE", "answer = WORD"),
        ("answer = apple", "answer = WORD"),
        ("answer = Apple", "answer = WORD"),
        ("answer=APPLE", "answer = WORD"),
        ("Answer = APPLE", "answer = WORD"),
        ("answer = APPLE.", "answer = WORD"),
        ("answer = APPLE PIE", "answer = WORD"),
        ("answer = APPLE\nanswer = APPLE", "one line"),
        ("The answer is APPLE", "answer = WORD"),
    ],
)
def test_strict_parser_refuses_anything_else(text: str, why: str) -> None:
    with pytest.raises(ParseError, match=why):
        WordCase(["apple"]).parse_strict(text)


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("answer = APPLE", "APPLE"),
        ("Answer: APPLE.", "APPLE"),
        ("answer = apple", "apple"),  # what it meant, in the case it wrote: wrong
        ("The word in capitals is APPLE!", "APPLE"),
        ("ANSWER = APPLE", "APPLE"),
        ("Sure.\n\nAPPLE\nAPPLE", "APPLE"),
        ("answer = APLE", "APLE"),
    ],
)
def test_lenient_parser_finds_what_the_model_meant(text: str, meant: str) -> None:
    assert WordCase(["apple"]).parse_lenient(text) == meant


@pytest.mark.parametrize("text", ["", "I do not know.", "apple", "A"])
def test_lenient_parser_refuses_text_without_an_answer(text: str) -> None:
    with pytest.raises(ParseError):
        WordCase(["apple"]).parse_lenient(text)


def test_wrong_answers_are_distinct_plausible_and_never_the_truth() -> None:
    d = WordCase(["cat", "window"])
    for step in d.steps():
        truth = d.truth(step)
        for count in (1, 3, 8, 40):
            wrong = d.wrong_answers(step, count)
            assert len(wrong) == count
            keys = [d.key(w) for w in wrong]
            assert len(set(keys)) == count
            assert d.key(truth) not in keys
        first = d.wrong_answers(step, 6)
        assert first[0] == step.input  # left in lower case
        assert first[1] == step.input.capitalize()
        assert all(w.isalpha() for w in first)
    assert d.wrong_answers(Step(0, "cat"), 0) == []


@pytest.mark.parametrize("prompt", PROMPTS)
def test_messages_end_with_the_word_and_share_a_cacheable_prefix(prompt: str) -> None:
    d = WordCase(["cat", "dog"], prompt=prompt)
    a, b = d.messages(Step(0, "cat")), d.messages(Step(1, "dog"))
    assert a[-1]["content"].endswith("cat") and b[-1]["content"].endswith("dog")
    assert "answer = WORD" in (a[0]["content"])
    if prompt != "list":
        assert a[:-1] == b[:-1]  # only the last message differs: the prompt cache holds
        assert a[0]["role"] == "system"
        assert {"role": "assistant", "content": "answer = APPLE"} in a
    # Paraphrases reword the instruction and reorder the examples; they cycle.
    p1 = d.messages(Step(0, "cat"), paraphrase=1)
    assert p1 != a
    assert d.messages(Step(0, "cat"), paraphrase=3) == a
