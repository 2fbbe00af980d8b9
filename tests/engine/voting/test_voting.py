"""First-to-ahead-by-k: each rule with a scripted fake sampler, then the voting law with the
simulated one (many small runs against p_vote = p^k / (p^k + (1-p)^k))."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterator
from typing import Any

import pytest

from nanobot_tui.engine.voting.ahead_by_k import StepRecord, VoteConfig, vote
from nanobot_tui.engine.voting.domains import Step
from nanobot_tui.engine.voting.maths import expected_samples, p_vote
from nanobot_tui.engine.voting.samplers.simulated import SimulatedSampler
from nanobot_tui.engine.voting.samples import RED_PARSE, RED_TOO_LONG, RED_TRUNCATED, Sample

STEP = Step(0, "x")


def ok(key: str, tokens: int = 10) -> Sample:
    return Sample(answer=f"answer {key}", key=key, completion_tokens=tokens, prompt_tokens=5)


def flag(reason: str) -> Sample:
    return Sample(answer=None, key=None, red_flag=reason, completion_tokens=800)


class FakeSampler:
    """A FAKE sampler (not a model, not the simulated one): hands out a fixed script of
    samples in order and records every request."""

    simulated = True

    def __init__(self, script: list[Sample]) -> None:
        self.name = "fake scripted sampler"
        self.script: Iterator[Sample] = iter(script)
        self.requests: list[tuple[list[float], int]] = []

    async def sample(
        self, step: Step, temperatures: list[float], paraphrase: int = 0
    ) -> list[Sample]:
        self.requests.append((list(temperatures), paraphrase))
        return [next(self.script) for _ in temperatures]

    @property
    def temperatures(self) -> list[list[float]]:
        return [t for t, _ in self.requests]


async def test_unanimous_first_round_wins_at_margin_k() -> None:
    fake = FakeSampler([ok("a")] * 3)
    rec = await vote(fake, STEP, VoteConfig(k=3))
    assert isinstance(rec, StepRecord)
    assert rec.decided and rec.winner_key == "a" and rec.winner_answer == "answer a"
    assert rec.votes == {"a": 3} and rec.rounds == 1 and rec.samples == 3
    # the first sample at temperature_first, the rest at temperature_rest
    assert fake.temperatures == [[0.0, 0.1, 0.1]]
    assert rec.completion_tokens == 30 and rec.prompt_tokens == 15
    assert rec.margin == 3 and rec.step == 0 and rec.wall_s >= 0


async def test_top_up_asks_only_for_what_is_needed() -> None:
    # round 1: a a b -> margin 1, need 2; round 2: a b -> margin 1, need 2; round 3: a a
    script = [ok("a"), ok("a"), ok("b"), ok("a"), ok("b"), ok("a"), ok("a")]
    fake = FakeSampler(script)
    cfg = VoteConfig(k=3, temperature_first=0.0, temperature_rest=0.7)
    rec = await vote(fake, STEP, cfg)
    assert fake.temperatures == [[0.0, 0.7, 0.7], [0.7, 0.7], [0.7, 0.7]]
    assert rec.decided and rec.winner_key == "a"
    assert rec.votes == {"a": 5, "b": 2} and rec.rounds == 3 and rec.samples == 7


async def test_winner_must_lead_every_other_key() -> None:
    # a:2 c:1 after round 1: runner-up c, need 2
    script = [ok("a"), ok("c"), ok("a"), ok("b"), ok("a"), ok("a"), ok("a")]
    fake = FakeSampler(script)
    rec = await vote(fake, STEP, VoteConfig(k=3))
    # after round 2 (a:3, b:1, c:1) the margin is 2: one more
    assert fake.temperatures == [[0.0, 0.1, 0.1], [0.1, 0.1], [0.1]]
    assert rec.votes == {"a": 4, "c": 1, "b": 1}
    assert rec.rounds == 3 and rec.decided and rec.winner_key == "a"


async def test_a_late_rival_can_win() -> None:
    script = [ok("a"), ok("b"), ok("b"), ok("b"), ok("b")]  # k=2: a b (tie) then b b ... b
    fake = FakeSampler(script)
    rec = await vote(fake, STEP, VoteConfig(k=2))
    assert fake.temperatures == [[0.0, 0.1], [0.1, 0.1]]
    assert rec.decided and rec.winner_key == "b" and rec.winner_answer == "answer b"
    assert rec.votes == {"a": 1, "b": 3}


async def test_k_one_takes_the_first_valid_answer() -> None:
    fake = FakeSampler([ok("z")])
    rec = await vote(fake, STEP, VoteConfig(k=1))
    assert fake.temperatures == [[0.0]]
    assert rec.winner_key == "z" and rec.samples == 1


async def test_red_flags_never_vote_and_are_counted_by_reason() -> None:
    script = [
        flag(RED_TOO_LONG), ok("b"), flag(RED_PARSE),  # round 1: b:1, need 2
        ok("b"), flag(RED_TRUNCATED),  # round 2: b:2, need 1
        flag(RED_PARSE),  # round 3: nothing valid, need 1
        ok("b"),  # round 4: b:3 wins
    ]  # fmt: skip
    fake = FakeSampler(script)
    rec = await vote(fake, STEP, VoteConfig(k=3))
    assert fake.temperatures == [[0.0, 0.1, 0.1], [0.1, 0.1], [0.1], [0.1]]
    assert rec.decided and rec.winner_key == "b"
    assert rec.votes == {"b": 3}  # no key for red-flagged samples
    assert rec.red_flags == {RED_TOO_LONG: 1, RED_PARSE: 2, RED_TRUNCATED: 1}
    assert rec.samples == 7 and rec.valid == 3


async def test_only_red_flags_never_decide() -> None:
    fake = FakeSampler([flag(RED_PARSE)] * 100)
    rec = await vote(fake, STEP, VoteConfig(k=2, max_rounds=4))
    assert not rec.decided and rec.winner_key is None and rec.votes == {}
    assert rec.red_flags == {RED_PARSE: 8} and rec.rounds == 4  # 2 per round: need stays k


async def test_max_rounds_failure_keeps_the_history() -> None:
    fake = FakeSampler([ok("a"), ok("b")] * 50)  # a perpetual tie
    rec = await vote(fake, STEP, VoteConfig(k=2, max_rounds=5))
    assert not rec.decided and rec.winner_key is None and rec.winner_answer is None
    assert rec.rounds == 5 and rec.samples == 10
    assert rec.votes == {"a": 5, "b": 5}
    assert fake.temperatures == [[0.0, 0.1]] + [[0.1, 0.1]] * 4


async def test_max_samples_caps_the_step() -> None:
    fake = FakeSampler([ok("a"), ok("b")] * 50)
    rec = await vote(fake, STEP, VoteConfig(k=3, max_samples=7))
    # a b a | b a | b a: the margin stays 1, the third round's 2 reach the cap of 7
    assert not rec.decided and rec.samples == 7 and rec.rounds == 3
    assert fake.temperatures == [[0.0, 0.1, 0.1], [0.1, 0.1], [0.1, 0.1]]


async def test_paraphrase_after_rounds() -> None:
    fake = FakeSampler([ok("a"), ok("b")] * 50)
    await vote(fake, STEP, VoteConfig(k=2, max_rounds=5, paraphrase_after_rounds=2))
    assert [p for _, p in fake.requests] == [0, 0, 1, 2, 3]
    fake = FakeSampler([ok("a"), ok("b")] * 50)
    await vote(fake, STEP, VoteConfig(k=2, max_rounds=3))
    assert [p for _, p in fake.requests] == [0, 0, 0]


def test_config_is_checked() -> None:
    for bad in ({"k": 0}, {"k": 2, "max_rounds": 0}, {"k": 2, "max_samples": 0}):
        with pytest.raises(ValueError):
            VoteConfig(**bad)


# --- the voting law, with the simulated sampler -------------------------------------


class Coin:
    """The smallest domain for the law: every step's truth is "right", the wrongs are
    "wrong 0", "wrong 1", ..."""

    name = "coin"

    def truth(self, step: Step) -> str:
        return "right"

    def key(self, answer: Any) -> Hashable:
        return answer

    def wrong_answers(self, step: Step, count: int) -> list[str]:
        return [f"wrong {i}" for i in range(count)]


async def _error_rate(p: float, k: int, wrong: int, steps: int, seed: int) -> tuple[float, float]:
    """(step error rate, mean valid samples per step) over `steps` fresh steps."""
    sampler = SimulatedSampler(Coin(), p, wrong_choices=wrong, seed=seed)  # type: ignore[arg-type]
    cfg = VoteConfig(k=k, max_rounds=10_000)
    errors = samples = 0
    for i in range(steps):
        rec = await vote(sampler, Step(i, None), cfg)
        errors += rec.winner_key != "right"
        samples += rec.samples
    return errors / steps, samples / steps


LAW = [(p, k) for p in (0.6, 0.7, 0.8) for k in (1, 2, 3)]


@pytest.mark.parametrize(("p", "k"), LAW)
async def test_voting_law_with_one_wrong_answer(p: float, k: int) -> None:
    """With one rival the race is exactly gambler's ruin: error = 1 - p_vote(p, k)."""
    steps = 200_000 // len(LAW)
    rate, mean_samples = await _error_rate(p, k, wrong=1, steps=steps, seed=1000 * k + int(p * 10))
    expected = 1 - p_vote(p, k)
    se = math.sqrt(expected * (1 - expected) / steps)
    assert abs(rate - expected) < 4 * se, (p, k, rate, expected)
    # and the batching draws exactly the sequential race's samples on average
    assert mean_samples == pytest.approx(expected_samples(p, k), rel=0.03)


