"""A durable run wired to what was learned (engine/learning/run_memory.py through
runs/learning_seam.py): a real model's verified step results are reused by a later run of
the same steps (no model call; stored as steps of 0 attempts and 0 samples) and miss once
the prompt or the model changes; simulated answers are never stored; every run is
recorded once in its task type's history; `learn=False` (or the config's switch) neither
reads nor writes. Real runs, real SQLite. The model is a FAKE client answering here: a
model that is always right (or wrong where told) is far out of the embedded 135M model's
reach, and what is checked is what the run keeps, not what a model can do."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

import pytest

from nanobot_tui import paths
from nanobot_tui.engine.learning.examples import ExampleBank
from nanobot_tui.engine.learning.history import TaskHistory
from nanobot_tui.engine.learning.reuse import ResultCache
from nanobot_tui.engine.learning.run_memory import (
    RunMemory,
    remember_checked,
    step_type_of,
    task_type_of,
)
from nanobot_tui.engine.learning.store import LearningStore, learned_path
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets, RetryPolicy, RunSpec
from nanobot_tui.engine.runs.store import db_path
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains import wordcase
from nanobot_tui.engine.voting.domains.wordcase import WordCase
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from tests.fakes import FakeSamplerClient


class FakeModelClient(FakeSamplerClient):
    """A FAKE model client: answers a word-case request right (its word in upper case),
    or with another word for the words in `wrong`; counts the requests it was sent."""

    base_url = "fake://model"

    def __init__(self, wrong: frozenset[str] = frozenset()) -> None:
        self.wrong = wrong
        self.requests = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        word = str(request.messages[-1]["content"]).split()[-1]
        said = "ZEBRAS" if word in self.wrong else word.upper()
        choice = Choice(f"answer = {said}", finish_reason="stop")
        return ChatResult([choice], Usage(completion_tokens=4), None, 0.0, "fake", {})


WORDS = ["cat", "dog", "sun", "tree", "milk", "road"]


def spec_for(**changes: Any) -> RunSpec:
    spec = RunSpec(
        domain="wordcase",
        params={"word_list": WORDS},
        sampler="local:rlm",
        vote=VoteConfig(k=1),
        concurrency=2,
        label="wordcase6",
        retry=RetryPolicy(retries=0, on_fail="skip"),
    )
    return dataclasses.replace(spec, **changes)


async def run_with(spec: RunSpec, client: FakeModelClient, model: str = "fake-model") -> str:
    rid = await start_run(spec)
    sampler = LLMSampler(client, spec.build_domain(), name=f"local rlm: {model}", batch=False)
    await execute(rid, sampler=sampler)
    return rid


def step_rows(rid: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_path(rid))
    try:
        return conn.execute(
            "SELECT step, status, attempts, samples, correct FROM steps ORDER BY step"
        ).fetchall()
    finally:
        conn.close()


def run_meta(rid: str, key: str) -> Any:
    conn = sqlite3.connect(db_path(rid))
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return None if row is None else json.loads(row[0])


def cached() -> list[Any]:
    with LearningStore() as store:
        return ResultCache(store).results()


async def test_a_verified_result_is_reused_by_a_second_run_without_a_model_call() -> None:
    first = FakeModelClient()
    rid1 = await run_with(spec_for(), first)
    assert first.requests == len(WORDS)
    results = cached()
    assert sorted(r.output for r in results) == sorted(w.upper() for w in WORDS)
    assert {r.verified_by for r in results} == {"truth"}
    assert {r.step_type for r in results} == {"wordcase"} and {r.model for r in results} == {
        "fake-model"
    }
    assert run_meta(rid1, "learning")["reused"] == 0

    second = FakeModelClient()
    rid2 = await run_with(spec_for(), second)
    assert second.requests == 0  # every step came from the cache
    rows = step_rows(rid2)
    assert rows == [(i, "completed", 0, 0, 1) for i in range(len(WORDS))]
    assert run_meta(rid2, "status") == "completed" and run_meta(rid2, "solved") is True
    assert run_meta(rid2, "learning")["reused"] == len(WORDS)
    with LearningStore() as store:
        (summary,) = ResultCache(store).summary()
    assert (summary.hits, summary.lookups) == (len(WORDS), 2 * len(WORDS))
    assert all(r.hits == 1 for r in cached())


async def test_a_wrong_winner_is_not_remembered() -> None:
    await run_with(spec_for(), FakeModelClient(wrong=frozenset({"dog", "milk"})))
    assert sorted(r.output for r in cached()) == ["CAT", "ROAD", "SUN", "TREE"]
    again = FakeModelClient()
    await run_with(spec_for(), again)
    assert again.requests == 2  # only the two words that were not verified


async def test_a_changed_prompt_or_model_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    await run_with(spec_for(), FakeModelClient())
    other_model = FakeModelClient()
    await run_with(spec_for(), other_model, model="another-model")
    assert other_model.requests == len(WORDS)
    # The instruction reworded: every step's prompt changes, so its key does.
    reworded = ("Put the word in capitals. Reply with one line only: answer = WORD",)
    monkeypatch.setattr(wordcase, "_INSTRUCTIONS", reworded + wordcase._INSTRUCTIONS[1:])
    after = FakeModelClient()
    await run_with(spec_for(), after)
    assert after.requests == len(WORDS)
    assert len({r.prompt_fingerprint for r in cached()}) == 2 * len(WORDS)


def test_a_domain_param_that_changes_the_prompt_changes_the_key() -> None:
    """The same word asked with another prompt style (a WordCase param) misses."""

    class Named:  # the sampler a memory reads its model id from
        simulated = False
        name = "local rlm: fake-model"
        model = "fake-model"

    spec = spec_for()
    turns = RunMemory("r1", spec, WordCase(words=["cat"]), Named())  # type: ignore[arg-type]
    labels = RunMemory("r2", spec, WordCase(words=["cat"], prompt="labels"), Named())  # type: ignore[arg-type]
    step = WordCase(words=["cat"]).step_at(0)
    turns.remember(step, "CAT", "truth", None)
    assert turns.recall(step) == "CAT"
    assert labels.recall(step) is None
    turns.close()
    labels.close()


async def test_learn_off_neither_reads_nor_writes() -> None:
    client = FakeModelClient()
    rid = await run_with(spec_for(learn=False), client)
    assert client.requests == len(WORDS)
    assert not learned_path().exists()
    assert run_meta(rid, "learning") is None
    await run_with(spec_for(), FakeModelClient())  # learns every word
    with LearningStore() as store:
        (before,) = ResultCache(store).summary()
    again = FakeModelClient()
    await run_with(spec_for(learn=False), again)
    assert again.requests == len(WORDS)
    with LearningStore() as store:
        (after,) = ResultCache(store).summary()
        assert len(TaskHistory(store).records("wordcase6")) == 1
    assert (after.lookups, after.hits) == (before.lookups, before.hits)


async def test_the_config_switch_turns_learning_off_for_new_runs() -> None:
    paths.ensure(paths.config_path().parent)
    paths.config_path().write_text(json.dumps({"learning": {"enabled": False}}))
    client = FakeModelClient()
    rid = await run_with(spec_for(), client)
    assert run_meta(rid, "spec")["learn"] is False
    assert not learned_path().exists()


async def test_a_damaged_learned_db_never_fails_a_run() -> None:
    path = learned_path()
    paths.ensure(path.parent)
    path.write_bytes(b"not a database at all" * 100)
    client = FakeModelClient()
    rid = await run_with(spec_for(), client)
    assert run_meta(rid, "status") == "completed" and run_meta(rid, "solved") is True
    assert client.requests == len(WORDS)
    assert path.read_bytes() == b"not a database at all" * 100  # left untouched
    assert "recorded" not in run_meta(rid, "learning")  # no history could be kept


def test_a_stored_spec_without_learn_reads_as_off() -> None:
    data = spec_for().to_dict()
    assert data["learn"] is True
    del data["learn"]
    assert RunSpec.from_dict(data).learn is False


async def test_a_simulated_run_stores_no_result_and_is_recorded_under_its_own_type() -> None:
    spec = spec_for(sampler="simulated:0.9", label="wordcase6")
    rid = await start_run(spec)
    st = await execute(rid)
    assert st.status == "completed"
    assert cached() == []
    with LearningStore() as store:
        (record,) = TaskHistory(store).records(task_type_of("wordcase6", "wordcase", True))
        assert TaskHistory(store).records("wordcase6") == []
    assert record.task_type == "wordcase6 (simulated)" and record.kind == "domain"
    assert record.steps == len(WORDS) and record.success is True
    assert record.tokens == 0 and record.p is not None and 0.0 < record.p <= 1.0
    assert record.samples_per_step >= 1.0


async def test_a_run_is_recorded_once_with_its_real_figures() -> None:
    client = FakeModelClient(wrong=frozenset({"sun"}))
    spec = spec_for(budgets=Budgets(steps=2), concurrency=1)
    rid = await run_with(spec, client)
    assert run_meta(rid, "status") == "stopped"  # the step budget: recorded
    sampler = LLMSampler(client, spec.build_domain(), name="local rlm: fake-model", batch=False)
    st = await execute(rid, sampler=sampler, budgets=Budgets(steps=100))
    assert st.status == "completed"
    with LearningStore() as store:
        (record,) = TaskHistory(store).records("wordcase6")
    assert record.steps == 2 and record.tokens == 8 and record.success is False
    assert record.p == 1.0 and record.samples_per_step == 1.0
    assert run_meta(rid, "learning")["recorded"] == record.id


def test_step_and_task_types() -> None:
    assert step_type_of("wordcase", {"words": 3}) == "wordcase"
    assert step_type_of("code", {"recipe": "fstrings"}) == "code:fstrings"
    assert step_type_of("code", {}) == "code:instruction"
    assert task_type_of("hanoi10", "hanoi", False) == "hanoi10"
    assert task_type_of("", "hanoi", True) == "hanoi (simulated)"


async def test_winners_checked_after_the_run_are_kept_as_voted_and_checked() -> None:
    """A process whose edits passed the user's check keeps their winners (here: a word
    the fake model got wrong, which the run itself did not keep)."""
    rid = await run_with(spec_for(), FakeModelClient(wrong=frozenset({"dog"})))
    assert "DOG" not in [r.output for r in cached()] and "ZEBRAS" not in [
        r.output for r in cached()
    ]
    assert remember_checked(rid, [WORDS.index("dog"), 99]) == 1
    (kept,) = [r for r in cached() if r.input == "dog"]
    assert (kept.output, kept.verified_by, kept.model) == ("ZEBRAS", "voted+checked", "fake-model")
    again = FakeModelClient()
    await run_with(spec_for(), again)
    assert again.requests == 0  # the checked winner is reused like a verified one
    rid = await run_with(spec_for(learn=False), FakeModelClient())
    assert remember_checked(rid, range(len(WORDS))) == 0


class RecordingFakeClient(FakeModelClient):
    """The FAKE model client above, keeping every request's messages."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[dict[str, str]]] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.asked.append([dict(m) for m in request.messages])
        return await super().chat(request)


