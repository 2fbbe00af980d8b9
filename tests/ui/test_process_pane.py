"""The process tree pane, the inspect screen and the runs list, driven through Pilot on real
durable runs: Towers of Hanoi on the seeded simulated sampler, created and executed in
this process with the engine's `start_run` and `execute`, read back through the store as
an attached app would."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static
from textual.widgets.tree import TreeNode

from nanobot_tui.engine.runs import control
from nanobot_tui.engine.runs.control import RunError
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets, RunSpec
from nanobot_tui.engine.runs.store import RunStatus, RunStore, db_path
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.samplers.seeded import SeededSimulatedSampler
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.panes.process_tree import ProcessTree
from nanobot_tui.ui.screens.inspect_node import InspectScreen
from nanobot_tui.ui.screens.main import MainScreen
from nanobot_tui.ui.screens.runs import RunsScreen
from nanobot_tui.ui.widgets.run_tree import PAGE, More
from tests.conftest import until
from tests.ui.palette import run_command
from tests.ui.test_app import small_config

SIZE = (140, 44)


def quiet_app(**kwargs: Any) -> NanobotApp:
    """The app with no model servers: the pane needs none, and it starts at once."""
    config = small_config()
    return NanobotApp(config, workbench=Workbench(config, only_slots=()), **kwargs)


def hanoi(disks: int, *, p: float = 0.99, k: int = 3, seed: int = 1, **more: Any) -> RunSpec:
    return RunSpec(
        "hanoi",
        {"disks": disks},
        f"simulated:{p}",
        VoteConfig(k=k),
        seed=seed,
        label=f"hanoi{disks}",
        **more,
    )


async def make_run(spec: RunSpec, *, steps: int | None = None, run_id: str | None = None) -> str:
    """A durable run, executed in this process to its end (or to a budget of `steps`)."""
    rid = await start_run(spec, run_id=run_id)
    await execute(rid, budgets=Budgets(steps=steps) if steps else None)
    return rid


def pane_of(app: NanobotApp) -> ProcessTree:
    return app.screen.query_one(ProcessTree)


@asynccontextmanager
async def attached_to(run_id: str) -> AsyncIterator[tuple[NanobotApp, Pilot[None], ProcessTree]]:
    """The app attached to run `run_id`: its Process pane shows the run and has the focus."""
    app = quiet_app(attach_run=run_id)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await watching(pane, run_id)
        pane.run_tree.focus()
        yield app, pilot, pane


def plain(node: TreeNode[Any]) -> str:
    return str(node.label)


def block(node: TreeNode[Any]) -> tuple[str, str, str]:
    """An inner node's label as (status icon, done/total, span)."""
    words = plain(node).split()
    return words[0], words[1], words[-1]


def shown(widget: Static) -> str:
    """What a Static shows, as plain text, wide enough that nothing wraps."""
    console = Console(width=200, no_color=True, record=True, file=io.StringIO())
    console.print(widget.content)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


async def watching(pane: ProcessTree, run_id: str) -> None:
    """Until the pane shows `run_id` (read at least once)."""
    await until(lambda: pane.run_id == run_id and pane.status is not None and pane.run_tree.display)


def stored_status(run_id: str) -> str:
    """The run's status as its store has it now."""
    with RunStore.open(run_id) as store:
        return store.status().status


async def shows(pane: ProcessTree, status: str) -> None:
    """Until the pane's header says the run is `status`."""
    await until(lambda: pane.status is not None and pane.status.status == status)


class SlowSampler(SeededSimulatedSampler):
    """The seeded simulated sampler at about a millisecond a round, so that a run lasts
    a few of the pane's polls."""

    async def sample(self, step, temperatures, paraphrase=0):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.001)
        return await super().sample(step, temperatures, paraphrase)


