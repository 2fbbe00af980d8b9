"""The learning curve's distill arm, without a model (a simulated sampler stores nothing to
learn from, by design): it runs beside another arm, its learning jobs come after every
--learn-every tasks but the last, in its own home, and say nothing was learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import learning_curve as lc


@pytest.mark.timeout(300)
def test_the_distill_arm_learns_on_schedule_in_its_own_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows_file, log, home = tmp_path / "rows.jsonl", tmp_path / "learn.jsonl", tmp_path / "h"
    flags = ["--tasks", "5", "--arms", "all,distill", "--learn-every", "2",
             "--sampler", "simulated:0.9", "--json", "--home", str(home)]  # fmt: skip

    assert lc.main([*flags, "--rows", str(rows_file), "--learn-log", str(log)]) == 0

    out = json.loads(capsys.readouterr().out)
    jobs = [json.loads(line) for line in log.read_text().splitlines()]
    assert out["learnJobs"] == jobs
    assert [j["after_task"] for j in jobs] == [1, 3]  # after tasks 2 and 4 of 5
    for job in jobs:
        assert job["trained"] == 0 and job["step_types"] == []
        assert str(home / "distill" / "learned.db") in job["line"]
    rows = lc.read_rows(rows_file)
    assert sorted((r["task"], r["arm"]) for r in rows) == sorted(
        (t, a) for t in range(5) for a in ("all", "distill")
    )
    assert all(r["adapter"] is None for r in rows if r["arm"] == "distill")
    assert all("adapter" not in r for r in rows if r["arm"] == "all")
    assert set(out["arms"]) == {"all", "distill"}
    assert len(list((home / "distill" / "runs").iterdir())) == 5


def test_an_unknown_arm_is_one_line_naming_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        lc.main(["--arms", "distil", "--sampler", "simulated:0.9"])
    err = capsys.readouterr().err
    assert "unknown distil" in err and "distill" in err
