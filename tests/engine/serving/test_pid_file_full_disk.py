"""A full disk when the manager records its servers' pids (issue 12, item 16): a clear
ServerStartError, and the server it had just started is stopped, not orphaned. The full
disk is a FAULT INJECTOR at the pid file's write (no tiny file system without root)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from nanobot_tui import paths
from nanobot_tui.engine.serving import manager as manager_module
from nanobot_tui.engine.serving.manager import ServerManager, ServerStartError, resolve_runtime
from nanobot_tui.engine.serving.slots import ServerSpec


def _hosts() -> set[int]:
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = proc.cmdline()
            if "nanobot_tui.engine.serving.llama_host" in cmdline and proc.status() != "zombie":
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.model
async def test_a_full_disk_at_the_pid_file_stops_the_server_and_says_so(
    embedded_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manager_module, "write_atomic", no_space)
    spec = ServerSpec(
        model_path=embedded_model,
        model_id="smollm2-135m-instruct",
        display_name="SmolLM2-135M-Instruct",
        slots=("main",),
        context_size=2048,
        parallel=1,
        gpu_layers=0,
        size_bytes=embedded_model.stat().st_size,
    )
    before = _hosts()
    manager = ServerManager([spec], resolve_runtime("embedded"))
    with pytest.raises(ServerStartError) as caught:
        await manager.start()
    assert str(caught.value) == (
        f"cannot record the model servers in {paths.run_dir()}/servers-{os.getpid()}.json: "
        f"{os.strerror(errno.ENOSPC)}"
    )
    assert _hosts() - before == set()  # the server it had started is gone
    assert list(paths.run_dir().glob("servers-*")) == []
