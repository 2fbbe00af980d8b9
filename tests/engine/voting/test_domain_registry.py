"""The domain registry and the whole Domain contract: each registered domain is built from
a run spec's params, names its runs, says whether its steps are independent, and round-
trips its steps and answers through the JSON the run store keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.engine.runs.spec import RunSpec, SpecError
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains import ParseError
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.domains.registry import DOMAINS, NAMES, RUN_NAMES, build_domain
from nanobot_tui.engine.voting.domains.wordcase import WordCase

PARAMS = {
    "hanoi": {"disks": 5},
    "wordcase": {"words": 12, "seed": 4},
    "micro": {"family": "dates", "words": 3, "seed": 0},
}


def params_of(name: str, tmp_path: Path) -> dict[str, Any]:
    """A domain's params; the code domain gets a small codebase of its own, extract a
    small volume with one planted item."""
    if name == "extract":
        from nanobot_tui.engine.context.ingest import ingest

        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "a.txt").write_text("the code is QX-1\nnothing here\n")
        ingest(tmp_path / "notes", "notes")
        truth = [{"text": "the code is QX-1", "path": "a.txt", "line": 1}]
        return {"volume": "notes", "instruction": "List the codes.", "truth": truth}
    if name != "code":
        return PARAMS[name]
    (tmp_path / "mod.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef neg(a):\n    return -a\n"
    )
    return {"root": str(tmp_path), "recipe": "docstrings", "instruction": "", "simulated": True}


def test_each_domain_is_built_from_its_params_and_names_its_runs() -> None:
    assert NAMES == ("hanoi", "wordcase", "micro", "code", "extract")
    assert RUN_NAMES == ("hanoi", "wordcase", "micro") == tuple(PARAMS)  # the `nanobot run` ones
    hanoi = build_domain("hanoi", PARAMS["hanoi"])
    assert isinstance(hanoi, Hanoi) and hanoi.total_steps() == 31
    words = build_domain("wordcase", PARAMS["wordcase"])
    assert isinstance(words, WordCase) and words.words == WordCase(count=12, seed=4).words
    assert build_domain("wordcase", {"word_list": ["cat", "dog"]}).total_steps() == 2
    assert [DOMAINS[n].label(PARAMS[n]) for n in RUN_NAMES] == [
        "hanoi5",
        "wordcase12",
        "micro-dates3",
    ]
    assert DOMAINS["code"].label({"recipe": "fstrings"}) == "code-fstrings"
    assert DOMAINS["code"].options == ("recipe", "instruction")
    assert DOMAINS["hanoi"].options == ("disks",)
    assert DOMAINS["wordcase"].options == ("words", "seed")
    with pytest.raises(ValueError, match=r"disks must be in 1\.\.64"):
        build_domain("hanoi", {"disks": 0})
    with pytest.raises(KeyError):
        build_domain("chess", {})


def test_a_spec_builds_its_domain_through_the_registry() -> None:
    spec = RunSpec(domain="wordcase", params=PARAMS["wordcase"], sampler="simulated:0.9",
                   vote=VoteConfig(k=2))  # fmt: skip
    assert spec.build_domain().words == WordCase(count=12, seed=4).words
    with pytest.raises(
        SpecError, match="unknown domain 'chess' \\(known: hanoi, wordcase, micro, code, extract\\)"
    ):
        RunSpec(domain="chess", params={}, sampler="simulated:0.9", vote=VoteConfig(k=2))


@pytest.mark.parametrize("name", NAMES)
def test_steps_and_answers_round_trip_through_json(name: str, tmp_path: Path) -> None:
    domain = build_domain(name, params_of(name, tmp_path))
    assert domain.independent_steps is (name != "hanoi")
    for step in list(domain.steps())[:6]:
        assert domain.step_at(step.index) == step
        data = json.loads(json.dumps(domain.dump_step(step)))
        assert domain.load_step(step.index, data) == step
        truth = domain.truth(step)
        again = domain.load_answer(json.loads(json.dumps(domain.dump_answer(truth))))
        assert domain.key(again) == domain.key(truth)
        assert domain.describe(domain.key(truth))
    with pytest.raises(ValueError):
        domain.step_at(domain.total_steps())
    with pytest.raises(ParseError):
        domain.load_step(0, 42)
    with pytest.raises(ParseError):
        domain.load_answer(42)
