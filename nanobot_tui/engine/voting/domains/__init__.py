"""Step domains for MAKER-style runs: how one step is asked, parsed and checked.

A domain turns a long task into atomic steps (maximal decomposition). For each step it
builds a minimal prompt (the strategy, the current state, the previous move), parses a
model's answer strictly (for voting: anything malformed is red-flagged, never repaired)
or leniently (for calibration: what did the model mean?), gives answers a canonical key
to vote on, and knows the true answer, to verify and to simulate.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from nanobot_tui.errors import NanobotError


class ParseError(NanobotError, ValueError):
    """An answer that fails a parser; the message says why, in one line."""


@dataclass(frozen=True)
class Step:
    """One atomic step: its number (0-based) and the domain's own input for it."""

    index: int
    input: Any  # e.g. Hanoi: (state, previous move); word case: the word


class Domain(Protocol):
    """Everything the voting engine, the durable runner and the run store ask of a
    domain."""

    name: str
    # True: a step's input never depends on an earlier answer (word case): steps may be
    # voted concurrently, and an undecided one does not stop a run. False: each step is
    # handed the state the previous answer left (Hanoi), so steps go strictly in order.
    independent_steps: bool

    def steps(self) -> Iterator[Step]:
        """The task's steps in order, from the true solution (for simulation and runs
        whose state does not depend on earlier answers)."""
        ...

    def total_steps(self) -> int: ...

    def groups(self) -> list[tuple[str, int]] | None:
        """The steps' groups as (label, number of consecutive steps), in step order and
        adding up to total_steps() (a code run: each file and its functions' steps), for
        the run's tree; None: blocks of `fanout` steps."""
        ...

    def step_at(self, index: int) -> Step:
        """Step `index` (0-based) of the true solution, without going through the ones
        before it; ValueError outside 0..total_steps() - 1."""
        ...

    def random_step(self, rng: Any) -> Step:
        """An independent step drawn at random, for calibration."""
        ...

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        """The chat messages for one step; paraphrase > 0 rewords the prompt (same
        meaning) to decorrelate errors on stubborn steps."""
        ...

    def parse_strict(self, text: str, step: Step | None = None) -> Any:
        """The answer, or ParseError: the exact format the prompt asks for. `step` is the
        step it answers, for domains that check an answer against its own input (code:
        an edit of that function); the samplers always pass it."""
        ...

    def parse_lenient(self, text: str, step: Step | None = None) -> Any:
        """The answer, or ParseError: what the model most plausibly meant (`step` as for
        `parse_strict`)."""
        ...

    def key(self, answer: Any) -> Hashable:
        """The canonical form two answers are compared by when voting."""
        ...

    def describe(self, key: Hashable) -> str:
        """A short display form of a voted key (the vote counter pane, the run store)."""
        ...

    def truth(self, step: Step) -> Any:
        """The correct answer for the step."""
        ...

    def wrong_answers(self, step: Step, count: int) -> list[Any]:
        """Plausible wrong answers (distinct, each != truth), for the simulated sampler."""
        ...

    def next_step(self, step: Step, answer: Any) -> Step | None:
        """The step after `step` when `answer` was chosen (state handed on in structured
        form), or None when the task is done."""
        ...

    def is_solved(self, step: Step | None, last_answer: Any) -> bool:
        """Whether the run ended in the solved state."""
        ...

    # --- JSON, for the run store ----------------------------------------------------

    def dump_step(self, step: Step) -> Any:
        """A step's input as JSON-safe data."""
        ...

    def load_step(self, index: int, data: Any) -> Step:
        """Step `index` from what `dump_step` wrote; ParseError if it is not one."""
        ...

    def dump_answer(self, answer: Any) -> Any:
        """An answer as JSON-safe data."""
        ...

    def load_answer(self, data: Any) -> Any:
        """The answer `dump_answer` wrote; ParseError if it is not one."""
        ...


@runtime_checkable
class FreshSteps(Protocol):
    """A domain that can make steps beyond its own task, each with a truth it knows (word
    case, the micro families): what an adapter's A/B test runs on, steps never trained on
    (engine/learning/distill/dataset.py `fresh_examples`)."""

    def fresh_steps(self, exclude: Collection[str], n: int, seed: int = 0) -> list[Step]:
        """Up to `n` distinct steps, in an order fixed by `seed`, whose user message (the
        last of `messages(step)`) is none of `exclude`; fewer when the domain has no more."""
        ...
