"""Towers of Hanoi, MAKER's way: the procedure against brute force, the closed form, the
parsers (strict refuses near-misses with a reason, lenient recovers), handing on."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.voting.domains.hanoi import Hanoi, HanoiAnswer, apply_move, format_answer


def brute_force(n: int, src: int = 0, via: int = 1, dst: int = 2) -> list[tuple[int, int, int]]:
    """The textbook recursion: the optimal move list from src to dst."""
    if n == 0:
        return []
    return [*brute_force(n - 1, src, dst, via), (n, src, dst), *brute_force(n - 1, via, src, dst)]


def walk(h: Hanoi) -> tuple[list[tuple[int, int, int]], Step | None, HanoiAnswer | None]:
    """Follow the procedure (truth) from the first step, handing on each answer."""
    moves = []
    step: Step | None = next(iter(h.steps()))
    answer = None
    while step is not None:
        answer = h.truth(step)
        moves.append(answer.move)
        step = h.next_step(step, answer)
    return moves, step, answer


@pytest.mark.parametrize("n", range(1, 11))
def test_the_procedure_solves_and_matches_brute_force(n: int) -> None:
    h = Hanoi(n)
    moves, step, last = walk(h)
    assert moves == brute_force(n)
    assert len(moves) == h.total_steps() == 2**n - 1
    assert step is None and last is not None
    assert last.next_state == h.goal == ((), (), tuple(range(n, 0, -1)))
    assert h.is_solved(step, last)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_closed_form_matches_simulation(n: int) -> None:
    h = Hanoi(n)
    state = h.start
    for m, move in enumerate(brute_force(n)):
        assert h.state_after(m) == state
        assert h.move_number(m + 1) == move
        state = apply_move(state, move)
    assert h.state_after(2**n - 1) == h.goal


def test_steps_iterator_is_the_true_solution() -> None:
    h = Hanoi(6)
    steps = list(h.steps())
    assert len(steps) == 63
    assert steps[0] == Step(0, (h.start, None))
    for step in steps:
        assert h.step_at(step.index) == step


def test_direction_by_parity_goal_always_peg_2() -> None:
    even, odd = Hanoi(20), Hanoi(3)
    # MAKER's 20-disk prompt: disk 1 clockwise 0 -> 1 -> 2 -> 0
    assert even.truth(even.step_at(0)).move == (1, 0, 1)
    assert odd.truth(odd.step_at(0)).move == (1, 0, 2)
    assert "clockwise (0 -> 1 -> 2 -> 0)" in even.messages(even.step_at(0))[0]["content"]
    assert "counterclockwise (0 -> 2 -> 1 -> 0)" in odd.messages(odd.step_at(0))[0]["content"]
    assert even.goal[2] == tuple(range(20, 0, -1))


def test_random_step_agrees_with_stepping() -> None:
    h = Hanoi(9)
    steps = list(h.steps())
    rng = random.Random(3)
    seen = set()
    for _ in range(300):
        step = h.random_step(rng)
        assert step == steps[step.index]
        seen.add(step.index)
    assert len(seen) > 200  # spread over the 511 steps
    step = h.random_step(np.random.default_rng(1))  # numpy generators work too
    assert step == steps[step.index]


def test_random_step_on_twenty_disks_is_consistent() -> None:
    h = Hanoi(20)
    rng = random.Random(11)
    for _ in range(200):
        step = h.random_step(rng)
        state, previous = step.input
        h.check_state(state)
        if step.index:
            before = h.state_after(step.index - 1)
            assert apply_move(before, previous) == state
        answer = h.truth(step)
        following = h.next_step(step, answer)
        if following is not None:
            assert following == h.step_at(step.index + 1)


def test_next_step_hands_on_the_answers_state() -> None:
    h = Hanoi(3)
    step = h.step_at(0)
    # a wrong but valid answer: disk 1 to peg 1 instead of peg 2
    wrong = HanoiAnswer((1, 0, 1), ((3, 2), (1,), ()))
    nxt = h.next_step(step, wrong)
    assert nxt == Step(1, (((3, 2), (1,), ()), (1, 0, 1)))
    assert h.truth(nxt).move == (2, 0, 2)  # the procedure from the handed-on state
    with pytest.raises(ValueError, match="once each"):
        h.next_step(step, HanoiAnswer((1, 0, 2), ((3, 2), (), ())))
    with pytest.raises(ValueError, match="on top of"):
        h.next_step(step, HanoiAnswer((1, 0, 2), ((3,), (), (1, 2))))
    last = h.step_at(6)
    assert h.next_step(last, h.truth(last)) is None
    assert not h.is_solved(None, wrong)


def test_wrong_answers_are_distinct_plausible_and_wrong() -> None:
    h = Hanoi(10)
    rng = random.Random(2)
    for _ in range(50):
        step = h.random_step(rng)
        true = h.truth(step)
        wrongs = h.wrong_answers(step, 6)
        keys = [h.key(w) for w in wrongs]
        assert len(wrongs) == 6 and len(set(keys)) == 6
        assert h.key(true) not in keys
    # tiny puzzles still give as many as asked
    one = Hanoi(1)
    assert len({one.key(w) for w in one.wrong_answers(one.step_at(0), 12)}) == 12


def test_prompt_holds_strategy_state_previous_move_and_format() -> None:
    h = Hanoi(4)
    step = h.step_at(5)
    state, previous = step.input
    system, user = h.messages(step)
    assert system["role"] == "system" and user["role"] == "user"
    assert "move = [disk, from, to]" in system["content"]
    assert "next_state = [[...], [...], [...]]" in system["content"]
    assert "previous move did not move disk 1" in system["content"]
    assert json.dumps([list(peg) for peg in state]) in user["content"]
    assert f"[{previous[0]}, {previous[1]}, {previous[2]}]" in user["content"]
    assert "none" in h.messages(h.step_at(0))[1]["content"]
    # paraphrases reword, and wrap around
    texts = {h.messages(step, i)[0]["content"] for i in range(3)}
    assert len(texts) == 3
    assert h.messages(step, 3) == h.messages(step, 0)
    # the example in the prompt follows the instance's own direction
    for n in (3, 4):
        inst = Hanoi(n)
        first = inst.truth(inst.step_at(0))
        assert f"move = [1, 0, {first.move[2]}]" in inst.messages(step)[0]["content"]


def test_prompt_example_parses_strictly() -> None:
    h = Hanoi(5)
    answer = h.truth(h.step_at(12))
    assert h.parse_strict(format_answer(answer)) == answer


# --- the strict parser ---------------------------------------------------------------

GOOD = "move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "move=[1,0,2]\nnext_state=[[3,2],[],[1]]",
        "  move  =  [ 1 , 0 , 2 ]  \n\n   next_state = [ [3, 2] , [ ], [1] ]\n",
    ],
)
def test_strict_accepts_the_exact_format(text: str) -> None:
    h = Hanoi(3)
    answer = h.parse_strict(text)
    assert answer == HanoiAnswer((1, 0, 2), ((3, 2), (), (1,)))
    assert h.key(answer) == ((1, 0, 2), ((3, 2), (), (1,)))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Sure! " + GOOD, "line 1"),
        (GOOD + "\nThat is my answer.", "exactly 2 lines"),
        ("move = [1, 0, 2]", "exactly 2 lines"),
        ("next_state = [[3, 2], [], [1]]\nmove = [1, 0, 2]", "line 1"),
        ("move = [1, 0, x]\nnext_state = [[3, 2], [], [1]]", "not a list of integers"),
        ("move = [1.0, 0, 2]\nnext_state = [[3, 2], [], [1]]", "non-integer"),
        ("move = [1, 0]\nnext_state = [[3, 2], [], [1]]", "move must be"),
        ("move = [1, 0, 3]\nnext_state = [[3, 2], [], [1]]", "pegs must be"),
        ("move = [1, 0, 2]\nnext_state = [[3, 2], [1]]", "2 pegs"),
        ('move = [1, 0, 2]\nnext_state = [[3, 2], [], ["1"]]', "non-integer"),
        ("move = [1, 0, 2]\nnext_state = [[3, 2], [], 1]", "not a list"),
        ("```\n" + GOOD + "\n```", "exactly 2 lines"),
        ("move: [1, 0, 2]\nnext_state: [[3, 2], [], [1]]", "line 1"),
        ("", "exactly 2 lines"),
    ],
)
def test_strict_refuses_near_misses_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        Hanoi(3).parse_strict(text)
    assert "\n" not in str(info.value)  # one line


# --- the lenient parser --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "Sure! Here is the next move.\n" + GOOD + "\nHope this helps.",
        "```python\nmove = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]\n```",
        "move: [1,0,2]\nnext state: [[3,2],[],[1]]",
        "The previous move = [2, 0, 1]. Now Move = (1, 0, 2) and next_state = ([3, 2], [], [1])",
        "I move disk 1 from peg 0 to peg 2, so next_state = [[3, 2], [], [1]].",
        "**Move:** [1, 0, 2]\n**Next state:** [[3, 2], [], [1]]",
        "[1, 0, 2]\n[[3, 2], [], [1]]",
    ],
)
def test_lenient_recovers_from_prose_and_fences(text: str) -> None:
    assert Hanoi(3).parse_lenient(text) == HanoiAnswer((1, 0, 2), ((3, 2), (), (1,)))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I do not know.", "no next_state"),
        ("next_state = [[3, 2], [], [1]]", "no move"),
        ("move = [1, 0, 2] next_state = [[3, 2], [1]]", "no next_state"),
    ],
)
def test_lenient_still_refuses_what_is_not_there(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        Hanoi(3).parse_lenient(text)


def test_describe_is_short_and_readable() -> None:
    h = Hanoi(3)
    key = h.key(h.truth(h.step_at(0)))
    assert h.describe(key) == "[1, 0, 2] -> [[3, 2], [], [1]]"
