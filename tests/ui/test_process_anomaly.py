"""A run whose cost was an anomaly is flagged in the Process pane: a real durable run
(Towers of Hanoi on the seeded simulated sampler, learning on) after twenty cheap tasks
of its type in the history is found costlier than them by the engine's own learning
loops, which leave a line in the run's meta; the pane marks the run's row with "!" and
shows that line under it. A run with no anomaly gets neither."""

from __future__ import annotations

from pathlib import Path

from nanobot_tui.engine.learning.history import MIN_RECORDS, TaskHistory
from nanobot_tui.engine.learning.run_memory import task_type_of
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.runs.store import RunStore
from nanobot_tui.ui.panes.process_tree import ANOMALY_MARK, anomaly_of, read_status, run_header
from tests.ui.test_process_pane import attached_to, hanoi, make_run, shown


def cheap_history(task_type: str) -> None:
    """MIN_RECORDS earlier tasks of `task_type`, each far cheaper than a hanoi3 run."""
    with LearningStore() as store:
        history = TaskHistory(store)
        for _ in range(MIN_RECORDS):
            history.record(task_type, kind="domain", steps=1, tokens=0, seconds=0.001,
                           samples_per_step=1.0, p=0.99, success=True)  # fmt: skip


def stored_anomaly(run_id: str) -> str | None:
    with RunStore.open(run_id) as store:
        return anomaly_of(store.meta())


async def test_a_run_costlier_than_its_history_is_flagged_in_the_process_pane(
    nanobot_home: Path,
) -> None:
    cheap_history(task_type_of("hanoi3", "hanoi", simulated=True))
    run_id = await make_run(hanoi(3))
    line = stored_anomaly(run_id)
    assert line is not None and "steps" in line  # 7 steps against a history of 1
    async with attached_to(run_id) as (_app, pilot, pane):
        await pilot.pause()
        assert pane.anomaly == line
        header = shown(pane.header).splitlines()
        assert header[0].startswith(f"{ANOMALY_MARK}completed · {run_id}")
        # The line follows the run's figures, wrapped to the pane: all of it is there.
        shown_line = " ".join(header[4:])
        assert shown_line == f"anomaly: {' '.join(line.split())}"


async def test_a_run_with_no_anomaly_is_not_flagged(nanobot_home: Path) -> None:
    run_id = await make_run(hanoi(3))  # the first of its type: no history to exceed
    assert stored_anomaly(run_id) is None
    async with attached_to(run_id) as (_app, pilot, pane):
        await pilot.pause()
        assert pane.anomaly is None
        header = shown(pane.header).splitlines()
        assert header[0].startswith(f"completed · {run_id}") and len(header) == 4


async def test_the_anomaly_line_wraps_to_the_pane_without_control_sequences() -> None:
    run_id = await make_run(hanoi(2))
    with RunStore.open(run_id) as store:
        status = read_status(store)
    line = "steps 7 > 2 (median 1)\x1b[31m; tokens 9,000 > 3,000 (median 1,000)"
    header = run_header(status, 24, anomaly=line).plain.splitlines()
    assert header[0].startswith(ANOMALY_MARK) and len(header) > 5
    assert all(len(text) <= 24 for text in header[4:])
    assert "\x1b" not in "".join(header)
    assert "".join(header[4:]).replace(" ", "").endswith("tokens9,000>3,000(median1,000)")
    assert anomaly_of({"learning": {"anomaly": line}}) == line
    assert anomaly_of({"learning": {"reused": 0}}) is None and anomaly_of({}) is None
