"""The Process pane on a grouped run (a code run's files): the tree reads groups (by
their labels) → steps, and the inspect screen names a group by its label. Through
Pilot, the app's real pane over a real run store; the toy grouped domain is the one of
tests/engine/runs/test_tree_groups.py (a test-only domain)."""

from __future__ import annotations

from nanobot_tui.engine.runs.store import RunStore
from nanobot_tui.ui.screens.inspect_node import InspectScreen
from nanobot_tui.ui.widgets.run_tree import group_text
from tests.conftest import until
from tests.engine.runs.test_tree_groups import (  # noqa: F401 - grouped_domains: a fixture
    GROUPS,
    grouped_domains,
    grouped_spec,
)
from tests.ui.test_process_pane import attached_to, make_run, plain, shown


async def test_the_tree_reads_groups_then_steps(grouped_domains: None) -> None:  # noqa: F811
    rid = await make_run(grouped_spec("grouped-words"), steps=20)  # 3 + 12 + 1 + 4 of 5
    with RunStore.open(rid) as store:
        kids = store.children(store.root().id)
    assert [k.label for k in kids] == [g for g, _ in GROUPS]

    async with attached_to(rid) as (app, pilot, pane):
        tree = pane.run_tree
        files = list(tree.root.children)  # 7 groups under a fan-out of 10: the root's
        assert [plain(f).split()[:2] for f in files[:5]] == [
            ["●", "3/3"], ["●", "12/12"], ["●", "1/1"], ["◐", "4/5"], ["○", "0/2"],
        ]  # fmt: skip
        assert [plain(f).split()[-1] for f in files] == [g for g, _ in GROUPS]
        # A group opens on its steps, numbered through the run, in order.
        tree.move_cursor(files[1])
        await pilot.press("space")
        await until(lambda: len(files[1].children) == 12)
        assert [plain(s) for s in files[1].children[:2]] == ["● step 4", "● step 5"]
        # Enter on a group: the inspect screen is titled by its label, with its summary.
        tree.move_cursor(files[0])
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)
        text = shown(app.screen.shown("node"))
        assert text.splitlines()[0].startswith("pkg/a.py")
        assert "pkg/a.py: 3 of 3 done" in text and "steps 1–3 (3 steps)" in text


def test_a_long_label_keeps_its_end() -> None:
    path = "src/" + "deep/" * 20 + "module.py"
    text = group_text(path, 30)
    assert len(text) == 30 and text.startswith("…") and text.endswith("/deep/module.py")
    assert group_text("a\x1b[31mb.py") == "ab.py"  # no terminal control from a file name
    both = group_text(f"{path} … src/other.py", 40)  # a block of files: both ends kept
    assert len(both) == 40 and both.endswith(" … src/other.py") and "module.py" in both
