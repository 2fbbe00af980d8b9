"""The Process pane on a code run (`nanobot process`): files, then their functions, and the
inspect screen of a function showing its edit as a diff. Through Pilot, the app's real pane
over a real run store of a real (simulated-sampler) code run on files in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from nanobot_tui.engine.runs.store import list_runs
from nanobot_tui.engine.work.classify import Classification
from nanobot_tui.engine.work.process import outcome, prepare
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.palette import confirm_recipe
from nanobot_tui.ui.panes.process_tree import ProcessTree
from nanobot_tui.ui.screens.inspect_node import InspectScreen
from nanobot_tui.ui.screens.process_prompt import AUTO, RECIPES, ProcessPrompt, ProcessRequest
from nanobot_tui.ui.screens.recipe_choice import RecipeChoice
from tests.conftest import until
from tests.ui.palette import run_command
from tests.ui.test_chat_agent import model_config
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


def code_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "m.py").write_text('def f(x):\n    return "v%s" % x\n')
    return repo


async def prompt_filled(pilot: Pilot[Any], task: str, repo: Path) -> ProcessPrompt:
    """The palette's process prompt, its task and codebase filled, the recipe left as it
    opens and the simulated sampler (no model for the run itself)."""
    await run_command(pilot, "Start a process on a codebase")
    await until(lambda: isinstance(pilot.app.screen, ProcessPrompt))
    prompt = pilot.app.screen
    assert isinstance(prompt, ProcessPrompt)
    prompt.query_one("#task", Input).value = task
    prompt.query_one("#path", Input).value = str(repo)
    prompt.query_one("#sampler", Select).value = "simulated:0.99"
    return prompt


async def on_choice(app: NanobotApp, timeout: float = 60) -> RecipeChoice:
    """The recipe confirmation, once it is on top and its recipe Select mounted."""

    def mounted() -> bool:
        found = app.screen.query(Select) if isinstance(app.screen, RecipeChoice) else None
        return bool(found) and found.first().is_mounted

    await until(mounted, timeout=timeout)
    assert isinstance(app.screen, RecipeChoice)
    return app.screen


async def test_the_recipe_confirmation_starts_the_recipe_chosen_and_esc_starts_nothing(
    tmp_path: Path,
) -> None:
    repo = code_repo(tmp_path)
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        prompt = await prompt_filled(pilot, "use f-strings", repo)
        recipe = prompt.query_one("#recipe", Select)
        assert recipe.value == AUTO
        assert recipe._options[0] == ("chosen by the main model", AUTO)
        await pilot.press("escape")
        request = ProcessRequest("use f-strings", str(repo), AUTO, "simulated:0.99", None)
        voted = Classification(
            recipe="docstrings", decided=True, votes={"docstrings": 2, "fstrings": 1}, samples=3
        )

        confirm_recipe(app, request, voted)
        choice = await on_choice(app)
        assert shown(choice.query_one("#task", Static)) == "use f-strings"
        assert shown(choice.query_one("#classification", Static)) == (
            "recipe: docstrings (voted; docstrings 2, fstrings 1; 3 sample(s))"
        )
        assert choice.query_one("#recipe", Select).value == "docstrings"
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, RecipeChoice))
        await pilot.pause()
        assert app.attached_run is None and list_runs() == []

        confirm_recipe(app, request, voted)
        choice = await on_choice(app)
        await pilot.press("tab", "enter", "down", "enter")  # docstrings -> fstrings
        assert choice.query_one("#recipe", Select).value == "fstrings"
        await pilot.press("enter")
        await until(lambda: app.attached_run is not None, timeout=120)
        run_id = app.attached_run
        assert run_id is not None and "codefstrings" in run_id
        pane = app.screen.query_one(ProcessTree)
        await until(lambda: pane.status is not None and pane.status.status == "completed",
                    timeout=120)  # fmt: skip
    assert outcome(run_id).accepted == 1


async def test_with_no_main_model_the_prompt_opens_again_to_pick_a_recipe(
    tmp_path: Path,
) -> None:
    """The quiet app runs no model server: the main model cannot choose the recipe."""
    repo = code_repo(tmp_path)
    app = quiet_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.engine_state.ready)
        first = await prompt_filled(pilot, "use f-strings", repo)
        first.query_one("#steps", Input).value = "50"
        await pilot.press("ctrl+s")
        await until(lambda: isinstance(app.screen, ProcessPrompt) and app.screen is not first)
        notes = [n for n in app._notifications if n.severity == "warning"]
        assert [n.message for n in notes] == [
            "the main model cannot choose the recipe (no model server runs the main slot): pick one"
        ]
        again = app.screen
        assert again.query_one("#task", Input).value == "use f-strings"
        assert again.query_one("#path", Input).value == str(repo.resolve())
        assert again.query_one("#sampler", Select).value == "simulated:0.99"
        assert again.query_one("#steps", Input).value == "50"
        recipe = again.query_one("#recipe", Select)
        assert recipe.value == AUTO and recipe.has_focus
        assert app.attached_run is None and list_runs() == []
        recipe.value = "fstrings"
        await pilot.press("ctrl+s")
        await until(lambda: app.attached_run is not None, timeout=120)
        assert "codefstrings" in app.attached_run


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_the_main_model_chooses_the_recipe_and_the_user_sees_its_vote(
    tmp_path: Path,
) -> None:
    """The app's own embedded main model classifies the task; the confirmation shows the
    real classification, and Esc there starts nothing."""
    repo = code_repo(tmp_path)
    app = NanobotApp(model_config(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.engine_state.ready, timeout=120)
        await prompt_filled(pilot, "add a docstring to every public function", repo)
        await pilot.press("ctrl+s")
        await until(lambda: any(n.title == "choosing a recipe" for n in app._notifications))
        choice = await on_choice(app, timeout=180)
        result = choice.classification
        assert result.samples >= 1 and result.recipe in RECIPES
        line = shown(choice.query_one("#classification", Static))
        assert line == result.line()
        assert re.fullmatch(r"recipe: [a-z-]+ \((voted|undecided, so the fallback); .+; "
                            r"\d+ sample\(s\)\)", line), line  # fmt: skip
        assert choice.query_one("#recipe", Select).value == result.recipe
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, RecipeChoice))
        assert app.attached_run is None and list_runs() == []
