"""The training set of one step type, from learned.db: what a LoRA adapter is trained on
and what its A/B test holds out.

Sources (both verified only, see reuse.py and examples.py):
- L1 examples: the step's input as the model saw it (its last user message) and the reply
  that was verified ("answer = CAT"). The rest of the prompt (the domain's instruction and
  worked turns) is not stored; with the step type's domain at hand it is rebuilt, and kept
  only when its fingerprint equals the one the example was filed under (the prompt has
  not changed since). An example filed under another prompt is left out; without a domain
  the prompt is the user message alone.
- L0 cached results: the step's canonical input and answer. With a domain, the step is
  loaded back, its messages rebuilt (kept only when their fingerprint is the row's), and
  the answer written as a reply that the domain's strict parser reads back to the same
  key; a result that cannot be rebuilt that way is left out.

Deduplication is by the prompt (its messages): one answer per prompt, a truth before a
voted answer, then the newer. The held-out split is by a hash of the step type and the
step's input text, so it does not depend on what else is in the set: an input held out
once stays held out as the store grows, and is never trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nanobot_tui import atomic
from nanobot_tui.engine.learning.examples import last_user_text
from nanobot_tui.engine.learning.reuse import canonical_json, prompt_fingerprint
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.voting.domains import Domain, FreshSteps, Step
from nanobot_tui.errors import UsageError

__all__ = [
    "HELDOUT_FRACTION",
    "MIN_HELDOUT",
    "MIN_TRAIN",
    "DatasetCounts",
    "TooFewExamples",
    "TrainingExample",
    "TrainingSet",
    "build_dataset",
    "domain_of",
    "fresh_examples",
    "is_heldout",
    "read_jsonl",
    "write_dataset",
]

log = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.2
# Below these an adapter learns noise and its A/B test says nothing.
MIN_TRAIN = 16
MIN_HELDOUT = 4
_RANK = {"voted+checked": 0, "truth": 1}

Messages = list[dict[str, str]]


class TooFewExamples(UsageError):
    """Not enough verified examples of a step type to train and test an adapter."""


@dataclass(frozen=True, slots=True)
class TrainingExample:
    messages: Messages  # the prompt, as chat messages, ending with the step's user message
    answer: str  # the verified reply
    verified_by: str
    source: str  # "example" (L1) or "result" (L0)
    created: float

    @property
    def input_text(self) -> str:
        return last_user_text(self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "answer": self.answer,
            "verified_by": self.verified_by,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class DatasetCounts:
    examples: int  # L1 rows read
    results: int  # L0 rows read
    left_out: int  # rows whose prompt could not be rebuilt as it was asked
    duplicates: int  # rows whose prompt another row already gave
    train: int
    heldout: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.train} to train, {self.heldout} held out (from {self.examples} examples "
            f"and {self.results} results; {self.duplicates} duplicates, "
            f"{self.left_out} left out)"
        )


@dataclass(frozen=True, slots=True)
class TrainingSet:
    step_type: str
    train: list[TrainingExample]
    heldout: list[TrainingExample]
    counts: DatasetCounts
    fingerprint: str = ""  # the prompt template's, "" without a domain
    extra: dict[str, Any] = field(default_factory=dict)


def is_heldout(step_type: str, input_text: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Whether a step's input belongs to the held-out split: the first 8 bytes of
    SHA-256(step type, input) as a number in [0, 1), below `fraction`."""
    digest = hashlib.sha256(canonical_json([step_type, input_text]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def domain_of(step_type: str) -> Domain | None:
    """The domain a step type's prompts come from, built with its default params and the
    family the type names ("micro:dates"); None for one that needs more to be built (a
    code recipe needs its codebase)."""
    from nanobot_tui.engine.voting.domains.registry import DOMAINS

    name, _, family = step_type.partition(":")
    kind = DOMAINS.get(name)
    if kind is None or kind.command != "run":
        return None
    try:
        return kind.build({"family": family} if family else {})
    except (ValueError, TypeError, KeyError) as exc:
        log.info("no domain for step type %s: %s", step_type, exc)
        return None


def _reply_text(domain: Domain, step: Step, answer: Any) -> str | None:
    """A reply that the domain's strict parser reads back to `answer`'s key: the domain's
    own `answer_text` where it has one, else "answer = X" or the answer itself."""
    want = domain.key(answer)
    own = getattr(domain, "answer_text", None)
    candidates = [own(answer)] if callable(own) else []
    if isinstance(answer, str):
        candidates += [f"answer = {answer}", answer]
    for text in candidates:
        try:
            if domain.key(domain.parse_strict(text, step)) == want:
                return str(text)
        except ValueError:
            continue
    return None


def fresh_examples(
    domain: Domain | None, exclude: Collection[str], n: int, seed: int = 0
) -> list[TrainingExample]:
    """Up to `n` steps of the domain that are not in `exclude` (user messages: a
    training set's `input_text`s), each with its truth as the verified answer (source
    "fresh"): steps no adapter was trained on and no vote chose, an unbiased sample of
    the step type. [] for a domain that cannot make them (not `FreshSteps`)."""
    if domain is None or not isinstance(domain, FreshSteps) or n < 1:
        return []
    out: list[TrainingExample] = []
    for step in domain.fresh_steps(exclude, n, seed):
        messages = domain.messages(step)
        if last_user_text(messages) in exclude:
            continue
        reply = _reply_text(domain, step, domain.truth(step))
        if reply is not None:
            out.append(TrainingExample(messages, reply, "truth", "fresh", 0.0))
    return out


def _template(domain: Domain) -> Messages | None:
    first = next(iter(domain.steps()), None)
    return None if first is None else domain.messages(first)[:-1]


def _example_rows(
    store: LearningStore, step_type: str, template: Messages | None
) -> tuple[list[TrainingExample], int, int]:
    rows = store.query(
        "SELECT fingerprint, input_text, answer_text, verified_by, created FROM examples "
        "WHERE step_type = ? ORDER BY id",
        (step_type,),
    )
    wanted = prompt_fingerprint(template) if template is not None else None
    out: list[TrainingExample] = []
    left_out = 0
    for fingerprint, input_text, answer_text, verified_by, created in rows:
        if wanted is not None and fingerprint != wanted:
            left_out += 1
            continue
        user = {"role": "user", "content": input_text}
        messages = [*(template or []), user]
        out.append(TrainingExample(messages, answer_text, verified_by, "example", created))
    return out, len(rows), left_out


def _result_rows(
    store: LearningStore, step_type: str, domain: Domain | None
) -> tuple[list[TrainingExample], int, int]:
    rows = store.query(
        "SELECT prompt_fingerprint, input_json, output_json, verified_by, created "
        "FROM step_results WHERE step_type = ? ORDER BY created",
        (step_type,),
    )
    if domain is None:  # no prompt can be rebuilt from a bare input
        return [], len(rows), len(rows)
    out: list[TrainingExample] = []
    left_out = 0
    for fingerprint, input_json, output_json, verified_by, created in rows:
        try:
            step = domain.load_step(0, json.loads(input_json))
            messages = domain.messages(step)
            answer = domain.load_answer(json.loads(output_json))
        except (ValueError, TypeError, KeyError):
            left_out += 1
            continue
        reply = _reply_text(domain, step, answer)
        if prompt_fingerprint(messages) != fingerprint or reply is None:
            left_out += 1
            continue
        out.append(TrainingExample(messages, reply, verified_by, "result", created))
    return out, len(rows), left_out


def build_dataset(
    store: LearningStore,
    step_type: str,
    *,
    domain: Domain | None = None,
    heldout_fraction: float = HELDOUT_FRACTION,
    min_train: int = MIN_TRAIN,
    min_heldout: int = MIN_HELDOUT,
) -> TrainingSet:
    """The deduplicated training set of `step_type` and its held-out split (see the
    module's docstring); TooFewExamples when either part is below its minimum."""
    template = _template(domain) if domain is not None else None
    examples, n_examples, left_examples = _example_rows(store, step_type, template)
    results, n_results, left_results = _result_rows(store, step_type, domain)
    best: dict[str, TrainingExample] = {}
    for item in [*examples, *results]:
        key = canonical_json(item.messages)
        held = best.get(key)
        if held is None or (_RANK[item.verified_by], item.created) > (
            _RANK[held.verified_by],
            held.created,
        ):
            best[key] = item
    kept = sorted(best.values(), key=lambda e: canonical_json(e.messages))
    train = [e for e in kept if not is_heldout(step_type, e.input_text, heldout_fraction)]
    heldout = [e for e in kept if is_heldout(step_type, e.input_text, heldout_fraction)]
    counts = DatasetCounts(
        examples=n_examples,
        results=n_results,
        left_out=left_examples + left_results,
        duplicates=len(examples) + len(results) - len(kept),
        train=len(train),
        heldout=len(heldout),
    )
    if len(train) < min_train or len(heldout) < min_heldout:
        raise TooFewExamples(
            f"step type {step_type!r}: {len(train)} verified examples to train and "
            f"{len(heldout)} held out; an adapter needs at least {min_train} and "
            f"{min_heldout} (learned.db: {store.path})"
        )
    fingerprint = prompt_fingerprint(template) if template is not None else ""
    return TrainingSet(step_type, train, heldout, counts, fingerprint)


def write_dataset(training_set: TrainingSet, folder: Path) -> tuple[Path, Path]:
    """The set as two JSONL files in `folder` (train.jsonl, heldout.jsonl), one example a
    line ({"messages", "answer", "verified_by", "source"}), each written atomically."""
    out = []
    for name, items in (("train", training_set.train), ("heldout", training_set.heldout)):
        path = folder / f"{name}.jsonl"
        text = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in items)
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(path, text, mode=0o644)
        out.append(path)
    return out[0], out[1]


def read_jsonl(path: Path) -> list[TrainingExample]:
    """The examples of a file `write_dataset` wrote; UsageError naming the file and line
    for one that is not."""
    out: list[TrainingExample] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            messages = _messages(data["messages"])
            answer = str(data["answer"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}:{number}: not a training example: {exc}") from None
        verified = str(data.get("verified_by", "truth"))
        out.append(TrainingExample(messages, answer, verified, str(data.get("source", "")), 0.0))
    return out


def _messages(value: Any) -> Messages:
    if not isinstance(value, Sequence) or not value:
        raise ValueError("messages must be a non-empty list")
    out = []
    for m in value:
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise ValueError("each message needs a role and a content")
        out.append({"role": str(m["role"]), "content": m["content"]})
    return out
