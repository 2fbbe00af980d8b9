"""The Process pane on a code run (`nanobot process`): files, then their functions, and the
inspect screen of a function showing its edit as a diff. Through Pilot, the app's real pane
over a real run store of a real (simulated-sampler) code run on files in tmp_path."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, Select, Static

from nanobot_tui.engine.work.process import outcome, prepare
from nanobot_tui.ui.panes.process_tree import ProcessTree
from nanobot_tui.ui.screens.inspect_node import InspectScreen
from nanobot_tui.ui.screens.process_prompt import RECIPES, ProcessPrompt
from tests.conftest import until
from tests.ui.palette import run_command
from tests.ui.test_process_pane import SIZE, attached_to, make_run, plain, quiet_app, shown


async def test_a_code_run_reads_files_then_functions_and_shows_each_edit(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text(
        'def greet(name):\n    return "hi %s" % name\n\n\ndef two(x):\n    return "{}!".format(x)\n'
    )
    (repo / "pkg" / "b.py").write_text('def b(x):\n    return "b%s" % x\n')
    plan = prepare("f-strings", repo, "fstrings", sampler="simulated:1.0", k=1)
    rid = await make_run(plan.spec)

    async with attached_to(rid) as (app, pilot, pane):
        tree = pane.run_tree
        files = list(tree.root.children)
        assert [plain(f).split()[-1] for f in files] == ["pkg/a.py", "pkg/b.py"]
        tree.move_cursor(files[0])
        await pilot.press("space")
        await until(lambda: len(files[0].children) == 2)
        tree.move_cursor(files[0].children[0])
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)
        change = shown(app.screen.shown("change"))
        assert "a/pkg/a.py" in change and "@@ -1,2 +1,2 @@" in change
        assert '-    return "hi %s" % name' in change
        assert '+    return f"hi {name}"' in change


def test_the_prompt_offers_every_code_recipe() -> None:
    from nanobot_tui.engine.work.recipes import RECIPES as ENGINE_RECIPES

    assert set(RECIPES) == set(ENGINE_RECIPES)


async def test_the_palette_starts_a_process_and_the_pane_follows_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "m.py").write_text('def f(x):\n    return "v%s" % x\n')
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        await run_command(pilot, "Start a process on a codebase")
        await until(lambda: isinstance(app.screen, ProcessPrompt))
        prompt = app.screen
        prompt.query_one("#task", Input).value = "f-strings"
        prompt.query_one("#path", Input).value = str(tmp_path / "nowhere")
        prompt.query_one("#recipe", Select).value = "fstrings"
        prompt.query_one("#sampler", Select).value = "simulated:0.99"
        await pilot.press("ctrl+s")  # a folder that does not exist: said, not started
        assert "not a folder" in shown(prompt.query_one("#prompt-error", Static))
        prompt.query_one("#path", Input).value = str(repo)
        await pilot.press("ctrl+s")
        await until(lambda: app.attached_run is not None, timeout=120)
        run_id = app.attached_run
        assert run_id is not None and "codefstrings" in run_id
        pane = app.screen.query_one(ProcessTree)
        await until(lambda: pane.status is not None and pane.status.status == "completed",
                    timeout=120)  # fmt: skip
    assert outcome(run_id).accepted == 1
