"""L0, exact reuse: a verified step result, kept by the canonical key of its input, so that
the same step asked again costs no model call.

The key is the SHA-256 of (step type, canonical input, prompt fingerprint, model id):
- the step type names what is asked ("code:fstrings", "wordcase");
- the canonical input is the step's input as JSON with sorted keys and no spaces (a tuple
  and a list of the same items are the same input);
- the prompt fingerprint is the hash of what turns the input into a prompt (the messages
  template, the recipe and its version: `prompt_fingerprint(...)`);
- the model id is the model that answered.
Changing the prompt, the recipe or the model changes the key, so the old result simply
misses; `forget` removes results (all, or of one step type or one model) for good.

Only verified results are stored, and how each was verified is kept with it:
"truth" (the right answer is known: a reference tool, the domain's own solution) or
"voted+checked" (a voted winner that passed the step's checks). A truth is never
replaced by a voted result; otherwise a newer result replaces an older one. Each hit
counts on its result, with the time of the last; every lookup, hit or miss, counts per
step type, for the hit rate.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from nanobot_tui.engine.learning.store import LearningStore

__all__ = [
    "VERIFIED_BY",
    "CachedResult",
    "ResultCache",
    "StepTypeSummary",
    "VerifiedBy",
    "canonical_json",
    "prompt_fingerprint",
    "result_key",
]

VerifiedBy = Literal["truth", "voted+checked"]
VERIFIED_BY: tuple[VerifiedBy, ...] = ("truth", "voted+checked")
# A truth outranks a voted result: a put never replaces a higher rank with a lower one.
_RANK = {"voted+checked": 0, "truth": 1}


def canonical_json(value: Any) -> str:
    """`value` as canonical JSON: sorted keys, no spaces, non-ASCII kept. TypeError for
    what JSON cannot hold (a step input must be plain data)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def prompt_fingerprint(template: Any) -> str:
    """A short hash of what builds a step's prompt (a messages template, a recipe's name
    and version...): any JSON-able value; the same value always gives the same print."""
    return hashlib.sha256(canonical_json(template).encode()).hexdigest()[:16]


def result_key(step_type: str, step_input: Any, fingerprint: str, model: str) -> str:
    """The canonical key of a step: SHA-256 of the four parts as one JSON array (so no
    choice of separator can make two different steps collide)."""
    parts = [step_type, canonical_json(step_input), fingerprint, model]
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedResult:
    key: str
    step_type: str
    model: str
    prompt_fingerprint: str
    input: Any
    output: Any
    verified_by: str
    created: float
    hits: int
    last_hit: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StepTypeSummary:
    """The cached results of one step type: how many, how often reused, when last."""

    step_type: str
    results: int
    hits: int  # lookups answered from the cache
    lookups: int  # every lookup, hit or miss
    last_hit: float | None
    models: int

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate}


_COLUMNS = (
    "key, step_type, model, prompt_fingerprint, input_json, output_json, verified_by, "
    "created, hits, last_hit"
)


def _from_row(row: tuple[Any, ...]) -> CachedResult:
    key, step_type, model, fp, input_json, output_json, verified_by, created, hits, last = row
    return CachedResult(
        key=key, step_type=step_type, model=model, prompt_fingerprint=fp,
        input=json.loads(input_json), output=json.loads(output_json),
        verified_by=verified_by, created=created, hits=hits, last_hit=last,
    )  # fmt: skip


class ResultCache:
    """L0 over a LearningStore."""

    def __init__(self, store: LearningStore) -> None:
        self.store = store

    def get(
        self, step_type: str, step_input: Any, *, fingerprint: str, model: str
    ) -> CachedResult | None:
        """The verified result of this exact step, counted as a hit; None on a miss."""
        key = result_key(step_type, step_input, fingerprint, model)
        with self.store.write() as conn:
            row = conn.execute(
                "UPDATE step_results SET hits = hits + 1, last_hit = ? WHERE key = ? "
                f"RETURNING {_COLUMNS}",
                (time.time(), key),
            ).fetchone()
            conn.execute(
                "INSERT INTO reuse_counters (step_type, lookups, hits) VALUES (?, 1, ?) "
                "ON CONFLICT(step_type) DO UPDATE SET lookups = lookups + 1, "
                "hits = hits + excluded.hits",
                (step_type, int(row is not None)),
            )
        return _from_row(row) if row is not None else None

    def put(
        self,
        step_type: str,
        step_input: Any,
        output: Any,
        *,
        fingerprint: str,
        model: str,
        verified_by: VerifiedBy,
    ) -> CachedResult:
        """Keep a verified result (see the module's docstring for `verified_by`); returns
        what is stored for the key afterwards (a kept truth, when this was a voted result
        for a step whose truth was stored). ValueError for an unknown `verified_by`: an
        unverified result must never be cached."""
        if verified_by not in VERIFIED_BY:
            raise ValueError(
                f"verified_by must be one of {', '.join(VERIFIED_BY)}, got {verified_by!r}"
            )
        key = result_key(step_type, step_input, fingerprint, model)
        values = (
            key, step_type, model, fingerprint, canonical_json(step_input),
            canonical_json(output), verified_by, time.time(),
        )  # fmt: skip
        with self.store.write() as conn:
            conn.execute(
                "INSERT INTO step_results (key, step_type, model, prompt_fingerprint, "
                "input_json, output_json, verified_by, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET output_json = excluded.output_json, "
                "verified_by = excluded.verified_by, created = excluded.created "
                "WHERE step_results.verified_by = 'voted+checked' "
                "OR excluded.verified_by = 'truth'",
                values,
            )
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM step_results WHERE key = ?", (key,)
            ).fetchone()
        return _from_row(row)

    def results(self, step_type: str | None = None) -> list[CachedResult]:
        """Every cached result (of one step type), most used first."""
        where, args = ("WHERE step_type = ?", (step_type,)) if step_type else ("", ())
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM step_results {where} ORDER BY hits DESC, created", args
        )
        return [_from_row(r) for r in rows]

    def summary(self) -> list[StepTypeSummary]:
        """Per step type (with results or lookups): results, hits, lookups, the last hit,
        how many models."""
        held = {
            t: (n, last, m)
            for t, n, last, m in self.store.query(
                "SELECT step_type, COUNT(*), MAX(last_hit), COUNT(DISTINCT model) "
                "FROM step_results GROUP BY step_type"
            )
        }
        counted = {
            t: (lookups, hits)
            for t, lookups, hits in self.store.query(
                "SELECT step_type, lookups, hits FROM reuse_counters"
            )
        }
        out = []
        for step_type in sorted(held.keys() | counted.keys()):
            n, last, models = held.get(step_type, (0, None, 0))
            lookups, hits = counted.get(step_type, (0, 0))
            out.append(StepTypeSummary(step_type, n, hits, lookups, last, models))
        return out

    def forget(
        self,
        step_type: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int:
        """Remove the cached results matching every filter given (all of them when none is
        given); returns how many went. The lookup counters of a step type go with it
        (filtered by model or fingerprint only, they stay)."""
        where: list[str] = []
        args: list[str] = []
        for column, value in (
            ("step_type", step_type), ("model", model), ("prompt_fingerprint", fingerprint),
        ):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "DELETE FROM step_results" + (" WHERE " + " AND ".join(where) if where else "")
        with self.store.write() as conn:
            removed = conn.execute(sql, args).rowcount
            if model is None and fingerprint is None:
                conn.execute(
                    "DELETE FROM reuse_counters"
                    + (" WHERE step_type = ?" if step_type is not None else ""),
                    () if step_type is None else (step_type,),
                )
        return int(removed)
