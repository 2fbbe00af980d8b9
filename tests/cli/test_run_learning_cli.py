"""`nanobot run` with learning: every run is recorded in its task type's history, a new run
takes its budgets and k from that history once it holds 20 runs (explicit flags win, and
one line says what was taken), `--no-learn` neither reads nor writes, and `nanobot status`
shows the one-line anomaly of a run that cost far more than its history. Real runs with
the simulated sampler (the model is irrelevant here), through the real command."""

from __future__ import annotations

import json

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.learning.history import TaskHistory
from nanobot_tui.engine.learning.store import LearningStore, learned_path
from nanobot_tui.engine.runs.store import RunStore

SIM = ("--sampler", "simulated:0.9")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str, str]:
    """(run id, stdout, stderr) of a `nanobot run wordcase ...` in the foreground."""
    code = cli.main(["run", "wordcase", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip().splitlines()[-1], out, err


def stored(run_id: str) -> dict[str, object]:
    with RunStore.open(run_id, readonly=True) as store:
        return store.meta()


def test_no_learn_is_offered_and_neither_reads_nor_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "--no-learn" in capsys.readouterr().out
    rid, _, _ = run(capsys, "--words", "5", *SIM, "--no-learn")
    assert stored(rid)["spec"]["learn"] is False  # type: ignore[index]
    assert not learned_path().exists()


def test_budgets_and_k_come_from_history_after_20_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for _ in range(19):
        _, out, err = run(capsys, "--words", "10", *SIM)
        assert "earlier" not in out + err
    rid, out, _ = run(capsys, "--words", "10", *SIM)
    assert "earlier" not in out  # 19 records before it: the defaults
    with LearningStore() as store:
        history = TaskHistory(store)
        assert len(history.records("wordcase10 (simulated)")) == 20
        budget = history.budget("wordcase10 (simulated)", steps=10)
    assert budget is not None and budget.k is not None

    rid, out, _ = run(capsys, "--words", "10", *SIM)
    assert out.splitlines()[0] == (
        f"k = {budget.k} and budgets from 20 earlier wordcase10 (simulated) runs"
    )
    spec = stored(rid)["spec"]
    assert spec["vote"]["k"] == budget.k  # type: ignore[index]
    assert spec["budgets"] == {  # type: ignore[index]
        "steps": budget.steps, "tokens": budget.tokens, "seconds": budget.seconds,
    }  # fmt: skip

    # Explicit flags win: --k and --max-steps; the other budgets still from history.
    rid, out, _ = run(capsys, "--words", "10", *SIM, "--k", "5", "--max-steps", "99")
    assert out.splitlines()[0] == "budgets from 21 earlier wordcase10 (simulated) runs"
    spec = stored(rid)["spec"]
    assert spec["vote"]["k"] == 5 and spec["budgets"]["steps"] == 99  # type: ignore[index]
    with LearningStore() as store:
        budget = TaskHistory(store).budget("wordcase10 (simulated)", steps=10)
    assert budget is not None
    assert spec["budgets"]["tokens"] == budget.tokens  # type: ignore[index]

    # Every flag given: nothing is taken, nothing said.
    _, out, _ = run(
        capsys, "--words", "10", *SIM, "--k", "2", "--max-steps", "50",
        "--max-tokens", "10", "--max-seconds", "60",
    )  # fmt: skip
    assert "earlier" not in out
    # --no-learn: the defaults, whatever the history holds.
    rid, out, _ = run(capsys, "--words", "10", *SIM, "--no-learn")
    assert "earlier" not in out
    assert stored(rid)["spec"]["budgets"] == {  # type: ignore[index]
        "steps": None, "tokens": None, "seconds": None,
    }  # fmt: skip


def seed_history(task_type: str, steps: int) -> None:
    with LearningStore() as store:
        history = TaskHistory(store)
        for _ in range(20):
            history.record(
                task_type, kind="domain", steps=steps, tokens=0, seconds=30.0,
                samples_per_step=3.0, p=0.9, success=True,
            )  # fmt: skip


EXPLICIT = ("--k", "4", "--max-steps", "1000", "--max-tokens", "1000", "--max-seconds", "600")


def test_an_anomaly_is_flagged_and_shown_by_status(capsys: pytest.CaptureFixture[str]) -> None:
    seed_history("wordcase40 (simulated)", steps=10)  # 40 steps: 4x the median
    seed_history("wordcase12 (simulated)", steps=12)  # 12 steps: as always
    odd, _, _ = run(capsys, "--words", "40", "--sampler", "simulated:0.99", *EXPLICIT)
    usual, _, _ = run(capsys, "--words", "12", "--sampler", "simulated:0.99", *EXPLICIT)

    assert cli.main(["status", usual]) == 0
    plain = capsys.readouterr().out
    assert "anomaly" not in plain

    assert cli.main(["status", odd]) == 0
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert lines[-1] == (
        "  anomaly: steps 40 > 20 (median 10), against earlier wordcase40 (simulated) runs"
    )
    assert len(lines) == len(plain.rstrip("\n").split("\n")) + 1  # one line more, no other

    assert cli.main(["status", odd, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["learning"]["anomaly"] == "steps 40 > 20 (median 10)"
    with LearningStore() as store:
        (anomaly,) = TaskHistory(store).anomalies()
    assert anomaly.task_type == "wordcase40 (simulated)"
    assert data["learning"]["recorded"] == anomaly.history_id