async def test_header_root_children_and_lazy_loading() -> None:
    paged = await make_run(hanoi(9, fanout=300))  # 511 steps: blocks of 300 and 211 steps
    stopped = await make_run(hanoi(10), steps=300)  # the most recent run

    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        assert pane.border_title == "Process"
        # No run attached: the pane shows the most recent one.
        await watching(pane, stopped)
        header = pane.shown_header().splitlines()
        assert header[0] == f"stopped · {stopped}"
        assert header[2] == "300/1,023 · 29.3%"
        assert header[3].startswith("0 errors")
        # Under the tree: why it stopped (the store's words) and the key that resumes it.
        reason = pane.status.reason if pane.status is not None else None
        assert reason and reason.startswith("budget")
        assert shown(pane.query_one("#process-status", Static)) == f"{reason} · r resumes"

        # The root's children (the root itself is the header), labelled from the store.
        tree = pane.run_tree
        top = list(tree.root.children)
        with RunStore.open(stopped) as store:
            kids = store.children(store.root().id)
        assert [node.data.node_id for node in top] == [row.id for row in kids]
        assert block(top[0]) == ("◐", "3/10", "1–1,000")
        assert block(top[1]) == ("○", "0/1", "1,001–1,023")
        # Nothing under them is read until they are expanded.
        assert all(not node.children and node.data.loaded is None for node in top)

        # Keyboard: space expands the block under the cursor; its children come then.
        tree.focus()
        assert tree.cursor_node is top[0]
        await pilot.press("space")
        await until(lambda: len(top[0].children) == 10)
        blocks = list(top[0].children)
        assert [block(b)[0] for b in blocks[:3]] == ["●", "●", "●"]
        assert block(blocks[0]) == ("●", "10/10", "1–100")
        assert block(blocks[3])[1:] == ("0/10", "301–400")
        assert all(not b.children for b in blocks)  # a block's steps: not before it opens
        # Right expands, loading that block's children only; one level down, steps.
        await pilot.press("down", "right")
        await until(lambda: len(blocks[0].children) == 10)
        assert [b.data.loaded for b in blocks] == [10] + [None] * 9
        leaf = blocks[0].children[0]
        assert block(leaf) == ("●", "10/10", "1–10") and not leaf.children
        await pilot.press("down", "right")
        await until(lambda: len(leaf.children) == 10)
        assert [plain(s) for s in leaf.children[:2]] == ["● step 1", "● step 2"]
        assert not any(s.allow_expand for s in leaf.children)
        # Left collapses, then goes to the parent.
        await pilot.press("left")
        assert not leaf.is_expanded
        await pilot.press("left")
        assert tree.cursor_node is blocks[0]

        # Another run, set as the app's attached run: a block of 300 steps loads a page of
        # 200 and a "more" node; choosing it loads the rest.
        app.attached_run = paged
        await watching(pane, paged)
        tree = pane.run_tree
        first = tree.root.children[0]
        assert block(first) == ("●", "300/300", "1–300")
        tree.move_cursor(first)
        await pilot.press("space")
        await until(lambda: len(first.children) == PAGE + 1)
        more = first.children[-1]
        assert isinstance(more.data, More) and plain(more) == "… 100 more: enter loads 100"
        tree.move_cursor(more)
        await pilot.press("enter")
        await until(lambda: len(first.children) == 300)
        assert plain(first.children[-1]).startswith("● step 300")
        assert not any(isinstance(node.data, More) for node in first.children)


SLOW = hanoi(11, seed=3)  # 2,047 steps


def run_slowly(spec: RunSpec, run_id: str, **options: Any) -> asyncio.Task[RunStatus]:
    """Execute the run in this process, the slow sampler making a round last about a
    millisecond: 2,047 steps (`SLOW`) take ~3 s, a few of the pane's polls."""
    sampler = SlowSampler(spec.build_domain(), spec.p, spec.wrong_choices, spec.seed)
    return asyncio.create_task(execute(run_id, sampler=sampler, **options))


async def test_labels_update_in_place_while_a_run_goes() -> None:
    rid = await start_run(SLOW)
    async with attached_to(rid) as (_app, pilot, pane):
        assert pane.shown_header().splitlines()[0] == f"stopped · {rid}"  # not started yet
        tree = pane.run_tree
        await pilot.press("space")
        top = list(tree.root.children)
        await until(lambda: len(top[0].children) == 10)
        nodes = [tree.root, *top, *top[0].children]
        labels = [plain(node) for node in nodes]
        assert all(label.startswith("○ ") for label in labels[1:])

        task = run_slowly(SLOW, rid)
        relabels = pane.relabels
        seen: list[int] = []
        polls = pane.polls
        while not task.done():
            await until(lambda last=polls: pane.polls > last)
            polls = pane.polls
            assert pane.status is not None
            seen.append(pane.status.steps_done)
        final = await task
        assert final.status == "completed" and final.steps_done == 2047
        await until(lambda: pane.status is not None and pane.status.status == "completed")

        # The pane moved while the run went, poll by poll ...
        going = sorted({n for n in seen if 0 < n < 2047})
        assert len(going) >= 2, seen
        assert seen == sorted(seen)
        # ... by setting labels on the same nodes: nothing was rebuilt or re-added.
        after = [tree.root, *tree.root.children, *tree.root.children[0].children]
        assert len(after) == len(nodes) and all(a is b for a, b in zip(after, nodes, strict=True))
        await until(lambda: plain(top[0]).startswith("● "))
        assert block(top[0]) == ("●", "10/10", "1–1,000")
        assert all(plain(b).startswith("● ") for b in top[0].children)
        assert [plain(n) for n in nodes[1:]] != labels[1:]
        assert pane.relabels > relabels
        header = pane.shown_header().splitlines()
        assert header[0] == f"completed · {rid}" and header[2] == "2,047/2,047 · 100.0%"


