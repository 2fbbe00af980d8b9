"""Where nanobot keeps its data: NANOBOT_HOME, default ~/.nanobot."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data folder; NANOBOT_HOME overrides ~/.nanobot. Not created here."""
    override = os.environ.get("NANOBOT_HOME")
    return Path(override).expanduser() if override else Path.home() / ".nanobot"


def config_path() -> Path:
    return home() / "config.json"


def models_dir() -> Path:
    return home() / "models"


def run_dir() -> Path:
    """Process-local state such as the pid file of the model servers."""
    return home() / "run"


def logs_dir() -> Path:
    return home() / "logs"


def ensure(path: Path) -> Path:
    """Create a folder (and its parents) readable by its owner only; return it.

    Every folder created here is 0700, the parents too (NANOBOT_HOME itself is usually
    created as the parent of its first subfolder, and holds keys and sessions); folders
    that exist already are left as they are."""
    missing: list[Path] = []
    here = path
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)  # an existing path: checks it is one
    return path


def runs_dir() -> Path:
    """Durable runs: one folder per run (run.db, lock, runner.log)."""
    return home() / "runs"


def work_dir() -> Path:
    """Processes over codebases: one folder per process (the snapshot of the user's tree,
    working copies, the patch, the backup an apply keeps)."""
    return home() / "work"


def traces_dir() -> Path:
    """One JSONL trace file per run: a line per step execution."""
    return home() / "traces"


def sessions_dir() -> Path:
    """Agent sessions: one JSONL file per session."""
    return home() / "sessions"


def memory_file() -> Path:
    """Long-term notes the agent keeps and may update through a tool."""
    return home() / "MEMORY.md"


def skills_dir() -> Path:
    """One folder per skill, each with a SKILL.md."""
    return home() / "skills"


def user_themes_dir() -> Path:
    """Themes the user adds, next to the ones shipped in the repository's themes/."""
    return home() / "themes"


def screenshots_dir() -> Path:
    """The app's screenshots, when there is no Downloads folder to put them in."""
    return home() / "screenshots"
