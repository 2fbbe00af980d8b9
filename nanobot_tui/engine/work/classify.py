"""Which recipe a free-text task asks for: a voted classification by the main model.

The task is one step of a tiny domain whose answer is a recipe's name (anything else is a
red flag), voted first-to-ahead-by-k like every step, so one stray sample does not pick
the recipe. A vote that ends undecided falls back to `instruction` (the task applied to
every function as written), which is always a sound reading of a task. `OneQuestion` and
`vote_once` are the machinery of such a one-step vote, shared with plan.py.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.voting.ahead_by_k import StepRecord, VoteConfig, vote
from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from nanobot_tui.engine.work.recipes import RECIPES

FALLBACK = "instruction"
_WORD = re.compile(r"[a-z][a-z-]{1,30}")


@dataclass(frozen=True)
class Classification:
    recipe: str
    decided: bool
    votes: dict[str, int]
    samples: int

    def line(self) -> str:
        tally = ", ".join(f"{name} {n}" for name, n in sorted(self.votes.items())) or "no votes"
        how = "voted" if self.decided else "undecided, so the fallback"
        return f"recipe: {self.recipe} ({how}; {tally}; {self.samples} sample(s))"


class OneQuestion:
    """A domain of one step: `task` asked once, with no known truth (the Domain protocol,
    for the voting engine). A subclass says how to ask (`messages`), how to read a reply
    (`parse_strict`, a ParseError being a red flag) and what counts as the same answer
    (`key`)."""

    name = "one-question"
    independent_steps = True

    def __init__(self, task: str) -> None:
        self.task = task

    def steps(self) -> Iterator[Step]:
        yield Step(0, self.task)

    def total_steps(self) -> int:
        return 1

    def step_at(self, index: int) -> Step:
        if index != 0:
            raise ValueError(f"no step {index}")
        return Step(0, self.task)

    def random_step(self, rng: Any) -> Step:
        return Step(0, self.task)

    def groups(self) -> None:
        return None

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        raise NotImplementedError

    def parse_strict(self, text: str, step: Step | None = None) -> Any:
        raise NotImplementedError

    def parse_lenient(self, text: str, step: Step | None = None) -> Any:
        return self.parse_strict(text, step)

    def key(self, answer: Any) -> Hashable:
        return answer

    def describe(self, key: Hashable) -> str:
        return str(key)

    def truth(self, step: Step) -> Any:
        raise ValueError(f"a {self.name} answer has no known truth")

    def wrong_answers(self, step: Step, count: int) -> list[Any]:
        return []

    def next_step(self, step: Step, answer: Any) -> Step | None:
        return None

    def is_solved(self, step: Step | None, last_answer: Any) -> bool:
        return True

    def dump_step(self, step: Step) -> Any:
        return step.input

    def load_step(self, index: int, data: Any) -> Step:
        return Step(index, str(data))

    def dump_answer(self, answer: Any) -> Any:
        return answer

    def load_answer(self, data: Any) -> Any:
        return data


async def vote_once(
    domain: OneQuestion,
    client: ChatClient,
    name: str,
    *,
    token_cap: int,
    k: int = 2,
    max_red_rounds: int = 4,
) -> StepRecord:
    """`domain`'s one question voted first-to-ahead-by-k by the model behind `client`
    (at most 12 samples; `max_red_rounds` rounds in a row with no valid sample end it
    undecided)."""
    sampler = LLMSampler(client, domain, name=name, token_cap=token_cap)
    cfg = VoteConfig(k=k, max_samples=12, max_red_rounds=max_red_rounds, temperature_rest=0.7)
    return await vote(sampler, Step(0, domain.task), cfg)


class RecipeQuestion(OneQuestion):
    """A question about `task` whose answers are made of recipe names."""

    def __init__(self, task: str) -> None:
        super().__init__(task)
        self.names = tuple(RECIPES)

    def menu(self) -> str:
        """The recipes with what each does, one per line, for the prompt."""
        return "\n".join(f"- {name}: {RECIPES[name].summary}" for name in self.names)


class TaskKind(RecipeQuestion):
    """One step: name the recipe for `task`."""

    name = "task-kind"

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        menu = self.menu()
        ask = (
            "Which recipe does this task ask for?"
            if paraphrase == 0
            else "Pick the one recipe that best matches the task."
        )
        return [
            {
                "role": "system",
                "content": f"You sort code tasks into recipes. The recipes:\n{menu}\n"
                "Answer with the recipe's name only.",
            },
            {"role": "user", "content": f"Task: {step.input}\n{ask}"},
        ]

    def parse_strict(self, text: str, step: Step | None = None) -> str:
        answer = text.strip().strip("`'\".").lower()
        if answer not in self.names:
            raise ParseError("not a recipe name")
        return answer

    def parse_lenient(self, text: str, step: Step | None = None) -> str:
        for word in _WORD.findall(text.lower()):
            if word in self.names:
                return word
        raise ParseError("names no recipe")

    def load_answer(self, data: Any) -> str:
        return str(data)


async def classify(task: str, client: ChatClient, name: str, *, k: int = 2) -> Classification:
    """The recipe `task` asks for, voted by the model behind `client` (at most 12
    samples; undecided: `instruction`)."""
    record = await vote_once(TaskKind(task), client, name, token_cap=16, k=k)
    votes = {str(key): n for key, n in record.votes.items()}
    if record.decided and isinstance(record.winner_answer, str):
        return Classification(record.winner_answer, True, votes, record.samples)
    return Classification(FALLBACK, False, votes, record.samples)