@pytest.mark.parametrize(("p", "k"), [(0.6, 2), (0.6, 3), (0.7, 3), (0.8, 2), (0.8, 4)])
async def test_several_wrong_answers_err_no_more_than_the_formula(p: float, k: int) -> None:
    steps = 10_000
    rate, mean_samples = await _error_rate(p, k, wrong=3, steps=steps, seed=99)
    expected = 1 - p_vote(p, k)
    se = math.sqrt(expected * (1 - expected) / steps)
    assert rate <= expected + 2 * se
    if k >= 3:  # split rivals trail further; at k = 2 and low p a step can take longer
        assert mean_samples <= expected_samples(p, k)


async def test_simulated_sampler_hits_p() -> None:
    sampler = SimulatedSampler(Coin(), 0.8, wrong_choices=3, seed=5)  # type: ignore[arg-type]
    assert sampler.name == "simulated p=0.8" and sampler.simulated is True
    draws = []
    for i in range(2000):
        draws += await sampler.sample(Step(i, None), [0.0] * 10)
    right = sum(s.key == "right" for s in draws) / len(draws)
    assert abs(right - 0.8) < 4 * math.sqrt(0.16 / len(draws))
    wrong_keys = {s.key for s in draws if s.key != "right"}
    assert wrong_keys == {"wrong 0", "wrong 1", "wrong 2"}


