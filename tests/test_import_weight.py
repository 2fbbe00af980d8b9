"""Heavy modules stay off the paths that do not need them: the app's module imports no
engine (the servers, the HTTP client, the agent, numpy: they come after the first frame),
the CLI's module imports no command, and `nanobot search` loads neither the UI nor the HTTP
client nor the hardware probes. Each check runs in a fresh interpreter (a child process),
so what the test process has imported does not count.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

from nanobot_tui.cli import main as cli_main

# What the app needs only once it runs: the model servers, the HTTP client, the agent (its
# loop, sessions and delegations: at the first turn), the voting engine, search (numpy).
ENGINE = (
    "nanobot_tui.engine.agent.build",
    "nanobot_tui.engine.agent.loop",
    "nanobot_tui.engine.agent.sessions",
    "nanobot_tui.engine.agent.delegate",
    "nanobot_tui.engine.serving.workbench",
    "nanobot_tui.engine.serving.manager",
    "nanobot_tui.engine.llm.openai",
    "nanobot_tui.engine.voting.runner",
    "nanobot_tui.engine.context.search",
    "httpx",
    "numpy",
    "gguf",
)
# What no command-line path needs before it knows its command.
COMMANDS = tuple(f"nanobot_tui.cli.{name}" for name in cli_main.ALL_MODULES)
UI = ("textual", "rich", "markdown_it", "pygments")


def loaded_after(code: str, watched: tuple[str, ...]) -> list[str]:
    """Run `code` in a fresh interpreter; the `watched` modules it left in sys.modules."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


# What the app draws only once there is something to draw: Markdown answers, highlighted
# tool results, the file viewer.
RENDERERS = ("markdown_it", "pygments", "rich.syntax", "nanobot_tui.ui.screens.viewer")
# Screens pushed on demand: a node's inspector, the runs picker, the sessions picker.
SCREENS = (
    "nanobot_tui.ui.screens.inspect_node",
    "nanobot_tui.ui.screens.runs",
    "nanobot_tui.ui.screens.sessions",
)
# The hardware probes: with no config file, the app detects the tier after its first frame.
PROBES = ("psutil", "pynvml")


def test_the_app_module_imports_no_engine_no_renderer_and_no_screen_it_pushes() -> None:
    assert loaded_after("import nanobot_tui.ui.app", ENGINE + RENDERERS + SCREENS) == []


def test_the_app_s_config_with_no_file_probes_no_hardware() -> None:
    """`nanobot` with no config file: what it does before running the app (read the config,
    import the app) detects no hardware (NANOBOT_HOME is empty here)."""
    code = (
        "from nanobot_tui.config import load_config_file\n"
        "assert load_config_file() is None\n"
        "import nanobot_tui.ui.app\n"
    )
    assert loaded_after(code, PROBES + ENGINE + SCREENS) == []


# The app run headless to its first frame (the main screen's first paint), with no config
# file and the servers' start left out; what it had loaded then is printed.
FIRST_FRAME = """
import json, sys
from textual.app import App
from nanobot_tui.config import load_config_file
from nanobot_tui.ui.app import NanobotApp

WATCHED = {watched!r}
loaded = []
display = App._display

def first(self, screen, renderable):
    if renderable is not None and type(screen).__name__ == "MainScreen" and not loaded:
        loaded.append([m for m in WATCHED if m in sys.modules])
        self.exit()
    display(self, screen, renderable)

App._display = first
NanobotApp.start_engine = lambda self: None
NanobotApp(load_config_file()).run(headless=True, size=(120, 36))
print(json.dumps(loaded))
"""


def test_the_first_frame_loads_no_engine_probe_or_store() -> None:
    """Until the main screen is first drawn, nothing is read in the background: the
    hardware meter's probes, the run stores (SQLite) and the volumes come after it."""
    watched = (
        PROBES
        + ENGINE
        + SCREENS
        + RENDERERS
        + (
            "sqlite3",
            "nanobot_tui.engine.runs.store",
            "nanobot_tui.engine.context.volume",
        )
    )
    out = subprocess.run(
        [sys.executable, "-c", FIRST_FRAME.format(watched=watched)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[]]


def test_the_cli_module_imports_no_command_ui_or_engine() -> None:
    assert loaded_after("import nanobot_tui.cli.main", COMMANDS + UI + ENGINE) == []


def test_parsing_a_command_imports_only_its_module() -> None:
    code = "from nanobot_tui.cli.main import build_parser\nbuild_parser('search')"
    others = tuple(m for m in COMMANDS if m != "nanobot_tui.cli.context")
    assert loaded_after(code, others + UI + ENGINE) == []


def test_nanobot_search_loads_no_ui_http_client_or_hardware_probe(nanobot_home: Path) -> None:
    folder = nanobot_home.parent / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("the access code for project Rhoquisul is YC-AD0-34\n")
    (folder / "b.md").write_text("nothing to see here\n" * 50)
    ingest = [sys.executable, "-m", "nanobot_tui", "ingest", str(folder), "--name", "notes"]
    subprocess.run(ingest, capture_output=True, text=True, timeout=120, check=True)
    code = (
        "import contextlib, io\n"
        "from nanobot_tui.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    assert main(['search', 'notes', 'access code Rhoquisul']) == 0, out.getvalue()\n"
        "assert 'a.md' in out.getvalue(), out.getvalue()\n"
    )
    heavy = (
        *UI,
        "httpx",
        "asyncio",  # no embedding model: the search runs without an event loop
        "nanobot_tui.engine.serving.manager",
        "nanobot_tui.engine.llm.openai",
        "psutil",  # no config file: the search detects no hardware (it needs no tier)
        "pynvml",
        *(m for m in COMMANDS if m != "nanobot_tui.cli.context"),
    )
    assert loaded_after(code, heavy) == []


def test_the_command_table_names_each_command_s_module() -> None:
    """`COMMAND_MODULES` is what lets a command import only its module: it must name, for
    every command, the module whose add_commands adds it, and no command may be missing."""
    for name in cli_main.ALL_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(f"nanobot_tui.cli.{name}").add_commands(sub)
        expected = {c for c, m in cli_main.COMMAND_MODULES.items() if m == name}
        assert set(sub.choices) == expected, name
    full = cli_main.build_parser()
    commands = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"doctor", *cli_main.COMMAND_MODULES}
