"""First-to-ahead-by-k voting on one step (MAKER, arXiv 2511.09030).

Sample answers for a step until one canonical answer (the domain's key) leads every
other by k valid votes. Red-flagged samples (strict parse failure, over the token cap,
truncated, failed request) are discarded, never repaired, never vote, and are counted by
reason.

Batching: round 1 asks for k samples at once (the server's parallel slots batch them);
each later round asks for exactly need = k - (leader - runner-up) more, the fewest that
could decide the step. Each sample moves the leader's margin by at most one, so no round
can decide before its last sample: batching never draws a sample the sequential rule
would not have drawn, and the vote is exactly MAKER's sequential race.

This runs once per step of a million-step run: keep it lean.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from nanobot_tui.engine.voting.domains import Step
from nanobot_tui.engine.voting.samples import DEFAULT_TOKEN_CAP, Sampler


@dataclass(frozen=True, slots=True)
class VoteConfig:
    k: int
    max_rounds: int = 50  # a step still undecided after this many rounds fails
    max_samples: int | None = None  # optional cap on samples per step (red flags count)
    temperature_first: float = 0.0
    temperature_rest: float = 0.1
    token_cap: int = DEFAULT_TOKEN_CAP  # for samplers: longer answers are red-flagged
    paraphrase_after_rounds: int | None = None  # rounds after this use paraphrase 1, 2, ...
    # This many rounds in a row with no valid sample end the vote undecided (None: no such
    # bound): a model that only ever answers out of format would otherwise be asked until
    # max_rounds, at up to a token cap's worth of decoding per sample.
    max_red_rounds: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}")
        if self.max_red_rounds is not None and self.max_red_rounds < 1:
            raise ValueError(f"max_red_rounds must be >= 1, got {self.max_red_rounds}")


@dataclass(slots=True)
class StepRecord:
    """What happened on one step: the vote tally is its history."""

    step: int  # the step's index
    decided: bool
    winner_key: Hashable | None
    winner_answer: Any
    votes: dict[Hashable, int]  # valid votes per candidate key
    rounds: int
    samples: int  # all samples drawn, red-flagged ones included
    red_flags: dict[str, int] = field(default_factory=dict)  # reason -> count
    completion_tokens: int = 0
    prompt_tokens: int = 0
    latency_s: float = 0.0  # summed per-sample latency (model time)
    wall_s: float = 0.0  # wall time of the whole vote
    red_rounds: int = 0  # rounds in a row, at the end, that drew no valid sample

    @property
    def valid(self) -> int:
        """Valid (voting) samples."""
        return self.samples - sum(self.red_flags.values())

    @property
    def margin(self) -> int:
        """Leader's votes minus the runner-up's."""
        return _margin(self.votes)


def _margin(votes: dict[Hashable, int]) -> int:
    first = second = 0
    for n in votes.values():
        if n > first:
            first, second = n, first
        elif n > second:
            second = n
    return first - second


async def vote(sampler: Sampler, step: Step, cfg: VoteConfig) -> StepRecord:
    """Vote on `step` until an answer leads every other by cfg.k, or the round/sample cap
    is hit (then the record says decided=False and keeps the tally)."""
    t0 = perf_counter()
    k = cfg.k
    rest = cfg.temperature_rest
    max_rounds = cfg.max_rounds
    max_samples = cfg.max_samples
    after = cfg.paraphrase_after_rounds
    max_red = cfg.max_red_rounds
    dry = 0  # rounds in a row without a valid sample
    votes: dict[Hashable, int] = {}
    red: dict[str, int] = {}
    rounds = samples = ctok = ptok = 0
    latency = 0.0
    temps = [cfg.temperature_first] + [rest] * (k - 1)
    sample = sampler.sample
    while True:
        rounds += 1
        paraphrase = 0 if after is None or rounds <= after else rounds - after
        batch = await sample(step, temps, paraphrase)
        samples += len(batch)
        dry += 1
        for s in batch:
            ctok += s.completion_tokens
            ptok += s.prompt_tokens
            latency += s.latency_s
            key = s.key
            if s.red_flag is not None or key is None:
                reason = s.red_flag or "parse"
                red[reason] = red.get(reason, 0) + 1
            else:
                votes[key] = votes.get(key, 0) + 1
                dry = 0
        # Leader and runner-up; ties leave no leader ahead.
        first = second = 0
        leader: Hashable | None = None
        for key, n in votes.items():
            if n > first:
                first, second, leader = n, first, key
            elif n > second:
                second = n
        margin = first - second
        if margin >= k:
            # The winner's last vote is in this batch (see the module note).
            answer = None
            for s in reversed(batch):
                if s.red_flag is None and s.key == leader:
                    answer = s.answer
                    break
            return StepRecord(
                step.index, True, leader, answer, votes, rounds, samples, red,
                ctok, ptok, latency, perf_counter() - t0,
            )  # fmt: skip
        need = k - margin
        if max_samples is not None:
            need = min(need, max_samples - samples)
        if rounds >= max_rounds or need <= 0 or (max_red is not None and dry >= max_red):
            return StepRecord(
                step.index, False, None, None, votes, rounds, samples, red,
                ctok, ptok, latency, perf_counter() - t0, dry,
            )  # fmt: skip
        temps = [rest] * need
