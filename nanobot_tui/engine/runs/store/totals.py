"""A run's totals: the counts kept in meta "totals", updated by the writer in the same
transaction as the rows they count, so `status` never has to count rows."""

from __future__ import annotations

import json
from typing import Any

from nanobot_tui.engine.runs.store.rows import StepOut

Totals = dict[str, Any]


def new_totals() -> Totals:
    return {
        "steps_done": 0,
        "completed": 0,
        "skipped": 0,
        "failed": 0,
        "wrong": 0,
        "errors": 0,
        "errors_by_reason": {},
        "samples": 0,
        "valid": 0,
        "tokens": 0,
        "red_flags": {},
        "votes_hist": {},
        "rounds_hist": {},
        "retried": 0,
        "max_step": -1,
        "rate": 0.0,
    }


def count_run(totals: Totals, n: int, last: int, rounds: int, samples: int) -> None:
    totals["steps_done"] += n
    totals["completed"] += n
    totals["samples"] += n * samples
    totals["valid"] += n * samples
    _add(totals["votes_hist"], str(samples), n)
    _add(totals["rounds_hist"], str(rounds), n)
    if last > totals["max_step"]:
        totals["max_step"] = last


def count_mixed(totals: Totals, m: tuple[int, int, int, int, str, str | None]) -> None:
    step, rounds, samples, valid, _, flags = m
    totals["steps_done"] += 1
    totals["completed"] += 1
    totals["samples"] += samples
    totals["valid"] += valid
    _add(totals["votes_hist"], str(valid))
    _add(totals["rounds_hist"], str(rounds))
    if flags:
        for reason, n in json.loads(flags).items():
            _add(totals["red_flags"], reason, n)
    if step > totals["max_step"]:
        totals["max_step"] = step


def count_row(totals: Totals, r: StepOut) -> None:
    totals["steps_done"] += 1
    totals[r.status] = totals.get(r.status, 0) + 1
    totals["samples"] += r.samples
    totals["valid"] += r.valid
    totals["tokens"] += r.tokens
    _add(totals["votes_hist"], str(r.valid))
    _add(totals["rounds_hist"], str(r.rounds))
    if r.red_flags:
        for reason, n in r.red_flags.items():
            _add(totals["red_flags"], reason, n)
    if r.attempts > 1:
        totals["retried"] += 1
    if r.correct == 0 or r.status != "completed":
        totals["errors"] += 1
        if r.status == "completed":
            totals["wrong"] += 1
        _add(
            totals["errors_by_reason"],
            r.reason or ("wrong" if r.status == "completed" else "error"),
        )
    if r.step > totals["max_step"]:
        totals["max_step"] = r.step


def uncount_row(
    totals: Totals,
    status: str,
    rounds: int,
    samples: int,
    valid: int,
    tokens: int,
    correct: int | None,
    error: str | None,
) -> None:
    """Take a stored step row back out of the totals (a failed step voted again)."""
    totals["steps_done"] -= 1
    totals[status] = totals.get(status, 0) - 1
    totals["samples"] -= samples
    totals["valid"] -= valid
    totals["tokens"] -= tokens
    if correct == 0 or status != "completed":
        totals["errors"] -= 1
        reason = "wrong" if status == "completed" else (error or "error").split(":")[0]
        _take(totals["errors_by_reason"], reason)
    _take(totals["votes_hist"], str(valid))
    _take(totals["rounds_hist"], str(rounds))


def _add(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def _take(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) - 1
    if counts[key] <= 0:
        del counts[key]
