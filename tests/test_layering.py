"""The layers hold: checked by import-linter's contracts (pyproject.toml) and, for the rule
that matters most, in a fresh interpreter: nothing below the front-ends loads textual."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import nanobot_tui

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
FRONT_ENDS = ("nanobot_tui.ui", "nanobot_tui.cli", "nanobot_tui.channels", "nanobot_tui.__main__")
# Run as programs (`python -m ...`), not imported: importing them starts a server or a run.
PROGRAMS = ("nanobot_tui.engine.serving.llama_host", "nanobot_tui.engine.runs.worker")


def below_the_front_ends() -> list[str]:
    """Every module that is not a front-end, found by walking the package: a new module is
    checked without anyone adding it to a list."""
    names = [m.name for m in pkgutil.walk_packages(nanobot_tui.__path__, "nanobot_tui.")]
    return sorted(n for n in names if not n.startswith(FRONT_ENDS) and n not in PROGRAMS)


def loaded_textual(modules: list[str]) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_nothing_below_the_front_ends_imports_textual() -> None:
    modules = below_the_front_ends()
    assert "nanobot_tui.engine.runs.durable" in modules and "nanobot_tui.setup.plan" in modules
    assert loaded_textual(modules) == []


def test_the_probe_sees_textual_when_a_ui_module_is_imported() -> None:
    assert "textual" in loaded_textual(["nanobot_tui.ui.app"])


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), str(tree / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=tree,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        check=False,
    )


def copy_of_the_package(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(
        ROOT / "nanobot_tui", tree / "nanobot_tui", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def add_import(module_file: Path, line: str) -> None:
    text = module_file.read_text()
    module_file.write_text(
        text.replace(
            "from __future__ import annotations\n",
            f"from __future__ import annotations\n\n{line}\n",
            1,
        )
    )


def test_the_contracts_hold_and_catch_an_engine_that_imports_textual_or_the_cli(
    tmp_path: Path,
) -> None:
    tree = copy_of_the_package(tmp_path)
    kept = lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr

    tree_module = tree / "nanobot_tui/engine/runs/tree.py"
    original = tree_module.read_text()
    add_import(tree_module, "import textual")
    broken = lint_imports(tree)
    assert broken.returncode == 1
    assert "nanobot_tui.engine is not allowed to import textual" in broken.stdout
    assert "nanobot_tui.engine.runs.tree -> textual" in broken.stdout

    tree_module.write_text(original)
    add_import(tree_module, "import nanobot_tui.cli.common")
    broken = lint_imports(tree)
    assert broken.returncode == 1
    assert "nanobot_tui.engine is not allowed to import nanobot_tui.cli" in broken.stdout
