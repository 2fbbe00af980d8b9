"""The recipe confirmation (after "Start a process…" with the recipe left to the main
model): the task, the main model's voted classification in one line, and the recipe it
chose, which the user may change. Enter (or ctrl+s) gives the recipe; Esc gives None."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import getters, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Select, Static

from nanobot_tui.ui.screens.process_prompt import RECIPES

if TYPE_CHECKING:
    from nanobot_tui.engine.work.classify import Classification


class RecipeChoice(ModalScreen[str | None]):
    """Shows `classification` of `task`; gives the recipe to run, or None on Esc."""

    CSS_PATH = "recipe_choice.tcss"
    # Nothing focused at first, so Enter starts; tab reaches the recipe.
    AUTO_FOCUS = ""
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="recipe-choice.cancel"),
        Binding("enter,ctrl+s", "submit", "Start", id="recipe-choice.start"),
    ]

    box = getters.query_one("#prompt-box", Vertical)
    recipe = getters.query_one("#recipe", Select)

    def __init__(self, task: str, classification: Classification) -> None:
        super().__init__()
        self.task_text = task
        self.classification = classification

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Label("task")
            yield Static(self.task_text, id="task", markup=False)
            yield Label("the main model's choice")
            yield Static(self.classification.line(), id="classification", markup=False)
            yield Label("recipe (tab, then enter: another one)")
            yield Select([(r, r) for r in RECIPES], value=self.classification.recipe,
                         id="recipe", allow_blank=False)  # fmt: skip

    def on_mount(self) -> None:
        self.box.border_title = "Confirm the recipe"
        self.box.border_subtitle = "enter or ctrl+s starts · esc cancels"

    @on(Select.Changed, "#recipe")
    def _changed(self, event: Select.Changed) -> None:
        # A recipe picked from the menu (the value set on mounting is not), Enter starts:
        # on the Select it would open the menu again. After the refresh, as the closing
        # menu gives the Select its focus back.
        if event.select.has_focus_within:
            self.call_after_refresh(self.set_focus, None)

    def action_submit(self) -> None:
        self.dismiss(str(self.recipe.value))

    def action_cancel(self) -> None:
        self.dismiss(None)
