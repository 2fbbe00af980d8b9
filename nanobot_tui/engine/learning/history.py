"""Budgets from history, and anomalies: what a task type (a recipe, a voting domain, an
agent skill) has cost before decides what a new task of that type may cost.

Every finished task is recorded: steps, tokens, seconds, samples per step, p (the
per-sample success rate it measured, when it did) and whether it succeeded. Budgets and
anomalies read the type's last `WINDOW` records, so they follow the type as it gets
cheaper with use.

The budget rule: with at least `MIN_RECORDS` (20) records, each budget (steps, tokens,
seconds) is 1.5 x the 90th percentile of the history (linear interpolation between order
statistics, as numpy's default), rounded up, and at least 1 step, 1 token, 1 second; k is
`maths.k_min` at the history's p (every record's p weighted by its samples, steps x
samples per step) for the steps the new run will take and the target (0.95 by default).
Before 20 records there is no budget (None: the defaults apply).

The anomaly rule: a task whose steps, tokens or seconds, on a log scale (log(1 + x), so a
task that cost nothing stays finite), lie more than 3.5 scaled median absolute deviations
above the median of the type's history is flagged: `log1p(x) > median + 3.5 * s`, with
s = 1.4826 x MAD (the scaled MAD, which estimates a normal's standard deviation). It must
also cost at least twice the history's median, so a history without spread (MAD 0) does
not flag a task that took one step more. The history needs `MIN_RECORDS` earlier records;
the task itself is not part of the history it is compared with. Each anomaly is kept in
the anomalies table with what it exceeded.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.voting import maths

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.spec import Budgets

__all__ = [
    "ANOMALY_MADS",
    "BUDGET_FACTOR",
    "KINDS",
    "MAD_SCALE",
    "METRICS",
    "MIN_RECORDS",
    "WINDOW",
    "Anomaly",
    "Exceeded",
    "HistoryBudget",
    "TaskHistory",
    "TaskRecord",
    "TaskTypeSummary",
]

MIN_RECORDS = 20
WINDOW = 200
BUDGET_FACTOR = 1.5
BUDGET_QUANTILE = 0.9
ANOMALY_MADS = 3.5
MAD_SCALE = 1.4826
ANOMALY_MIN_RATIO = 2.0
DEFAULT_TARGET = 0.95
# What a task costs: the metrics that get budgets and are checked for anomalies.
METRICS = ("steps", "tokens", "seconds")
Kind = Literal["recipe", "domain", "skill"]
KINDS: tuple[Kind, ...] = ("recipe", "domain", "skill")


@dataclass(frozen=True, slots=True)
class TaskRecord:
    task_type: str
    kind: str
    steps: int
    tokens: int
    seconds: float
    samples_per_step: float
    p: float | None
    success: bool
    finished: float = 0.0
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Exceeded:
    """One metric of an anomalous task against its history (log1p scale inside)."""

    metric: str
    value: float
    median: float  # of the history, in the metric's own unit
    threshold: float  # the value above which a task is anomalous, in the metric's unit
    mads: float  # how many scaled MADs above the median the value lies (inf: MAD 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mads": None if math.isinf(self.mads) else self.mads}


@dataclass(frozen=True, slots=True)
class Anomaly:
    task_type: str
    exceeded: tuple[Exceeded, ...]
    at: float
    history_id: int | None = None
    id: int | None = None

    def describe(self) -> str:
        """One line: what the task cost against its history."""
        parts = [
            f"{e.metric} {_num(e.value)} > {_num(e.threshold)} (median {_num(e.median)})"
            for e in self.exceeded
        ]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "task_type": self.task_type, "history_id": self.history_id,
            "at": self.at, "exceeded": [e.to_dict() for e in self.exceeded],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistoryBudget:
    """What a new task of `task_type` may take, from `records` earlier ones."""

    task_type: str
    records: int
    steps: int
    tokens: int
    seconds: float
    p: float | None  # the history's pooled p; None when no record measured one
    k: int | None  # k_min at p; None without p, or where voting cannot help (p <= 0.5)
    k_steps: int  # the run length k was chosen for
    target: float
    note: str = ""  # why k is None, when it is

    def as_budgets(self) -> Budgets:
        """The run spec's Budgets (engine.runs) with these limits."""
        from nanobot_tui.engine.runs.spec import Budgets

        return Budgets(steps=self.steps, tokens=self.tokens, seconds=self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TaskTypeSummary:
    task_type: str
    kind: str
    records: int
    successes: int
    budget: HistoryBudget | None
    anomalies: int
    last: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["budget"] = self.budget.to_dict() if self.budget else None
        data["success_rate"] = self.successes / self.records if self.records else None
        return data


@dataclass(frozen=True, slots=True)
class Recorded:
    """What `TaskHistory.record` did: the row it wrote, and the anomaly it found if any."""

    record: TaskRecord
    anomaly: Anomaly | None = None


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or float(value).is_integer() else f"{value:.3g}"


def quantile(values: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default,
    statistics' "inclusive" method)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def check_anomaly(task: TaskRecord, history: list[TaskRecord]) -> tuple[Exceeded, ...]:
    """The metrics on which `task` costs far more than `history` (the module's rule);
    empty when it does not, or when the history has fewer than MIN_RECORDS records."""
    if len(history) < MIN_RECORDS:
        return ()
    found = []
    for metric in METRICS:
        logs = [math.log1p(float(getattr(r, metric))) for r in history]
        median = statistics.median(logs)
        spread = MAD_SCALE * statistics.median(abs(x - median) for x in logs)
        value = float(getattr(task, metric))
        threshold = max(
            median + ANOMALY_MADS * spread, math.log1p(ANOMALY_MIN_RATIO * math.expm1(median))
        )
        if math.log1p(value) > threshold:
            mads = (math.log1p(value) - median) / spread if spread > 0 else math.inf
            found.append(Exceeded(metric, value, math.expm1(median), math.expm1(threshold), mads))
    return tuple(found)


_RECORD_COLUMNS = (
    "task_type, kind, steps, tokens, seconds, samples_per_step, p, success, finished, id"
)


def _record_from_row(row: tuple[Any, ...]) -> TaskRecord:
    task_type, kind, steps, tokens, seconds, sps, p, success, finished, rid = row
    return TaskRecord(task_type, kind, steps, tokens, seconds, sps, p, bool(success), finished, rid)


def _anomaly_from_row(row: tuple[Any, ...]) -> Anomaly:
    rid, task_type, history_id, at, exceeded_json = row
    exceeded = tuple(
        Exceeded(
            e["metric"],
            e["value"],
            e["median"],
            e["threshold"],
            math.inf if e["mads"] is None else e["mads"],
        )
        for e in json.loads(exceeded_json)
    )
    return Anomaly(task_type, exceeded, at, history_id, rid)


class TaskHistory:
    """Task history, budgets and anomalies over a LearningStore."""

    def __init__(self, store: LearningStore) -> None:
        self.store = store

    def record(
        self,
        task_type: str,
        *,
        kind: Kind,
        steps: int,
        tokens: int,
        seconds: float,
        samples_per_step: float,
        p: float | None,
        success: bool,
    ) -> Recorded:
        """Record a finished task; compare it with the type's earlier history first, and
        keep an anomaly when it cost far more. ValueError for impossible figures (a
        negative cost, a p outside [0, 1], an unknown kind): the caller's bug."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        for name, value in (("steps", steps), ("tokens", tokens), ("seconds", seconds),
                            ("samples_per_step", samples_per_step)):  # fmt: skip
            if not value >= 0 or math.isinf(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if p is not None and not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        now = time.time()
        with self.store.write() as conn:
            # In the write transaction: two writers of one type each compare with the other.
            history = self._window(task_type, conn=conn)
            task = TaskRecord(task_type, kind, int(steps), int(tokens), float(seconds),
                              float(samples_per_step), p, bool(success), now)  # fmt: skip
            cursor = conn.execute(
                "INSERT INTO task_history (task_type, kind, steps, tokens, seconds, "
                "samples_per_step, p, success, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task_type, kind, task.steps, task.tokens, task.seconds,
                 task.samples_per_step, p, int(success), now),
            )  # fmt: skip
            task = replace(task, id=cursor.lastrowid)
            exceeded = check_anomaly(task, history)
            anomaly = None
            if exceeded:
                cursor = conn.execute(
                    "INSERT INTO anomalies (task_type, history_id, at, exceeded_json) "
                    "VALUES (?, ?, ?, ?)",
                    (task_type, task.id, now, json.dumps([e.to_dict() for e in exceeded])),
                )
                anomaly = Anomaly(task_type, exceeded, now, task.id, cursor.lastrowid)
        return Recorded(task, anomaly)

    def _window(self, task_type: str, conn: Any = None) -> list[TaskRecord]:
        sql = (
            f"SELECT {_RECORD_COLUMNS} FROM task_history WHERE task_type = ? "
            "ORDER BY id DESC LIMIT ?"
        )
        args = (task_type, WINDOW)
        rows = (
            conn.execute(sql, args).fetchall() if conn is not None else self.store.query(sql, args)
        )
        return [_record_from_row(r) for r in reversed(rows)]

    def records(self, task_type: str) -> list[TaskRecord]:
        """The type's last WINDOW records, oldest first: what budgets and anomalies read."""
        return self._window(task_type)

    def budget(
        self, task_type: str, *, steps: int | None = None, target: float = DEFAULT_TARGET
    ) -> HistoryBudget | None:
        """The type's budgets and k from its history (the module's rule); None before
        MIN_RECORDS records. `steps`: how many steps the new run has, for k (default: the
        history's median)."""
        history = self._window(task_type)
        return budget_from(task_type, history, steps=steps, target=target)

    def anomalies(self, task_type: str | None = None) -> list[Anomaly]:
        """Every kept anomaly (of one type), newest first."""
        where, args = ("WHERE task_type = ?", (task_type,)) if task_type else ("", ())
        rows = self.store.query(
            f"SELECT id, task_type, history_id, at, exceeded_json FROM anomalies {where} "
            "ORDER BY id DESC",
            args,
        )
        return [_anomaly_from_row(r) for r in rows]

    def summary(self) -> list[TaskTypeSummary]:
        """Per task type: records, successes, the budget (None before MIN_RECORDS), and
        how many anomalies it has."""
        anomalies = dict(
            self.store.query("SELECT task_type, COUNT(*) FROM anomalies GROUP BY task_type")
        )
        rows = self.store.query(
            "SELECT task_type, MAX(kind), COUNT(*), SUM(success), MAX(finished) "
            "FROM task_history GROUP BY task_type ORDER BY task_type"
        )
        out = []
        for task_type, kind, n, successes, last in rows:
            out.append(TaskTypeSummary(
                task_type, kind, n, int(successes or 0), self.budget(task_type),
                int(anomalies.pop(task_type, 0)), last,
            ))  # fmt: skip
        for task_type, n in sorted(anomalies.items()):  # anomalies whose history was forgotten
            out.append(TaskTypeSummary(task_type, "", 0, 0, None, int(n)))
        return out

    def forget(self, task_type: str | None = None) -> int:
        """Remove the history (of one type); returns how many records went. Its anomalies
        stay until `forget_anomalies`."""
        return self._delete("task_history", task_type)

    def forget_anomalies(self, task_type: str | None = None) -> int:
        return self._delete("anomalies", task_type)

    def _delete(self, table: str, task_type: str | None) -> int:
        where, args = (" WHERE task_type = ?", (task_type,)) if task_type else ("", ())
        with self.store.write() as conn:
            return int(conn.execute(f"DELETE FROM {table}{where}", args).rowcount)


def budget_from(
    task_type: str,
    history: list[TaskRecord],
    *,
    steps: int | None = None,
    target: float = DEFAULT_TARGET,
) -> HistoryBudget | None:
    """Budgets and k from `history` (the module's rule); None before MIN_RECORDS."""
    if len(history) < MIN_RECORDS:
        return None

    def limit(metric: str) -> float:
        return BUDGET_FACTOR * quantile(
            [float(getattr(r, metric)) for r in history], BUDGET_QUANTILE
        )

    # A budget must be positive (runs.spec.Budgets): a history of tasks that cost nothing
    # (every step reused) still allows one step, one token, one second.
    budget_steps = max(1, math.ceil(limit("steps")))
    budget_tokens = max(1, math.ceil(limit("tokens")))
    budget_seconds = max(1.0, limit("seconds"))
    weighted = [(r.p, max(r.steps * r.samples_per_step, 1.0)) for r in history if r.p is not None]
    p = sum(p * w for p, w in weighted) / sum(w for _, w in weighted) if weighted else None
    k_steps = (
        steps if steps is not None else max(1, round(statistics.median(r.steps for r in history)))
    )
    k, note = None, ""
    if p is None:
        note = "no record measured p"
    else:
        try:
            k = maths.k_min(p, k_steps, target)
        except maths.Infeasible as exc:
            note = exc.reason
    return HistoryBudget(
        task_type, len(history), budget_steps, budget_tokens, budget_seconds, p, k, k_steps,
        target, note,
    )  # fmt: skip