async def test_p_pauses_a_going_run_and_r_resumes_it_detached() -> None:
    rid = await start_run(SLOW)
    async with attached_to(rid) as (_app, pilot, pane):
        # The runner is this process, as a detached one would be its own: `p` signals it.
        task = run_slowly(SLOW, rid, install_signals=True)
        await until(lambda: pane.status is not None and pane.status.steps_done > 0)
        assert pane.status.status == "running"
        await pilot.press("p")
        paused = await asyncio.wait_for(task, timeout=60)
        assert paused.status == "paused" and 0 < paused.steps_done < 2047
        assert paused.reason == "paused by `nanobot pause`"
        await shows(pane, "paused")
        assert pane.shown_header().splitlines()[0] == f"paused · {rid}"
        # `r`: a detached runner takes the run up where it paused and finishes it.
        await pilot.press("r")
        await shows(pane, "completed")
        assert pane.shown_header().splitlines()[2] == "2,047/2,047 · 100.0%"
        assert stored_status(rid) == "completed"


async def test_enter_on_a_step_opens_the_inspect_screen() -> None:
    # p = 0.75, k = 2, red flags: steps with several candidates, and some wrong winners.
    # Seed 25 (the simulated sampler draws from (seed, step, attempt)): step 4 is contested
    # by three answers with red flags, and three later steps (not the last) are won wrongly.
    rid = await make_run(hanoi(6, p=0.75, k=2, seed=25, red_flag_rate=0.15))
    with RunStore.open(rid) as store:
        contested = store.step(3)
        wrong_index = next(i for i in range(63) if store.step(i).correct is False)
        wrong = store.step(wrong_index)
    assert len(contested.votes) == 3 and contested.red_flags == {"parse": 2}

    async with attached_to(rid) as (app, pilot, pane):
        tree = pane.run_tree
        await pilot.press("space")
        block = tree.root.children[0]
        await until(lambda: len(block.children) == 10)
        await pilot.press("down", "down", "down", "down")
        assert plain(tree.cursor_node).startswith("● step 4")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)
        screen = app.screen
        assert isinstance(screen, InspectScreen)
        assert screen.step == contested
        assert screen.sub_title == "step 4 · completed"
        votes = shown(screen.shown("votes")).splitlines()
        assert votes[0] == (
            f"votes · {sum(contested.votes.values())} valid of {contested.samples} samples · "
            f"margin 2 · {contested.rounds} rounds"
        )
        ranked = sorted(contested.votes.items(), key=lambda kv: (-kv[1], kv[0]))
        for line, (key, n) in zip(votes[1:], ranked, strict=True):
            mark = "✓" if key == contested.winner else " "
            assert line.startswith(f"{mark} {n} ") and line.endswith(key)
        assert sum(line.startswith("✓") for line in votes) == 1
        assert shown(screen.shown("flags")).splitlines() == ["red flags · 2", "parse  2"]
        result = shown(screen.shown("result"))
        assert "verdict  ✓ correct" in result
        assert "move        [3, 0, 1]" in result
        state = shown(screen.shown("input"))
        assert "state     [[6, 5, 4, 3], [], [2, 1]]" in state
        assert '"step": 3' in shown(screen.shown("trace"))
        costs = shown(screen.shown("costs"))
        assert f"samples     {contested.samples} ({contested.valid} valid)" in costs
        # Covered by the inspect screen, the pane does not poll.
        polls = pane.polls
        await pilot.pause(4 * pane.INTERVAL)
        assert pane.polls == polls
        # Keyboard scrolling, then Esc back to the tree.
        await pilot.press("G")
        await pilot.press("g")
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, MainScreen))
        await until(lambda last=polls: pane.polls > last)

        # A wrong step: its error in its label, and "wrong" on its screen.
        block = tree.root.children[wrong_index // 10]
        tree.move_cursor(block)
        await pilot.press("space")
        await until(lambda: len(block.children) > wrong_index % 10)
        node = block.children[wrong_index % 10]
        assert plain(node).startswith(f"● step {wrong_index + 1} 1 error")
        assert "wrong answer" in plain(node)
        tree.move_cursor(node)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)
        assert app.screen.step == wrong
        assert "verdict  ✗ wrong" in shown(app.screen.shown("result"))
        await pilot.press("escape")

        # An inner node: its span, counts and summary.
        await until(lambda: isinstance(app.screen, MainScreen))
        tree.move_cursor(tree.root.children[6])
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)
        text = shown(app.screen.shown("node"))
        assert "steps 61–63 (3 steps)" in text and "3/3 completed" in text
        assert "moves 61–63: solved, all disks on peg 2" in text
        assert not app.screen.shown("votes").display


