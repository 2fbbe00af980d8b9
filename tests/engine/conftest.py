"""Fixtures the context and agent tests share: a small volume, an embedding server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobot_tui.engine.context.ingest import ingest
from tests.conftest import free_port, running_host


@pytest.fixture
def notes(tmp_path: Path) -> str:
    """Volume "notes": src/app.py, and a README.md with one needle among 600 filler lines."""
    root = tmp_path / "notes"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text(
        "def main():\n    start_server(port=8080)\n    return 0\n" * 20
    )
    filler = "\n".join(f"Line {i} about the weather and the sea." for i in range(300))
    (root / "README.md").write_text(
        filler + "\nThe launch password for rocket Albatross is ZX-991-QT.\n" + filler + "\n"
    )
    ingest(root, "notes")
    return "notes"


@pytest.fixture(scope="module")
def embedding_server(
    embedded_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The embedded host serving /v1/embeddings (mean pooling)."""
    args = ["--model", str(embedded_model), "--port", str(free_port())]
    args += ["--ctx-size", "2048", "--parallel", "2", "--embeddings", "--pooling", "mean"]
    with running_host(args, tmp_path_factory.mktemp("llama-embed") / "server.log") as url:
        yield url
