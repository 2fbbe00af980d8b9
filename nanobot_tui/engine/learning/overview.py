"""Everything the learning loops kept, read in one go: what `nanobot learned` lists and
the app's Learning screen shows.

`learned_overview()` reads learned.db (the cached results per step type, each task
type's history with its budget and p, the anomalies), the learned skills and, for the
learning curve, the last `CURVE_TASKS` tasks of every type in the order they finished.
It only reads: with no learned.db it creates none and reports nothing learned.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from nanobot_tui.engine.learning.examples import ExampleBank, ExampleTypeSummary
from nanobot_tui.engine.learning.history import (
    MIN_RECORDS,
    Anomaly,
    TaskHistory,
    TaskRecord,
    TaskTypeSummary,
)
from nanobot_tui.engine.learning.reuse import ResultCache, StepTypeSummary
from nanobot_tui.engine.learning.skills import LearnedSkill, list_learned_skills
from nanobot_tui.engine.learning.store import LearningStore, learned_path

__all__ = [
    "CURVE_TASKS",
    "LastLearned",
    "LearnedOverview",
    "learned_overview",
]

# How many of the newest tasks the learning curve shows.
CURVE_TASKS = 500


@dataclass(frozen=True, slots=True)
class LastLearned:
    """The newest thing of one kind that was learned: a cached result, a recorded task,
    an anomaly or a skill."""

    kind: str  # "result", "task", "anomaly", "skill"
    at: float  # epoch seconds
    name: str  # the step type, task type or skill name
    detail: str  # e.g. "truth", "succeeded, 812 tokens", "steps, tokens far above"


@dataclass(frozen=True, slots=True)
class LearnedOverview:
    path: Path
    exists: bool  # whether learned.db exists
    learning: bool  # the config's learning.enabled
    min_records: int  # records a task type needs before it gets a budget
    results: list[StepTypeSummary]
    examples: list[ExampleTypeSummary]  # L1 few-shot examples per step type
    history: list[TaskTypeSummary]
    anomalies: list[Anomaly]  # newest first
    skills: list[LearnedSkill]
    curve: list[TaskRecord]  # the last CURVE_TASKS tasks of every type, oldest first
    last: list[LastLearned]  # the newest of each kind, newest first

    @property
    def empty(self) -> bool:
        """Nothing learned at all (counters of lookups that all missed count as nothing)."""
        return not (
            any(r.results for r in self.results)
            or self.examples
            or self.history
            or self.anomalies
            or self.skills
        )

    def to_dict(self) -> dict[str, Any]:
        """What `nanobot learned --json` prints."""
        return {
            "path": str(self.path),
            "learning": self.learning,
            "min_records": self.min_records,
            "results": [r.to_dict() for r in self.results],
            "examples": [e.to_dict() for e in self.examples],
            "history": [h.to_dict() for h in self.history],
            "anomalies": [a.to_dict() for a in self.anomalies],
            "skills": [s.to_dict() for s in self.skills],
        }


def _learning_on() -> bool:
    """The config file's `learning.enabled` (on without a config file)."""
    from nanobot_tui.config import load_config_file

    config = load_config_file()
    return True if config is None else config.learning.enabled


def _curve(store: LearningStore, limit: int) -> list[TaskRecord]:
    rows = store.query(
        "SELECT task_type, kind, steps, tokens, seconds, samples_per_step, p, success, "
        "finished, id FROM task_history ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [
        TaskRecord(t, k, steps, tokens, seconds, sps, p, bool(ok), finished, rid)
        for t, k, steps, tokens, seconds, sps, p, ok, finished, rid in reversed(rows)
    ]


def _epoch(iso: str) -> float | None:
    """A skill's `created` (ISO 8601, e.g. "2026-12-05T05:00:00.000Z") in epoch seconds."""
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(iso).timestamp()
    return None


def _last(
    store: LearningStore | None,
    curve: list[TaskRecord],
    anomalies: list[Anomaly],
    skills: list[LearnedSkill],
) -> list[LastLearned]:
    last: list[LastLearned] = []
    if store is not None:
        row = store.query(
            "SELECT step_type, verified_by, created FROM step_results ORDER BY created DESC LIMIT 1"
        )
        if row:
            step_type, verified_by, created = row[0]
            last.append(LastLearned("result", created, step_type, verified_by))
    if curve:
        task = curve[-1]
        outcome = "succeeded" if task.success else "failed"
        last.append(
            LastLearned("task", task.finished, task.task_type, f"{outcome}, {task.tokens:,} tokens")
        )
    if anomalies:
        anomaly = anomalies[0]
        metrics = ", ".join(e.metric for e in anomaly.exceeded)
        last.append(LastLearned("anomaly", anomaly.at, anomaly.task_type, f"{metrics} far above"))
    dated = [(at, s) for s in skills if (at := _epoch(s.created)) is not None]
    if dated:
        at, skill = max(dated, key=lambda pair: pair[0])
        last.append(LastLearned("skill", at, skill.name, skill.status))
    return sorted(last, key=lambda item: item.at, reverse=True)


def learned_overview(
    *,
    store: LearningStore | None = None,
    learning: bool | None = None,
    curve_tasks: int = CURVE_TASKS,
) -> LearnedOverview:
    """Everything learned. `store`: an open learned.db to read (else it is opened, if it
    exists, and closed again); `learning`: whether learning is on (else the config file
    says). Raises LearningStoreError for a damaged learned.db, ConfigError for a bad
    config file."""
    path = store.path if store is not None else learned_path()
    owned = store is None
    if store is None:
        store = LearningStore.open_existing()
    results: list[StepTypeSummary] = []
    examples: list[ExampleTypeSummary] = []
    history: list[TaskTypeSummary] = []
    anomalies: list[Anomaly] = []
    curve: list[TaskRecord] = []
    try:
        if store is not None:
            results = ResultCache(store).summary()
            examples = ExampleBank(store).summary()
            tasks = TaskHistory(store)
            history = tasks.summary()
            anomalies = tasks.anomalies()
            curve = _curve(store, curve_tasks)
        skills = list_learned_skills()
        last = _last(store, curve, anomalies, skills)
    finally:
        if owned and store is not None:
            store.close()
    return LearnedOverview(
        path=path,
        exists=store is not None,
        learning=_learning_on() if learning is None else learning,
        min_records=MIN_RECORDS,
        results=results,
        examples=examples,
        history=history,
        anomalies=anomalies,
        skills=skills,
        curve=curve,
        last=last,
    )
