"""The distillation training set from learned.db (no torch needed): the held-out split is
deterministic, disjoint from the training part and stable as the store grows; duplicates
collapse to one prompt with the truth kept; prompts are rebuilt from the domain only when
their fingerprint still matches; too few examples is one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobot_tui.engine.learning.distill.dataset import (
    DatasetCounts,
    TooFewExamples,
    TrainingExample,
    TrainingSet,
    build_dataset,
    domain_of,
    fresh_examples,
    is_heldout,
    read_jsonl,
    write_dataset,
)
from nanobot_tui.engine.learning.distill.job import MIN_FRESH, ab_steps_of
from nanobot_tui.engine.learning.examples import ExampleBank
from nanobot_tui.engine.learning.reuse import ResultCache, prompt_fingerprint
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.voting.domains import Domain, Step
from nanobot_tui.engine.voting.domains.micro_families import FAMILIES
from nanobot_tui.engine.voting.domains.wordcase import VOCABULARY, WordCase
from nanobot_tui.errors import UsageError

MODEL = "SmolLM2-135M-Instruct"
DOMAIN = WordCase(count=5)
# What RunMemory.attach files an example under: the prompt's template (all but the word).
TEMPLATE = prompt_fingerprint(DOMAIN.messages(Step(0, "cat"))[:-1])


@pytest.fixture
def store(nanobot_home: Path) -> Iterator[LearningStore]:
    with LearningStore() as opened:
        yield opened


def add_examples(store: LearningStore, words: list[str], *, fingerprint: str = TEMPLATE) -> None:
    bank = ExampleBank(store)
    for word in words:
        bank.add(
            "wordcase", word, f"answer = {word.upper()}", verified_by="truth", model=MODEL,
            fingerprint=fingerprint,
        )  # fmt: skip


def put_result(store: LearningStore, word: str, answer: str, verified_by: str) -> None:
    step = Step(0, word)
    ResultCache(store).put(
        "wordcase", word, answer, fingerprint=prompt_fingerprint(DOMAIN.messages(step)),
        model=MODEL, verified_by=verified_by,  # type: ignore[arg-type]
    )  # fmt: skip


def inputs(examples: list) -> set[str]:  # type: ignore[type-arg]
    return {e.input_text for e in examples}


def test_split_is_deterministic_disjoint_and_stable_as_the_store_grows(
    store: LearningStore,
) -> None:
    words = list(VOCABULARY[:60])
    add_examples(store, words)
    first = build_dataset(store, "wordcase", domain=DOMAIN)
    again = build_dataset(store, "wordcase", domain=DOMAIN)
    assert [e.to_dict() for e in first.train] == [e.to_dict() for e in again.train]
    assert [e.to_dict() for e in first.heldout] == [e.to_dict() for e in again.heldout]
    assert not inputs(first.train) & inputs(first.heldout)
    assert inputs(first.train) | inputs(first.heldout) == set(words)
    assert 0 < first.counts.heldout < first.counts.train
    assert inputs(first.heldout) == {w for w in words if is_heldout("wordcase", w)}

    add_examples(store, list(VOCABULARY[60:120]))
    grown = build_dataset(store, "wordcase", domain=DOMAIN)
    # What was held out stays held out, and nothing trained on moves to the test side.
    assert inputs(first.heldout) <= inputs(grown.heldout)
    assert inputs(first.train) <= inputs(grown.train)


def test_split_depends_on_the_step_type_and_the_fraction() -> None:
    words = list(VOCABULARY[:200])
    held = {w for w in words if is_heldout("wordcase", w, 0.2)}
    assert 20 <= len(held) <= 60
    assert held != {w for w in words if is_heldout("micro:dates", w, 0.2)}
    assert held <= {w for w in words if is_heldout("wordcase", w, 0.5)}
    assert not any(is_heldout("wordcase", w, 0.0) for w in words)


def test_prompts_are_the_domains_messages_and_stale_prompts_are_left_out(
    store: LearningStore,
) -> None:
    add_examples(store, list(VOCABULARY[:40]))
    add_examples(store, ["zebra", "yacht"], fingerprint="an-older-prompt")
    built = build_dataset(store, "wordcase", domain=DOMAIN, min_train=1, min_heldout=1)
    assert built.counts.examples == 42 and built.counts.left_out == 2
    assert "zebra" not in inputs(built.train) | inputs(built.heldout)
    example = built.train[0]
    assert example.messages == DOMAIN.messages(Step(0, example.input_text))
    assert example.answer == f"answer = {example.input_text.upper()}"
    assert built.fingerprint == TEMPLATE

    # Without a domain the prompt is the user message alone, and every example is kept.
    bare = build_dataset(store, "wordcase", min_train=1, min_heldout=1)
    assert bare.counts.left_out == 0
    assert len(bare.train) + len(bare.heldout) == 42
    assert all(len(e.messages) == 1 for e in bare.train)


def test_duplicates_collapse_to_one_prompt_and_a_truth_beats_a_voted_answer(
    store: LearningStore,
) -> None:
    words = list(VOCABULARY[:30])
    add_examples(store, words)
    # The same steps cached in L0: they rebuild to the very same prompts.
    for word in words[:10]:
        put_result(store, word, word.upper(), "truth")
    # A voted answer for a new step, and a voted (wrong) one that loses to a stored truth.
    put_result(store, "zebra", "ZEBRA", "voted+checked")
    ExampleBank(store).add(
        "wordcase", "yacht", "answer = YACHT", verified_by="voted+checked", model=MODEL,
        fingerprint=TEMPLATE,
    )  # fmt: skip
    put_result(store, "yacht", "YACHTS", "voted+checked")
    put_result(store, "jelly", "JELLY", "truth")
    ExampleBank(store).add(
        "wordcase", "jelly", "answer = JELLIES", verified_by="voted+checked", model=MODEL,
        fingerprint=TEMPLATE,
    )  # fmt: skip

    built = build_dataset(store, "wordcase", domain=DOMAIN, min_train=1, min_heldout=1)
    everything = built.train + built.heldout
    prompts = [json.dumps(e.messages) for e in everything]
    assert len(prompts) == len(set(prompts)) == 33
    assert built.counts.duplicates == 12
    assert built.counts.examples == 32 and built.counts.results == 13
    by_input = {e.input_text: e for e in everything}
    assert by_input["zebra"].answer == "answer = ZEBRA"
    assert by_input["zebra"].source == "result"
    assert by_input["jelly"].answer == "answer = JELLY"
    assert by_input["jelly"].verified_by == "truth"
    # Two voted answers for one prompt: the newer one (the result) is kept.
    assert by_input["yacht"].answer == "answer = YACHTS"


def test_a_result_whose_prompt_changed_is_left_out(store: LearningStore) -> None:
    ResultCache(store).put(
        "wordcase", "zebra", "ZEBRA", fingerprint="an-older-prompt", model=MODEL,
        verified_by="truth",
    )  # fmt: skip
    put_result(store, "yacht", "YACHT", "truth")
    built = build_dataset(store, "wordcase", domain=DOMAIN, min_train=0, min_heldout=0)
    assert built.counts.results == 2 and built.counts.left_out == 1
    assert inputs(built.train + built.heldout) == {"yacht"}
    # Without a domain no result's prompt can be rebuilt.
    assert build_dataset(store, "wordcase", min_train=0, min_heldout=0).counts.left_out == 2


def test_too_few_examples_is_one_line_naming_the_type_and_the_counts(
    store: LearningStore,
) -> None:
    add_examples(store, list(VOCABULARY[:10]))
    with pytest.raises(TooFewExamples) as caught:
        build_dataset(store, "wordcase", domain=DOMAIN)
    message = str(caught.value)
    assert isinstance(caught.value, UsageError)
    assert "\n" not in message
    assert "'wordcase'" in message and "at least 16" in message
    with pytest.raises(TooFewExamples, match="0 verified examples"):
        build_dataset(store, "micro:dates")


def test_written_jsonl_reads_back_and_a_bad_line_names_the_file(
    store: LearningStore, tmp_path: Path
) -> None:
    add_examples(store, list(VOCABULARY[:40]))
    built = build_dataset(store, "wordcase", domain=DOMAIN)
    train_path, heldout_path = write_dataset(built, tmp_path / "set")
    lines = train_path.read_text().splitlines()
    assert len(lines) == built.counts.train
    assert set(json.loads(lines[0])) == {"messages", "answer", "verified_by", "source"}
    assert [e.to_dict() for e in read_jsonl(heldout_path)] == [e.to_dict() for e in built.heldout]
    heldout_path.write_text(heldout_path.read_text() + '{"answer": "x"}\n')
    with pytest.raises(UsageError, match=r"heldout\.jsonl:\d+: not a training example"):
        read_jsonl(heldout_path)


def test_domain_of_a_step_type() -> None:
    built = domain_of("wordcase")
    assert built is not None and built.name == "wordcase"
    assert domain_of("code:fstrings") is None  # needs its codebase
    assert domain_of("no-such-domain") is None


def test_results_of_a_family_come_back_as_replies_its_parser_reads(store: LearningStore) -> None:
    domain = domain_of("micro:sums")
    assert domain is not None
    steps = list(domain.steps())[:12]
    cache = ResultCache(store)
    for step in steps:
        cache.put(
            "micro:sums", domain.dump_step(step), domain.dump_answer(domain.truth(step)),
            fingerprint=prompt_fingerprint(domain.messages(step)), model=MODEL,
            verified_by="truth",
        )  # fmt: skip
    built = build_dataset(store, "micro:sums", domain=domain, min_train=1, min_heldout=0)
    assert built.counts.left_out == 0
    assert len(built.train) + len(built.heldout) == len({domain.dump_step(s) for s in steps})
    truths = {domain.messages(s)[-1]["content"]: domain.truth(s) for s in steps}
    for example in built.train + built.heldout:
        assert example.messages[:-1] == domain.messages(steps[0])[:-1]
        parsed = domain.parse_strict(example.answer)
        assert domain.key(parsed) == domain.key(truths[example.input_text])


# --- fresh steps for the A/B test --------------------------------------------------------


def test_fresh_steps_never_overlap_the_training_set_and_carry_their_truth(
    store: LearningStore,
) -> None:
    add_examples(store, list(VOCABULARY[:250]))
    domain = domain_of("wordcase")
    built = build_dataset(store, "wordcase", domain=domain)
    seen = inputs(built.train) | inputs(built.heldout)
    assert len(seen) == 250
    fresh = fresh_examples(domain, seen, 120, seed=0)
    # The vocabulary less the 250 stored words is all there is.
    assert len(fresh) == len(VOCABULARY) - 250 and not inputs(fresh) & seen
    assert len(inputs(fresh)) == len(fresh)
    for example in fresh:
        assert (example.source, example.verified_by) == ("fresh", "truth")
        assert example.messages[:-1] == built.train[0].messages[:-1]  # the same prompt
        assert example.answer == f"answer = {example.input_text.upper()}"
    # The seed picks the order, not the set; a domain without fresh steps gives none.
    again = fresh_examples(domain, seen, 120, seed=5)
    assert inputs(again) == inputs(fresh) and again != fresh
    assert fresh_examples(domain_of("hanoi"), set(), 10) == []
    assert fresh_examples(None, set(), 10) == []

    # The A/B steps of the set: fresh ones, at most n; held out for a domainless type.
    steps, on = ab_steps_of(built, domain, 50)
    assert (on, len(steps)) == ("fresh", 50) and not inputs(steps) & seen
    steps, on = ab_steps_of(built, None, 50)
    assert (on, steps) == ("heldout", built.heldout)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_micro_familys_fresh_steps_leave_out_what_was_seen(family: str) -> None:
    domain = domain_of(f"micro:{family}")
    assert domain is not None
    everything = fresh_examples(domain, set(), 120, seed=0)
    assert len(everything) == len(inputs(everything)) >= min(40, 120)
    seen = {e.input_text for e in everything[::2]}  # every other one "trained on"
    fresh = fresh_examples(domain, seen, 120, seed=0)
    assert fresh and not inputs(fresh) & seen
    for example in fresh:
        truth = domain.truth(domain.load_step(0, example.input_text))
        assert domain.key(domain.parse_strict(example.answer)) == domain.key(truth)


def test_a_family_with_few_fresh_steps_left_is_tested_on_its_heldout_split() -> None:
    """capitals has a fixed list of 40: once nearly all of it is in the training set,
    fewer than MIN_FRESH fresh steps remain and the held-out split is used."""
    domain = domain_of("micro:capitals")
    assert domain is not None
    items = [e.input_text for e in fresh_examples(domain, set(), 120)]
    assert len(items) == 40
    train = [_example(domain, item) for item in items[: 40 - MIN_FRESH + 1]]
    heldout = [_example(domain, item) for item in items[-4:]]
    counts = DatasetCounts(len(train) + 4, 0, 0, 0, len(train), 4)
    built = TrainingSet("micro:capitals", train, heldout, counts)
    steps, on = ab_steps_of(built, domain, 120)
    assert (on, steps) == ("heldout", heldout)


def _example(domain: Domain, item: str) -> TrainingExample:
    return TrainingExample(domain.messages(Step(0, item)), "answer = x", "truth", "example", 0.0)
