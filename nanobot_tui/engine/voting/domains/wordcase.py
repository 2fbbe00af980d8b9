"""Word case: a micro-step domain a 135M model can do better than chance.

One step per word: the agent sees a few worked examples and one common English word and
must answer exactly `answer = WORD`, the word in upper case. The steps do not depend on
each other (the next step is the next word whatever the answer was), so a run is a plain
sequence of independent votes: the simplest setting in which to check that voting turns a
per-step success rate p > 0.5 into fewer errors, and that calibration predicts them.

Measured on the embedded SmolLM2-135M (temperature 0.1, lenient scoring): p = 0.64
(95 % CI 0.57-0.70, 200 samples) with the default prompt, far above the 0.5 that voting
needs; its errors are real model errors: a letter dropped or changed (FLOOR -> FLORES),
a different word (WOMAN -> WOMEN, CAR -> CARBON). Prompt styles (see `PROMPTS`), same
words and seeds: "turns" 0.61 and 0.61 (120 and 200 samples), "labels" 0.63 and 0.60,
"list" 0.03 (the model chats about the word instead).

A caution for voting: this model's errors are word-specific, not random. Eight samples of
each of 80 words: 43 words right 8/8, 25 words right 0/8, only 12 in between; neither
the paraphrases nor temperatures up to 1.0 rescue the hard words. Voting makes the easy
words certain and cannot fix the hard ones, so a voted run's error rate stays near the
share of hard words, far above what p_vote(p, k) predicts for independent samples.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Hashable, Iterator
from typing import Any

from nanobot_tui.engine.voting.domains import ParseError, Step

# Common English words, lower case, none of them used in the examples. Only words of 3 to 6
# letters are asked: the 135M model's success falls with length (measured at temperature
# 0.1: 0.72 for 3-4 letters, 0.58 for 5-6, 0.45 for 7, none right at 8-9).
VOCABULARY: tuple[str, ...] = tuple(
    """
    about above across after again air almost along also always animal any area around
    away baby back ball bank basket beach bear bed before begin behind bell best better
    big bird black blue board boat body bone book both bottle box boy bread break bring
    brown build burn busy buy cake call camera candle car card care carry castle cat
    chair change cheap cheese child city class clean clear clock close cloud coat coffee
    cold color come cook cool corner cow cup cut dance dark day deep desk dinner doctor
    dog door down dream dress drink drive dry duck during early earth east easy eat egg
    empty end engine enough even every eye face fall family farm fast father field fire
    first fish five floor flower fly follow food foot forest four free friend front
    fruit full game garden gate girl give glass gold good grass great ground group grow
    hair half hand happy hard hat head hear heart heavy help high hill hold home horse
    hot hour island jacket job juice jump key kind king knife lake lamp land large late
    laugh leaf learn left letter light line lion little long look love low lunch make
    man many market milk minute money monkey month moon mother mouse mouth music name
    near never new night north number ocean office old open orange other page paint
    paper park party pencil people piano place plant play pocket point pool poor potato
    power pretty queen quick quiet rabbit radio rain read ready red rich right ring road
    rock room round run salt sand school sea season seven sheep ship shirt shoe short
    show sing sister small smile snow soft song soup south speak spring square star
    stone store story street strong summer sun sweet swim tall tent thank thing three
    tiger time today train tree truck turn under until voice wait walk wall warm watch
    water week west wheel white wind window winter woman wood word work world write
    yellow young zebra
    """.split()
)

# The worked examples (never asked as steps). Short and long words, one with a double
# letter, so the model sees letters copied one by one.
EXAMPLES: tuple[str, ...] = ("apple", "house", "green", "butter", "river", "table")

_INSTRUCTIONS = (
    "Rewrite the word in upper case (capital letters). Reply with one line only: answer = WORD",
    "Turn the given word into capital letters. Answer with exactly one line in the form "
    "answer = WORD",
    "Write the word using only capital letters, nothing else. The reply is a single line: "
    "answer = WORD",
)

# Prompt styles measured on the embedded SmolLM2-135M (see `messages`):
#   "turns":  the examples as user/assistant turns after a system instruction;
#   "list":   one user message listing `word -> answer = WORD` lines, then the word;
#   "labels": turns whose user messages read `Word: apple`.
PROMPTS = ("turns", "list", "labels")

_STRICT = re.compile(r"answer = ([A-Z]+)")
_LABELLED = re.compile(r"answer\s*[=:]\s*([A-Za-z]+)", re.IGNORECASE)
_CAPS = re.compile(r"\b[A-Z]{2,}\b")


class WordCase:
    """Upper-case `count` common English words, one per step.

    `words` gives the list outright; otherwise `count` words are drawn from `VOCABULARY`
    with `seed` (a fresh shuffle of the whole vocabulary each time it runs out, so
    words repeat only when count exceeds it).
    """

    # Each step's input is the next word whatever was answered before: steps can run in
    # any order, and an undecided one does not stop the run.
    independent_steps = True

    def __init__(
        self,
        words: list[str] | None = None,
        count: int = 300,
        seed: int = 0,
        *,
        prompt: str = "turns",
    ) -> None:
        if words is None:
            if count < 1:
                raise ValueError(f"count must be >= 1, got {count}")
            rng = random.Random(seed)
            picked: list[str] = []
            while len(picked) < count:
                batch = list(VOCABULARY)
                rng.shuffle(batch)
                picked.extend(batch[: count - len(picked)])
            words = picked
        else:
            words = [w.strip() for w in words]
            if not words:
                raise ValueError("words must not be empty")
            for w in words:
                if not w.isalpha() or not w.isascii():
                    raise ValueError(f"not a plain word (ASCII letters only): {w!r}")
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {', '.join(PROMPTS)}, got {prompt!r}")
        self.words: list[str] = words
        self.prompt = prompt
        self.name = "wordcase"
        self._prefix = [self._prefix_messages(i) for i in range(len(_INSTRUCTIONS))]

    # --- steps -----------------------------------------------------------------------

    def total_steps(self) -> int:
        return len(self.words)

    def groups(self) -> list[tuple[str, int]] | None:
        return None  # words have no groups: the tree is blocks of `fanout` words

    def steps(self) -> Iterator[Step]:
        for i, word in enumerate(self.words):
            yield Step(i, word)

    def step_at(self, index: int) -> Step:
        if not 0 <= index < len(self.words):
            raise ValueError(f"step must be in 0..{len(self.words) - 1}, got {index}")
        return Step(index, self.words[index])

    def random_step(self, rng: Any) -> Step:
        """A random word of this instance; rng is a random.Random or a numpy Generator."""
        n = len(self.words)
        i = rng.randrange(n) if hasattr(rng, "randrange") else int(rng.integers(n))
        return Step(i, self.words[i])

    def fresh_steps(self, exclude: Collection[str], n: int, seed: int = 0) -> list[Step]:
        """Up to `n` words of the whole vocabulary (shuffled with `seed`) whose user message
        is not in `exclude` (domains.FreshSteps)."""
        words = list(VOCABULARY)
        random.Random(seed).shuffle(words)
        out: list[Step] = []
        for word in words:
            if len(out) >= n:
                break
            step = Step(len(out), word)
            if self.messages(step)[-1]["content"] not in exclude:
                out.append(step)
        return out

    # --- prompts ---------------------------------------------------------------------

    def _prefix_messages(self, variant: int) -> list[dict[str, str]]:
        """Everything before the word: identical for every step of a paraphrase, so the
        server's prompt cache serves it and only the word is processed per request."""
        instruction = _INSTRUCTIONS[variant]
        examples = EXAMPLES[variant:] + EXAMPLES[:variant]  # paraphrases reorder them
        if self.prompt == "list":
            lines = "\n".join(f"{w} -> answer = {w.upper()}" for w in examples)
            return [{"role": "user", "content": f"{instruction}\n\nExamples:\n{lines}\n\n"}]
        out = [{"role": "system", "content": instruction}]
        for w in examples:
            ask = f"Word: {w}" if self.prompt == "labels" else w
            out.append({"role": "user", "content": ask})
            out.append({"role": "assistant", "content": f"answer = {w.upper()}"})
        return out

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        prefix = self._prefix[paraphrase % len(self._prefix)]
        word = step.input
        if self.prompt == "list":
            head = prefix[0]["content"]
            return [{"role": "user", "content": f"{head}Now the word: {word}"}]
        ask = f"Word: {word}" if self.prompt == "labels" else word
        return [*prefix, {"role": "user", "content": ask}]

    # --- parsing ---------------------------------------------------------------------

    def parse_strict(self, text: str, step: Step | None = None) -> str:
        """Exactly one line `answer = WORD` (capital letters A-Z), surrounding whitespace
        aside; anything else is a ParseError saying what was wrong."""
        body = text.strip()
        if not body:
            raise ParseError("empty answer")
        if "\n" in body:
            raise ParseError(f"expected one line, got {len(body.splitlines())}")
        m = _STRICT.fullmatch(body)
        if m is None:
            raise ParseError(f"not 'answer = WORD' in capital letters: {body[:60]!r}")
        return m.group(1)

    def parse_lenient(self, text: str, step: Step | None = None) -> str:
        """What the model meant: the word after `answer =` (or `answer:`) in whatever
        case it was written, else the first all-capitals token of two or more letters."""
        m = _LABELLED.search(text)
        if m is not None:
            return m.group(1)
        for token in _CAPS.findall(text):
            if token != "ANSWER":
                return token
        raise ParseError(f"no answer word found: {text.strip()[:60]!r}")

    def key(self, answer: str) -> Hashable:
        # Case-sensitive on purpose: casing IS the task, so "apple" must not vote with
        # "APPLE". Strictly parsed answers are upper case already.
        return answer.strip()

    def describe(self, key: Hashable) -> str:
        return str(key)

    # --- truth ----------------------------------------------------------------------

    def truth(self, step: Step) -> str:
        return step.input.upper()

    def wrong_answers(self, step: Step, count: int) -> list[str]:
        """Distinct plausible wrong answers, most plausible first: the word left in lower
        or title case, a letter dropped, doubled or swapped with its neighbour, a letter
        changed, then other words in upper case."""
        word: str = step.input
        up = word.upper()
        out: list[str] = []
        seen = {up}

        def add(answer: str) -> bool:
            if answer and answer not in seen:
                seen.add(answer)
                out.append(answer)
            return len(out) >= count

        if count <= 0:
            return out
        n = len(up)
        candidates = [word.lower(), word.capitalize()]
        candidates += [up[:i] + up[i + 1 :] for i in range(n - 1, -1, -1)]  # dropped
        candidates += [up[: i + 1] + up[i:] for i in range(n)]  # doubled
        candidates += [up[:i] + up[i + 1] + up[i] + up[i + 2 :] for i in range(n - 1)]
        candidates += [up[:i] + ("E" if c != "E" else "A") + up[i + 1 :] for i, c in
                       enumerate(up)]  # fmt: skip
        for c in candidates:
            if add(c):
                return out
        start = (sum(map(ord, word)) * 7) % len(VOCABULARY)
        for j in range(len(VOCABULARY)):
            if add(VOCABULARY[(start + j) % len(VOCABULARY)].upper()):
                return out
        return out

    # --- handing on -----------------------------------------------------------------

    def next_step(self, step: Step, answer: Any) -> Step | None:
        """The next word, whatever the answer was; None after the last word."""
        i = step.index + 1
        return Step(i, self.words[i]) if i < len(self.words) else None

    def is_solved(self, step: Step | None, last_answer: Any) -> bool:
        """Every word was answered (steps are independent: errors are counted per step
        by the runner, not carried in a state)."""
        return step is None and last_answer is not None

    # --- JSON, for the run store ----------------------------------------------------------

    def dump_step(self, step: Step) -> str:
        """A step's input: its word."""
        return str(step.input)

    def load_step(self, index: int, data: Any) -> Step:
        if not isinstance(data, str):
            raise ParseError(f"a word case step is its word, not {data!r}")
        return Step(index, data)

    def dump_answer(self, answer: str) -> str:
        return answer

    def load_answer(self, data: Any) -> str:
        if not isinstance(data, str):
            raise ParseError(f"a word case answer is a word, not {data!r}")
        return data
