"""The gateway's files under NANOBOT_HOME/gateway/: small JSON documents that the gateway
and `nanobot` commands both change, each change under a flock so none is lost."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic


def gateway_dir() -> Path:
    return paths.home() / "gateway"


def read_json(path: Path) -> dict[str, Any]:
    """The document at `path`; {} when there is none or it cannot be read (a damaged
    file starts over rather than stopping the gateway)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def changing(path: Path) -> Iterator[dict[str, Any]]:
    """Read the document, let the block change it, write it back atomically (0600); the
    whole under an exclusive flock on `path`.lock."""
    paths.ensure(path.parent)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = read_json(path)
        yield data
        write_atomic(path, json.dumps(data, indent=1) + "\n", mode=0o600)
    finally:
        os.close(fd)  # drops the flock
