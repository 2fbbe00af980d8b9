"""The Learning replay screen (`nanobot learned replay ROWS.jsonl`), driven through Pilot
over small rows files written here in the learning-curve benchmark's format: it reaches
the last task with each arm's totals right, space pauses and resumes it, q leaves it, a
file that goes bad after the CLI read it shows its error, the CLI refuses a bad file in
one line without starting the app, and an SVG snapshot of its end at 80x24 (update with
`pytest tests/ui/test_learning_replay.py --snapshot-update`, then look at the SVG)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import Static

from nanobot_tui.cli.main import main
from nanobot_tui.ui.screens.learning_replay import (
    ArmTotals,
    LearningReplayApp,
    LearningReplayScreen,
    Replay,
    read_rows,
)
from tests.conftest import until

FIELDS = ("steps", "voted_steps", "right", "items", "example_uses", "k")


def row(task: int, arm: str, samples: int, tokens: int, wall_s: float, solved: bool,
        reused: int = 0, family: str = "dates") -> dict[str, Any]:  # fmt: skip
    return {"task": task, "family": family, "arm": arm, **dict.fromkeys(FIELDS, 5),
            "samples": samples, "tokens": tokens, "wall_s": wall_s, "solved": solved,
            "reused": reused}  # fmt: skip


# Three tasks, two arms: the totals below are worked out by hand from these.
SMALL = [
    row(0, "control", 10, 100, 1.0, True), row(0, "all", 10, 100, 1.0, True),
    row(1, "control", 12, 120, 1.5, False), row(1, "all", 4, 40, 0.5, True, reused=3),
    row(2, "control", 14, 140, 2.0, True), row(2, "all", 0, 0, 0.1, True, reused=5),
]  # fmt: skip
SMALL_TOTALS = {
    "control": ArmTotals(tasks=3, solved=2, samples=36, tokens=360, reused=0, wall_s=4.5),
    "all": ArmTotals(tasks=3, solved=3, samples=14, tokens=140, reused=8, wall_s=1.6),
}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def benchmark_rows(tasks: int = 16) -> list[dict[str, Any]]:
    """Four arms over `tasks` tasks, the learning arms needing fewer samples as they go."""
    rows = []
    for task in range(tasks):
        for arm, cheaper in (("control", 0), ("L0", 1), ("L0+L1", 2), ("all", 3)):
            samples = max(30 - cheaper * task // 2, 5 + cheaper)
            solved = task % (2 + cheaper) != 0
            reused = cheaper * task // 3
            rows.append(row(task, arm, samples, samples * 60, samples * 0.25, solved, reused))
    return rows


def text_of(widget: Static) -> str:
    console = Console(width=200, no_color=True, record=True, file=io.StringIO())
    console.print(widget.content)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def replay_of(app: LearningReplayApp) -> LearningReplayScreen:
    screen = app.screen
    assert isinstance(screen, LearningReplayScreen)
    return screen


def totals_as_read(screen: LearningReplayScreen) -> dict[str, ArmTotals]:
    return {
        arm: ArmTotals(t.tasks, t.solved, t.samples, t.tokens, t.reused, round(t.wall_s, 6))
        for arm, t in screen.totals.items()
    }


async def test_the_replay_reaches_the_last_task_with_each_arms_totals(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "small.jsonl", SMALL)
    app = LearningReplayApp(path, speed=50)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = replay_of(app)
        await until(lambda: screen.done)
        await pilot.pause()
        assert screen.shown == 3
        assert totals_as_read(screen) == SMALL_TOTALS
        assert list(screen.totals) == ["control", "all"]  # the benchmark's order of arms
        status = text_of(screen.query_one("#replay-status", Static))
        assert status == "replay of small.jsonl: task 3/3 · done"
        table = text_of(screen.query_one("#replay-totals", Static)).splitlines()
        assert table[0].split() == ["arm", "tasks", "solved", "samples", "tokens", "reused",
                                    "time"]  # fmt: skip
        assert table[1].split() == ["⠉⠒", "control", "3", "2", "67%", "36", "360", "0", "4.5", "s"]
        assert table[2].split() == ["••", "all", "3", "3", "100%", "14", "140", "8", "1.6", "s"]
        # Each arm told apart by its marker in the legend, not only by its colour.
        legend = text_of(screen.query_one("#replay-legend", Static))
        assert "⠉⠒ control" in legend and "•• all" in legend
        await pilot.press("q")
        await until(lambda: not app.is_running)


def test_the_series_are_rolling_means_and_running_success() -> None:
    rows = [row(t, "control", s, 0, 0.0, t != 1) for t, s in enumerate((10, 20, 30, 40, 50, 60))]
    replay = Replay(read_rows_of(rows))
    points = replay.upto(6)["control"]
    assert points.xs == [1, 2, 3, 4, 5, 6]
    assert points.samples == [10, 15, 20, 25, 30, 40]  # the last: mean of 20..60
    assert [round(v, 1) for v in points.solved] == [100, 50, 66.7, 75, 80, 83.3]
    assert replay.upto(2)["control"].totals == ArmTotals(2, 1, 30, 0, 0, 0.0)
    assert replay.upto(0)["control"].xs == []


def read_rows_of(rows: list[dict[str, Any]]) -> list[Any]:
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as folder:
        return read_rows(write_rows(Path(folder) / "rows.jsonl", rows))


async def test_space_pauses_and_resumes_the_replay(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "bench.jsonl", benchmark_rows(40))
    app = LearningReplayApp(path, speed=20)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = replay_of(app)
        await until(lambda: screen.shown >= 2)
        await pilot.press("space")
        assert screen.paused
        held = screen.shown
        await pilot.pause(0.5)  # ten ticks of the replay's timer go by
        assert screen.shown == held < 40
        status = text_of(screen.query_one("#replay-status", Static))
        assert status == f"replay of bench.jsonl: task {held}/40 · paused (space resumes)"
        await pilot.press("space")
        assert not screen.paused
        await until(lambda: screen.done)
        assert screen.shown == 40
        assert sum(t.tasks for t in screen.totals.values()) == 160


async def test_a_file_gone_bad_after_the_cli_read_it_shows_its_error(tmp_path: Path) -> None:
    path = tmp_path / "gone.jsonl"
    path.write_text('{"task": 0}\n', encoding="utf-8")
    app = LearningReplayApp(path, speed=50)
    async with app.run_test(size=(80, 24)):
        screen = replay_of(app)
        await until(lambda: bool(screen.error))
        assert screen.replay is None and screen.shown == 0
        status = text_of(screen.query_one("#replay-status", Static))
        assert status.startswith(f"{path}:1: not a learning-curve row: missing family, arm")


@pytest.mark.parametrize(
    ("content", "where", "why"),
    [
        ('{"task": 0, "arm": "L0"}\n', ":1:", "not a learning-curve row: missing family"),
        (json.dumps(SMALL[0]) + "\n\nnot json\n", ":3:", "not JSON"),
        (
            json.dumps({**SMALL[0], "solved": 1}) + "\n",
            ":1:",
            "not a learning-curve row: solved is 1, not true or false",
        ),
        (
            json.dumps({**SMALL[0], "samples": "9"}) + "\n",
            ":1:",
            'not a learning-curve row: samples is "9"',
        ),
        ("\n\n", ":", "no learning-curve rows in it"),
    ],
    ids=["missing", "not-json", "bool", "type", "empty"],
)
def test_the_cli_refuses_a_bad_file_in_one_line_without_the_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, where: str, why: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    # The app would need a terminal: returning at all says it never started.
    assert main(["learned", "replay", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"nanobot: {path}{where} {why}") and err.count("\n") == 1


def test_the_cli_refuses_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "none.jsonl"
    assert main(["learned", "replay", str(path), "--speed", "10"]) == 2
    assert (
        capsys.readouterr().err
        == f"nanobot: {path}: cannot read the rows: No such file or directory\n"
    )


def test_learning_replay_at_its_end(snap_compare: Any, tmp_path: Path) -> None:
    path = write_rows(tmp_path / "curve.jsonl", benchmark_rows(16))
    app = LearningReplayApp(path, speed=100)

    async def ended(pilot: Any) -> None:
        screen = replay_of(app)
        await until(lambda: screen.done)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=ended)


async def test_the_replay_app_starts_in_the_users_theme(tmp_path: Path) -> None:
    from nanobot_tui.config import parse_config

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"ui": {"theme": "nanobot-light"}}), encoding="utf-8")
    config = parse_config(config_file.read_text(encoding="utf-8"), config_file)
    app = LearningReplayApp(write_rows(tmp_path / "small.jsonl", SMALL), 50, config)
    async with app.run_test(size=(80, 24)):
        assert app.theme == "nanobot-light"
    assert LearningReplayApp(tmp_path / "small.jsonl").theme != "nanobot-light"
