"""A simulated sampler: right with probability p, else one of a few wrong answers.

It exists to run the voting engine at a million steps and to check the voting law, and it
is named as simulated everywhere ("simulated p=0.99", simulated=True). No model, no
awaiting, no per-sample work beyond one random draw: the step's truth, wrong answers and
ready-made Sample objects are built once per step (wrong ones only when first drawn) and
reused for every sample of that step.
"""

from __future__ import annotations

import random
from typing import Any

from nanobot_tui.engine.voting.domains import Domain, Step
from nanobot_tui.engine.voting.samples import RED_PARSE, Sample


class SimulatedSampler:
    """Each valid sample is `domain.truth(step)` with probability p, else one of
    `domain.wrong_answers(step, wrong_choices)` uniformly. With red_flag_rate r, a sample
    is first red-flagged (reason `red_flag_reason`) with probability r, so p stays the
    success rate of VALID samples, the p that voting amplifies."""

    simulated = True

    def __init__(
        self,
        domain: Domain,
        p: float,
        wrong_choices: int = 3,
        seed: int | None = None,
        *,
        red_flag_rate: float = 0.0,
        red_flag_reason: str = RED_PARSE,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        if wrong_choices < 1:
            raise ValueError(f"wrong_choices must be >= 1, got {wrong_choices}")
        if not 0.0 <= red_flag_rate < 1.0:
            raise ValueError(f"red_flag_rate must be in [0, 1), got {red_flag_rate!r}")
        self.domain = domain
        self.p = p
        self.wrong_choices = wrong_choices
        self.seed = seed
        self.red_flag_rate = red_flag_rate
        self.red_flag_reason = red_flag_reason
        self.name = f"simulated p={p}"
        # One uniform draw u decides a sample: [0, flag) red flag, [flag, true) right,
        # [true, 1) wrong, the wrong one picked by where u falls in that last interval.
        self._flag = red_flag_rate
        self._true = red_flag_rate + (1.0 - red_flag_rate) * p
        self._scale = wrong_choices / (1.0 - self._true) if self._true < 1.0 else 0.0
        self._random = random.Random(seed).random
        self._flagged = Sample(None, None, red_flag_reason)
        self._step: Step | None = None
        self._right: Sample | None = None
        self._wrong: list[Sample] | None = None
        self._start_draws()

    def _start_draws(self) -> None:
        """Where a subclass that draws otherwise (seeded.py) sets up its own state."""

    def _prepare(self, step: Step) -> None:
        domain = self.domain
        answer = domain.truth(step)
        self._step = step
        self._right = Sample(answer, domain.key(answer))
        self._wrong = None  # built on first wrong draw: at p = 0.99 most steps need none

    def wrong_samples(self) -> list[Sample]:
        """The samples of the wrong answers of the step being drawn, in
        `domain.wrong_answers` order; empty until one of them was drawn."""
        return self._wrong or []

    def _wrongs(self, step: Step) -> list[Sample]:
        domain = self.domain
        answers = domain.wrong_answers(step, self.wrong_choices)
        self._wrong = [Sample(a, domain.key(a)) for a in answers]
        return self._wrong

    async def sample(
        self, step: Step, temperatures: list[float], paraphrase: int = 0
    ) -> list[Sample]:
        # Simulated samples do not depend on temperature or paraphrase; they carry the
        # default temperature of 0.0 (samples are shared, never copied, for speed).
        if step is not self._step:
            self._prepare(step)
        rand = self._random
        right = self._right
        true = self._true
        out: list[Any] = []
        for _ in temperatures:
            u = rand()
            if u < true:
                out.append(self._flagged if u < self._flag else right)
            else:
                wrong = self._wrong or self._wrongs(step)
                out.append(wrong[min(int((u - true) * self._scale), len(wrong) - 1)])
        return out
