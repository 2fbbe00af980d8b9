"""Crash torture, the short version (benchmarks/crash_torture.py is the full one): a
14-disk simulated Hanoi run (16,383 steps) executed by the detached worker is SIGKILLed
20 times at random moments and resumed each time."""

from __future__ import annotations

from benchmarks.crash_torture import torture


def test_twenty_sigkills_lose_nothing_and_repeat_nothing() -> None:
    report = torture(14, 20, commit_interval=0.005, rng_seed=7)
    assert report["kills_survived"] == 20
    assert report["status"] == "completed" and report["solved"] and report["errors"] == 0
    # Every step exactly once: rows 0..N-1 (the primary key forbids a second row), each
    # executed on its first attempt as far as the store records.
    assert report["rows"] == report["steps"] == 16_383
    assert (report["first_step"], report["last_step"]) == (0, 16_382)
    assert report["executed_once"]
    # Zero lost completed nodes: what the runner reported committed before each kill was
    # in the store after it, and unchanged at the end.
    assert report["lost_after_kills"] == 0 and report["changed_after_kills"] == 0
    assert report["final_state_is_goal"]
    # One trace line per step, none twice (the last batch's lines are repaired on resume).
    assert report["trace_lines"] == 16_383 and report["trace_steps_once"]
    # And the killed-20-times run voted exactly as an uninterrupted one with its seed.
    assert report["same_as_uninterrupted"]
