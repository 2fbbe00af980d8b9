"""What a sampler hands the voting engine: samples, each parsed and maybe red-flagged."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from nanobot_tui.engine.voting.domains import Step

# MAKER discarded answers past 750 tokens: error rates jump beyond ~700.
DEFAULT_TOKEN_CAP = 750

# Red-flag reasons. A red-flagged sample is discarded, never repaired, and never votes.
RED_PARSE = "parse"  # the domain's strict parser refused it
RED_TOO_LONG = "too_long"  # more completion tokens than the cap
RED_TRUNCATED = "truncated"  # the server stopped it (finish_reason "length") under the cap
RED_ERROR = "error"  # the request failed (server error, timeout): no answer at all


@dataclass(frozen=True, slots=True)
class Sample:
    answer: Any  # the strictly parsed answer; None when red-flagged
    key: Hashable | None  # the domain's canonical key; None when red-flagged
    red_flag: str | None = None
    text: str = ""  # the raw reply ("" for simulated samples)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    latency_s: float = 0.0
    temperature: float = 0.0


class Sampler(Protocol):
    """Draws answers for a step. `name` says what it is: "simulated p=0.99" or
    "local rlm: SmolLM2-135M-Instruct" (simulated samplers are named as such everywhere)."""

    name: str
    simulated: bool

    async def sample(
        self, step: Step, temperatures: list[float], paraphrase: int = 0
    ) -> list[Sample]:
        """One sample per temperature, drawn concurrently where the sampler can."""
        ...


@runtime_checkable
class Retrying(Protocol):
    """A sampler whose draws depend on the attempt (the simulated ones, which a resumed
    run must reproduce): the runner says which attempt of a step it votes next."""

    def begin_attempt(self, step: Step | None, attempt: int) -> None: ...


@runtime_checkable
class Forking(Protocol):
    """A sampler that keeps per-step state: `fork` gives an independent copy for each
    concurrent worker."""

    def fork(self) -> Sampler: ...