async def test_verified_answers_become_few_shot_examples_of_later_steps() -> None:
    await run_with(spec_for(), FakeModelClient())
    with LearningStore() as store:
        examples = ExampleBank(store).examples("wordcase")
    assert sorted(e.answer_text for e in examples) == sorted(f"answer = {w.upper()}" for w in WORDS)
    assert {e.input_text for e in examples} == set(WORDS) and {e.model for e in examples} == {
        "fake-model"
    }

    helped_before = sum(e.helped for e in examples)  # later steps used earlier ones
    client = RecordingFakeClient()
    spec = spec_for(params={"word_list": ["bird", "fish"]}, label="wordcase2")
    await run_with(spec, client)
    own = WordCase(words=["bird"]).messages(WordCase(words=["bird"]).step_at(0))
    for messages in client.asked:
        extra = len(messages) - len(own)
        assert extra == 2 * 3  # three examples, a user and an assistant turn each
        shots = messages[len(own) - 1 : -1]
        assert all(m["content"] in WORDS for m in shots[::2])
        assert all(m["content"].startswith("answer = ") for m in shots[1::2])
    with LearningStore() as store:
        helped = sum(e.helped for e in ExampleBank(store).examples("wordcase"))
    assert helped - helped_before == 2 * 3  # both steps right, three examples each


class CountingClient(LLMClient):
    """The real embedded server's client, keeping the word each request asked about."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.words: list[str] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.words.append(str(request.messages[-1]["content"]).split()[-1])
        return await super().chat(request)


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_the_embedded_model_is_not_asked_again_for_a_verified_step(
    llama_server: str,
) -> None:
    words = ["cat", "dog", "sun", "red", "box", "cup", "hat", "pen"]
    spec = spec_for(params={"word_list": words}, label="wordcase8")
    async with CountingClient(llama_server) as first:
        await run_with(spec, first, model="SmolLM2-135M")
    right = {r.input for r in cached()}
    assert right, "the model got no word right: nothing to reuse"
    async with CountingClient(llama_server) as second:
        rid = await run_with(spec, second, model="SmolLM2-135M")
    assert not right & set(second.words)  # no request for a verified word
    reused = [row for row in step_rows(rid) if row[2] == 0]
    assert len(reused) == len(right) == run_meta(rid, "learning")["reused"]
    assert all(row[1:] == ("completed", 0, 0, 1) for row in reused)
