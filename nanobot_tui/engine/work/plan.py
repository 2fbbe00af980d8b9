"""A compound task split by the main model into passes, each one recipe: `nanobot process
--plan`.

The split is one voted step (classify.py's `OneQuestion`), answered one line per pass as
`recipe: the task's clause for it`, so an answer is easy to canonicalise: its key is the
tuple of (recipe, normalised clause) per pass, where only an `instruction` pass keeps its
clause (a named recipe's edit is the recipe's own, however the model words it). Anything
else (an unknown recipe, a line that is not `recipe: clause`, the same pass twice, more
than MAX_PASSES) is a red flag.

The model plans only if it is able, judged once per model on PROBES: six tasks whose plan
is known (compound and single-recipe ones). It is able iff its voted plans match at least
ABLE_AT of them (asked one after the other, stopping once that is out of reach). The grade
is kept in NANOBOT_HOME/planner-grades.json under the model's key (file name and size, or
provider and id) with the probe set's version, so the probes run again only for another
model or other probes. A model that is not able leaves the process to decomposition by
structure (one recipe over every function).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.voting.samples import RED_ERROR
from nanobot_tui.engine.work.classify import RecipeQuestion, vote_once
from nanobot_tui.errors import NanobotError

MAX_PASSES = 5
ABLE_AT = 5  # probes of PROBES matched
GRADES = "planner-grades.json"
TOKEN_CAP = 80  # five passes of a short clause each (a weak model rambles to the cap)

_LINE = re.compile(r"^(?:[-*]\s+|\d+[.)]\s+)?([A-Za-z][A-Za-z-]*)\s*:\s*(.*)$")
_SPACE = re.compile(r"\s+")

Key = tuple[tuple[str, str], ...]


class PlannerError(NanobotError):
    """The planning model could not be graded."""


def normalise(clause: str) -> str:
    """A clause as the vote compares it: lower case, single spaces, no quotes or final
    punctuation, no leading "please"."""
    text = _SPACE.sub(" ", clause).strip().strip("`'\"").strip().lower()
    text = text.rstrip(".;,!").strip()
    return text.removeprefix("please ").strip()


@dataclass(frozen=True)
class Pass:
    """One pass of a plan: `recipe` over every function it wants, with `instruction`
    (the task's clause for it) as the recipe's instruction."""

    recipe: str
    instruction: str

    def key(self) -> tuple[str, str]:
        return (self.recipe, normalise(self.instruction) if self.recipe == "instruction" else "")

    def line(self) -> str:
        return f"{self.recipe}: {self.instruction}"


def plan_key(passes: tuple[Pass, ...]) -> Key:
    return tuple(p.key() for p in passes)


def describe_key(key: Key) -> str:
    return " + ".join(f"{r}({c})" if c else r for r, c in key) or "(no passes)"


_EXAMPLE = (
    "Task: wrap the network calls in try/except and make every function log its arguments\n"
    "error-handling: wrap the network calls in try/except\n"
    "instruction: make every function log its arguments"
)


class TaskPlan(RecipeQuestion):
    """One step: split `task` into passes (the answer: a tuple of Pass)."""

    name = "task-plan"

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        menu = self.menu()
        ask = (
            "Split this task into passes."
            if paraphrase == 0
            else "Write the passes this task needs, one per line."
        )
        system = (
            "You split a code task into passes over a codebase's functions; each pass is "
            f"one recipe. The recipes:\n{menu}\n"
            "Answer with one line per pass, in the order the task gives, written as "
            "`recipe: the part of the task this pass does`. Use instruction only for a part "
            "no other recipe does, and copy that part's words from the task. A task that "
            "asks for one thing is one line. Write nothing else.\n"
            f"Example:\n{_EXAMPLE}"
        )
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Task: {step.input}\n{ask}"},
        ]

    def parse_strict(self, text: str, step: Step | None = None) -> tuple[Pass, ...]:
        """The passes, one a line (a list marker is allowed); ParseError for anything
        else."""
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if not lines:
            raise ParseError("no passes")
        if len(lines) > MAX_PASSES:
            raise ParseError(f"more than {MAX_PASSES} passes")
        passes: list[Pass] = []
        for n, line in enumerate(lines, 1):
            found = _LINE.match(line)
            if not found:
                raise ParseError(f"line {n} is not 'recipe: clause'")
            recipe, clause = found[1].lower(), found[2].strip()
            if recipe not in self.names:
                raise ParseError(f"line {n}: {recipe!r} is not a recipe")
            if not normalise(clause):
                raise ParseError(f"line {n}: the {recipe} pass has no clause")
            passes.append(Pass(recipe, clause))
        keys = [p.key() for p in passes]
        if len(set(keys)) != len(keys):
            raise ParseError("the same pass twice")
        return tuple(passes)

    def key(self, answer: tuple[Pass, ...]) -> Hashable:
        return plan_key(answer)

    def describe(self, key: Hashable) -> str:
        return describe_key(key) if isinstance(key, tuple) else str(key)

    def dump_answer(self, answer: tuple[Pass, ...]) -> Any:
        return [[p.recipe, p.instruction] for p in answer]

    def load_answer(self, data: Any) -> tuple[Pass, ...]:
        return tuple(Pass(str(r), str(i)) for r, i in data)


@dataclass(frozen=True)
class PlanVote:
    """A voted plan: the passes (none when the vote ended undecided)."""

    passes: tuple[Pass, ...]
    decided: bool
    votes: dict[str, int]
    samples: int
    errors: int = 0  # samples whose request failed (no answer at all)

    def line(self) -> str:
        if not self.decided:
            return f"plan: undecided after {self.samples} sample(s)"
        steps = "; then ".join(p.line() for p in self.passes)
        return f"plan: {len(self.passes)} pass(es): {steps} (voted; {self.samples} sample(s))"


async def plan_task(task: str, client: ChatClient, name: str, *, k: int = 2) -> PlanVote:
    """`task` split into passes, voted by the model behind `client`."""
    # Two rounds with no plan at all end it: a model that cannot keep to the format
    # rambles to the token cap every time, and more rounds only cost minutes.
    record = await vote_once(
        TaskPlan(task), client, name, token_cap=TOKEN_CAP, k=k, max_red_rounds=2
    )
    votes = {describe_key(key): n for key, n in record.votes.items() if isinstance(key, tuple)}
    errors = record.red_flags.get(RED_ERROR, 0)
    if record.decided and isinstance(record.winner_answer, tuple):
        return PlanVote(record.winner_answer, True, votes, record.samples, errors)
    return PlanVote((), False, votes, record.samples, errors)


# --- whether the model is able to plan ---------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A task with a known plan: per pass, its recipe and the words an `instruction`
    pass's clause must hold."""

    task: str
    truth: tuple[tuple[str, tuple[str, ...]], ...]

    def matches(self, passes: tuple[Pass, ...]) -> bool:
        if len(passes) != len(self.truth):
            return False
        for p, (recipe, words) in zip(passes, self.truth, strict=True):
            clause = normalise(p.instruction)
            if p.recipe != recipe or not all(w in clause for w in words):
                return False
        return True


PROBES: tuple[Probe, ...] = (
    Probe(
        "convert old string formatting to f-strings and add docstrings to public functions",
        (("fstrings", ()), ("docstrings", ())),
    ),
    Probe("add a docstring to every function", (("docstrings", ()),)),
    Probe(
        "add type hints to every function, then add docstrings",
        (("instruction", ("type hint",)), ("docstrings", ())),
    ),
    Probe("replace the % formatting with f-strings", (("fstrings", ()),)),
    Probe(
        "add error handling around the file operations and rename local variables to snake_case",
        (("error-handling", ()), ("instruction", ("snake",))),
    ),
    Probe(
        "add docstrings, use f-strings instead of str.format, and add error handling for bad input",
        (("docstrings", ()), ("fstrings", ()), ("error-handling", ())),
    ),
)


def probes_version(probes: tuple[Probe, ...] = PROBES) -> str:
    doc = [[p.task, [[r, list(w)] for r, w in p.truth]] for p in probes]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Grade:
    """How a model did on the probes (`tried`: those asked before the grade was sure)."""

    model: str  # its cache key
    matched: int
    total: int
    probes: str  # the probe set's version
    tried: int = 0  # 0: all of them

    @property
    def able(self) -> bool:
        return self.matched >= min(ABLE_AT, self.total)

    def line(self) -> str:
        score = f"{self.matched}/{self.total} probes"
        if self.able:
            return f"planner: able ({score})"
        if 0 < self.tried < self.total:
            score += f", stopped after {self.tried}: {ABLE_AT} out of reach"
        return f"planner: not able ({score}); decomposing by structure only"


async def grade(
    client: ChatClient, name: str, model_key: str, probes: tuple[Probe, ...] = PROBES
) -> Grade:
    """The model's plans of `probes`, one after the other, against their truths; it stops
    as soon as too many missed for the model to be able (a weak model rambles to the
    token cap on every sample, so each probe it is spared saves minutes on a CPU).
    PlannerError when a probe got no answer at all (a server down is no grade to keep)."""
    need = min(ABLE_AT, len(probes))
    matched = tried = 0
    for probe in probes:
        voted = await plan_task(probe.task, client, name)
        if voted.samples and voted.errors == voted.samples:
            raise PlannerError(f"planner: {name} did not answer the probes; not graded")
        tried += 1
        matched += voted.decided and probe.matches(voted.passes)
        if tried - matched > len(probes) - need:
            break
    return Grade(model_key, matched, len(probes), probes_version(probes), tried)


def _grades_path() -> Path:
    return paths.home() / GRADES


def cached_grade(model_key: str, probes: tuple[Probe, ...] = PROBES) -> Grade | None:
    """The model's kept grade on this probe set, if any (a damaged file: none)."""
    try:
        doc = json.loads(_grades_path().read_text("utf-8"))
        entry = doc["grades"][model_key]
        found = Grade(
            model_key,
            int(entry["matched"]),
            int(entry["total"]),
            str(entry["probes"]),
            int(entry.get("tried", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if found.probes == probes_version(probes) else None


def keep_grade(found: Grade) -> None:
    """Add `found` to the kept grades (replacing that model's earlier one)."""
    path = _grades_path()
    try:
        doc = json.loads(path.read_text("utf-8"))
        grades = doc["grades"] if isinstance(doc.get("grades"), dict) else {}
    except (OSError, ValueError, AttributeError):
        grades = {}
    grades[found.model] = {
        "matched": found.matched,
        "total": found.total,
        "probes": found.probes,
        "tried": found.tried,
        "graded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    paths.ensure(path.parent)
    write_atomic(path, json.dumps({"version": 1, "grades": grades}, indent=1) + "\n", mode=0o600)


# --- the whole decision --------------------------------------------------------------------


class PlannerModel(Protocol):
    """The model asked to plan: `name` for display, `model_key` for its grade, and
    `open()` giving its client (a local model's server starts only then)."""

    @property
    def name(self) -> str: ...

    @property
    def model_key(self) -> str: ...

    def open(self) -> AbstractAsyncContextManager[ChatClient]: ...


@dataclass(frozen=True)
class Decision:
    """The grade, and the voted plan when the model is able (else None)."""

    grade: Grade
    vote: PlanVote | None

    @property
    def passes(self) -> tuple[Pass, ...]:
        return self.vote.passes if self.vote is not None and self.vote.decided else ()


async def decide(task: str, model: PlannerModel, say: Callable[[str], None]) -> Decision:
    """Grade `model` (once: the grade is kept), say the grade in one line, and if it is
    able, its voted plan of `task`. A model known not able is not even started."""
    known = cached_grade(model.model_key)
    if known is not None and not known.able:
        say(known.line())
        return Decision(known, None)
    async with model.open() as client:
        found = known
        if found is None:
            found = await grade(client, model.name, model.model_key)
            keep_grade(found)
        say(found.line())
        if not found.able:
            return Decision(found, None)
        return Decision(found, await plan_task(task, client, model.name))
