"""MAKER's arithmetic (Meyerson et al., arXiv 2511.09030): how voting turns a per-step
success rate p into a million-step success, and what that costs.

Notation: p is the probability that one valid sample of a step is right, k the voting
margin (first-to-ahead-by-k), s the number of steps, t the target probability that the
whole run is right.

- Per-step success with voting (eq. for two candidates, gambler's ruin):
      p_vote(p, k) = p^k / (p^k + (1-p)^k)
- Whole-run success:            success(p, k, s) = p_vote(p, k)^s
- Smallest k that reaches t:    k_min = ceil( ln(t^(-1/s) - 1) / ln((1-p)/p) )
  (from p_vote^s >= t  <=>  ((1-p)/p)^k <= t^(-1/s) - 1; ln((1-p)/p) < 0 flips it.)

Voting only amplifies p > 0.5: at p <= 0.5 a wrong answer is at least as likely to win
the race as the right one, and no k helps. That is reported as `Infeasible`.

Pure functions, no I/O: the calibrate command and the vote counter pane both use them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from nanobot_tui.errors import NanobotError

INFEASIBLE_REASON = (
    "voting cannot amplify a per-step success rate at or below 0.5: a wrong answer is "
    "at least as likely to win the vote as the right one, whatever k"
)


class Infeasible(NanobotError, ValueError):
    """p <= 0.5: no voting margin makes the run reliable. `reason` says why in one line."""

    def __init__(self, p: float, reason: str = INFEASIBLE_REASON) -> None:
        super().__init__(f"p = {p:g}: {reason}")
        self.p = p
        self.reason = reason


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")


def p_vote(p: float, k: int) -> float:
    """Per-step success of first-to-ahead-by-k between the right answer and one rival:
    p^k / (p^k + (1-p)^k), computed as 1 / (1 + ((1-p)/p)^k) so it stays exact near 1."""
    _check_p(p)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if p == 0.0:
        return 0.0
    return 1.0 / (1.0 + ((1.0 - p) / p) ** k)


def success(p: float, k: int, s: int) -> float:
    """Probability that all s voted steps are right: p_vote^s. Computed as
    exp(-s * ln(1 + r^k)) with r = (1-p)/p, because 1 - p_vote underflows at p near 1."""
    _check_p(p)
    if s < 0:
        raise ValueError(f"steps must be >= 0, got {s}")
    if s == 0:
        return 1.0
    if p == 0.0:
        return 0.0
    r_k = ((1.0 - p) / p) ** k
    return math.exp(-s * math.log1p(r_k))


def k_min(p: float, s: int, t: float) -> int:
    """The smallest k (at least 1) with success(p, k, s) >= t:
    k_min = ceil( ln(t^(-1/s) - 1) / ln((1-p)/p) ).

    t^(-1/s) - 1 is taken as expm1(-ln(t)/s): at s = 10^6 it is ~5e-8 and the naive
    form loses half its digits. Raises Infeasible for p <= 0.5."""
    _check_p(p)
    if not 0.0 < t < 1.0:
        raise ValueError(f"target must be in (0, 1), got {t!r}")
    if s < 1:
        raise ValueError(f"steps must be >= 1, got {s}")
    if p <= 0.5:
        raise Infeasible(p)
    if p == 1.0:
        return 1
    slack = math.expm1(-math.log(t) / s)  # t^(-1/s) - 1 > 0
    ratio = math.log(slack) / math.log((1.0 - p) / p)
    k = max(1, math.ceil(ratio - 1e-12))
    # Guard the ceiling against rounding at an exact integer ratio.
    while success(p, k, s) < t:
        k += 1
    while k > 1 and success(p, k - 1, s) >= t:
        k -= 1
    return k


def expected_samples(p: float, k: int) -> float:
    """Expected valid samples per step for first-to-ahead-by-k between the right answer
    and ONE wrong rival.

    The vote margin D (right minus wrong) is a random walk from 0 that steps +1 with
    probability p and -1 with 1-p, absorbed at +k or -k (gambler's ruin on 0..2k,
    starting in the middle). With r = (1-p)/p its expected duration is

        E = k/(2p - 1) * (1 - r^k)/(1 + r^k) = k (2 p_vote - 1)/(2p - 1),   and k^2 at p = 1/2.

    The engine's batching does not change this: round 1 draws k samples and each later
    round tops up k - margin, the fewest that could decide the step, so no round ever
    overshoots a decision. With several wrong answers the wrong votes split and the
    runner-up trails further, so a step is decided sooner wherever it matters (measured
    with three wrong answers: 2 % fewer samples at p = 0.9, k = 3; 9 % at p = 0.7, k = 3;
    about 20 % at p <= 0.7, k = 4). The exception is k = 2 at low p (p = 0.6: ~20 % more),
    where split wrong votes rarely end a step early with a wrong winner. Errors are always
    fewer. Red-flagged samples come on top: divide by (1 - red-flag rate).
    """
    _check_p(p)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if abs(2.0 * p - 1.0) < 1e-12:
        return float(k * k)
    return k * (2.0 * p_vote(p, k) - 1.0) / (2.0 * p - 1.0)


@dataclass(frozen=True, slots=True)
class Projection:
    """What a run of `steps` voted steps at margin k is expected to take."""

    p: float
    k: int
    steps: int
    target: float
    p_vote: float  # per-step success with voting
    p_success: float  # whole-run success: p_vote^steps
    samples_per_step: float  # expected, red flags included
    total_samples: float
    total_tokens: float  # total_samples * tokens per sample
    seconds: float | None  # total_samples / samples per second; None when unknown
    cost: float  # dollars at the given $ per million tokens (0 for local models)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def project(
    p: float,
    steps: int,
    target: float = 0.95,
    *,
    k: int | None = None,
    tokens_per_sample: float = 0.0,
    samples_per_s: float | None = None,
    usd_per_mtokens: float = 0.0,
    red_flag_rate: float = 0.0,
) -> Projection:
    """Project a run: k (k_min for the target unless given), success odds, samples,
    tokens, wall time and cost. Raises Infeasible for p <= 0.5."""
    if p <= 0.5:
        raise Infeasible(p)
    if k is None:
        k = k_min(p, steps, target)
    if not 0.0 <= red_flag_rate < 1.0:
        raise ValueError(f"red_flag_rate must be in [0, 1), got {red_flag_rate!r}")
    per_step = expected_samples(p, k) / (1.0 - red_flag_rate)
    total = per_step * steps
    tokens = total * tokens_per_sample
    seconds = total / samples_per_s if samples_per_s and samples_per_s > 0 else None
    return Projection(
        p=p,
        k=k,
        steps=steps,
        target=target,
        p_vote=p_vote(p, k),
        p_success=success(p, k, steps),
        samples_per_step=per_step,
        total_samples=total,
        total_tokens=tokens,
        seconds=seconds,
        cost=tokens / 1e6 * usd_per_mtokens,
    )