async def test_the_runs_list_picks_another_run() -> None:
    first = await make_run(hanoi(6))
    second = await make_run(hanoi(7), steps=50)
    async with attached_to(first) as (app, pilot, pane):
        await pilot.press("ctrl+r")
        await until(lambda: isinstance(app.screen, RunsScreen) and len(app.screen.runs) == 2)
        table = app.screen.query_one(DataTable)
        # Newest first, the cursor on the run watched now.
        assert [row.value for row in table.rows] == [second, first]
        assert table.cursor_row == 1
        cells = [str(cell) for cell in table.get_row_at(0)]
        assert cells[:4] == [second, "stopped", "50/127 (39%)", "0"]
        assert cells[4].endswith("ago")
        await pilot.press("up", "enter")
        await until(lambda: isinstance(app.screen, MainScreen))
        assert app.attached_run == second
        await watching(pane, second)
        assert pane.shown_header().splitlines()[0] == f"stopped · {second}"

        # The palette opens the same list; Esc leaves the choice as it was.
        await run_command(pilot, "Pick a run")
        await until(lambda: isinstance(app.screen, RunsScreen) and bool(app.screen.runs))
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, MainScreen))
        assert app.attached_run == second


async def test_resume_and_pause_go_to_the_run_control(monkeypatch) -> None:
    rid = await make_run(hanoi(8), steps=100)
    async with attached_to(rid) as (app, pilot, pane):
        status = pane.query_one("#process-status", Static)
        # Stopped: `p` does nothing (it shows disabled), `r` resumes it detached.
        assert pane.check_action("pause", ()) is None and pane.check_action("resume", ())
        await pilot.press("p")
        await pilot.pause(0.2)
        assert stored_status(rid) == "stopped" and "pausing" not in shown(status)
        await pilot.press("r")
        await shows(pane, "completed")
        assert pane.shown_header().splitlines()[2] == "255/255 · 100.0%"
        assert stored_status(rid) == "completed"

        # What the run control refuses, the pane says in one line, and notifies.
        def refuse(run_id: str) -> str:
            raise RunError(f"run {run_id} is already running (pid 42)")

        other = await make_run(hanoi(6), steps=10)
        monkeypatch.setattr(control, "resume_detached", refuse)
        app.attached_run = other
        await watching(pane, other)
        await pilot.press("r")
        await until(lambda: "failed" in shown(status))
        assert shown(status) == f"resume {other} failed: run {other} is already running (pid 42)"
        assert any(n.title == f"resume {other}" for n in app._notifications)
        assert stored_status(other) == "stopped"


SNAPSHOT_RUN = "snapshot-hanoi6"


def fixed_run() -> tuple[str, int]:
    """A completed run whose store is the same on every machine: a fixed id and seed; the
    one clock-dependent value a step keeps, its wall time, pinned. Returns the run id and
    the node id of its step 4 (four candidates, six red flags)."""
    asyncio.run(make_run(hanoi(6, p=0.75, k=2, seed=5, red_flag_rate=0.15), run_id=SNAPSHOT_RUN))
    with sqlite3.connect(db_path(SNAPSHOT_RUN)) as conn:
        conn.execute("UPDATE steps SET wall_ms = 0.25 WHERE wall_ms IS NOT NULL")
    with RunStore.open(SNAPSHOT_RUN) as store:
        block = store.children(store.root().id)[0]
        return SNAPSHOT_RUN, store.children(block.id)[3].id


def test_inspect_screen_snapshot(snap_compare, nanobot_home: Path) -> None:
    run_id, node_id = fixed_run()
    app = quiet_app(attach_run=run_id)

    async def open_step(pilot) -> None:  # type: ignore[no-untyped-def]
        await until(lambda: isinstance(app.screen, MainScreen))
        await app.push_screen(InspectScreen(run_id, node_id))
        await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 36), run_before=open_step)
