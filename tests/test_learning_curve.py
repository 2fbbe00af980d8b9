"""benchmarks/learning_curve.py: a short stream through all four arms against a FAKE model
client (FakeOracleClient: it answers every step with its truth, as no model here does on
demand), so what is checked is the harness: L0 reuse of recurring items in the learning
arms and none in the control arm, arms that do not share what they learned, well-formed
rows, and a summary that `--from-rows` reproduces."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from benchmarks import learning_curve as lc
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage
from nanobot_tui.engine.voting.domains.micro import Micro


class FakeOracleClient:
    """A FAKE chat client: replies to a step's prompt (its last user message) with the
    step's truth as `answer = X`, n choices per request, and counts the requests."""

    model = "fake-oracle"
    base_url = "http://fake"

    def __init__(self, truths: dict[str, str]) -> None:
        self.truths = truths  # last user message -> the truth's reply
        self.requests = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        prompt = [m for m in request.messages if m["role"] == "user"][-1]["content"]
        text = self.truths[prompt]
        n = request.n or 1
        raw = {"choices": [{"index": i, "logprobs": {"content": [{}] * 4}} for i in range(n)]}
        choices = [Choice(text, finish_reason="stop", index=i) for i in range(n)]
        return ChatResult(choices, Usage(30, 4 * n, 30 + 4 * n), None, 0.01, "fake", raw)

    def stream_chat(self, request: ChatRequest) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def truths_of(stream: list[lc.Task]) -> dict[str, str]:
    out = {}
    for task in stream:
        domain = Micro(task.family, items=list(task.items))
        for i in range(domain.total_steps()):
            step = domain.step_at(i)
            prompt = [m for m in domain.messages(step) if m["role"] == "user"][-1]["content"]
            out[prompt] = f"answer = {domain.truth(step)}"
    return out


def earlier_items(stream: list[lc.Task]) -> list[int]:
    """Per task: how many of its items an earlier task of the stream already had."""
    seen: set[tuple[str, str]] = set()
    out = []
    for task in stream:
        out.append(sum((task.family, i) in seen for i in task.items))
        seen.update((task.family, i) for i in task.items)
    return out


@pytest.mark.timeout(300)
def test_a_short_stream_through_four_arms_with_a_fake_oracle(tmp_path: Path) -> None:
    """FAKE model client: 8 tasks x 4 arms. Every learning arm reuses exactly the items an
    earlier task had (so no arm saw what another arm learned: the arm that runs a task
    second would otherwise reuse its new items), the control arm reuses nothing."""
    rows_file = tmp_path / "rows.jsonl"
    flags = ["--tasks", "8", "--items", "3", "--seed", "3", "--zipf", "2.0", "--k", "2"]
    args = lc.parser().parse_args([*flags, "--rows", str(rows_file)])
    args.arms = list(lc.ARMS)
    stream = lc.task_stream(8, 3, 3, 2.0, lc.family_pools())
    expected_reuse = earlier_items(stream)
    assert sum(expected_reuse) > 0, "the stream must repeat some items for this test"
    client = FakeOracleClient(truths_of(stream))

    rows = asyncio.run(lc.run_stream(stream, args, tmp_path / "homes", client, "fake-oracle"))

    assert len(rows) == 8 * 4
    assert [json.loads(line) for line in rows_file.read_text().splitlines()] == rows
    for row in rows:
        assert set(row) == set(lc.ROW_KEYS)
        assert row["arm"] in lc.ARMS
        assert row["items"] == 3 and row["steps"] == 3
        assert row["solved"] is True and row["right"] == 3  # the fake is always right
        assert row["voted_steps"] == row["steps"] - row["reused"]
        assert row["k"] == 2  # under 20 records: the "all" arm has no history k yet
        assert (row["samples"] > 0) == (row["voted_steps"] > 0)
    for task, reuse in zip(stream, expected_reuse, strict=True):
        mine = {r["arm"]: r for r in rows if r["task"] == task.task}
        assert mine["control"]["reused"] == 0
        for arm in ("L0", "L0+L1", "all"):
            assert mine[arm]["reused"] == reuse, (task, arm)
    # Each arm's order rotates: every arm leads some task.
    leads = {lc.arm_order(args.arms, t.task)[0] for t in stream}
    assert leads == set(lc.ARMS)

    # Each learning arm's own learned.db holds the stream's distinct items; control none.
    distinct = len({(t.family, i) for t in stream for i in t.items})
    for arm in ("L0", "L0+L1", "all"):
        with sqlite3.connect(tmp_path / "homes" / arm / "learned.db") as db:
            (stored,) = db.execute("SELECT count(*) FROM step_results").fetchone()
        assert stored == distinct, arm
    assert not (tmp_path / "homes" / "control" / "learned.db").exists()
    # L1 gave examples in the arms that have it, never in L0.
    assert sum(r["example_uses"] for r in rows if r["arm"] in ("L0+L1", "all")) > 0
    assert all(r["example_uses"] == 0 for r in rows if r["arm"] in ("control", "L0"))

    summary = lc.summarize(rows)
    assert summary["tasks"] == 8 and summary["window"] == 1
    assert summary["arms"]["control"]["all"]["hitShare"] == 0.0
    assert summary["arms"]["L0"]["all"]["hitShare"] == round(sum(expected_reuse) / 24, 3)
    assert set(summary["families"]) == {t.family for t in stream}
    assert set(summary["arms"]["all"]["targets"]) == {
        "votedSteps (5x fewer)", "wall (10x less)", "success (60 -> 95 %)", "hit (0 -> 60 %)",
    }  # fmt: skip


