"""learned_overview(): everything learned, read in one go from a real learned.db and real
learned skills; it reads only (an empty home stays empty), keeps the task curve in the
order tasks finished, and names the newest thing of each kind that was learned."""

from __future__ import annotations

import sqlite3

from nanobot_tui.engine.learning import skills
from nanobot_tui.engine.learning.history import MIN_RECORDS, TaskHistory
from nanobot_tui.engine.learning.overview import learned_overview
from nanobot_tui.engine.learning.reuse import ResultCache
from nanobot_tui.engine.learning.store import LearningStore, learned_path
from nanobot_tui.paths import skills_dir


def test_an_empty_home_is_empty_and_stays_so() -> None:
    overview = learned_overview(learning=True)
    assert overview.empty and not overview.exists
    assert (overview.results, overview.history, overview.anomalies) == ([], [], [])
    assert (overview.skills, overview.curve, overview.last) == ([], [], [])
    assert overview.to_dict() == {
        "path": str(learned_path()), "learning": True, "min_records": MIN_RECORDS,
        "results": [], "examples": [], "history": [], "anomalies": [], "skills": [],
    }  # fmt: skip
    assert not learned_path().exists() and not skills_dir().exists()


def test_lookups_that_all_missed_are_nothing_learned() -> None:
    with LearningStore() as store:
        ResultCache(store).get("wordcase", "cat", fingerprint="fp", model="m")
    overview = learned_overview(learning=False)
    assert overview.exists and overview.empty and not overview.learning
    [summary] = overview.results
    assert (summary.results, summary.lookups, summary.hit_rate) == (0, 1, 0.0)


def test_the_curve_keeps_task_order_across_types_and_its_limit() -> None:
    with LearningStore() as store:
        history = TaskHistory(store)
        for i in range(6):
            history.record("a" if i % 2 else "b", kind="recipe", steps=1, tokens=100 + i,
                           seconds=1.0, samples_per_step=1.0, p=None, success=True)  # fmt: skip
    curve = learned_overview(learning=True, curve_tasks=4).curve
    assert [(r.task_type, r.tokens) for r in curve] == [
        ("b", 102), ("a", 103), ("b", 104), ("a", 105),
    ]  # fmt: skip


def test_the_newest_of_each_kind_newest_first() -> None:
    with LearningStore() as store:
        cache = ResultCache(store)
        cache.put("wordcase", "cat", "CAT", fingerprint="fp", model="m", verified_by="truth")
        history = TaskHistory(store)
        for _ in range(MIN_RECORDS):
            history.record("t", kind="domain", steps=10, tokens=100, seconds=1.0,
                           samples_per_step=1.0, p=None, success=True)  # fmt: skip
        history.record("t", kind="domain", steps=10, tokens=9_000, seconds=1.0,
                       samples_per_step=1.0, p=None, success=False)  # fmt: skip
    learner = skills.SkillLearner()
    for i in range(skills.DEFAULT_MIN_SUCCESSES):
        steps = (skills.ToolStep("read_file", {"path": f"n{i}"}),
                 skills.ToolStep("ctx_length", {"volume": f"n{i}"}))  # fmt: skip
        learner.observe_turn(skills.AgentTurn(
            session=f"s{i}", index=0, task=f"count the lines of n{i}", steps=steps,
            success=True, reason="answered", ts="2026-01-01T00:00:00",
        ))  # fmt: skip
    # Fixed times, so that the order is known: result, then task and anomaly, then skill.
    with sqlite3.connect(learned_path()) as conn:
        conn.execute("UPDATE step_results SET created = 1000")
        conn.execute("UPDATE task_history SET finished = 2000")
        conn.execute("UPDATE anomalies SET at = 2000")
    overview = learned_overview(learning=True)
    assert not overview.empty
    [skill] = overview.skills
    kinds = [(item.kind, item.name, item.detail) for item in overview.last]
    assert kinds[0] == ("skill", skill.name, "active")  # created now: the newest
    assert set(kinds[1:3]) == {
        ("task", "t", "failed, 9,000 tokens"),
        ("anomaly", "t", "tokens far above"),
    }
    assert kinds[3] == ("result", "wordcase", "truth")
