"""The micro domain: ten families of one-line tasks, their truth, pools, parsers, wrong
answers, JSON, the registry entry and `nanobot run micro --family ...`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.runs.store.reader import RunStore
from nanobot_tui.engine.voting.domains import ParseError
from nanobot_tui.engine.voting.domains.micro import Micro
from nanobot_tui.engine.voting.domains.micro_families import FAMILIES, number_words
from nanobot_tui.engine.voting.domains.registry import DOMAINS, RUN_NAMES, build_domain

RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize(
    ("family", "item", "truth"),
    [
        ("wordcase", "cat", "CAT"),
        ("city", "Anna's parcel leaves Lyon on Tuesday.", "Lyon"),
        ("city", "On Friday, Omar meets a client in Zurich.", "Zurich"),
        ("email", "Write to tom.baker@northwind.com by noon.", "northwind.com"),
        ("email", "For questions, contact eva_king@acme.org.", "acme.org"),
        ("dates", "March 5, 2024", "2024-03-05"),
        ("dates", "5 March 2024", "2024-03-05"),
        ("dates", "December 31, 1999", "1999-12-31"),
        ("units", "3 km", "3000 m"),
        ("units", "2 h", "120 min"),
        ("units", "4 kg", "4000 g"),
        ("code", "x = dict()", "x = {}"),
        ("code", "y = list()", "y = []"),
        ("code", "t = tuple()", "t = ()"),
        ("code", "if v == None:", "if v is None:"),
        ("code", "if v != None:", "if v is not None:"),
        ("code", 'g = "{}".format(name)', 'g = f"{name}"'),
        ("code", 'g = "Hi {}".format(name)', 'g = f"Hi {name}"'),
        ("code", 's = str("abc")', 's = "abc"'),
        ("sentiment", "The food was delicious and the staff was friendly.", "positive"),
        ("sentiment", "The room was dirty and the music was noisy.", "negative"),
        ("numbers", "forty-two", "42"),
        ("numbers", "seven", "7"),
        ("numbers", "three hundred five", "305"),
        ("numbers", "nine hundred ninety-nine", "999"),
        ("numbers", "one hundred and twelve", "112"),
        ("sums", "7 + 5", "12"),
        ("sums", "20 + 20", "40"),
        ("capitals", "Australia", "Canberra"),
        ("capitals", "new zealand", "Wellington"),
    ],
)
def test_truth_on_hand_made_cases(family: str, item: str, truth: str) -> None:
    assert FAMILIES[family].truth(item) == truth


@pytest.mark.parametrize(
    ("family", "item"),
    [
        ("wordcase", "two words"),
        ("city", "Anna stays at home on Tuesday."),
        ("email", "Write to nobody by noon."),
        ("dates", "March 32, 2024"),
        ("dates", "2024-03-05"),
        ("units", "3 miles"),
        ("code", "x = set()"),
        ("code", 'x = "{} {}".format(a, b)'),
        ("sentiment", "The food was delicious and the staff was rude."),
        ("numbers", "forty two hundred"),
        ("numbers", "seventy-seventy"),
        ("sums", "21 + 1"),
        ("sums", "7 - 5"),
        ("capitals", "Atlantis"),
    ],
)
def test_inputs_a_family_cannot_answer_are_refused(family: str, item: str) -> None:
    with pytest.raises(ValueError, match="not"):
        FAMILIES[family].truth(item)
    with pytest.raises(ValueError):
        Micro(family, items=[item])


def test_there_are_ten_families_with_three_instructions_and_examples() -> None:
    assert list(FAMILIES) == [
        "wordcase", "city", "email", "dates", "units",
        "code", "sentiment", "numbers", "sums", "capitals",
    ]  # fmt: skip
    for family in FAMILIES.values():
        assert len(set(family.instructions)) == 3
        assert all("answer =" in text for text in family.instructions)
        assert 5 <= len(family.examples) <= 6
        for item, answer in family.examples:
            assert family.truth(item) == answer, (family.name, item)
    assert number_words(42) == "forty-two" and number_words(700) == "seven hundred"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_pools_are_deterministic_distinct_and_never_the_examples(name: str) -> None:
    family = FAMILIES[name]
    pool = family.pool(3)
    assert pool == family.pool(3)
    assert pool != family.pool(4)  # another seed, another order at least
    assert 40 <= len(pool) <= 80 and len(set(pool)) == len(pool)
    assert not set(pool) & {item for item, _ in family.examples}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_truth_passes_the_strict_parser(name: str) -> None:
    domain = Micro(name, items=list(FAMILIES[name].pool(0)))
    for step in domain.steps():
        truth = domain.truth(step)
        assert domain.parse_strict(f"answer = {truth}\n", step) == truth
        assert domain.parse_lenient(f"answer = {truth}", step) == truth


@pytest.mark.parametrize("name", list(FAMILIES))
def test_wrong_answers_are_distinct_and_never_the_truth(name: str) -> None:
    domain = Micro(name, items=list(FAMILIES[name].pool(0)))
    for step in domain.steps():
        wrong = domain.wrong_answers(step, 5)
        keys = [domain.key(w) for w in wrong]
        assert len(set(keys)) == len(keys) >= 2, (step.input, wrong)
        assert domain.key(domain.truth(step)) not in keys
        assert domain.wrong_answers(step, 1) == wrong[:1]
        assert domain.wrong_answers(step, 0) == []


def test_code_truth_agrees_with_ruff(tmp_path: Path) -> None:
    """ruff is the reference: its fixes of C408, E711, UP032 and UP018 on every pool item
    and example give exactly the family's truth."""
    family = FAMILIES["code"]
    items = [*family.pool(0), *(item for item, _ in family.examples)]
    source = tmp_path / "lines.py"
    # Each line in a function of its own (an `if` needs a body), so the lines stay apart.
    source.write_text(
        "".join(
            f"def f{i}():\n    {item}\n" + ("        pass\n" if item.endswith(":") else "")
            for i, item in enumerate(items)
        )
    )
    select = "C408,E711,UP032,UP018"
    subprocess.run(
        [str(RUFF), "check", "--fix", "--unsafe-fixes", "--select", select, "--no-cache",
         "--isolated", str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    lines = source.read_text().splitlines()
    fixed = [line[4:] for line in lines if line.startswith("    ") and line[4] != " "]
    assert fixed == [family.truth(item) for item in items]
    assert all(family.truth(item) != item for item in items)


@pytest.mark.parametrize(
    ("family", "text", "why"),
    [
        ("sums", "", "empty"),
        ("sums", "answer = 12\nanswer = 13", "one line"),
        ("sums", "The answer is 12", "answer = X"),
        ("sums", "answer=12", "answer = X"),
        ("sums", "answer = twelve", "not a sums answer"),
        ("sums", "answer = 012", "not a sums answer"),
        ("dates", "answer = 2024-3-5", "not a dates answer"),
        ("units", "answer = 3000m", "not a units answer"),
        ("email", "answer = tom@acme.org", "not a email answer"),
        ("wordcase", "answer = Cat", "not a wordcase answer"),
        ("capitals", "answer =  Paris", "not a capitals answer"),
    ],
)
def test_strict_parser_refuses_anything_but_the_form(family: str, text: str, why: str) -> None:
    with pytest.raises(ParseError, match=why):
        Micro(family, count=1).parse_strict(text)


@pytest.mark.parametrize(
    ("family", "text", "meant"),
    [
        ("sums", "Answer: 12", "12"),
        ("capitals", "answer = paris.", "paris"),
        ("dates", 'The answer = "2024-03-05"\nmore', "2024-03-05"),
        ("units", "3000 m\n", "3000 m"),
        ("code", "answer = `x = {}`", "x = {}"),
        ("code", 'answer = s = "abc"', 's = "abc"'),
    ],
)
def test_lenient_parser_finds_what_the_model_meant(family: str, text: str, meant: str) -> None:
    assert Micro(family, count=1).parse_lenient(text) == meant


def test_lenient_parser_refuses_text_without_an_answer() -> None:
    with pytest.raises(ParseError, match="no answer"):
        Micro("sums", count=1).parse_lenient("  \n\n ")


def test_parsers_are_linear_on_long_hostile_text() -> None:
    """Model text is data: a megabyte of near-misses is refused or read in one pass."""
    domain = Micro("code", count=1)
    hostile = "answer = " + "(" * 500_000 + "\n" + "answer" * 100_000
    with pytest.raises(ParseError):
        domain.parse_strict(hostile)
    assert domain.parse_lenient(hostile).startswith("((")


def test_keys_ignore_case_only_where_case_is_not_the_task() -> None:
    assert Micro("capitals", count=1).key(" Paris ") == Micro("capitals", count=1).key("paris")
    assert Micro("units", count=1).key("3000  m") == "3000 m"
    assert Micro("wordcase", count=1).key("cat") != Micro("wordcase", count=1).key("CAT")
    assert Micro("code", count=1).key("X = {}") != Micro("code", count=1).key("x = {}")


def test_items_are_drawn_from_the_pool_and_steps_are_independent() -> None:
    a, b = Micro("dates", count=100, seed=2), Micro("dates", count=100, seed=2)
    assert a.items == b.items and a.total_steps() == 100
    pool = FAMILIES["dates"].pool(2)
    assert sorted(a.items[: len(pool)]) == sorted(pool)  # each once per pass
    assert a.independent_steps and a.groups() is None
    steps = list(a.steps())
    assert a.step_at(7) == steps[7] and a.next_step(steps[0], "nonsense") == steps[1]
    assert a.next_step(steps[-1], "x") is None
    assert a.is_solved(None, "x") and not a.is_solved(steps[-1], "x")
    for rng in (random.Random(1), np.random.default_rng(1)):
        s = a.random_step(rng)
        assert a.items[s.index] == s.input
    with pytest.raises(ValueError, match="step must be"):
        a.step_at(100)
    with pytest.raises(ValueError, match="unknown family 'poems'"):
        Micro("poems")
    with pytest.raises(ValueError, match="count"):
        Micro("sums", count=0)
    with pytest.raises(ValueError, match="empty"):
        Micro("sums", items=[])


def test_messages_are_turns_ending_with_the_item() -> None:
    domain = Micro("sums", items=["7 + 5"])
    step = domain.step_at(0)
    messages = domain.messages(step)
    assert messages[0]["role"] == "system"
    assert messages[-1] == {"role": "user", "content": "7 + 5"}
    turns = messages[1:-1]
    assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2)
    assert all(m["content"].startswith("answer = ") for m in turns[1::2])
    other = domain.messages(step, paraphrase=1)
    assert other != messages and other[-1] == messages[-1]
    assert domain.messages(step, paraphrase=3) == messages


@pytest.mark.parametrize("name", list(FAMILIES))
def test_steps_and_answers_round_trip_through_json(name: str) -> None:
    domain = Micro(name, count=5, seed=1)
    for step in domain.steps():
        data = json.loads(json.dumps(domain.dump_step(step)))
        assert domain.load_step(step.index, data) == step
        for answer in [domain.truth(step), *domain.wrong_answers(step, 3)]:
            back = domain.load_answer(json.loads(json.dumps(domain.dump_answer(answer))))
            assert back == answer
    with pytest.raises(ParseError):
        domain.load_step(0, ["not", "a", "step"])
    with pytest.raises(ParseError):
        domain.load_answer(12)


def test_the_registry_builds_it_from_params_both_ways() -> None:
    assert "micro" in RUN_NAMES
    kind = DOMAINS["micro"]
    assert kind.options == ("family", "words", "seed")
    drawn = build_domain("micro", {"family": "dates", "words": 3, "seed": 5})
    assert isinstance(drawn, Micro) and drawn.items == Micro("dates", count=3, seed=5).items
    given = build_domain("micro", {"family": "sums", "items": ["1 + 2", "3 + 4"]})
    assert isinstance(given, Micro) and given.items == ["1 + 2", "3 + 4"]
    assert kind.label({"family": "dates", "words": 3, "seed": 5}) == "micro-dates3"
    assert kind.label({"family": "sums", "items": ["1 + 2", "3 + 4"]}) == "micro-sums2"
    with pytest.raises(ValueError, match="unknown family"):
        build_domain("micro", {"family": "poems", "words": 3})


def test_a_simulated_run_completes_with_every_step_right(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(
        ["run", "micro", "--family", "sums", "--words", "5", "--sampler", "simulated:0.9",
         "--json"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["solved"]
    assert summary["domain"] == "micro-sums" and summary["steps"] == 5
    expected = Micro("sums", count=5, seed=0)
    with RunStore.open(summary["run_id"]) as store:
        answers = dict(store.answers())
        assert [store.step(i).input for i in range(5)] == expected.items
    # The sums worked out here, not by the domain's own truth.
    assert answers == {i: str(eval(item)) for i, item in enumerate(expected.items)}
    assert summary["errors"] == 0


def test_a_bad_family_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "micro", "--family", "poems", "--sampler", "simulated:0.9"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown family 'poems'" in err and err.count("\n") == 1, err
