"""`--learn-loops` on `nanobot run` and `nanobot process`: offered in the help, stored
with the run's spec, an unknown loop a one-line error, `--no-learn` still wins, budgets
and k from history only with the "history" loop; `nanobot process` takes its budgets and
k from its task type's history as `nanobot run` does (after MIN_RECORDS records; flags
win). Real commands, in process, with the SIMULATED sampler (what is tested is what the
commands take and store, not a model); real learned.db in the test's NANOBOT_HOME.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.learning.history import MIN_RECORDS, TaskHistory
from nanobot_tui.engine.learning.store import LearningStore, learned_path
from nanobot_tui.engine.runs.store import RunStore
from tests.cli.test_process_code_cli import make_repo

SIM = ("--sampler", "simulated:0.9")


def stored_spec(run_id: str) -> dict[str, Any]:
    with RunStore.open(run_id, readonly=True) as store:
        spec: dict[str, Any] = store.meta()["spec"]
    return spec


def seed_history(
    task_type: str, kind: str, steps: int, n: int = MIN_RECORDS, p: float = 0.9
) -> None:
    with LearningStore() as store:
        history = TaskHistory(store)
        for _ in range(n):
            history.record(
                task_type, kind=kind, steps=steps, tokens=0, seconds=30.0,  # type: ignore[arg-type]
                samples_per_step=3.0, p=p, success=True,
            )  # fmt: skip


def run_wordcase(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    code = cli.main(["run", "wordcase", "--words", "10", *SIM, *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip().splitlines()[-1], out


def test_both_commands_offer_the_switch(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "process"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--learn-loops LOOPS" in text and "reuse (verified step results)" in text


def test_an_unknown_loop_is_one_line_and_starts_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    for argv in (
        ["run", "wordcase", "--words", "3", *SIM, "--learn-loops", "reuse,cache"],
        ["process", "f-strings", "--on", str(repo), "--recipe", "fstrings", *SIM,
         "--learn-loops", "cache"],
    ):  # fmt: skip
        assert cli.main(argv) == 2
        out, err = capsys.readouterr()
        assert err == "nanobot: unknown learning loop 'cache' (known: reuse, examples, history)\n"
        assert out == ""
    assert not learned_path().exists()


def test_run_stores_the_loops_and_takes_history_only_with_the_history_loop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed_history("wordcase10 (simulated)", "domain", steps=10)
    rid, out = run_wordcase(capsys, "--learn-loops", "examples,reuse")
    assert "earlier" not in out
    spec = stored_spec(rid)
    assert spec["learn_loops"] == ["reuse", "examples"] and spec["learn"] is True
    assert spec["budgets"] == {"steps": None, "tokens": None, "seconds": None}
    with LearningStore() as store:  # nor was it recorded
        assert len(TaskHistory(store).records("wordcase10 (simulated)")) == MIN_RECORDS

    rid, out = run_wordcase(capsys, "--learn-loops", "history")
    assert f"from {MIN_RECORDS} earlier wordcase10 (simulated) runs" in out.splitlines()[0]
    assert stored_spec(rid)["learn_loops"] == ["history"]

    rid, out = run_wordcase(capsys, "--learn-loops", "history", "--no-learn")  # it wins
    assert "earlier" not in out and stored_spec(rid)["learn"] is False
    rid, _ = run_wordcase(capsys)
    assert stored_spec(rid)["learn_loops"] == ["reuse", "examples", "history"]


def process_json(capsys: pytest.CaptureFixture[str], repo: Path, *args: str) -> tuple[str, str]:
    """(run id, stderr) of a simulated f-strings process in the foreground, --json."""
    argv = ["process", "f-strings", "--on", str(repo), "--recipe", "fstrings"]
    code = cli.main([*argv, "--sampler", "simulated:1.0", "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out.strip().splitlines()[-1])
    run_id: str = data["run"]["run_id"]
    return run_id, err


def test_process_takes_budgets_and_k_from_history_after_enough_records(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    task_type = "code-fstrings (simulated)"
    seed_history(task_type, "recipe", steps=2, n=MIN_RECORDS - 1, p=0.6)  # k above 2
    rid, err = process_json(capsys, repo)
    assert "earlier" not in err  # one record short: the defaults (k = 2)
    spec = stored_spec(rid)
    assert spec["vote"]["k"] == 2 and spec["budgets"]["steps"] is None

    with LearningStore() as store:  # the process itself was the MIN_RECORDS-th
        budget = TaskHistory(store).budget(task_type, steps=2)
    assert budget is not None and budget.k is not None and budget.k != 2
    rid, err = process_json(capsys, repo)
    line = f"k = {budget.k} and budgets from {MIN_RECORDS} earlier {task_type} runs"
    assert line in err.splitlines()
    spec = stored_spec(rid)
    assert spec["vote"]["k"] == budget.k
    assert spec["budgets"] == {
        "steps": budget.steps, "tokens": budget.tokens, "seconds": budget.seconds,
    }  # fmt: skip

    rid, err = process_json(capsys, repo, "--k", "1", "--max-steps", "7")  # flags win
    assert f"budgets from {MIN_RECORDS + 1} earlier {task_type} runs" in err.splitlines()
    spec = stored_spec(rid)
    assert spec["vote"]["k"] == 1 and spec["budgets"]["steps"] == 7

    rid, err = process_json(capsys, repo, "--learn-loops", "reuse,examples")
    assert "earlier" not in err and stored_spec(rid)["vote"]["k"] == 2
    assert stored_spec(rid)["learn_loops"] == ["reuse", "examples"]
