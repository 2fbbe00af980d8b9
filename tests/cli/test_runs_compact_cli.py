"""Compact traces: `nanobot runs compact` gzips a run's trace file; `nanobot traces`
and the store's trace lines give the very same lines after it, a stopped run that was
compacted resumes and traces every step once, `runs rm` removes the compacted file.
Real run stores and trace files made by the engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.runs.prune import run_size
from nanobot_tui.engine.runs.store import RunStore
from nanobot_tui.engine.runs.store.places import packed_trace_path, trace_path
from nanobot_tui.engine.runs.tree import ROOT_ID
from tests.cli.test_runs_prune_cli import make_run

ALL = "1000000"


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert cli.main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def traced(capsys: pytest.CaptureFixture[str], rid: str) -> list[str]:
    assert cli.main(["traces", "--run", rid, "--last", ALL]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_finished_runs_traces_shrink_and_read_the_same(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rid = make_run(12)  # 4,095 steps, completed
    plain = trace_path(rid)
    lines = traced(capsys, rid)
    assert len(lines) == 4095 and lines == plain.read_text().splitlines()
    with RunStore.open(rid) as store:
        stored = store.trace_lines(node=ROOT_ID, limit=5000)
    before = plain.stat().st_size
    size_before = run_size(rid)

    dry = cli_json(capsys, "runs", "compact", "--all", "--dry-run", "--json")
    assert dry["runs"] == [{"id": rid, "status": "completed", "before": before, "after": None}]
    assert plain.exists() and not packed_trace_path(rid).exists()

    got = cli_json(capsys, "runs", "compact", "--all", "--json")
    after = packed_trace_path(rid).stat().st_size
    assert got["runs"] == [{"id": rid, "status": "completed", "before": before, "after": after}]
    assert not plain.exists() and after * 10 < before  # lines that differ in a number
    assert run_size(rid) < size_before
    # Every reader: the trace command (the last lines and all of them), the store's.
    assert traced(capsys, rid) == lines
    assert cli.main(["traces", "--run", rid, "--last", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == lines[-2:]
    assert cli.main(["traces", "--last", "1"]) == 0  # the run traced last, found compacted
    assert capsys.readouterr().out.splitlines() == lines[-1:]
    with RunStore.open(rid) as store:
        assert store.trace_lines(node=ROOT_ID, limit=5000) == stored
    # Nothing left to compact; rm takes the compacted file too.
    assert cli_json(capsys, "runs", "compact", "--all", "--json")["runs"] == []
    assert cli.main(["runs", "rm", rid]) == 0
    assert not packed_trace_path(rid).exists()


def test_a_compacted_stopped_run_resumes_and_traces_each_step_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rid = make_run(11, steps=700)  # stopped part way
    first = traced(capsys, rid)
    # --all takes finished runs only; a run named is compacted whatever its status.
    assert cli_json(capsys, "runs", "compact", "--all", "--json")["runs"] == []
    assert cli.main(["runs", "compact", rid]) == 0
    assert f"compacted {rid}" in capsys.readouterr().out
    assert traced(capsys, rid) == first
    assert cli.main(["resume", rid]) == 0
    capsys.readouterr()
    lines = traced(capsys, rid)
    assert lines[: len(first)] == first
    assert [json.loads(x)["step"] for x in lines] == list(range(2047))
    assert trace_path(rid).exists() and not packed_trace_path(rid).exists()


def test_compact_says_which_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["runs", "compact"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
