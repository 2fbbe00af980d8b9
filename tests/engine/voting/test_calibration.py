"""Calibration (p with a Wilson interval, red flags, throughput), planning (MAKER's k and
the infeasible case) and stats.db (round trip, WAL, corrupt and newer files)."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.voting import calibration_store
from nanobot_tui.engine.voting.calibration import (
    Calibration,
    CalibrationFailed,
    calibrate,
    plan,
    wilson_interval,
)
from nanobot_tui.engine.voting.domains import Step
from nanobot_tui.engine.voting.domains.wordcase import WordCase
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from nanobot_tui.engine.voting.samples import RED_PARSE, RED_TOO_LONG, Sample
from tests.conftest import free_port


class FakeSampler:
    """A FAKE model for word case: with probability p it means the right word, else a
    wrong one; a fixed share of its replies are in a format only the lenient parser
    reads (strict red flag `parse`), so p and the red-flag rate are both known."""

    simulated = False

    def __init__(self, domain: WordCase, p: float, *, sloppy: float = 0.2, seed: int = 0):
        self.domain = domain
        self.p = p
        self.sloppy = sloppy
        self.name = f"fake p={p}"
        self.token_cap = 750
        self.rng = random.Random(seed)
        self.calls: list[list[float]] = []

    async def sample(
        self, step: Step, temperatures: list[float], paraphrase: int = 0
    ) -> list[Sample]:
        self.calls.append(temperatures)
        out = []
        for t in temperatures:
            word = self.domain.truth(step)
            if self.rng.random() >= self.p:  # a misspelling, in capitals
                word = self.rng.choice(self.domain.wrong_answers(step, 6)[2:])
            if self.rng.random() < self.sloppy:
                out.append(Sample(None, None, RED_PARSE, f"The answer is {word}.", 7, 0, 0.0, t))
            else:
                answer = self.domain.parse_strict(f"answer = {word}")
                out.append(Sample(answer, answer, None, f"answer = {word}", 5, 0, 0.0, t))
        return out


# --------------------------------------------------------------------------- Wilson


def test_wilson_interval_reference_values() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)
    low, high = wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    with pytest.raises(ValueError):
        wilson_interval(1, 0)


# --------------------------------------------------------------------------- calibrate


async def test_calibrate_with_a_fake_sampler_covers_its_known_p() -> None:
    domain = WordCase(count=100, seed=2)
    fake = FakeSampler(domain, 0.8, sloppy=0.2, seed=11)
    seen: list[tuple[int, int]] = []
    cal = await calibrate(domain, fake, 400, seed=3, progress=lambda d, t: seen.append((d, t)))
    assert cal.samples == 400 and cal.model == "fake p=0.8" and cal.domain == "wordcase"
    assert cal.ci_low <= 0.8 <= cal.ci_high
    assert cal.ci_low <= cal.p <= cal.ci_high
    assert cal.ci_high - cal.ci_low < 0.1
    # Scored leniently: the sloppy replies count when they name the right word ...
    assert cal.p > 0.7
    # ... and are red flags for the strict parser.
    assert cal.red_flags[RED_PARSE] / 400 == pytest.approx(cal.red_flag_rate)
    assert 0.15 < cal.red_flag_rate < 0.25
    assert cal.red_flags[RED_TOO_LONG] == 0
    assert cal.tokens_per_sample == pytest.approx(5.4, abs=0.3)
    assert cal.seconds_per_sample > 0 and cal.samples_per_second > 0
    # One sample per step, at 0.1; progress after each.
    assert all(c == [0.1] for c in fake.calls)
    assert seen[-1] == (400, 400) and len(seen) == 400
    d = cal.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["ciLow"] == cal.ci_low and d["redFlags"][RED_PARSE] == cal.red_flags[RED_PARSE]


async def test_calibrate_is_reproducible_and_checks_its_arguments() -> None:
    domain = WordCase(count=50, seed=1)
    a = await calibrate(domain, FakeSampler(domain, 0.6, seed=1), 60, seed=9)
    b = await calibrate(domain, FakeSampler(domain, 0.6, seed=1), 60, seed=9)
    assert (a.correct, a.red_flags) == (b.correct, b.red_flags)
    with pytest.raises(ValueError, match="samples"):
        await calibrate(domain, FakeSampler(domain, 0.6), 0)
    with pytest.raises(ValueError, match="concurrency"):
        await calibrate(domain, FakeSampler(domain, 0.6), 5, concurrency=0)


@pytest.fixture
async def llm(llama_server: str) -> AsyncIterator[LLMClient]:
    async with LLMClient(llama_server) as client:
        yield client


async def test_calibrate_the_real_model_on_word_case(llm: LLMClient) -> None:
    domain = WordCase(count=100, seed=4)
    sampler = LLMSampler(llm, domain, name="local main: SmolLM2-135M-Instruct", seed=1)
    cal = await calibrate(domain, sampler, 24, seed=1)
    print(cal.to_dict())
    assert cal.model == "SmolLM2-135M-Instruct"
    assert 0.0 <= cal.p <= 1.0
    assert cal.ci_low <= cal.p <= cal.ci_high
    assert cal.samples == 24 and cal.concurrency == 4 and cal.temperature == 0.1
    assert 3 <= cal.tokens_per_sample <= 80  # ~6; one rambling reply to the cap is 751
    assert cal.seconds_per_sample > 0  # measured; benchmarks/wordcase_real.py reports it
    assert sum(cal.red_flags.values()) == round(cal.red_flag_rate * 24)


async def test_calibrate_against_a_closed_port_fails_with_one_line() -> None:
    domain = WordCase(count=10)
    async with LLMClient(f"http://127.0.0.1:{free_port()}", retries=0) as dead:
        sampler = LLMSampler(dead, domain, name="local main: nothing")
        with pytest.raises(CalibrationFailed, match=r"all 4 requests failed: .*cannot connect"):
            await calibrate(domain, sampler, 4)


# --------------------------------------------------------------------------- plan


def test_plan_reproduces_makers_reference_points() -> None:
    steps = 1_048_575
    assert plan(0.998, steps, 0.95).k == 3
    assert plan(0.964, steps, 0.95).k == 6
    p = plan(0.964, steps, 0.95, tokens_per_sample=400, samples_per_second=20, usd_per_mtok=2)
    assert p.feasible and p.reason is None
    assert p.p_success is not None and p.p_success >= 0.95
    assert p.samples_per_step is not None and 6 < p.samples_per_step < 7
    assert p.total_samples == pytest.approx(p.samples_per_step * steps)
    assert p.tokens == pytest.approx(p.total_samples * 400)
    assert p.seconds == pytest.approx(p.total_samples / 20)
    assert p.cost == pytest.approx(p.tokens / 1e6 * 2)
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["k"] == 6 and d["feasible"] is True and d["pVote"] == p.p_vote


def test_plan_without_throughput_leaves_the_unknowns_empty() -> None:
    p = plan(0.9, 1000, 0.95)
    assert p.feasible and p.k is not None
    assert p.tokens is None and p.seconds is None and p.cost is None
    # Red flags cost samples: the same k, more samples per step.
    flagged = plan(0.9, 1000, 0.95, red_flag_rate=0.5)
    assert flagged.k == p.k
    assert flagged.samples_per_step == pytest.approx(2 * p.samples_per_step)


@pytest.mark.parametrize("p", [0.02, 0.0, 0.3, 0.5])
def test_plan_is_infeasible_at_or_below_one_half(p: float) -> None:
    result = plan(p, 1_048_575, 0.95, tokens_per_sample=300, samples_per_second=10)
    assert not result.feasible
    assert result.k is None and result.seconds is None and result.tokens is None
    assert result.reason is not None and "≤ 0.5: voting cannot amplify it" in result.reason
    if p < 0.5:
        assert result.reason.endswith("more votes make it worse")
    d = result.to_dict()
    assert d["feasible"] is False and d["reason"] == result.reason
    assert json.loads(json.dumps(d)) == d


def test_plan_message_for_p_002() -> None:
    assert plan(0.02, 100, 0.95).reason == (
        "p = 0.02 ≤ 0.5: voting cannot amplify it; more votes make it worse"
    )


@pytest.mark.parametrize(
    ("p", "steps", "target"),
    [(1.2, 10, 0.9), (math.nan, 10, 0.9), (0.9, 0, 0.9), (0.9, 10, 1.0), (0.9, 10, 0.0)],
)
def test_plan_refuses_bad_arguments(p: float, steps: int, target: float) -> None:
    with pytest.raises(ValueError):
        plan(p, steps, target)


# --------------------------------------------------------------------------- stats.db


async def _cal(p: float, model: str = "m", seed: int = 0) -> Calibration:
    d = WordCase(count=30, seed=seed)
    return await calibrate(d, FakeSampler(d, p, seed=seed), 40, seed=seed, model=model)


async def test_stats_round_trip_in_wal_mode(nanobot_home: Path) -> None:
    assert await calibration_store.latest_calibration("m", "wordcase") is None
    assert await calibration_store.list_calibrations() == []
    assert not calibration_store.stats_path().exists()  # reading creates nothing
    first = await _cal(0.7, seed=1)
    second = await _cal(0.9, seed=2)
    other = await _cal(0.6, model="other", seed=3)
    for cal in (first, second, other):
        assert await calibration_store.record_calibration(cal) > 0
    path = nanobot_home / "stats.db"
    assert calibration_store.stats_path() == path and path.exists()
    latest = await calibration_store.latest_calibration("m", "wordcase")
    assert latest == second  # every field back, red flags included
    assert await calibration_store.latest_calibration("m", "hanoi-4") is None
    assert await calibration_store.list_calibrations() == [first, second, other]
    assert await calibration_store.list_calibrations(model="other") == [other]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(calibration_store.SCHEMA_VERSION),
        )
        cols = {r[1] for r in db.execute("PRAGMA table_info(calibrations)")}
    assert {"model", "domain", "date", "samples", "p", "ci_low", "ci_high", "red_flag_rate",
            "red_flags_json", "tokens_per_sample", "seconds_per_sample", "token_cap",
            "temperature"} <= cols  # fmt: skip


async def test_a_corrupt_stats_db_gives_one_line_and_is_kept(nanobot_home: Path) -> None:
    nanobot_home.mkdir(parents=True)
    path = nanobot_home / "stats.db"
    junk = b"this is not a database\n" * 100
    path.write_bytes(junk)
    cal = await _cal(0.7)
    for call in (
        calibration_store.record_calibration(cal),
        calibration_store.latest_calibration("m", "wordcase"),
        calibration_store.list_calibrations(),
    ):
        with pytest.raises(calibration_store.StatsError) as info:
            await call
        message = str(info.value)
        assert "\n" not in message
        assert str(path) in message and "not a readable SQLite database" in message
    assert path.read_bytes() == junk


async def test_a_stats_db_from_a_newer_nanobot_is_refused(nanobot_home: Path) -> None:
    await calibration_store.record_calibration(await _cal(0.7))
    path = nanobot_home / "stats.db"
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(calibration_store.StatsError, match=r"schema version 99 .* newer nanobot"):
        await calibration_store.list_calibrations()
