"""Where a run lives and what names it: NANOBOT_HOME/runs/<id>/ (run.db, lock, control,
runner.log, committed), NANOBOT_HOME/traces/<id>.jsonl (or .jsonl.gz once compacted),
and ids given by any unique prefix."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from nanobot_tui import paths
from nanobot_tui.engine.runs.store.db import DB_NAME, RunNotFound


def run_dir(run_id: str) -> Path:
    return paths.runs_dir() / run_id


def db_path(run_id: str) -> Path:
    return run_dir(run_id) / DB_NAME


def trace_path(run_id: str) -> Path:
    return paths.traces_dir() / f"{run_id}.jsonl"


def packed_trace_path(run_id: str) -> Path:
    """A trace file compacted (`nanobot runs compact`): the same lines, gzip-compressed."""
    return paths.traces_dir() / f"{run_id}.jsonl.gz"


def marker_path(run_id: str) -> Path:
    """One line the writer rewrites after every commit: "<steps done> <max step> <time>"."""
    return run_dir(run_id) / "committed"


def new_run_id(label: str) -> str:
    """Short, sortable, unique: 20261125-021507-hanoi20-3f2a."""
    clean = "".join(c for c in label.lower() if c.isalnum())[:16] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{clean}-{secrets.token_hex(2)}"


def all_run_ids() -> list[str]:
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / DB_NAME).is_file())


def resolve_run_id(prefix: str) -> str:
    """The run whose id is `prefix` or starts with it; RunNotFound (one line) otherwise."""
    prefix = prefix.strip()
    ids = all_run_ids()
    if prefix in ids:
        return prefix
    matches = [i for i in ids if i.startswith(prefix)] if prefix else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run {prefix!r} (see `nanobot runs`)")
    shown = ", ".join(matches[:4]) + (" …" if len(matches) > 4 else "")
    raise RunNotFound(f"run id {prefix!r} is ambiguous: {shown}")
