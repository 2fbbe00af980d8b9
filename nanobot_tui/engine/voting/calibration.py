"""`nanobot calibrate`'s engine: measure a model's per-step success rate p on a domain,
then plan a voted run from it.

`calibrate` asks N random, independent steps of the domain (`domain.random_step`), one
sample each, and scores every reply with the domain's LENIENT parser against its truth:
p = correct / answered, with a 95 % Wilson interval. The strict parser's verdicts (and the
token cap) are counted on the side as the red-flag rate that voting will pay for.

Why temperature 0.1 and not 0: every vote after a step's first is drawn at 0.1, and what
voting amplifies is the chance that such a fresh, independent sample is right. At 0 a
sample is the greedy answer: it measures one fixed answer per step, and says nothing
about the spread that lets later votes differ from the first.

`plan` turns p (measured or given) into MAKER's numbers for a run of s steps at target t:
k_min, expected votes per step, projected tokens, wall time and cost. For p <= 0.5 no k
works, and the plan says so (`feasible=False`, with the reason) instead of starting a run
that would never end.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from nanobot_tui.engine.llm.errors import LLMError
from nanobot_tui.engine.voting import maths
from nanobot_tui.engine.voting.domains import Domain, ParseError, Step
from nanobot_tui.engine.voting.samples import (
    DEFAULT_TOKEN_CAP,
    RED_ERROR,
    RED_PARSE,
    RED_TOO_LONG,
    RED_TRUNCATED,
    Sample,
    Sampler,
)

__all__ = [
    "CALIBRATION_TEMPERATURE",
    "Calibration",
    "CalibrationFailed",
    "Plan",
    "calibrate",
    "plan",
    "wilson_interval",
]

CALIBRATION_TEMPERATURE = 0.1
RED_FLAG_REASONS = (RED_PARSE, RED_TOO_LONG, RED_TRUNCATED, RED_ERROR)
_Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile

Progress = Callable[[int, int], Any]


class CalibrationFailed(LLMError):
    """Every request of a calibration failed: there is nothing to measure."""


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95 % by default). Unlike the
    normal approximation it stays inside [0, 1] and is honest at 0 or n successes."""
    if n <= 0:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..{n}, got {successes}")
    phat = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (phat + z2 / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True, slots=True)
class Calibration:
    """One calibration of a model on a domain. `p` counts what the model meant (lenient
    parser) among the samples it answered; `red_flags` are the strict verdicts."""

    model: str
    domain: str
    date: str  # ISO 8601, UTC, to the second
    samples: int  # samples drawn (failed requests included)
    correct: int  # right by the lenient parser
    p: float  # correct / answered (answered = samples - failed requests)
    ci_low: float  # 95 % Wilson interval of p
    ci_high: float
    red_flags: dict[str, int] = field(default_factory=dict)  # reason -> count, all reasons
    red_flag_rate: float = 0.0  # red-flagged / samples
    p_valid: float | None = None  # right among the strictly valid samples (what votes)
    tokens_per_sample: float = 0.0  # mean completion tokens of the answered samples
    seconds_per_sample: float = 0.0  # wall / samples, at `concurrency`
    samples_per_second: float = 0.0
    token_cap: int = DEFAULT_TOKEN_CAP
    temperature: float = CALIBRATION_TEMPERATURE
    concurrency: int = 1
    simulated: bool = False

    @property
    def answered(self) -> int:
        return self.samples - self.red_flags.get(RED_ERROR, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "domain": self.domain,
            "date": self.date,
            "samples": self.samples,
            "answered": self.answered,
            "correct": self.correct,
            "p": self.p,
            "ciLow": self.ci_low,
            "ciHigh": self.ci_high,
            "pValid": self.p_valid,
            "redFlags": dict(self.red_flags),
            "redFlagRate": self.red_flag_rate,
            "tokensPerSample": self.tokens_per_sample,
            "secondsPerSample": self.seconds_per_sample,
            "samplesPerSecond": self.samples_per_second,
            "tokenCap": self.token_cap,
            "temperature": self.temperature,
            "concurrency": self.concurrency,
            "simulated": self.simulated,
        }


