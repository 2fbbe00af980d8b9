"""The learning loops one by one (`RunSpec.learn_loops`): a run with one loop left out
neither uses nor feeds that loop and keeps the others; none at all is no learning (no
learned.db); the switch is stored with the spec (an old spec reads all three) and an
unknown loop is a one-line error. Real durable runs on a real SQLite learned.db in the
test's own NANOBOT_HOME; the model is the FAKE client of test_run_memory.py (always right:
far out of the embedded 135M model's reach, and what is checked is what the run keeps).
"""

from __future__ import annotations

import pytest

from nanobot_tui.engine.learning.examples import ExampleBank
from nanobot_tui.engine.learning.history import TaskHistory
from nanobot_tui.engine.learning.run_memory import step_type_of
from nanobot_tui.engine.learning.store import LearningStore, learned_path
from nanobot_tui.engine.runs.spec import LEARN_LOOPS, RunSpec, SpecError, parse_learn_loops
from nanobot_tui.engine.runs.store import RunStore
from nanobot_tui.engine.voting.domains.wordcase import WordCase
from tests.engine.learning.test_run_memory import (
    WORDS,
    FakeModelClient,
    RecordingFakeClient,
    cached,
    run_meta,
    run_with,
    spec_for,
)

TASK_TYPE = "wordcase6"


def examples() -> list[str]:
    with LearningStore() as store:
        return [e.input_text for e in ExampleBank(store).examples("wordcase")]


def records() -> int:
    with LearningStore() as store:
        return len(TaskHistory(store).records(TASK_TYPE))


async def test_without_reuse_every_step_is_voted_again_and_no_result_is_kept() -> None:
    loops = ("examples", "history")
    await run_with(spec_for(learn_loops=loops), FakeModelClient())
    second = FakeModelClient()
    rid = await run_with(spec_for(learn_loops=loops), second)
    assert second.requests == len(WORDS)  # nothing reused
    assert cached() == []
    assert run_meta(rid, "learning")["reused"] == 0
    assert sorted(set(examples())) == sorted(WORDS)  # the other loops still learn
    assert records() == 2


async def test_without_examples_no_example_is_kept_nor_given() -> None:
    loops = ("reuse", "history")
    await run_with(spec_for(learn_loops=loops), FakeModelClient())
    assert examples() == []
    assert sorted(r.output for r in cached()) == sorted(w.upper() for w in WORDS)
    client = RecordingFakeClient()
    spec = spec_for(params={"word_list": ["bird", "fish"]}, label="wordcase2", learn_loops=loops)
    await run_with(spec, client)
    own = WordCase(words=["bird"]).messages(WordCase(words=["bird"]).step_at(0))
    assert client.asked and all(len(m) == len(own) for m in client.asked)  # no few-shot turns
    assert records() == 1


async def test_without_history_the_run_is_not_recorded() -> None:
    rid = await run_with(spec_for(learn_loops=("reuse", "examples")), FakeModelClient())
    assert records() == 0
    assert "recorded" not in run_meta(rid, "learning")
    assert len(cached()) == len(WORDS) and sorted(set(examples())) == sorted(WORDS)


async def test_no_loop_at_all_is_no_learning() -> None:
    client = FakeModelClient()
    rid = await run_with(spec_for(learn_loops=()), client)
    assert client.requests == len(WORDS)
    assert run_meta(rid, "status") == "completed"
    assert not learned_path().exists()


async def test_the_loops_are_stored_with_the_run() -> None:
    rid = await run_with(spec_for(learn_loops=("history", "reuse")), FakeModelClient())
    with RunStore.open(rid, readonly=True) as store:
        assert store.spec.learn_loops == ("reuse", "history")  # the canonical order


def test_the_spec_round_trips_and_an_old_spec_reads_every_loop() -> None:
    spec = spec_for(learn_loops=["examples"])  # a list (as from JSON) becomes a tuple
    assert spec.learn_loops == ("examples",)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    old = spec_for().to_dict()
    del old["learn_loops"]
    assert RunSpec.from_dict(old).learn_loops == LEARN_LOOPS == ("reuse", "examples", "history")


def test_an_unknown_loop_is_a_one_line_error() -> None:
    with pytest.raises(SpecError) as caught:
        spec_for(learn_loops=("reuse", "cache"))
    assert str(caught.value) == ("unknown learning loop 'cache' (known: reuse, examples, history)")
    with pytest.raises(SpecError, match="a list of loop names"):
        spec_for(learn_loops="reuse")
    data = spec_for().to_dict()
    data["learn_loops"] = ["reuse", "nope"]
    with pytest.raises(SpecError, match="unreadable run spec: unknown learning loop 'nope'"):
        RunSpec.from_dict(data)
    assert parse_learn_loops(" history, reuse ,") == ("reuse", "history")
    assert parse_learn_loops("") == ()


def test_step_types_per_family() -> None:
    assert step_type_of("micro", {"family": "dates", "words": 5, "seed": 0}) == "micro:dates"
    assert step_type_of("micro", {"family": "city", "items": ["Oslo"]}) == "micro:city"
    assert step_type_of("code", {"recipe": "fstrings", "family": "x"}) == "code:fstrings"
    assert step_type_of("wordcase", {"words": 5}) == "wordcase"