async def test_simulated_red_flag_rate() -> None:
    sampler = SimulatedSampler(Coin(), 0.9, seed=3, red_flag_rate=0.25)  # type: ignore[arg-type]
    draws = await sampler.sample(Step(0, None), [0.1] * 20_000)
    flagged = [s for s in draws if s.red_flag is not None]
    assert all(s.red_flag == RED_PARSE and s.key is None for s in flagged)
    assert abs(len(flagged) / 20_000 - 0.25) < 0.015
    valid = [s for s in draws if s.red_flag is None]
    assert abs(sum(s.key == "right" for s in valid) / len(valid) - 0.9) < 0.015
    rec = await vote(sampler, Step(1, None), VoteConfig(k=3))
    assert rec.decided and sum(rec.votes.values()) + sum(rec.red_flags.values()) == rec.samples


async def test_simulated_sampler_is_reproducible() -> None:
    def run() -> SimulatedSampler:
        return SimulatedSampler(Coin(), 0.7, seed=42)  # type: ignore[arg-type]

    a, b = run(), run()
    ka = [s.key for s in await a.sample(STEP, [0.0] * 50)]
    kb = [s.key for s in await b.sample(STEP, [0.0] * 50)]
    assert ka == kb
    assert random.Random(0).random() == random.Random(0).random()
