"""Themes as files: the shipped three, the user's own, bad files skipped with one line, the
choice made in the palette remembered in the config; NO_COLOR and 16 colours still read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.color import Color as RichColor
from rich.color import ColorSystem
from rich.segment import Segment
from rich.style import Style
from textual.color import Color
from textual.command import CommandPalette

from nanobot_tui import paths
from nanobot_tui.config import load_config, save_config
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.screens.main import MainScreen
from nanobot_tui.ui.themes import (
    DEFAULT_THEME,
    MIN_CONTRAST,
    SHIPPED_DIR,
    ReadableMonochrome,
    ThemeFileError,
    load_themes,
    parse_theme,
    remember_theme,
)
from tests.conftest import until
from tests.ui.palette import choose, open_palette
from tests.ui.test_app import small_config
from tests.ui.test_process_pane import quiet_app

SHIPPED = ("nanobot-dark", "nanobot-light", "nanobot-high-contrast")
GOOD = 'name = "mine"\nprimary = "#112233"\nbackground = "#000000"\n'


def write_user_theme(name: str, text: str) -> Path:
    folder = paths.ensure(paths.user_themes_dir())
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_themes_load_without_warnings() -> None:
    loaded = load_themes([SHIPPED_DIR])
    assert loaded.warnings == []
    assert sorted(theme.name for theme in loaded.themes) == sorted(SHIPPED)
    by_name = {theme.name: theme for theme in loaded.themes}
    assert by_name["nanobot-dark"].dark and by_name["nanobot-high-contrast"].dark
    assert not by_name["nanobot-light"].dark
    assert by_name["nanobot-high-contrast"].text_alpha == 1.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('primary = "#112233"\ncolour = "red"\n', "unknown field 'colour'"),
        ('background = "#000000"\n', "primary: missing"),
        ('primary = "#11223"\n', "primary: not a colour: '#11223'"),
        ('primary = "#112233"\ndark = "yes"\n', "dark: expected true or false"),
        ('primary = "#112233"\ntext_alpha = 2\n', "text_alpha: 2 is not between 0 and 1"),
        ('primary = "#112233"\n[variables]\nborder = 3\n', "variables: expected a table"),
        ('primary = "#112233\n', "invalid TOML"),
        ("name = 7\nprimary = '#112233'\n", "name: expected a non-empty string"),
    ],
)
def test_a_bad_theme_file_is_one_line_naming_file_and_field(text: str, problem: str) -> None:
    path = Path("/somewhere/bad.toml")
    with pytest.raises(ThemeFileError) as caught:
        parse_theme(text, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message
    assert "\n" not in message


def test_json_themes_and_the_file_name_as_default_name() -> None:
    theme = parse_theme(json.dumps({"primary": "#aabbcc", "dark": False}), Path("x/sand.json"))
    assert (theme.name, theme.primary, theme.dark) == ("sand", "#aabbcc", False)
    with pytest.raises(ThemeFileError, match="invalid JSON at line 1"):
        parse_theme("{", Path("x/broken.json"))


async def test_app_registers_shipped_and_user_themes_and_warns_about_bad_ones() -> None:
    write_user_theme("mine.toml", GOOD)
    write_user_theme("broken.toml", 'primary = "#12345"\n')
    write_user_theme("notes.txt", "not a theme: ignored")
    app = quiet_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        for name in (*SHIPPED, "mine"):
            assert name in app.available_themes
        assert app.theme == DEFAULT_THEME  # the config never chose one
        # The bad file: one warning naming it, and the app runs on.
        assert len(app.startup_warnings) == 1
        assert "broken.toml: primary: not a colour" in app.startup_warnings[0]
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert any("broken.toml" in note for note in notes)


def test_the_configured_theme_is_used_and_an_unknown_one_falls_back() -> None:
    config = small_config()
    config.ui.theme = "nanobot-light"
    light = NanobotApp(config, workbench=Workbench(config, only_slots=()))
    assert light.theme == "nanobot-light" and light.startup_warnings == []
    config.ui.theme = "no-such-theme"
    missing = NanobotApp(config, workbench=Workbench(config, only_slots=()))
    assert missing.theme == DEFAULT_THEME
    assert missing.startup_warnings == [
        f"config ui.theme: no theme named 'no-such-theme'; using {DEFAULT_THEME}"
    ]


async def test_a_theme_picked_in_the_palette_is_saved_in_the_config() -> None:
    # A config file the user wrote: the theme is added to it, the rest kept.
    on_disk = small_config()
    on_disk.ui.keymap = {"app.quit": "ctrl+x"}
    save_config(on_disk)
    app = quiet_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        commands = await open_palette(pilot)
        await choose(pilot, commands, "Theme")  # Textual's command: a palette of themes
        await until(lambda: isinstance(app.screen, CommandPalette) and app.screen is not commands)
        themes = app.screen
        assert isinstance(themes, CommandPalette)
        await choose(pilot, themes, "nanobot-light")
        await until(lambda: app.theme == "nanobot-light")
        await until(lambda: load_config()[0].ui.theme == "nanobot-light")
    saved, _ = load_config()
    assert saved.ui.keymap == {"app.quit": "ctrl+x"}
    assert app.config.ui.theme == "nanobot-light"


def test_remember_theme_without_a_config_file_writes_the_apps_config() -> None:
    config = small_config()
    assert not paths.config_path().exists()
    assert remember_theme("nanobot-high-contrast", config) is None
    saved, exists = load_config()
    assert exists and saved.ui.theme == "nanobot-high-contrast"
    assert saved.local.main.model == config.local.main.model


def test_remember_theme_with_a_broken_config_says_so_and_keeps_the_file() -> None:
    path = paths.ensure(paths.home()) / "config.json"
    path.write_text("{ broken", encoding="utf-8")
    problem = remember_theme("nanobot-light", small_config())
    assert problem is not None and problem.startswith("theme not saved: ")
    assert "invalid JSON" in problem and "\n" not in problem
    assert path.read_text(encoding="utf-8") == "{ broken"


def ansi16(value: str, background: str) -> int:
    """The 16-colour number a colour (maybe with alpha, over `background`) comes out as."""
    color = Color.parse(background).blend(Color.parse(value), Color.parse(value).a)
    return RichColor.from_rgb(*color.rgb).downgrade(ColorSystem.STANDARD).number or 0


@pytest.mark.parametrize("name", SHIPPED)
def test_each_theme_still_reads_in_16_colours(name: str) -> None:
    """TEXTUAL_COLOR_SYSTEM=standard: every colour becomes one of 16. Text, borders, keys
    and states must not land on the colour of what they are drawn on."""
    theme = next(t for t in load_themes([SHIPPED_DIR]).themes if t.name == name)
    colours = {**theme.to_color_system().generate(), **theme.variables}
    back = colours["background"]
    for ground in ("background", "surface", "panel"):
        base = ansi16(colours[ground], back)
        for ink in ("foreground", "primary", "border", "error", "warning", "success"):
            assert ansi16(colours[ink], back) != base, (name, ink, ground)
    footer = ansi16(colours["footer-background"], back)
    assert ansi16(colours["footer-key-foreground"], back) != footer
    cursor = ansi16(colours["block-cursor-background"], back)
    assert cursor != ansi16(back, back)
    if name == "nanobot-high-contrast":
        # Pure black and white, and the states in bright colours (9-15).
        assert (ansi16(back, back), ansi16(colours["foreground"], back)) == (0, 15)
        for ink in ("primary", "error", "warning", "success"):
            assert ansi16(colours[ink], back) >= 9 or ink == "success", ink


def test_no_color_greys_keep_text_readable() -> None:
    dark = Color.parse("#14161B")
    out = ReadableMonochrome().apply(
        [Segment("stopped", Style(color="magenta", bold=True)), Segment("x", None)], dark
    )
    style = out[0].style
    assert style is not None and style.bold and style.color is not None
    r, g, b = style.color.get_truecolor()
    assert r == g == b  # grey
    assert r - dark.monochrome.r >= MIN_CONTRAST
    assert out[1] == Segment("x", None)


async def test_no_color_renders_the_panes_in_greys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = quiet_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        assert app.no_color
        assert any(isinstance(f, ReadableMonochrome) for f in app._filters)
        panes = [
            app.screen.query_one(p) for p in ("#chat", "#process", "#volumes", "#meter", "#votes")
        ]
        assert all(pane.display for pane in panes)
        # The screenshot draws what is laid out: wait until every pane has its place.
        await until(lambda: all(pane.region.area for pane in panes))
        await pilot.pause()
        svg = app.export_screenshot()
    # Every colour drawn is a grey (the window's frame around the screen aside).
    fills = {m.lower() for m in re.findall(r'fill(?:="|:\s*)(#[0-9a-fA-F]{6})', svg)}
    drawn = fills - SVG_FRAME
    assert len(drawn) > 5, fills
    assert all(c[1:3] == c[3:5] == c[5:7] for c in drawn), sorted(drawn)


# The SVG export's window decoration: three buttons and the title.
SVG_FRAME = {"#ff5f57", "#febc2e", "#28c840", "#c5c8c6"}
