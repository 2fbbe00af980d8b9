"""Micro: ten families of one-line tasks with checkable answers, one step per item.

Each family (see `micro_families.FAMILIES`: wordcase, city, email, dates, units, code,
sentiment, numbers, sums, capitals) turns an input into one answer, written as the single
line `answer = X`. The prompt is word case's "turns" style, the one that did best on the
embedded 135M model: the instruction as the system message, the worked examples as
user/assistant turns, then the item. Steps are independent, as in word case: the next
item comes whatever was answered, so a run is a sequence of independent votes, and
families of very different difficulty can be compared under the same machinery (the
learning-curve benchmark).

Measured on the embedded SmolLM2-135M (`nanobot calibrate --domain micro --family F
--words 60 --samples 20`, temperature 0.1, lenient scoring; 20 samples each, so the 95 %
CIs are wide; measured on a shared, loaded machine):

    family     p     95% CI      strict red flags
    city       1.00  0.84-1.00   0 %
    wordcase   0.85  0.64-0.95   0 %
    sentiment  0.75  0.53-0.89   0 %
    numbers    0.75  0.53-0.89   0 %
    email      0.70  0.48-0.85   0 %
    code       0.65  0.43-0.82   10 % (runaway replies)
    capitals   0.60  0.39-0.78   10 %
    dates      0.50  0.30-0.70   0 %
    sums       0.25  0.11-0.47   0 %
    units      0.15  0.05-0.36   45 %

The model cannot do units (it keeps the digits but picks the wrong unit or factor: 8 h ->
"12000 g", 30 kg -> "30000 kg") nor sums (9 + 11 -> "10"): p below 0.5, where voting
only makes the wrong answer surer. Dates is at the edge (p about 0.5). The rest are
above 0.5, city near certain; code's errors are lines left unchanged (tuple() kept)
and replies that run on to the token cap.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Hashable, Iterator
from typing import Any

from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.voting.domains.micro_families import FAMILIES, Family

_PREFIX = "answer ="
_DRY_POOLS = 3  # pools in a row without a new item before fresh_steps gives up


class Micro:
    """`count` items of family `family` (drawn from its pool with `seed`, a fresh
    shuffle of the pool each time it runs out), or the `items` given."""

    independent_steps = True

    def __init__(
        self, family: str, items: list[str] | None = None, count: int = 20, seed: int = 0
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; one of: {', '.join(FAMILIES)}")
        self.family: Family = FAMILIES[family]
        if items is None:
            if count < 1:
                raise ValueError(f"count must be >= 1, got {count}")
            rng = random.Random(seed)
            pool = list(self.family.pool(seed))
            picked: list[str] = []
            while len(picked) < count:
                batch = list(pool)
                rng.shuffle(batch)
                picked.extend(batch[: count - len(picked)])
            items = picked
        else:
            items = [str(item).strip() for item in items]
            if not items:
                raise ValueError("items must not be empty")
            for item in items:
                self.family.truth(item)  # ValueError for an input the family cannot answer
        self.items: list[str] = items
        # Per family, like a code recipe's "code-<recipe>": calibrations are kept under
        # the name, and each family has its own p.
        self.name = f"micro-{family}"
        self._prefix = [self._prefix_messages(i) for i in range(3)]

    # --- steps -----------------------------------------------------------------------

    def total_steps(self) -> int:
        return len(self.items)

    def groups(self) -> list[tuple[str, int]] | None:
        return None

    def steps(self) -> Iterator[Step]:
        for i, item in enumerate(self.items):
            yield Step(i, item)

    def step_at(self, index: int) -> Step:
        if not 0 <= index < len(self.items):
            raise ValueError(f"step must be in 0..{len(self.items) - 1}, got {index}")
        return Step(index, self.items[index])

    def random_step(self, rng: Any) -> Step:
        """A random item of this instance; rng is a random.Random or a numpy Generator."""
        n = len(self.items)
        i = rng.randrange(n) if hasattr(rng, "randrange") else int(rng.integers(n))
        return Step(i, self.items[i])

    def fresh_steps(self, exclude: Collection[str], n: int, seed: int = 0) -> list[Step]:
        """Up to `n` distinct items of the family's pools (seed, seed + 1, ...) whose user
        message is not in `exclude` (domains.FreshSteps); the pools are drawn until
        `_DRY_POOLS` in a row bring nothing new (a family with a fixed list has no more)."""
        out: list[Step] = []
        seen: set[str] = set()
        dry = 0
        pool_seed = seed
        while len(out) < n and dry < _DRY_POOLS:
            dry += 1
            for item in self.family.pool(pool_seed):
                if len(out) >= n:
                    break
                if item in seen:
                    continue
                seen.add(item)
                dry = 0
                step = Step(len(out), item)
                if self.messages(step)[-1]["content"] not in exclude:
                    out.append(step)
            pool_seed += 1
        return out

    # --- prompts ---------------------------------------------------------------------

    def _prefix_messages(self, variant: int) -> list[dict[str, str]]:
        """Everything before the item, the same for every step of a paraphrase (the
        server's prompt cache serves it)."""
        examples = self.family.examples[variant:] + self.family.examples[:variant]
        out = [{"role": "system", "content": self.family.instructions[variant]}]
        for item, answer in examples:
            out.append({"role": "user", "content": item})
            out.append({"role": "assistant", "content": f"{_PREFIX} {answer}"})
        return out

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        prefix = self._prefix[paraphrase % len(self._prefix)]
        return [*prefix, {"role": "user", "content": str(step.input)}]

    # --- parsing ---------------------------------------------------------------------

    def parse_strict(self, text: str, step: Step | None = None) -> str:
        """Exactly one line `answer = X`, X in the family's answer form; anything else
        is a ParseError saying what was wrong."""
        body = text.strip()
        if not body:
            raise ParseError("empty answer")
        if "\n" in body:
            raise ParseError(f"expected one line, got {len(body.splitlines())}")
        if not body.startswith(_PREFIX + " "):
            raise ParseError(f"not 'answer = X': {body[:60]!r}")
        value = body[len(_PREFIX) + 1 :]
        if value != value.strip() or not self.family.valid(value):
            raise ParseError(f"not a {self.family.name} answer: {value[:60]!r}")
        return value

    def parse_lenient(self, text: str, step: Step | None = None) -> str:
        """What the model meant: the rest of the line after `answer =` (or `answer:`),
        any case, quotes, backticks and a final full stop aside; else its first
        non-empty line."""
        lowered = text.lower()
        at = lowered.find("answer")
        value = ""
        if at >= 0:
            rest = text[at + len("answer") :].lstrip(" \t")
            if rest[:1] in ("=", ":"):
                value = rest[1:].split("\n", 1)[0]
        if not value.strip():
            value = next((line for line in text.splitlines() if line.strip()), "")
        value = value.strip().strip("`").strip()
        if self.family.name != "code":  # in code, quotes and dots are part of the answer
            value = value.strip("\"'").removesuffix(".").strip()
        if not value:
            raise ParseError(f"no answer found: {text.strip()[:60]!r}")
        return value

    def key(self, answer: str) -> Hashable:
        return self.family.key(answer)

    def describe(self, key: Hashable) -> str:
        return str(key)

    # --- truth ----------------------------------------------------------------------

    def truth(self, step: Step) -> str:
        return self.family.truth(str(step.input))

    def wrong_answers(self, step: Step, count: int) -> list[str]:
        """Distinct plausible wrong answers, most plausible first (the family's own)."""
        if count <= 0:
            return []
        return self.family.wrong_answers(str(step.input), count)

    # --- handing on -----------------------------------------------------------------

    def next_step(self, step: Step, answer: Any) -> Step | None:
        i = step.index + 1
        return Step(i, self.items[i]) if i < len(self.items) else None

    def is_solved(self, step: Step | None, last_answer: Any) -> bool:
        return step is None and last_answer is not None

    # --- JSON, for the run store ----------------------------------------------------------

    def dump_step(self, step: Step) -> str:
        return str(step.input)

    def load_step(self, index: int, data: Any) -> Step:
        if not isinstance(data, str):
            raise ParseError(f"a micro step is its input text, not {data!r}")
        return Step(index, data)

    def dump_answer(self, answer: str) -> str:
        return answer

    def load_answer(self, data: Any) -> str:
        if not isinstance(data, str):
            raise ParseError(f"a micro answer is a string, not {data!r}")
        return data
