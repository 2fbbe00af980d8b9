"""L1, verified examples: steps that were answered right come back as few-shot examples
for new steps of the same type.

Only verified examples are kept (DSPy's bootstrapped few-shot keeps only demos that
passed the metric): `verified_by` is "truth" (the answer equals the known truth) or
"voted+checked" (a voted winner that passed the step's checks). An example is the step's
input as the model saw it (the text of its last user message) and the reply as the model
should write it ("answer = CAT"), filed under its step type and prompt fingerprint, with
the model that answered.

Retrieval (`ExampleBank.similar`): the active examples of the step type and fingerprint,
never one with the step's own input, ranked by lexical similarity to the new step's
input, then by helped - hurt, then newest. Similarity is BM25 (k1 and b as the agent's
skill matcher) over the candidates, on the skill matcher's content terms (the context
index's tokenizer, stop words out, plurals folded) plus each term's character trigrams,
so that inputs of one word ("cat", "castle") compare too; a whole shared word scores far
above a few shared trigrams.

Attribution (ExpeL-style counters, `ExampleBank.credit`): a step that used examples and
was decided RIGHT (equal to the truth, or voted and passed its checks) adds 1 to `helped`
of every example it used; one decided WRONG or left UNDECIDED adds 1 to `hurt` of each. A
step with no verdict at all changes nothing. Retirement: an example is retired, never
retrieved again but kept for `nanobot learned`, once `hurt >= RETIRE_MIN_HURT` (3) and
`hurt > helped`. A retired example stays retired when the same input is added again.

`StepShots` is what a run hands the voting layer's `LLMSampler(shots=...)`: it picks a
step's examples once (every voting round of the step sees the same ones), remembers them,
and `settle(step, outcome)` attributes the outcome to them. Learning never stops a run: a
learned.db error there is logged and means "no examples".
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from nanobot_tui.engine.agent.skills import K1, B, terms
from nanobot_tui.engine.learning.reuse import VERIFIED_BY, VerifiedBy
from nanobot_tui.engine.learning.store import LearningStore, LearningStoreError
from nanobot_tui.engine.voting.domains import Domain, Step

__all__ = [
    "MAX_CANDIDATES",
    "OUTCOMES",
    "RETIRE_MIN_HURT",
    "Example",
    "ExampleBank",
    "ExampleTypeSummary",
    "Outcome",
    "StepShots",
    "last_user_text",
    "similarity_terms",
    "user_text_of",
]

log = logging.getLogger(__name__)

Outcome = Literal["right", "wrong", "undecided"]
OUTCOMES: tuple[Outcome, ...] = ("right", "wrong", "undecided")
RETIRE_MIN_HURT = 3
# The newest active examples of a type that retrieval ranks: enough for any prompt, and
# a bound on the work done per step (BM25 over them is pure Python).
MAX_CANDIDATES = 500
_TRIGRAM = "#"  # marks a trigram term: the tokenizer's words never contain it


@dataclass(frozen=True, slots=True)
class Example:
    id: int
    step_type: str
    fingerprint: str
    input_text: str
    answer_text: str
    verified_by: str
    model: str
    created: float
    helped: int
    hurt: int
    retired: float | None  # when it was retired; None while it is retrieved

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ExampleTypeSummary:
    step_type: str
    examples: int
    active: int
    retired: int
    helped: int
    hurt: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = (
    "id, step_type, fingerprint, input_text, answer_text, verified_by, model, created, "
    "helped, hurt, retired"
)


def _from_row(row: Sequence[Any]) -> Example:
    return Example(*row)


def similarity_terms(text: str) -> list[str]:
    """The terms retrieval compares: content terms, each followed by its character
    trigrams (with ^ and $ marking the word's ends)."""
    out: list[str] = []
    for term in terms(text):
        out.append(term)
        padded = f"^{term}$"
        out.extend(_TRIGRAM + padded[i : i + 3] for i in range(len(padded) - 2))
    return out


def _bm25(query: Iterable[str], docs: Sequence[Counter[str]]) -> list[float]:
    """BM25 score of each doc for the query terms (each counted once)."""
    n = len(docs)
    if n == 0:
        return []
    wanted = list(dict.fromkeys(query))
    avgdl = sum(sum(d.values()) for d in docs) / n or 1.0
    df = {t: sum(1 for d in docs if t in d) for t in wanted}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in wanted if df[t]}
    scores = []
    for doc in docs:
        dl = sum(doc.values())
        score = 0.0
        for t, weight in idf.items():
            tf = doc.get(t, 0)
            if tf:
                score += weight * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))
        scores.append(score)
    return scores


