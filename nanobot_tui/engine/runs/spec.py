"""What a durable run is: its spec (domain, sampler, votes, budgets, tree, retry policy),
stored in the run's meta table and rebuilt from there on every resume.

Everything a resumed runner needs is in the spec, so a run can be resumed by id alone, by
another process, after a reboot.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains import Domain
from nanobot_tui.engine.voting.domains.registry import NAMES, build_domain
from nanobot_tui.errors import UsageError

if TYPE_CHECKING:
    from nanobot_tui.config import SlotName

SIMULATED = "simulated"
LOCAL = "local"
ON_FAIL = ("escalate", "skip")
# The learning loops a run may use (see RunSpec.learn_loops), in their canonical order.
LEARN_LOOPS = ("reuse", "examples", "history")


class SpecError(UsageError, ValueError):
    """A spec that cannot run: bad input, exit 2; str() is one line."""


def parse_learn_loops(text: str) -> tuple[str, ...]:
    """'reuse,examples' -> ("reuse", "examples"); "" -> () (no loop); SpecError naming an
    unknown loop."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return _learn_loops(names)


def _learn_loops(names: Any) -> tuple[str, ...]:
    """`names` checked and put in the canonical order, without repeats."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise SpecError(f"learn_loops must be a list of loop names, got {names!r}")
    unknown = [name for name in names if name not in LEARN_LOOPS]
    if unknown:
        raise SpecError(f"unknown learning loop {unknown[0]!r} (known: {', '.join(LEARN_LOOPS)})")
    return tuple(name for name in LEARN_LOOPS if name in names)


@dataclass(frozen=True)
class Budgets:
    """Limits of one runner session; when one runs out the run stops cleanly ("stopped",
    with the reason) and `resume` goes on with a fresh session (and budget)."""

    steps: int | None = None
    tokens: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "tokens", "seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SpecError(f"budget {name} must be positive, got {value}")


@dataclass(frozen=True)
class RetryPolicy:
    """An undecided step is voted again up to `retries` times with a changed strategy
    (attempt 2: paraphrased prompts from the first round; attempt 3 on: k + attempt - 2,
    paraphrased), then `on_fail`: "skip" marks it skipped and goes on (only where the next
    input does not depend on it), "escalate" fails the run with the reason."""

    retries: int = 2
    on_fail: str = "escalate"

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise SpecError(f"retries must be >= 0, got {self.retries}")
        if self.on_fail not in ON_FAIL:
            raise SpecError(f"on_fail must be one of {', '.join(ON_FAIL)}, got {self.on_fail!r}")


@dataclass(frozen=True)
class RunSpec:
    domain: str  # "hanoi" | "wordcase"
    params: dict[str, Any]  # {"disks": 14} | {"words": 300, "seed": 0}
    sampler: str  # "simulated:0.99" | "local:rlm"
    vote: VoteConfig
    seed: int = 0  # the simulated sampler's (and the model requests') seed
    budgets: Budgets = field(default_factory=Budgets)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fanout: int = 10
    concurrency: int | None = None  # independent steps in flight; None: os.cpu_count()
    keep_samples: bool | None = None  # None: kept for real models, not for simulated ones
    traces: bool = True  # one JSON line per step execution in NANOBOT_HOME/traces/<run>.jsonl
    commit_interval: float = 0.05  # seconds between group commits while steps keep coming
    wrong_choices: int = 3  # simulated: distinct wrong answers
    red_flag_rate: float = 0.0  # simulated: share of samples red-flagged
    label: str = ""  # the readable part of the run id, e.g. "hanoi20"
    # Learning (engine.learning, through runs/learning_seam.py): reuse verified step
    # results and record the run in the task history. A stored spec without the key
    # (a run created before learning) reads as False, so a resumed old run runs as before.
    learn: bool = True
    # Which loops a learning run uses: "reuse" (L0 verified results), "examples" (L1
    # few-shot examples), "history" (the task record, budgets and k, anomalies). A
    # stored spec without the key reads all three (as runs did before the switch).
    learn_loops: tuple[str, ...] = LEARN_LOOPS
    # Sample across a Ray cluster's pool of model hosts (engine.cluster): the cluster's
    # address, "auto" (the one started on this machine) or "HOST:PORT"; None: the local
    # server. A stored spec without the key (a run from before) reads None.
    cluster: str | None = None

    def __post_init__(self) -> None:
        # Frozen: set through object's own setattr (a list from JSON becomes a tuple).
        object.__setattr__(self, "learn_loops", _learn_loops(self.learn_loops))
        if self.domain not in NAMES:
            raise SpecError(f"unknown domain {self.domain!r} (known: {', '.join(NAMES)})")
        kind, _, _ = self.sampler.partition(":")
        if kind not in (SIMULATED, LOCAL):
            raise SpecError(f"sampler must be 'simulated:P' or 'local:SLOT', got {self.sampler!r}")
        if kind == SIMULATED:
            p = self.p
            if not 0.0 <= p <= 1.0:
                raise SpecError(f"simulated p must be in [0, 1], got {p}")
        if self.fanout < 2:
            raise SpecError(f"fanout must be at least 2, got {self.fanout}")
        if not 0.0 < self.commit_interval <= 60.0:
            raise SpecError(f"commit_interval must be in (0, 60] s, got {self.commit_interval}")
        if self.cluster is not None and (kind != LOCAL or not self.cluster.strip()):
            raise SpecError(
                f"cluster {self.cluster!r}: a cluster needs a model sampler ('local:SLOT') "
                "and an address ('auto' or HOST:PORT)"
            )
        if self.concurrency is not None and self.concurrency < 1:
            raise SpecError(f"concurrency must be at least 1, got {self.concurrency}")

    # --- the sampler -------------------------------------------------------------------

    @property
    def simulated(self) -> bool:
        return self.sampler.partition(":")[0] == SIMULATED

    @property
    def p(self) -> float:
        try:
            return float(self.sampler.partition(":")[2])
        except ValueError:
            raise SpecError(f"simulated sampler needs a probability: {self.sampler!r}") from None

    @property
    def slot(self) -> SlotName:
        """The model slot a local sampler asks (the CLI offers only the config's slots)."""
        return cast("SlotName", self.sampler.partition(":")[2] or "rlm")

    @property
    def keeps_samples(self) -> bool:
        return (not self.simulated) if self.keep_samples is None else self.keep_samples

    @property
    def workers(self) -> int:
        return self.concurrency or os.cpu_count() or 1

    # --- the domain --------------------------------------------------------------------

    def build_domain(self) -> Domain:
        """A fresh domain instance for this spec (each thread that calls into a domain gets
        its own: Hanoi keeps a one-entry cache)."""
        return build_domain(self.domain, self.params)

    # --- JSON --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["vote"] = asdict(self.vote)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in data.items() if k in known}
        args.setdefault("learn", False)
        try:
            args["vote"] = VoteConfig(**data["vote"])
            args["budgets"] = Budgets(**(data.get("budgets") or {}))
            args["retry"] = RetryPolicy(**(data.get("retry") or {}))
            return cls(**args)
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"unreadable run spec: {exc}") from None

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "word_list")
        where = f" on cluster {self.cluster}" if self.cluster else ""
        return f"{self.domain} ({params}) with {self.sampler}{where}, k={self.vote.k}"