def _score(domain: Domain, step: Step, sample: Sample, simulated: bool) -> bool:
    """Whether the sample's answer is right: the lenient reading of its text, or (for a
    simulated sampler, which has no text) its answer as drawn. A step with no known
    truth (code edits without a reference) counts a sample right when it passes the
    domain's strict checks: the share of candidates that would be voted on."""
    if sample.red_flag == RED_ERROR:
        return False
    try:
        truth = domain.key(domain.truth(step))
    except ValueError:
        return sample.red_flag is None and sample.answer is not None
    if simulated or (not sample.text and sample.answer is not None):
        return sample.answer is not None and domain.key(sample.answer) == truth
    try:
        answer = domain.parse_lenient(sample.text, step)
    except ParseError:
        return False
    return domain.key(answer) == truth


async def _sample_each(
    sampler: Sampler,
    steps: list[Step],
    temperature: float,
    concurrency: int,
    progress: Progress | None,
) -> list[Sample]:
    """One sample of each step, at most `concurrency` in flight, in the steps' order."""
    gate = asyncio.Semaphore(concurrency)
    done = 0
    results: list[Sample | None] = [None] * len(steps)

    async def one(i: int) -> None:
        nonlocal done
        async with gate:
            (results[i],) = await sampler.sample(steps[i], [temperature])
        done += 1
        if progress is not None:
            ret = progress(done, len(steps))
            if inspect.isawaitable(ret):
                await ret

    await asyncio.gather(*(one(i) for i in range(len(steps))))
    return [s for s in results if s is not None]


@dataclass
class _Tally:
    """The counts of a calibration's samples."""

    flags: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RED_FLAG_REASONS, 0))
    correct: int = 0
    valid: int = 0
    valid_correct: int = 0
    tokens: int = 0
    first_error: str = ""

    def add(self, right: bool, s: Sample) -> None:
        self.correct += right
        self.tokens += s.completion_tokens
        if s.red_flag is None:
            self.valid += 1
            self.valid_correct += right
        else:
            self.flags[s.red_flag] = self.flags.get(s.red_flag, 0) + 1
            if s.red_flag == RED_ERROR and not self.first_error:
                self.first_error = s.text