def _check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")


class ExampleBank:
    """L1 over a LearningStore."""

    def __init__(self, store: LearningStore) -> None:
        self.store = store

    def add(
        self,
        step_type: str,
        input_text: str,
        answer_text: str,
        *,
        verified_by: VerifiedBy,
        model: str,
        fingerprint: str = "",
    ) -> Example:
        """Keep a verified example; returns what is stored for its input afterwards. An
        example with the same input keeps its counters (and its retirement); its answer
        is replaced unless a truth would give way to a voted answer. ValueError for an
        unknown `verified_by` or an empty text: unverified work never becomes an example."""
        if verified_by not in VERIFIED_BY:
            raise ValueError(
                f"verified_by must be one of {', '.join(VERIFIED_BY)}, got {verified_by!r}"
            )
        if not input_text.strip() or not answer_text.strip():
            raise ValueError("an example needs an input text and an answer text")
        values = (
            step_type, fingerprint, input_text, answer_text.strip(), verified_by, model,
            time.time(),
        )  # fmt: skip
        with self.store.write() as conn:
            conn.execute(
                "INSERT INTO examples (step_type, fingerprint, input_text, answer_text, "
                "verified_by, model, created) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(step_type, fingerprint, input_text) DO UPDATE SET "
                "answer_text = excluded.answer_text, verified_by = excluded.verified_by, "
                "model = excluded.model "
                "WHERE examples.verified_by = 'voted+checked' OR excluded.verified_by = 'truth'",
                values,
            )
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM examples WHERE step_type = ? AND fingerprint = ? "
                "AND input_text = ?",
                (step_type, fingerprint, input_text),
            ).fetchone()
        return _from_row(row)

    def similar(
        self,
        step_type: str,
        input_text: str,
        n: int = 3,
        *,
        fingerprint: str = "",
        exclude_ids: Iterable[int] = (),
    ) -> list[Example]:
        """Up to `n` active examples for a step with this input, best first (see the
        module's docstring); never a retired one, nor one whose input is this step's."""
        if n <= 0:
            return []
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM examples WHERE step_type = ? AND fingerprint = ? "
            "AND retired IS NULL AND input_text != ? ORDER BY id DESC LIMIT ?",
            (step_type, fingerprint, input_text, MAX_CANDIDATES),
        )
        skip = set(exclude_ids)
        candidates = [e for e in map(_from_row, rows) if e.id not in skip]
        docs = [Counter(similarity_terms(e.input_text)) for e in candidates]
        scores = _bm25(similarity_terms(input_text), docs)
        ranked = sorted(
            zip(scores, candidates, strict=True),
            key=lambda sc: (-sc[0], -(sc[1].helped - sc[1].hurt), -sc[1].id),
        )
        return [e for _, e in ranked[:n]]

    def credit(self, example_ids: Iterable[int], outcome: Outcome) -> list[int]:
        """Attribute a step's outcome to the examples it used ("right": helped + 1;
        "wrong" or "undecided": hurt + 1) and retire those that now hurt; returns the ids
        retired by this call."""
        _check_outcome(outcome)
        ids = sorted(set(example_ids))
        if not ids:
            return []
        column = "helped" if outcome == "right" else "hurt"
        marks = ", ".join("?" * len(ids))
        with self.store.write() as conn:
            conn.execute(f"UPDATE examples SET {column} = {column} + 1 WHERE id IN ({marks})", ids)
            retired = conn.execute(
                f"UPDATE examples SET retired = ? WHERE id IN ({marks}) AND retired IS NULL "
                "AND hurt >= ? AND hurt > helped RETURNING id",
                (time.time(), *ids, RETIRE_MIN_HURT),
            ).fetchall()
        return sorted(r[0] for r in retired)

    def get(self, example_id: int) -> Example | None:
        rows = self.store.query(f"SELECT {_COLUMNS} FROM examples WHERE id = ?", (example_id,))
        return _from_row(rows[0]) if rows else None

    def examples(self, step_type: str | None = None) -> list[Example]:
        """Every example (of one step type), retired ones included, by type then age."""
        where, args = ("WHERE step_type = ?", (step_type,)) if step_type else ("", ())
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM examples {where} ORDER BY step_type, id", args
        )
        return [_from_row(r) for r in rows]

    def summary(self) -> list[ExampleTypeSummary]:
        """Per step type: examples, active, retired, and the helped and hurt totals."""
        rows = self.store.query(
            "SELECT step_type, COUNT(*), SUM(retired IS NULL), SUM(retired IS NOT NULL), "
            "SUM(helped), SUM(hurt) FROM examples GROUP BY step_type ORDER BY step_type"
        )
        return [ExampleTypeSummary(*r) for r in rows]

    def forget(self, step_type: str | None = None) -> int:
        """Remove the examples (of one step type) for good; returns how many."""
        where, args = ("WHERE step_type = ?", (step_type,)) if step_type else ("", ())
        with self.store.write() as conn:
            return conn.execute(f"DELETE FROM examples {where}", args).rowcount


