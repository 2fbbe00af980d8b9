"""The A/B test that decides whether an adapter is kept: base against adapter on the
held-out steps of its step type, and the rules that promote and demote.

The test: every held-out example's prompt is asked twice of the same server, once with
the adapter at an explicit scale 0 (the base model) and once at scale 1, the two
requests interleaved (which goes first alternates) and greedy (temperature 0), each with
a fresh prompt (no KV cells computed under the other scale). Each reply is judged by the
example's verified answer: with the step type's domain, the two are equal when the
domain's strict parser reads them to the same key (a reply it refuses is wrong);
without one, when their text is equal, surrounding whitespace aside.

The numbers: p of each arm with its Wilson 95 % interval, and the paired difference
p_adapter - p_base with Newcombe's 95 % interval for paired proportions (method 10: it
is built from the two Wilson intervals and the correlation of the pairs, since both arms
answered the same prompts).

The rules:
- verdict "better" only when the adapter's lower bound is above the base's p AND the
  difference's interval lies above 0; "worse" when the mirror holds (the adapter's upper
  bound below the base's p and the interval below 0); otherwise "not better".
- a new adapter is promoted when its verdict is "better", else stays a candidate.
- a promoted adapter tested again is demoted when the new test puts it below the base
  (p_adapter < p_base); it stays promoted otherwise.
- a promoted adapter is demoted by live runs once at least `MIN_LIVE` of its voted steps
  were judged and the Wilson upper bound of their success rate is below the base's p of
  its A/B test. A voted step is decided right more often than one greedy answer is, so
  this only fires on an adapter that clearly hurts.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nanobot_tui.engine.learning.distill.dataset import TrainingExample
from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.errors import LLMError
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.serving.adapter_registry import Status
from nanobot_tui.engine.serving.lora import lora_fields
from nanobot_tui.engine.voting.calibration import wilson_interval
from nanobot_tui.engine.voting.domains import Domain, ParseError
from nanobot_tui.errors import NanobotError

__all__ = [
    "MIN_LIVE",
    "ABResult",
    "ABTestError",
    "Arm",
    "Judge",
    "ab_test",
    "compare",
    "live_demotes",
    "paired_difference_interval",
    "status_after_test",
    "truth_judge",
]

Z95 = 1.959963984540054
MIN_LIVE = 20  # voted steps judged before live runs may demote an adapter
# A right reply is the verified answer's text (whitespace aside), and a token is at least
# one character: more tokens than its characters (plus a margin) can only be wrong.
ANSWER_MARGIN = 4  # an end of turn, a newline

# Whether a reply is right for the held-out example it answers.
Judge = Callable[[str, TrainingExample], bool]


class ABTestError(NanobotError):
    """An A/B test that could not be run to its end (a request failed)."""


@dataclass(frozen=True, slots=True)
class Arm:
    right: int
    n: int

    @property
    def p(self) -> float:
        return self.right / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.right, self.n, Z95)


@dataclass(frozen=True, slots=True)
class ABResult:
    base: Arm
    adapter: Arm
    diff_interval: tuple[float, float]  # of p_adapter - p_base
    verdict: str  # "better" | "not better" | "worse"

    @property
    def n(self) -> int:
        return self.base.n

    def to_dict(self) -> dict[str, Any]:
        """What the adapters table keeps (serving/adapter_registry.py)."""
        return {
            "p_base": self.base.p,
            "base_ci": list(self.base.interval),
            "p_adapter": self.adapter.p,
            "adapter_ci": list(self.adapter.interval),
            "diff": self.adapter.p - self.base.p,
            "diff_ci": list(self.diff_interval),
            "n": self.n,
            "verdict": self.verdict,
        }

    def describe(self) -> str:
        (bl, bh), (al, ah), (dl, dh) = self.base.interval, self.adapter.interval, self.diff_interval
        return (
            f"p {self.base.p:.2f} [{bl:.2f}, {bh:.2f}] -> {self.adapter.p:.2f} "
            f"[{al:.2f}, {ah:.2f}], diff [{dl:+.2f}, {dh:+.2f}] on {self.n}: {self.verdict}"
        )


def paired_difference_interval(
    base: Sequence[bool], adapter: Sequence[bool], z: float = Z95
) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval for p_adapter - p_base on paired answers."""
    if len(base) != len(adapter) or not base:
        raise ValueError("need the same number (>= 1) of base and adapter answers")
    n = len(base)
    both = sum(1 for b, a in zip(base, adapter, strict=True) if a and b)
    only_adapter = sum(1 for b, a in zip(base, adapter, strict=True) if a and not b)
    only_base = sum(1 for b, a in zip(base, adapter, strict=True) if b and not a)
    neither = n - both - only_adapter - only_base
    p1, p2 = (both + only_adapter) / n, (both + only_base) / n  # adapter, base
    l1, u1 = wilson_interval(both + only_adapter, n, z)
    l2, u2 = wilson_interval(both + only_base, n, z)
    adapter_right, adapter_wrong = both + only_adapter, only_base + neither
    base_right, base_wrong = both + only_base, only_adapter + neither
    margins = adapter_right * adapter_wrong * base_right * base_wrong
    cross = both * neither - only_adapter * only_base
    if margins == 0:
        phi = 0.0
    elif cross > 0:  # Newcombe's continuity correction of the correlation
        phi = max(cross - n / 2, 0.0) / math.sqrt(margins)
    else:
        phi = cross / math.sqrt(margins)
    diff = p1 - p2
    lower = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    upper = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return max(-1.0, diff - math.sqrt(max(lower, 0.0))), min(1.0, diff + math.sqrt(max(upper, 0.0)))