async def calibrate(
    domain: Domain,
    sampler: Sampler,
    samples: int,
    *,
    seed: int = 0,
    concurrency: int = 4,
    progress: Progress | None = None,
    temperature: float = CALIBRATION_TEMPERATURE,
    model: str | None = None,
) -> Calibration:
    """Sample `samples` random independent steps once each (at most `concurrency` in
    flight) and measure p. `progress(done, total)` is called after every sample (it may
    be a coroutine function). `model` defaults to the sampler's `model`, else its name.
    Raises CalibrationFailed when every request failed."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    rng = random.Random(seed)
    steps = [domain.random_step(rng) for _ in range(samples)]
    simulated = sampler.simulated
    started = time.perf_counter()
    results = await _sample_each(sampler, steps, temperature, concurrency, progress)
    wall = time.perf_counter() - started
    t = _Tally()
    for step, sample in zip(steps, results, strict=True):
        t.add(_score(domain, step, sample, simulated), sample)
    flags, correct, tokens = t.flags, t.correct, t.tokens
    answered = samples - flags[RED_ERROR]
    if answered == 0:
        raise CalibrationFailed(
            f"calibration of {domain.name}: all {samples} requests failed: "
            f"{t.first_error or 'no answer'}"
        )
    low, high = wilson_interval(correct, answered)
    return Calibration(
        model=model or getattr(sampler, "model", None) or sampler.name,
        domain=domain.name,
        date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        samples=samples,
        correct=correct,
        p=correct / answered,
        ci_low=low,
        ci_high=high,
        red_flags=flags,
        red_flag_rate=sum(flags.values()) / samples,
        p_valid=t.valid_correct / t.valid if t.valid else None,
        tokens_per_sample=tokens / answered,
        seconds_per_sample=wall / samples,
        samples_per_second=samples / wall if wall > 0 else 0.0,
        token_cap=int(getattr(sampler, "token_cap", DEFAULT_TOKEN_CAP)),
        temperature=temperature,
        concurrency=concurrency,
        simulated=simulated,
    )


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class Plan:
    """What a voted run of `steps` steps at target `target` needs, from p. When
    `feasible` is False, `reason` says why in one line and the projections are None."""

    p: float
    steps: int
    target: float
    feasible: bool
    reason: str | None = None
    k: int | None = None
    p_vote: float | None = None  # per-step success with voting
    p_success: float | None = None  # P(every step right) = p_vote^steps
    samples_per_step: float | None = None  # expected, red-flagged samples included
    total_samples: float | None = None
    tokens: float | None = None  # None when tokens per sample is unknown
    seconds: float | None = None  # None when throughput is unknown
    cost: float | None = None  # dollars; None when tokens are unknown
    tokens_per_sample: float | None = None
    samples_per_second: float | None = None
    usd_per_mtok: float = 0.0
    red_flag_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "p": self.p,
            "steps": self.steps,
            "target": self.target,
            "feasible": self.feasible,
            "reason": self.reason,
            "k": self.k,
            "pVote": self.p_vote,
            "pSuccess": self.p_success,
            "samplesPerStep": self.samples_per_step,
            "totalSamples": self.total_samples,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "cost": self.cost,
            "tokensPerSample": self.tokens_per_sample,
            "samplesPerSecond": self.samples_per_second,
            "usdPerMtok": self.usd_per_mtok,
            "redFlagRate": self.red_flag_rate,
        }


def infeasible_reason(p: float) -> str:
    """Why no voting margin helps at p <= 0.5, in one line."""
    if p < 0.5:
        return f"p = {p:.3g} ≤ 0.5: voting cannot amplify it; more votes make it worse"
    return f"p = {p:.3g} ≤ 0.5: voting cannot amplify it; more votes do not help"


def plan(
    p: float,
    steps: int,
    target: float = 0.95,
    *,
    tokens_per_sample: float | None = None,
    samples_per_second: float | None = None,
    usd_per_mtok: float = 0.0,
    red_flag_rate: float = 0.0,
    k: int | None = None,
) -> Plan:
    """MAKER's plan for `steps` voted steps at per-step success p and target t: k_min
    (or the given k), expected votes per step, tokens, wall time and cost. p <= 0.5 gives
    an infeasible plan with the reason; bad arguments raise ValueError."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be strictly between 0 and 1, got {target!r}")
    given = Plan(
        p=p,
        steps=steps,
        target=target,
        feasible=False,
        tokens_per_sample=tokens_per_sample,
        samples_per_second=samples_per_second,
        usd_per_mtok=usd_per_mtok,
        red_flag_rate=red_flag_rate,
    )
    if p <= 0.5:
        return replace(given, reason=infeasible_reason(p))
    proj = maths.project(
        p,
        steps,
        target,
        k=k,
        tokens_per_sample=tokens_per_sample or 0.0,
        samples_per_s=samples_per_second,
        usd_per_mtokens=usd_per_mtok,
        red_flag_rate=red_flag_rate,
    )
    known = tokens_per_sample is not None
    return replace(
        given,
        feasible=True,
        k=proj.k,
        p_vote=proj.p_vote,
        p_success=proj.p_success,
        samples_per_step=proj.samples_per_step,
        total_samples=proj.total_samples,
        tokens=proj.total_tokens if known else None,
        seconds=proj.seconds,
        cost=proj.cost if known else None,
    )
