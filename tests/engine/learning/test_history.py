"""Budgets from history and anomalies: no budget before 20 records, 1.5 x p90 and k_min at
the history's p from then on; a task far above its history (3.5 scaled MADs on a log
scale) is flagged and kept, a normal one is not."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nanobot_tui.engine.learning.history import (
    MIN_RECORDS,
    WINDOW,
    Recorded,
    TaskHistory,
    TaskRecord,
    budget_from,
)
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.runs.spec import Budgets
from nanobot_tui.engine.voting import maths

TYPE = "domain:wordcase"


@pytest.fixture
def history(nanobot_home: Path) -> Iterator[TaskHistory]:
    with LearningStore() as store:
        yield TaskHistory(store)


def record_one(
    history: TaskHistory,
    task_type: str = TYPE,
    *,
    steps: int = 10,
    tokens: int = 1000,
    seconds: float = 2.0,
    p: float = 0.8,
    success: bool = True,
) -> Recorded:
    return history.record(task_type, kind="domain", steps=steps, tokens=tokens,
                          seconds=seconds, samples_per_step=3.0, p=p, success=success)  # fmt: skip


def record(history: TaskHistory, i: int, task_type: str = TYPE, **fixed: float) -> Recorded:
    """The i-th of a history whose costs vary a little from task to task (`fixed`: those
    that do not); every tenth task failed."""
    steps = int(fixed.get("steps", 10 + i % 5))
    tokens = int(fixed.get("tokens", 1000 + 37 * i))
    seconds = fixed.get("seconds", 2.0 + 0.1 * i)
    return record_one(history, task_type, steps=steps, tokens=tokens, seconds=seconds,
                      success=i % 10 != 0)  # fmt: skip


def test_a_budget_comes_from_history_after_20_records_and_not_before(history: TaskHistory) -> None:
    for i in range(MIN_RECORDS - 1):
        record(history, i)
        assert history.budget(TYPE) is None
    record(history, MIN_RECORDS - 1)
    budget = history.budget(TYPE)
    assert budget is not None and budget.records == MIN_RECORDS

    rows = history.records(TYPE)
    # 1.5 x p90 (numpy's default quantile), rounded up.
    assert budget.steps == math.ceil(1.5 * np.quantile([r.steps for r in rows], 0.9))
    assert budget.tokens == math.ceil(1.5 * np.quantile([r.tokens for r in rows], 0.9))
    assert budget.seconds == pytest.approx(1.5 * np.quantile([r.seconds for r in rows], 0.9))
    assert budget.p == pytest.approx(0.8)
    steps = round(statistics.median(r.steps for r in rows))
    assert (budget.k_steps, budget.k) == (steps, maths.k_min(0.8, steps, 0.95))
    # For a longer run, k grows; the budget is the run spec's.
    longer = history.budget(TYPE, steps=100_000)
    assert longer is not None and longer.k == maths.k_min(0.8, 100_000, 0.95)
    assert budget.as_budgets() == Budgets(budget.steps, budget.tokens, budget.seconds)

    # Another type has its own history: none yet.
    assert history.budget("recipe:fstrings") is None
    [summary] = history.summary()
    assert (summary.task_type, summary.records, summary.successes) == (TYPE, 20, 18)
    assert summary.budget == budget


def test_p_is_pooled_by_samples_and_k_is_none_where_voting_cannot_help() -> None:
    rows = [
        TaskRecord(
            TYPE, "domain", steps=10, tokens=100, seconds=1.0, samples_per_step=s, p=p, success=True
        )
        for s, p in [(1.0, 0.3)] * 10 + [(3.0, 0.5)] * 10
    ]
    budget = budget_from(TYPE, rows)
    assert budget is not None
    assert budget.p == pytest.approx((0.3 * 10 + 0.5 * 30) / 40)
    assert budget.k is None and "0.5" in budget.note
    unmeasured = [replace(r, p=None) for r in rows]
    nobudget = budget_from(TYPE, unmeasured)
    assert nobudget is not None and nobudget.p is None and nobudget.k is None


def test_a_task_far_above_its_history_is_flagged_and_a_normal_one_is_not(
    history: TaskHistory,
) -> None:
    for i in range(MIN_RECORDS):
        record(history, i)
    normal = record_one(history, steps=12, tokens=1400, seconds=3.0)
    assert normal.anomaly is None

    costly = record_one(history, steps=12, tokens=40_000, seconds=3.0)
    assert costly.anomaly is not None
    [exceeded] = costly.anomaly.exceeded
    assert exceeded.metric == "tokens" and exceeded.value == 40_000
    assert exceeded.threshold < 40_000 and exceeded.mads > 3.5
    # It is kept, tied to its history row, and counted for its type.
    [kept] = history.anomalies()
    assert kept.history_id == costly.record.id and kept.exceeded == costly.anomaly.exceeded
    assert "tokens 40,000 >" in kept.describe()
    assert history.summary()[0].anomalies == 1


def test_the_threshold_is_the_median_plus_3_5_scaled_mads_of_log1p(history: TaskHistory) -> None:
    """A history with a wide spread (so the MAD rule, not the 2 x median floor, decides):
    just under the computed threshold is normal, just over it an anomaly (each against the
    same history: two types hold it, as a recorded task joins its type's history)."""
    seconds = [5.0 * 1.25**i for i in range(MIN_RECORDS)]
    for i, s in enumerate(seconds):
        record(history, i, seconds=s)
        record(history, i, task_type="other", seconds=s)
    logs = np.log1p(seconds)
    median = np.median(logs)
    threshold = np.expm1(median + 3.5 * 1.4826 * np.median(np.abs(logs - median)))
    assert threshold > 2 * np.expm1(median)
    under = record_one(history, steps=12, tokens=1400, seconds=float(threshold) * 0.99)
    assert under.anomaly is None
    over = record_one(history, "other", steps=12, tokens=1400, seconds=float(threshold) * 1.01)
    assert over.anomaly is not None
    assert [e.metric for e in over.anomaly.exceeded] == ["seconds"]
    assert over.anomaly.exceeded[0].threshold == pytest.approx(threshold)


def test_a_history_without_spread_flags_only_a_task_twice_its_median(history: TaskHistory) -> None:
    for i in range(MIN_RECORDS):
        record(history, i, steps=10, tokens=1000, seconds=2.0)
    assert record_one(history, steps=11).anomaly is None
    flagged = record_one(history, steps=25).anomaly
    assert flagged is not None and flagged.exceeded[0].mads == math.inf
    assert flagged.to_dict()["exceeded"][0]["mads"] is None  # JSON has no infinity


def test_no_anomaly_before_the_history_has_20_records(history: TaskHistory) -> None:
    for i in range(MIN_RECORDS - 1):
        record(history, i)
    assert record_one(history, tokens=10**9).anomaly is None
    assert history.anomalies() == []


def test_budgets_follow_the_recent_window(history: TaskHistory) -> None:
    for i in range(WINDOW):
        record(history, i, steps=100)
    for i in range(WINDOW):
        record(history, i, steps=10)
    budget = history.budget(TYPE)
    assert budget is not None and budget.records == WINDOW and budget.steps == 15


def test_forget_history_and_anomalies_by_type(history: TaskHistory) -> None:
    for i in range(MIN_RECORDS):
        record(history, i)
        record(history, i, task_type="recipe:fstrings")
    assert record_one(history, tokens=10**6).anomaly is not None
    assert history.forget("recipe:fstrings") == MIN_RECORDS
    assert history.budget("recipe:fstrings") is None and history.budget(TYPE) is not None
    assert history.forget() == MIN_RECORDS + 1
    # The anomaly outlives its history until forgotten itself.
    assert [(s.task_type, s.records, s.anomalies) for s in history.summary()] == [(TYPE, 0, 1)]
    assert history.forget_anomalies("recipe:fstrings") == 0
    assert history.forget_anomalies() == 1
    assert history.summary() == []


def test_impossible_figures_are_refused(history: TaskHistory) -> None:
    with pytest.raises(ValueError, match="kind"):
        history.record(TYPE, kind="run", steps=1, tokens=1, seconds=1.0,  # type: ignore[arg-type]
                       samples_per_step=1.0, p=0.9, success=True)  # fmt: skip
    with pytest.raises(ValueError, match="tokens"):
        record_one(history, tokens=-1)
    with pytest.raises(ValueError, match="seconds"):
        record_one(history, seconds=math.nan)
    with pytest.raises(ValueError, match="p must be"):
        record_one(history, p=1.5)
    assert history.records(TYPE) == []
