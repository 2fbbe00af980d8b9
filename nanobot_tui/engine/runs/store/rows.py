"""The rows a run store hands out (NodeRow, StepRow, SampleRow) and takes in from the
runner (StepOut with its AttemptOuts, in Batches), and the compact forms of stored rows.

Compact rows. At 150,000 simulated steps a second, binding fifteen values a row would
cost more than the whole vote, so what can be derived is not stored: in a simulated run
of a domain whose steps go in order (the run always goes on from the truth) `input` is
NULL and means `domain.step_at(step)`; an answer that is the truth (simulated,
correct = 1) is NULL; `votes` NULL means every valid vote went to the winner. The read
API fills in all of these (`row_input`, `row_answer`), so a reader never sees a NULL it
has to interpret.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from nanobot_tui.engine.voting.domains import Domain, Step

# --- what the read API returns -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node of the process tree: the root, a block, or a step (kind "step", synthesised
    from its `steps` row; id = layout step_base + step)."""

    id: int
    parent: int | None
    kind: str  # "root" | "block" | "step"
    ordinal: int  # position among its siblings
    first_step: int
    last_step: int
    status: str  # pending | running | completed | failed | skipped
    attempts: int
    started: float | None
    finished: float | None
    completed_children: int
    failed_children: int
    samples: int
    tokens: int
    errors: int
    summary: str | None
    error: str | None
    level: int = 0  # 0 for steps, 1 for blocks of steps, ..., the root highest
    children: int = 0  # how many children it has
    # A grouped run's block: its group's label (a file's path), or above the groups its
    # first and last group's ("a.py … f.py"); None otherwise.
    label: str | None = None

    @property
    def step(self) -> int | None:
        return self.first_step if self.kind == "step" else None


@dataclass(frozen=True, slots=True)
class StepRow:
    step: int
    node: int  # the block that holds it
    status: str
    input: Any  # the domain's JSON form of the step's input
    answer: Any  # the winner's answer (JSON form), None when there was none
    votes: dict[str, int]  # display key -> valid votes
    rounds: int
    samples: int
    valid: int
    red_flags: dict[str, int]
    completion_tokens: int
    latency_ms: float | None  # summed model time of its samples
    wall_ms: float | None  # wall time of the step (all attempts)
    attempts: int
    correct: bool | None  # None: no truth to check against
    error: str | None
    winner: str | None = None  # display key of the winner


@dataclass(frozen=True, slots=True)
class SampleRow:
    step: int
    attempt: int
    i: int
    key: str | None  # display key (None: red-flagged)
    red_flag: str | None
    temperature: float | None
    tokens: int | None
    latency_ms: float | None
    text: str  # the raw reply, at most 4 KB


# --- what the runner hands the writer ----------------------------------------------------


@dataclass(slots=True)
class AttemptOut:
    """An earlier, undecided attempt of a step."""

    attempt: int
    status: str
    answer: str | None
    votes: str | None
    rounds: int
    samples: int
    valid: int
    red_flags: str | None
    tokens: int
    latency_ms: float | None
    wall_ms: float | None
    error: str | None


@dataclass(slots=True)
class StepOut:
    """A step's final row, for everything that is not a plain run of simulated steps."""

    step: int
    status: str  # completed | skipped | failed
    input: str | None
    answer: str | None
    votes: str | None
    rounds: int
    samples: int
    valid: int
    red_flags: dict[str, int] | None
    tokens: int
    latency_ms: float | None
    wall_ms: float | None
    attempts: int
    correct: int | None
    error: str | None  # "<reason>: <message>" for skipped and failed steps
    reason: str | None = None  # errors-by-reason key: wrong, undecided, invalid_state, ...
    earlier: list[AttemptOut] = field(default_factory=list)
    sample_rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    runs: list[tuple[int, int, int, int]] = field(default_factory=list)  # plain steps
    # Simulated steps won by the truth, votes not unanimous: (step, rounds, samples, valid,
    # votes JSON, red flags JSON or None).
    mixed: list[tuple[int, int, int, int, str, str | None]] = field(default_factory=list)
    rows: list[StepOut] = field(default_factory=list)
    inflight: list[int] | None = None
    meta: dict[str, Any] | None = None
    deletes: list[int] = field(default_factory=list)  # failed steps to vote again
    elapsed: float | None = None  # active seconds, all sessions
    done: threading.Event | None = None  # set once this batch is committed

    def empty(self) -> bool:
        return not (self.runs or self.mixed or self.rows or self.deletes)


# --- compact forms --------------------------------------------------------------------------


def row_input(domain: Domain, step: int, stored: str | None) -> Step:
    """A step row's input: the stored one, else (NULL) the step of the true solution."""
    if stored is not None:
        return domain.load_step(step, json.loads(stored))
    return domain.step_at(step)


def row_answer(
    domain: Domain, step: int, stored_input: str | None, stored: str | None, correct: int | None
) -> Any:
    """A step row's answer: the stored one, else (NULL) the truth where the step was
    right, else None (there was no winner)."""
    if stored is not None:
        return domain.load_answer(json.loads(stored))
    if correct == 1:
        return domain.truth(row_input(domain, step, stored_input))
    return None


def describe(domain: Domain, key: Hashable) -> str:
    """The domain's display form of a voted key; str(key) where it has none for it."""
    try:
        return str(domain.describe(key))
    except Exception:
        return str(key)


def with_summary(row: NodeRow, summary: str) -> NodeRow:
    return replace(row, summary=summary)
