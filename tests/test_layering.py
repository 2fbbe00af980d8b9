"""The engine never imports textual: checked in a fresh interpreter, not hoped for."""

from __future__ import annotations

import subprocess
import sys

ENGINE_MODULES = [
    "nanobot_tui.engine.servers",
    "nanobot_tui.engine.llm",
    "nanobot_tui.engine.workbench",
    "nanobot_tui.engine.llama_host",
    "nanobot_tui.config",
    "nanobot_tui.hardware",
    "nanobot_tui.catalog",
    "nanobot_tui.sizing",
    "nanobot_tui.slots",
    "nanobot_tui.doctor",
    "nanobot_tui.cli",
    "nanobot_tui.cli_agent",
    "nanobot_tui.cli_setup",
    "nanobot_tui.download",
    "nanobot_tui.setup_plan",
    "nanobot_tui.engine.providers",
    "nanobot_tui.engine.anthropic",
    "nanobot_tui.engine.agent.build",
    "nanobot_tui.engine.agent.loop",
    "nanobot_tui.engine.agent.recall",
]


def test_engine_never_imports_textual() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {ENGINE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"textual imported by the engine: {out.stdout}"


def test_the_check_can_fail() -> None:
    """The same probe sees textual when a UI module is imported."""
    code = "import nanobot_tui.ui.app, sys; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
