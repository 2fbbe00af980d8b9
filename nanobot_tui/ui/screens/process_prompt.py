"""The process prompt (the palette's "Start a process…"): the task, the codebase, the
recipe, the sampler and a step budget, as `nanobot process TASK --on PATH` takes them.
Enter in the last field (or ctrl+s) starts it once the folder exists; Esc gives None.
The recipe defaults to AUTO: the main model votes on one and the user confirms it
(screens.recipe_choice), as `nanobot process` without --recipe prints its choice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import getters, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

# The recipes (engine.work.recipes.RECIPES), named here so the prompt opens without
# importing the engine; tests/ui/test_process_prompt.py checks the two agree.
RECIPES = ("docstrings", "fstrings", "error-handling", "instruction")
# Not a recipe: the request's recipe when the main model is to choose one.
AUTO = "auto"
RECIPE_CHOICES = (("chosen by the main model", AUTO), *((r, r) for r in RECIPES))
SAMPLERS = (
    ("the rlm slot's model", "local:rlm"),
    ("simulated, right 99 % (no model)", "simulated:0.99"),
)


@dataclass(frozen=True)
class ProcessRequest:
    task: str
    path: str
    recipe: str
    sampler: str
    max_steps: int | None


class ProcessPrompt(ModalScreen[ProcessRequest | None]):
    """Asks what `nanobot process` asks; gives a ProcessRequest, or None on Esc. Given a
    request, its values fill the fields (the prompt opened again, nothing lost)."""

    CSS_PATH = "process_prompt.tcss"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="process-prompt.cancel"),
        Binding("ctrl+s", "submit", "Start", id="process-prompt.start"),
    ]

    box = getters.query_one("#prompt-box", Vertical)
    problem = getters.query_one("#prompt-error", Static)

    def __init__(self, request: ProcessRequest | None = None) -> None:
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        req = self.request
        steps = "" if req is None or req.max_steps is None else str(req.max_steps)
        with Vertical(id="prompt-box"):
            yield Label("task")
            yield Input(req.task if req else "", id="task",
                        placeholder="e.g. add a docstring to every public function")  # fmt: skip
            yield Label("codebase (a folder: the run works on a snapshot of it)")
            yield Input(req.path if req else "", placeholder="~/src/project", id="path")
            yield Label("recipe")
            yield Select(RECIPE_CHOICES, value=req.recipe if req else AUTO, id="recipe",
                         allow_blank=False)  # fmt: skip
            yield Label("sampler")
            yield Select(SAMPLERS, value=req.sampler if req else "local:rlm", id="sampler",
                         allow_blank=False)  # fmt: skip
            yield Label("step budget (empty: none)")
            yield Input(steps, placeholder="e.g. 200000", id="steps", type="integer")
            yield Static("", id="prompt-error", markup=False)

    def on_mount(self) -> None:
        self.box.border_title = "Start a process"
        self.box.border_subtitle = "enter in the budget or ctrl+s starts · esc cancels"
        # Opened again with a request: what is left to do is pick the recipe.
        self.query_one("#recipe" if self.request else "#task").focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "steps":
            self.action_submit()
        else:
            self.focus_next()

    def action_submit(self) -> None:
        task = self.query_one("#task", Input).value.strip()
        text = self.query_one("#path", Input).value.strip()
        steps = self.query_one("#steps", Input).value.strip()
        path = Path(text).expanduser()
        if not task:
            self.problem.update("the task is empty")
        elif not text or not path.is_dir():
            self.problem.update(f"not a folder: {path}" if text else "the codebase is empty")
        elif steps and int(steps) <= 0:
            self.problem.update("the step budget must be positive")
        else:
            self.dismiss(
                ProcessRequest(
                    task,
                    str(path.resolve()),
                    str(self.query_one("#recipe", Select).value),
                    str(self.query_one("#sampler", Select).value),
                    int(steps) if steps else None,
                )
            )

    def action_cancel(self) -> None:
        self.dismiss(None)
