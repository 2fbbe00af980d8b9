"""The help screen (F1 or ?): every key by pane and screen, as the user's keymap has them,
the command palette's commands, and where the config, the keymap and the themes live."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.binding import Binding, BindingsMap
from textual.widgets import Static

from nanobot_tui import paths
from nanobot_tui.ui.keymap import declaring_classes
from nanobot_tui.ui.screens.page import PageScreen

if TYPE_CHECKING:
    from textual.app import App

# Section titles for the classes that declare bindings; the order is the help's order.
TITLES: dict[str, str] = {
    "NanobotApp": "Everywhere",
    "MainScreen": "Main screen",
    "ChatPane": "Chat",
    "PromptArea": "Chat",
    "ProcessTree": "Process",
    "RunTree": "Process",
    "VolumeBrowser": "Volumes",
    "InspectScreen": "Inspect (a node of a run)",
    "RunsScreen": "Runs list",
    "FileViewer": "File viewer",
    "FileView": "File viewer",
    "SetupScreen": "Setup",
    "SessionPicker": "Sessions",
    "PathPrompt": "Ingest (asks for a path)",
    "HelpScreen": "This help",
}
KEY_WIDTH = 18  # "space shift+space"


def section_title(cls: type) -> str:
    """The section a class's keys go under: named above, else its name in words."""
    name = cls.__name__
    return TITLES.get(name) or re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).capitalize()


def key_sections(app: App[Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(section, [(keys, description)])], the keys as the keymap has them; keys that do
    the same are shown together ("f1 ?")."""
    keymap: dict[str, str] = getattr(app, "_keymap", {})
    order = list(dict.fromkeys(TITLES.values()))
    sections: dict[str, dict[str, tuple[list[str], str]]] = {}
    for cls in declaring_classes():
        bindings = BindingsMap(cls.__dict__.get("BINDINGS", []))
        bindings.apply_keymap(keymap)
        rows = sections.setdefault(section_title(cls), {})
        for _key, binding in bindings:
            if binding.system:
                continue
            what = binding.description or binding.action.replace("_", " ")
            keys, _ = rows.setdefault(f"{binding.action}/{what}", ([], what))
            shown = app.get_key_display(binding)
            if shown not in keys:
                keys.append(shown)
    # Textual's own: the palette, and moving the focus.
    everywhere = sections.setdefault("Everywhere", {})
    palette = Binding(app.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
    everywhere.setdefault("palette", ([app.get_key_display(palette)], "Command palette"))
    everywhere.setdefault("focus", (["tab", "shift+tab"], "Focus the next / previous widget"))
    ranked = sorted(sections, key=lambda t: (order.index(t) if t in order else len(order), t))
    return [
        (title, [(" ".join(keys), what) for keys, what in sections[title].values()])
        for title in ranked
        if sections[title]
    ]


def palette_commands(app: App[Any]) -> list[tuple[str, str]]:
    """The command palette's commands as (title, help), as the main screen offers them."""
    screen = app.screen_stack[0] if app.screen_stack else app.screen
    return [(command.title, command.help) for command in app.get_system_commands(screen)]


def render_keys(sections: list[tuple[str, list[tuple[str, str]]]]) -> RenderableType:
    parts: list[RenderableType] = []
    for title, rows in sections:
        table = Table.grid(padding=(0, 2))
        table.add_column(width=KEY_WIDTH, no_wrap=True, style="bold")
        table.add_column(overflow="fold")
        for keys, what in rows:
            table.add_row(keys, what)
        parts += [Text(title, style="bold underline"), table, Text("")]
    return Group(*parts)


def render_palette(commands: list[tuple[str, str]]) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold", style="dim")
    for title, what in commands:
        table.add_row(title, what)
    return Group(Text("Command palette (ctrl+p)", style="bold underline"), table, Text(""))


def render_files(theme: str) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="dim")
    table.add_column(overflow="fold")
    table.add_row("config", str(paths.config_path()))
    table.add_row("keymap", 'ui.keymap in the config: {"binding id": "keys"}, e.g.')
    table.add_row("", '"keymap": {"app.quit": "ctrl+x", "main.next_pane": "f6"}')
    table.add_row("theme", f"{theme} (ui.theme; the palette's Theme command picks one)")
    table.add_row("themes", f"your own: {paths.user_themes_dir()}/NAME.toml")
    return Group(Text("Files", style="bold underline"), table)


class HelpScreen(PageScreen):
    """Every key, the palette's commands and the files; Esc, F1 or q goes back."""

    BINDINGS = [
        Binding("escape,f1,q", "close", "Back", id="help.close"),
        Binding("g", "top", "Top", id="help.top", show=False),
        Binding("G", "bottom", "Bottom", id="help.bottom", show=False),
    ]

    def sections(self) -> Iterable[Static]:
        yield Static(id="help-keys")
        yield Static(id="help-palette")
        yield Static(id="help-files")

    def on_mount(self) -> None:
        self.sub_title = "keys and commands"
        self.query_one("#help-keys", Static).update(render_keys(key_sections(self.app)))
        self.query_one("#help-palette", Static).update(render_palette(palette_commands(self.app)))
        self.query_one("#help-files", Static).update(render_files(self.app.theme))
        self.body.focus()
