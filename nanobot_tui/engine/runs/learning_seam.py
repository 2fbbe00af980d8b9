"""The seam through which a durable run takes what the learning loops learned, and gives
back what it verified, without importing them (engine.learning sits above runs).

A run whose spec says `learn` with at least one of its `learn_loops` (and whose config
leaves learning on) gets a `StepMemory`, built by
`engine.learning.run_memory.open_run_memory`, imported here by name only when such a run
starts (as the voting registry builds the code domain). Its uses:

- `recall(step)` before a step is voted: the step's verified answer from an earlier run
  (same step type, same canonical input, same prompt, same model), or None. A hit is
  stored as a completed step with 0 attempts and 0 samples (its votes: the answer with 0
  votes): no model call was made. Only for a real model's run (`reuses`).
- `remember(step, answer, verified_by, text)` after a step was decided and verified
  ("truth": the domain knows the right answer and the winner is it), so a later run can
  reuse it; `text` is the winning reply as the model wrote it (a few-shot example).
- `judged(step, outcome)` after every voted step: "right", "wrong", "undecided" or None
  (no verdict possible), for the examples the step's prompt was given.
- `attach(sampler)` once, before the first step: lets the memory give the sampler its
  few-shot examples.
- `finished(outcome, meta)` once when a session ends (`meta`: the run's meta as the
  session began): the run's task record for the history (budgets from history,
  anomalies); returns what the run's meta keeps under "learning" ({"task_type",
  "reused", "recorded": its history id, "anomaly": one line}), or None.
- `close()` when the session ends.

Simulated runs never call recall, remember, judged (their hot path is left alone); they
still end with `finished`, for the history.

The memory honours the spec's `learn_loops`: without "reuse" recall finds nothing and
remember keeps no result, without "examples" attach gives no examples and no example is
kept or judged, without "history" finished records nothing.

A memory never fails a run: what it cannot do (a damaged learned.db) it logs and skips.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from nanobot_tui.errors import NanobotError

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.spec import RunSpec
    from nanobot_tui.engine.voting.domains import Domain, Step
    from nanobot_tui.engine.voting.samples import Sampler

__all__ = ["MEMORY_MODULE", "RunOutcome", "StepMemory", "learning_enabled", "open_memory"]

log = logging.getLogger(__name__)

MEMORY_MODULE = "nanobot_tui.engine.learning.run_memory"
Outcome = Literal["right", "wrong", "undecided"]


@dataclass(frozen=True)
class RunOutcome:
    """How a session ended and what the whole run has cost so far (its totals)."""

    status: str  # completed | failed | stopped | paused | cancelled
    reason: str
    solved: bool
    steps: int  # steps done, reused ones included
    tokens: int
    seconds: float  # active time, every session
    samples: int
    p: float | None  # valid samples that were right, where the truth was known
    reused: int  # steps answered from what was learned, in this session


class StepMemory(Protocol):
    reuses: bool  # recall/remember are live (a real model's run); False: history only

    def recall(self, step: Step) -> Any | None: ...

    def remember(self, step: Step, answer: Any, verified_by: str, text: str | None) -> None: ...

    def judged(self, step: Step, outcome: Outcome | None) -> None: ...

    def attach(self, sampler: Sampler) -> None: ...

    def finished(self, outcome: RunOutcome, meta: dict[str, Any]) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


def learning_enabled() -> bool:
    """The config's `learning.enabled` (on when there is no config file; a config that
    cannot be read leaves it on: the command that needs the config says what is wrong)."""
    from nanobot_tui.config import load_config_file

    with contextlib.suppress(NanobotError):
        config = load_config_file()
        if config is not None:
            return config.learning.enabled
    return True


def open_memory(run_id: str, spec: RunSpec, domain: Domain, sampler: Sampler) -> StepMemory | None:
    """The run's memory, or None when the spec (`learn`, or no `learn_loops`) or the
    config turns learning off, or when learned.db cannot be used (logged: the run goes
    on without learning)."""
    if not spec.learn or not spec.learn_loops or not learning_enabled():
        return None
    try:
        module = importlib.import_module(MEMORY_MODULE)
        memory: StepMemory = module.open_run_memory(run_id, spec, domain, sampler)
    except NanobotError as exc:
        log.warning("run %s goes on without learning: %s", run_id, exc)
        return None
    return memory