def compare(base: Sequence[bool], adapter: Sequence[bool]) -> ABResult:
    """The A/B result of paired answers (base[i] and adapter[i] answered prompt i),
    with its verdict (the rule is in the module's docstring)."""
    diff = paired_difference_interval(base, adapter)
    base_arm, adapter_arm = Arm(sum(base), len(base)), Arm(sum(adapter), len(adapter))
    if adapter_arm.interval[0] > base_arm.p and diff[0] > 0:
        verdict = "better"
    elif adapter_arm.interval[1] < base_arm.p and diff[1] < 0:
        verdict = "worse"
    else:
        verdict = "not better"
    return ABResult(base_arm, adapter_arm, diff, verdict)


def status_after_test(current: Status, ab: Mapping[str, Any]) -> Status:
    """An adapter's status once an A/B test (`ABResult.to_dict()`) is in."""
    better = ab.get("verdict") == "better"
    if current == "promoted":
        return "demoted" if float(ab["p_adapter"]) < float(ab["p_base"]) else "promoted"
    if current == "candidate":
        return "promoted" if better else "candidate"
    return current  # off and demoted stay so until the user turns them on


def live_demotes(ab: Mapping[str, Any] | None, right: int, judged: int) -> bool:
    """Whether live runs (`right` of `judged` voted steps) demote a promoted adapter."""
    if ab is None or judged < MIN_LIVE:
        return False
    return wilson_interval(right, judged, Z95)[1] < float(ab["p_base"])


def truth_judge(domain: Domain | None) -> Judge:
    """Right when the reply reads as the example's verified answer (module docstring)."""
    if domain is None:
        return lambda reply, example: reply.strip() == example.answer.strip()
    keys: dict[str, Hashable] = {}

    def judge(reply: str, example: TrainingExample) -> bool:
        if example.answer not in keys:
            keys[example.answer] = domain.key(domain.parse_strict(example.answer))
        try:
            return domain.key(domain.parse_strict(reply)) == keys[example.answer]
        except (ParseError, ValueError):
            return False

    return judge


async def ab_test(
    client: ChatClient,
    adapter_id: int,
    heldout: Sequence[TrainingExample],
    judge: Judge,
    *,
    max_tokens: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> ABResult:
    """Run the A/B test of the adapter loaded as `adapter_id` on `client`'s server over
    the `heldout` examples (see the module's docstring); ABTestError if a request fails.
    Replies are capped at `max_tokens`, by default the example's answer length in
    characters plus ANSWER_MARGIN. `progress(done, total)` after each example."""
    if not heldout:
        raise ABTestError("an A/B test needs held-out examples; there are none")
    base: list[bool] = []
    adapter: list[bool] = []
    for i, example in enumerate(heldout):
        order = (0.0, 1.0) if i % 2 == 0 else (1.0, 0.0)
        for scale in order:
            request = ChatRequest(
                example.messages,
                temperature=0.0,
                max_tokens=max_tokens or len(example.answer) + ANSWER_MARGIN,
                seed=i,
                extra=lora_fields({adapter_id: scale}),
            )
            try:
                reply = (await client.chat(request)).content
            except LLMError as exc:
                raise ABTestError(f"A/B test, held-out example {i + 1}: {exc}") from None
            (adapter if scale else base).append(judge(reply, example))
        if progress is not None:
            progress(i + 1, len(heldout))
        await asyncio.sleep(0)
    return compare(base, adapter)