def last_user_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The content of the last user message ("" if there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


def user_text_of(domain: Domain) -> Callable[[Step], str]:
    """A step's input as its model sees it: the last user message of its prompt (the first
    paraphrase). What an example's input is, and what a new step is compared by."""
    return lambda step: last_user_text(domain.messages(step, 0))


class StepShots:
    """The few-shot examples of a run's steps, for `LLMSampler(shots=...)`.

    Called with a step, it returns the (user, assistant) pairs of up to `n` examples
    similar to the step, chosen once per step index and kept until `settle`.
    """

    def __init__(
        self,
        bank: ExampleBank,
        step_type: str,
        *,
        input_text: Callable[[Step], str],
        n: int = 3,
        fingerprint: str = "",
    ) -> None:
        self.bank = bank
        self.step_type = step_type
        self.input_text = input_text
        self.n = n
        self.fingerprint = fingerprint
        self._chosen: dict[int, list[Example]] = {}

    def __call__(self, step: Step) -> list[tuple[str, str]]:
        chosen = self._chosen.get(step.index)
        if chosen is None:
            try:
                chosen = self.bank.similar(
                    self.step_type, self.input_text(step), self.n, fingerprint=self.fingerprint
                )
            except LearningStoreError as exc:
                log.warning("no few-shot examples for step %d: %s", step.index, exc)
                chosen = []
            self._chosen[step.index] = chosen
        return [(e.input_text, e.answer_text) for e in chosen]

    def used(self, step: Step) -> tuple[int, ...]:
        """The ids of the examples the step was given (none before it was sampled)."""
        return tuple(e.id for e in self._chosen.get(step.index, ()))

    def settle(self, step: Step, outcome: Outcome | None) -> list[int]:
        """Attribute the step's outcome to its examples (None: no verdict, no counter
        moves) and forget its choice; returns the ids this retired."""
        if outcome is not None:
            _check_outcome(outcome)
        used = self.used(step)
        self._chosen.pop(step.index, None)
        if outcome is None or not used:
            return []
        try:
            return self.bank.credit(used, outcome)
        except LearningStoreError as exc:
            log.warning("step %d's examples were not credited: %s", step.index, exc)
            return []