def test_from_rows_reproduces_the_summary_and_draws_four_arms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows written by hand (no model): --from-rows prints summarize(rows) and the drawing
    has one line per arm in each panel."""
    rows = []
    for task in range(10):
        for n, arm in enumerate(lc.ARMS):
            reused = min(3, task // 2) if arm != "control" else 0
            rows.append({
                "task": task, "family": "dates" if task % 2 else "sums", "arm": arm,
                "steps": 3, "voted_steps": 3 - reused, "samples": 4 * (3 - reused) + n,
                "tokens": 10 * (3 - reused), "wall_s": 0.5 * (3 - reused), "solved": task > n,
                "right": 3 if task > n else 1, "items": 3, "reused": reused,
                "example_uses": 1 if arm in ("L0+L1", "all") else 0, "k": 2,
            })  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    svg = tmp_path / "curve.svg"

    assert lc.main(["--from-rows", str(path), "--json", "--svg", str(svg)]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(lc.summarize(rows)))
    assert printed["window"] == 2
    control, all_arm = printed["arms"]["control"], printed["arms"]["all"]
    assert control["first"]["hitShare"] == 0.0 and control["last"]["hitShare"] == 0.0
    assert all_arm["first"]["hitShare"] == 0.0 and all_arm["last"]["hitShare"] == 1.0
    assert all_arm["targets"]["hit (0 -> 60 %)"] == "0% -> 100%"
    assert printed["families"]["sums"]["control"] == 0.8  # tasks 2..8 even: 4 of 5
    drawing = svg.read_text()
    assert drawing.count("<polyline") == 2 * 4
    assert drawing.count("stroke-dasharray") == 2 * 3 + 3  # three dashed arms, and legend


@pytest.mark.timeout(300)
def test_the_command_end_to_end_with_a_simulated_sampler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No model (simulated:0.9 runs use no L0 or L1, by design): the command runs every
    task in every arm, keeps each arm's home under --home, appends its rows, and its
    summary is the one --from-rows prints from those rows."""
    rows_file, home, svg = tmp_path / "rows.jsonl", tmp_path / "homes", tmp_path / "c.svg"
    flags = ["--tasks", "2", "--sampler", "simulated:0.9", "--json", "--home", str(home)]

    assert lc.main([*flags, "--rows", str(rows_file), "--svg", str(svg)]) == 0

    ran = json.loads(capsys.readouterr().out)
    rows = lc.read_rows(rows_file)
    assert sorted((r["task"], r["arm"]) for r in rows) == sorted(
        (t, a) for t in range(2) for a in lc.ARMS
    )
    assert ran["familyCount"] == 10 and set(ran["arms"]) == set(lc.ARMS)
    for arm in lc.ARMS:
        assert len(list((home / arm / "runs").iterdir())) == 2, arm
    assert svg.read_text().count("<polyline") == 2 * 4

    assert lc.main(["--from-rows", str(rows_file), "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed == {key: ran[key] for key in replayed}
