"""MAKER's arithmetic: the paper's reference points, its shape, and the vote-length formula
against a Monte Carlo of the two-candidate walk."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest

from nanobot_tui.engine.voting.maths import (
    Infeasible,
    Projection,
    expected_samples,
    k_min,
    p_vote,
    project,
    success,
)

MILLION = 1_048_575  # 2^20 - 1: the 20-disk Hanoi


def test_reference_points_from_the_paper() -> None:
    assert k_min(0.998, MILLION, 0.95) == 3
    assert k_min(0.964, MILLION, 0.95) == 6


def test_k_min_is_the_smallest_k_that_reaches_the_target() -> None:
    for p in (0.55, 0.7, 0.9, 0.964, 0.99, 0.998, 0.9999):
        for s in (1, 100, 10_000, MILLION):
            k = k_min(p, s, 0.95)
            assert success(p, k, s) >= 0.95
            if k > 1:
                assert success(p, k - 1, s) < 0.95


def test_p_vote_formula_and_edges() -> None:
    assert p_vote(0.7, 1) == pytest.approx(0.7)
    assert p_vote(0.7, 3) == pytest.approx(0.7**3 / (0.7**3 + 0.3**3))
    assert p_vote(0.5, 5) == pytest.approx(0.5)
    assert p_vote(1.0, 3) == 1.0
    assert p_vote(0.0, 3) == 0.0
    with pytest.raises(ValueError):
        p_vote(1.5, 2)
    with pytest.raises(ValueError):
        p_vote(0.9, 0)


def test_success_is_precise_near_one() -> None:
    # 1 - p_vote is ~1e-8 here: naive p_vote**s would still be fine, but check both agree
    pv = p_vote(0.99, 4)
    assert success(0.99, 4, MILLION) == pytest.approx(pv**MILLION, rel=1e-9)
    assert success(0.99, 4, 0) == 1.0


def test_monotonicity() -> None:
    ps = [0.51, 0.6, 0.7, 0.8, 0.9, 0.99]
    for k in (1, 2, 3, 5):
        votes = [p_vote(p, k) for p in ps]
        assert votes == sorted(votes)  # better samples, better steps
    for p in ps:
        votes = [p_vote(p, k) for k in range(1, 8)]
        assert all(a < b for a, b in pairwise(votes))  # larger k helps
        assert success(p, 3, 1000) > success(p, 3, 10_000)  # longer runs are riskier
    # k_min grows with the steps and the target, shrinks with p
    assert k_min(0.9, 10, 0.95) <= k_min(0.9, 10_000, 0.95) <= k_min(0.9, MILLION, 0.95)
    assert k_min(0.9, 1000, 0.5) <= k_min(0.9, 1000, 0.99)
    assert k_min(0.99, 1000, 0.95) <= k_min(0.9, 1000, 0.95) <= k_min(0.6, 1000, 0.95)


@pytest.mark.parametrize("p", [0.5, 0.3, 0.0])
def test_p_at_or_below_half_is_infeasible(p: float) -> None:
    with pytest.raises(Infeasible) as info:
        k_min(p, 1000, 0.95)
    assert "0.5" in info.value.reason
    assert info.value.p == p
    with pytest.raises(Infeasible):
        project(p, 1000, 0.95)


def test_bad_arguments_are_value_errors() -> None:
    for args in [(0.9, 0, 0.95), (0.9, 10, 1.0), (0.9, 10, 0.0), (1.2, 10, 0.9)]:
        with pytest.raises(ValueError):
            k_min(*args)


def test_expected_samples_closed_form() -> None:
    assert expected_samples(0.9, 1) == pytest.approx(1.0)
    assert expected_samples(0.5, 3) == pytest.approx(9.0)  # k^2 at p = 1/2
    assert expected_samples(1.0, 4) == pytest.approx(4.0)
    # continuous through p = 1/2
    assert expected_samples(0.5 + 1e-7, 3) == pytest.approx(9.0, rel=1e-5)


def _walk(p: float, k: int, rng: random.Random) -> int:
    """Sample one at a time until the margin between two candidates reaches k."""
    d = n = 0
    while -k < d < k:
        d += 1 if rng.random() < p else -1
        n += 1
    return n


@pytest.mark.parametrize(("p", "k"), [(0.6, 3), (0.75, 2), (0.9, 4), (0.55, 2)])
def test_expected_samples_matches_a_monte_carlo_walk(p: float, k: int) -> None:
    rng = random.Random(7)
    runs = 20_000
    lengths = [_walk(p, k, rng) for _ in range(runs)]
    mean = sum(lengths) / runs
    sd = math.sqrt(sum((x - mean) ** 2 for x in lengths) / (runs - 1))
    assert abs(mean - expected_samples(p, k)) < 4 * sd / math.sqrt(runs)


def test_projection() -> None:
    proj = project(0.99, MILLION, 0.95, tokens_per_sample=200, samples_per_s=50)
    assert isinstance(proj, Projection)
    assert proj.k == 4
    assert proj.p_vote == pytest.approx(p_vote(0.99, 4))
    assert proj.p_success >= 0.95
    assert proj.samples_per_step == pytest.approx(expected_samples(0.99, 4))
    assert proj.total_samples == pytest.approx(proj.samples_per_step * MILLION)
    assert proj.total_tokens == pytest.approx(proj.total_samples * 200)
    assert proj.seconds == pytest.approx(proj.total_samples / 50)
    assert proj.cost == 0.0  # local models
    paid = project(0.99, MILLION, 0.95, k=5, tokens_per_sample=200, usd_per_mtokens=0.5)
    assert paid.k == 5 and paid.seconds is None
    assert paid.cost == pytest.approx(paid.total_tokens / 1e6 * 0.5)
    flagged = project(0.99, 1000, 0.95, k=3, red_flag_rate=0.2)
    assert flagged.samples_per_step == pytest.approx(expected_samples(0.99, 3) / 0.8)
    assert set(proj.to_dict()) >= {"p", "k", "steps", "p_vote", "total_tokens", "cost"}
