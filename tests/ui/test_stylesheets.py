"""Each screen's styles live in one .tcss file beside its module, ship with the package,
and load whatever the working directory."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from textual.screen import Screen

import nanobot_tui.ui
from nanobot_tui.ui.screens.main import MainScreen
from tests.conftest import until
from tests.ui.test_process_pane import quiet_app

REPO = Path(__file__).resolve().parents[2]


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def nanobot_screens() -> list[type[Screen[object]]]:
    """Every screen nanobot declares (each module of the UI imported first)."""
    for module in pkgutil.walk_packages(nanobot_tui.ui.__path__, "nanobot_tui.ui."):
        importlib.import_module(module.name)
    return sorted(
        {cls for cls in _subclasses(Screen) if cls.__module__.startswith("nanobot_tui.ui.")},
        key=lambda cls: cls.__qualname__,
    )


def test_every_screen_has_its_stylesheet_beside_it_and_it_ships() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    screens = nanobot_screens()
    assert {cls.__name__ for cls in screens} >= {"MainScreen", "SetupScreen", "PathPrompt"}
    for cls in screens:
        # The stylesheet is named after the module of the class that declares it (a page
        # screen shares its base's), and Textual reads it beside the screen's own module.
        declaring = next(base for base in cls.__mro__ if "CSS_PATH" in base.__dict__)
        name = cls.CSS_PATH
        stem = Path(inspect.getfile(declaring)).stem
        assert isinstance(name, str) and name == f"{stem}.tcss", cls.__qualname__
        assert (Path(inspect.getfile(cls)).parent / name).is_file(), cls.__qualname__
        patterns = package_data.get(cls.__module__.rsplit(".", 1)[0], [])
        assert any(fnmatch(name, pattern) for pattern in patterns), cls.__qualname__
        # The one place: nothing inline beside it.
        assert not cls.__dict__.get("DEFAULT_CSS") and not cls.__dict__.get("CSS")


async def test_the_styles_load_from_another_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = quiet_app()
    async with app.run_test(size=(120, 36)):
        await until(lambda: isinstance(app.screen, MainScreen))
        # main.tcss: the right column is 44 cells wide.
        assert app.screen.query_one("#right").size.width == 44
