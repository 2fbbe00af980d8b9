"""Files on disk for the context tests: write a tree, ingest it, read lines as Python does."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.volume import Volume


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Each file under `root`, its text as UTF-8 with line ends as given; returns `root`."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def open_volume(root: Path, files: Mapping[str, str | bytes], name: str = "vol") -> Volume:
    """The tree written under `root`, ingested (with its index) as volume `name`, open."""
    ingest(write_tree(root, files), name, index=True)
    return Volume.open(name)


def py_lines(data: bytes) -> list[str]:
    """A file's lines as the volume defines them, by plain Python."""
    text = data.decode("utf-8", "replace")
    parts = text.split("\n")
    if text == "" or text.endswith("\n"):
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]
