"""L1, verified examples: retrieval ranks the most similar example first and never offers
a retired one or the step's own input; helped/hurt counters and the retirement rule; the
sampler's few-shot hook puts the examples into the request in order (a FAKE scripted chat
client records the requests); and, on the embedded model, word case with and without
bootstrapped examples."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobot_tui.engine.learning.examples import (
    RETIRE_MIN_HURT,
    ExampleBank,
    StepShots,
    last_user_text,
    user_text_of,
)
from nanobot_tui.engine.learning.store import SCHEMA_VERSION, LearningStore, learned_path
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.results import Usage
from nanobot_tui.engine.voting.domains.wordcase import VOCABULARY, WordCase
from nanobot_tui.engine.voting.samplers.model import LLMSampler, with_shots
from tests.fakes import ScriptedClient

MODEL = "smollm2-135m"
NAME = "local main: SmolLM2-135M-Instruct"


@pytest.fixture
def bank(nanobot_home: Path) -> Iterator[ExampleBank]:
    with LearningStore() as store:
        yield ExampleBank(store)


def add(bank: ExampleBank, word: str, step_type: str = "wordcase") -> int:
    return bank.add(
        step_type, word, f"answer = {word.upper()}", verified_by="truth", model=MODEL
    ).id


def test_retrieval_ranks_the_similar_example_first(bank: ExampleBank) -> None:
    for word in ("dog", "castle", "river", "casting", "moon"):
        add(bank, word)
    add(bank, "cast", step_type="other")  # another step type is never offered
    found = bank.similar("wordcase", "cast", n=3)
    # Both share ^ca, cas, ast with "cast"; the shorter one matches more of itself.
    assert [e.input_text for e in found[:2]] == ["castle", "casting"]
    assert len(found) == 3
    # Sentences: the example sharing the content words comes first.
    for text in (
        "The invoice number is 4411 and it is due in May.",
        "Our cat sleeps on the warm window sill.",
        "Ship the order to 12 Baker Street.",
    ):
        bank.add("extract", text, "answer = x", verified_by="voted+checked", model=MODEL)
    best = bank.similar("extract", "What invoice number is due?", n=1)
    assert [e.input_text for e in best] == ["The invoice number is 4411 and it is due in May."]


def test_retrieval_skips_retired_examples_and_the_step_itself(bank: ExampleBank) -> None:
    castle, casting = add(bank, "castle"), add(bank, "casting")
    add(bank, "cast")
    found = [e.input_text for e in bank.similar("wordcase", "cast", n=5)]
    assert found == ["castle", "casting"]  # not "cast": that is the step itself
    for _ in range(RETIRE_MIN_HURT):
        bank.credit([castle], "wrong")
    assert [e.input_text for e in bank.similar("wordcase", "cast", n=5)] == ["casting"]
    assert bank.similar("wordcase", "cast", n=5, exclude_ids=[casting]) == []


def test_counters_move_and_an_example_that_hurts_is_retired(bank: ExampleBank) -> None:
    a, b = add(bank, "apple"), add(bank, "bread")
    assert bank.credit([a, b], "right") == []
    assert bank.credit([a, b], "right") == []
    # b: helped 2; a gets three more helps, then both are hurt four times.
    for _ in range(3):
        bank.credit([a], "right")
    retired_at = {}
    for i in range(1, 5):
        for example_id in bank.credit([a, b], "undecided" if i % 2 else "wrong"):
            retired_at[example_id] = i
    ea, eb = bank.get(a), bank.get(b)
    assert ea is not None and eb is not None
    assert (ea.helped, ea.hurt, ea.retired) == (5, 4, None)  # hurts, but helped more
    # b: hurt 3 > helped 2 at the third debit: retired then, and only once.
    assert (eb.helped, eb.hurt) == (2, 4) and eb.retired is not None
    assert retired_at == {b: 3}
    # Added again, a retired example keeps its counters and stays retired.
    again = bank.add("wordcase", "bread", "answer = BREAD", verified_by="truth", model=MODEL)
    assert (again.id, again.hurt, again.retired) == (b, 4, eb.retired)
    summary = {s.step_type: s for s in bank.summary()}["wordcase"]
    assert (summary.examples, summary.active, summary.retired) == (2, 1, 1)
    assert (summary.helped, summary.hurt) == (7, 8)
    with pytest.raises(ValueError, match="outcome"):
        bank.credit([a], "maybe")  # type: ignore[arg-type]


def test_only_verified_examples_are_kept_and_a_truth_is_not_replaced(bank: ExampleBank) -> None:
    with pytest.raises(ValueError, match="verified_by"):
        bank.add("wordcase", "cat", "answer = CAT", verified_by="voted", model=MODEL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input text"):
        bank.add("wordcase", "cat", "  ", verified_by="truth", model=MODEL)
    bank.add("wordcase", "cat", "answer = CAT", verified_by="truth", model=MODEL)
    kept = bank.add("wordcase", "cat", "answer = CATS", verified_by="voted+checked", model=MODEL)
    assert (kept.answer_text, kept.verified_by) == ("answer = CAT", "truth")
    assert bank.forget("other") == 0 and bank.forget("wordcase") == 1
    assert bank.examples() == []


def test_step_shots_keep_a_steps_choice_and_settle_credits_it(bank: ExampleBank) -> None:
    domain = WordCase(["cast", "moon"])
    ids = [add(bank, w) for w in ("castle", "casting", "dog")]
    shots = StepShots(bank, "wordcase", input_text=user_text_of(domain), n=2)
    step = domain.step_at(0)
    first = shots(step)
    assert first == [("castle", "answer = CASTLE"), ("casting", "answer = CASTING")]
    add(bank, "caste")  # a better example arriving mid-step does not change its prompt
    assert shots(step) == first
    assert shots.settle(step, "right") == []
    assert [bank.get(i).helped for i in ids] == [1, 1, 0]  # type: ignore[union-attr]
    moon = domain.step_at(1)
    shots(moon)
    assert len(shots.used(moon)) == 2
    shots.settle(moon, None)  # no verdict: no counter moves
    assert sum(e.helped + e.hurt for e in bank.examples()) == 2
    assert shots.used(moon) == ()


def test_a_version_1_database_gains_the_examples_table(nanobot_home: Path) -> None:
    with LearningStore() as store, store.write() as conn:
        conn.execute("DROP TABLE examples")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute(
            "INSERT INTO reuse_counters (step_type, lookups, hits) VALUES ('wordcase', 5, 2)"
        )
    with LearningStore() as store:
        ExampleBank(store).add("wordcase", "cat", "answer = CAT", verified_by="truth", model=MODEL)
        kept = store.query("SELECT lookups, hits FROM reuse_counters")
        version = store.query("SELECT value FROM meta WHERE key = 'schema_version'")
    assert kept == [(5, 2)] and version == [(str(SCHEMA_VERSION),)] and SCHEMA_VERSION == 2
    rows = sqlite3.connect(learned_path()).execute("SELECT input_text FROM examples").fetchall()
    assert rows == [("cat",)]


async def test_the_sampler_puts_the_shots_before_the_steps_user_message_in_order(
    bank: ExampleBank,
) -> None:
    """With the FAKE scripted client: the request is the domain's prompt with the example
    turns inserted before the word, for every paraphrase; without shots it is unchanged."""
    domain = WordCase(["cast"])
    step = domain.step_at(0)
    for word in ("castle", "casting"):
        add(bank, word)
    shots = StepShots(bank, "wordcase", input_text=user_text_of(domain), n=2)
    client = ScriptedClient(["answer = CAST", "answer = CAST", "answer = CAST"], Usage(10, 3, 13))
    sampler = LLMSampler(client, domain, name="fake: scripted", batch=False, shots=shots)  # type: ignore[arg-type]
    samples = await sampler.sample(step, [0.0])
    await sampler.sample(step, [0.1], paraphrase=1)
    assert samples[0].answer == "CAST"
    for request, paraphrase in zip(client.requests, (0, 1), strict=True):
        base = domain.messages(step, paraphrase)
        sent = [dict(m) for m in request.messages]
        assert sent == [
            *base[:-1],
            {"role": "user", "content": "castle"},
            {"role": "assistant", "content": "answer = CASTLE"},
            {"role": "user", "content": "casting"},
            {"role": "assistant", "content": "answer = CASTING"},
            base[-1],
        ]
        assert sum(m["role"] == "system" for m in sent) == 1  # the domain's own only
    sampler.shots = None
    await sampler.sample(step, [0.0])
    assert [dict(m) for m in client.requests[-1].messages] == domain.messages(step, 0)


def test_with_shots_leaves_a_prompt_without_a_user_message_alone() -> None:
    system = [{"role": "system", "content": "be brief"}]
    assert with_shots(system, [("a", "b")]) == system
    assert last_user_text(system) == ""
    asked = [*system, {"role": "user", "content": "q"}]
    assert with_shots(asked, []) == asked


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_wordcase_first_sample_accuracy_with_and_without_examples(
    llama_server: str, bank: ExampleBank, capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded model on 20 word-case steps, first sample at temperature 0, without
    and with 3 verified examples each (retrieved from 40 other words whose examples are
    their truth, `answer = WORD`). Reports both accuracies; asserts only that both arms
    ran and that the counters moved."""
    words = [w for w in VOCABULARY if 3 <= len(w) <= 6]
    train, test = words[::5][:40], words[2::5][:20]
    assert not set(train) & set(test)
    for word in train:
        bank.add("wordcase", word, f"answer = {word.upper()}", verified_by="truth", model=MODEL)
    domain = WordCase(test)
    shots = StepShots(bank, "wordcase", input_text=user_text_of(domain), n=3)
    right: dict[str, int] = {}
    answered: dict[str, int] = {}
    async with LLMClient(llama_server) as client:
        for arm, arm_shots in (("without", None), ("with", shots)):
            # A reply is ~6 tokens; the cap stops a rambling wrong one early.
            sampler = LLMSampler(client, domain, name=NAME, token_cap=24, seed=7, shots=arm_shots)
            right[arm] = answered[arm] = 0
            steps = list(domain.steps())
            # All at once: the server's 4 slots share the load.
            drawn = await asyncio.gather(*(sampler.sample(step, [0.0]) for step in steps))
            for step, (sample,) in zip(steps, drawn, strict=True):
                ok = sample.answer == domain.truth(step)
                right[arm] += ok
                answered[arm] += sample.red_flag is None
                if arm_shots is not None:
                    assert len(arm_shots.used(step)) == 3
                    arm_shots.settle(step, "right" if ok else "wrong")
    assert answered["without"] > 0 and answered["with"] > 0  # both arms reached the model
    moved = sum(e.helped + e.hurt for e in bank.examples())
    assert moved == 3 * len(test)
    retired = sum(e.retired is not None for e in bank.examples())
    with capsys.disabled():
        print(
            f"\nwordcase first-sample accuracy on {len(test)} steps: without examples "
            f"{right['without']}/{len(test)}, with 3 examples {right['with']}/{len(test)} "
            f"(counters moved {moved}, retired {retired})"
        )
