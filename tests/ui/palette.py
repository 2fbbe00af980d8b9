"""Driving Textual's command palette from a test: type a command's title, wait until the
search for it is over with that command highlighted, then press Enter. (The palette
searches in a worker: Enter before the search is over picks nothing, or another command.)"""

from __future__ import annotations

from typing import Any

from textual.command import Command, CommandList, CommandPalette, Hit
from textual.pilot import Pilot
from textual.widgets import Input

from tests.conftest import until

# The group of the palette's search worker (Textual names it on the class).
SEARCH_GROUP = CommandPalette._GATHER_COMMANDS_GROUP


def searching(palette: CommandPalette) -> bool:
    return any(w.node is palette and w.group == SEARCH_GROUP for w in palette.workers)


def best_hit(palette: CommandPalette) -> str | None:
    """The title of the highlighted search hit once no search runs; None while one runs or
    while the list still shows what the palette offered before anything was typed."""
    if searching(palette):
        return None
    option = palette.query_one(CommandList).highlighted_option
    if not isinstance(option, Command) or not isinstance(option.hit, Hit):
        return None  # nothing highlighted, or a DiscoveryHit: the search has not begun
    return option.hit.text


async def open_palette(pilot: Pilot[Any]) -> CommandPalette:
    """ctrl+p, until the palette is the screen."""
    await pilot.press("ctrl+p")
    await until(lambda: isinstance(pilot.app.screen, CommandPalette))
    palette = pilot.app.screen
    assert isinstance(palette, CommandPalette)
    return palette


async def choose(pilot: Pilot[Any], palette: CommandPalette, title: str) -> None:
    """Type `title` in `palette`; when its search is over, the best hit must be the command
    whose title begins with it: Enter runs that command."""
    palette.query_one(Input).value = title
    await until(lambda: best_hit(palette) is not None)
    best = best_hit(palette)
    assert best is not None and best.startswith(title), (title, best)
    await pilot.press("enter")


async def run_command(pilot: Pilot[Any], title: str) -> None:
    """Open the palette and run the command whose title begins with `title`."""
    await choose(pilot, await open_palette(pilot), title)
