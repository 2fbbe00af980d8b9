"""Themes as data files: the ones shipped in the repository's `themes/` and the user's in
NANOBOT_HOME/themes/, registered with the app at start; the one picked is remembered in
the config (`ui.theme`).

A theme file is TOML (or JSON) naming the fields of `textual.theme.Theme`:

    name = "my-theme"          # optional: the file's name without its suffix
    dark = true
    primary = "#5AA9E6"        # the only colour required
    background = "#14161B"
    [variables]                # any Textual CSS variable
    footer-key-foreground = "#5AA9E6"

A file that cannot be used is skipped with one line saying why; it never stops the app.

With NO_COLOR set, Textual turns every colour grey by its luminance; a colour chosen for
its hue (a red bar, a magenta "stopped") then comes out a dark grey on a dark background.
`ReadableMonochrome` does the same greying but keeps each text at least MIN_CONTRAST grey
levels away from its background.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from textual.color import Color, ColorParseError
from textual.filter import LineFilter, Monochrome, monochrome_style
from textual.theme import Theme

from nanobot_tui import paths
from nanobot_tui.config import Config, ConfigError, load_config, save_config

# The repository's themes/ folder (the package is installed editable from the checkout).
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "themes"
DEFAULT_THEME = "nanobot-dark"
FALLBACK_THEME = "textual-dark"  # Textual's own, always there
SUFFIXES = (".toml", ".json")

COLOUR_FIELDS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "success",
    "warning",
    "error",
)
FRACTION_FIELDS = ("luminosity_spread", "text_alpha")
KNOWN_FIELDS = frozenset({"name", "dark", "variables", *COLOUR_FIELDS, *FRACTION_FIELDS})


class ThemeFileError(ValueError):
    """A theme file that cannot be used; str() is one line naming the file and why."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}".encode("unicode_escape").decode("ascii"))


def _parse(text: str, path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ThemeFileError(
                path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ThemeFileError(path, f"invalid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ThemeFileError(path, "expected a table of theme fields")
    return data


def _colour(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ThemeFileError(path, f"{key}: expected a colour string, got {value!r}")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeFileError(path, f"{key}: not a colour: {value!r}") from None
    return value


def parse_theme(text: str, path: Path) -> Theme:
    """The Theme a file's text describes; ThemeFileError says what is wrong."""
    data = _parse(text, path)
    unknown = sorted(set(data) - KNOWN_FIELDS)
    if unknown:
        known = ", ".join(sorted(KNOWN_FIELDS))
        raise ThemeFileError(path, f"unknown field {unknown[0]!r} (known: {known})")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise ThemeFileError(path, f"name: expected a non-empty string, got {name!r}")
    if "primary" not in data:
        raise ThemeFileError(path, "primary: missing (the one colour a theme must give)")
    fields: dict[str, Any] = {
        key: _colour(path, key, data[key]) for key in COLOUR_FIELDS if key in data
    }
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise ThemeFileError(path, f"dark: expected true or false, got {dark!r}")
    for key in FRACTION_FIELDS:
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ThemeFileError(path, f"{key}: expected a number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ThemeFileError(path, f"{key}: {value} is not between 0 and 1")
            fields[key] = float(value)
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
    ):
        raise ThemeFileError(path, "variables: expected a table of names to strings")
    return Theme(name=name.strip(), dark=dark, variables=dict(variables), **fields)


def load_theme_file(path: Path) -> Theme:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ThemeFileError(path, f"cannot read: {reason}") from None
    return parse_theme(text, path)


def theme_files(folder: Path) -> list[Path]:
    """The theme files in a folder, by name; none when the folder is missing."""
    try:
        return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    except OSError:
        return []


def theme_dirs() -> list[Path]:
    """Where themes come from, in order: a later theme of the same name wins."""
    return [SHIPPED_DIR, paths.user_themes_dir()]


@dataclass(frozen=True)
class LoadedThemes:
    themes: list[Theme]
    warnings: list[str]  # one line per file skipped


def load_themes(folders: list[Path] | None = None) -> LoadedThemes:
    themes: list[Theme] = []
    warnings: list[str] = []
    for folder in theme_dirs() if folders is None else folders:
        for path in theme_files(folder):
            try:
                themes.append(load_theme_file(path))
            except ThemeFileError as exc:
                warnings.append(f"theme skipped: {exc}")
    return LoadedThemes(themes, warnings)


def starting_theme(config: Config, available: dict[str, Theme]) -> tuple[str, str | None]:
    """The theme to start with and, when the config names one that is not there, a
    warning. A config that never chose a theme gets nanobot's default (the schema's
    default is Textual's own dark theme)."""
    default = DEFAULT_THEME if DEFAULT_THEME in available else FALLBACK_THEME
    chosen = config.ui.theme
    if "theme" not in config.ui.model_fields_set:
        return default, None
    if chosen in available:
        return chosen, None
    return default, f"config ui.theme: no theme named {chosen!r}; using {default}"


def remember_theme(name: str, config: Config) -> str | None:
    """Save `name` as ui.theme in the config file and in `config`; returns why it could
    not be saved, or None. The file on disk is updated, not replaced by the app's copy,
    so an edit made while the app ran is kept; with no file yet, the app's config (the
    tier's defaults) is written with the theme."""
    config.ui.theme = name
    path = paths.config_path()
    try:
        if path.exists():
            on_disk = load_config(path)[0]
            on_disk.ui.theme = name
        else:
            on_disk = config
        save_config(on_disk, path)
    except ConfigError as exc:
        return f"theme not saved: {exc}"
    except OSError as exc:
        return f"theme not saved: {path}: {exc.strerror or exc}"
    return None


# --- NO_COLOR ---------------------------------------------------------------------------

MIN_CONTRAST = 110  # grey levels (of 255) between a text and its background


def _grey(color: RichColor) -> int:
    return Color.from_rich_color(color).monochrome.r


@lru_cache(4096)
def readable_monochrome_style(style: Style, background: RichColor) -> Style:
    """`style` in greys, its text at least MIN_CONTRAST away from its background."""
    grey = monochrome_style(style)
    if grey.color is None or grey.color.is_default:
        return grey
    back = _grey(grey.bgcolor if grey.bgcolor is not None else background)
    fore = _grey(grey.color)
    if abs(fore - back) >= MIN_CONTRAST:
        return grey
    lighter = back + MIN_CONTRAST <= 255 and (fore >= back or back - MIN_CONTRAST < 0)
    level = back + MIN_CONTRAST if lighter else back - MIN_CONTRAST
    return grey + Style(color=RichColor.from_rgb(level, level, level))


class ReadableMonochrome(LineFilter):
    """Textual's NO_COLOR filter, with every text kept readable against its background."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        back = background.monochrome.rich_color
        return [
            Segment(text, None if style is None else readable_monochrome_style(style, back))
            for text, style, _ in segments
        ]


def readable_no_color(filters: list[LineFilter]) -> list[LineFilter]:
    """The app's filters with Textual's NO_COLOR greying replaced by ReadableMonochrome."""
    return [ReadableMonochrome() if isinstance(f, Monochrome) else f for f in filters]
