"""The server manager against the real embedded llama.cpp server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from nanobot_tui import paths
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.serving.manager import (
    ServerEvent,
    ServerManager,
    ServerStartError,
    ServerState,
    parse_metrics,
    reap_orphans,
    resolve_runtime,
    server_args,
)
from nanobot_tui.engine.serving.slots import ServerSpec
from tests.conftest import until


def spec_for(model: Path, slots: tuple[str, ...] = ("main",), ctx: int = 2048) -> ServerSpec:
    return ServerSpec(
        model_path=model,
        model_id="smollm2-135m-instruct",
        display_name="SmolLM2-135M-Instruct",
        slots=slots,  # type: ignore[arg-type]
        context_size=ctx,
        parallel=1,
        gpu_layers=0,
        size_bytes=model.stat().st_size,
    )


def host_processes() -> set[int]:
    """Live embedded hosts that are children of this test process."""
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if (
                "nanobot_tui.engine.serving.llama_host" in proc.cmdline()
                and proc.status() != "zombie"
            ):
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def no_orphans():
    """Fails the test if it leaves a server running that was not there before it."""
    before = host_processes()
    yield
    assert host_processes() - before == set(), "the test left a model server running"


def test_server_args_match_llama_server_flags(embedded_model: Path) -> None:
    args = server_args(spec_for(embedded_model), port=1234, threads=2)
    assert args[args.index("--port") + 1] == "1234"
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--ctx-size") + 1] == "2048"
    assert {"--metrics", "--slots", "--jinja"} <= set(args)


def test_runtime_resolution() -> None:
    embedded = resolve_runtime("embedded")
    assert embedded.kind == "embedded"
    assert embedded.command[-1] == "nanobot_tui.engine.serving.llama_host"
    with pytest.raises(ServerStartError, match="no executable llama-server"):
        resolve_runtime("/nonexistent/llama-server")
    with pytest.raises(ServerStartError, match="no executable llama-server"):
        resolve_runtime("surely-not-a-llama-server-on-path")


def test_parse_metrics() -> None:
    text = "# HELP x\n# TYPE x counter\nllamacpp:tokens_predicted_total 42\nbad line\n"
    assert parse_metrics(text) == {"llamacpp:tokens_predicted_total": 42.0}


@pytest.mark.model
async def test_start_chat_crash_restart_stop(embedded_model: Path, no_orphans: None) -> None:
    events: list[ServerEvent] = []
    manager = ServerManager(
        [spec_for(embedded_model)],
        resolve_runtime("embedded"),
        on_event=events.append,
        stats_interval=0.2,
    )
    async with manager:
        server = manager.server_for("main")
        assert server.state is ServerState.READY
        first_pid = server.pid
        assert first_pid is not None
        # The pid file records the server for reaping after a crash of ours.
        record = json.loads(next(paths.run_dir().glob("servers-*.json")).read_text())
        assert [entry["pid"] for entry in record["servers"]] == [first_pid]

        client = manager.client("main")
        answer = await client.chat(
            ChatRequest([{"role": "user", "content": "Say hello"}], max_tokens=24, temperature=0)
        )
        assert answer.content.strip()

        # kill -9: the manager notices, says so, and restarts on the same port.
        os.kill(first_pid, signal.SIGKILL)
        await until(lambda: server.pid not in (None, first_pid) and server.state == "ready")
        assert server.restarts == 1
        assert any(e.status.state is ServerState.RESTARTING for e in events)
        assert "crashed" in next(e.message for e in events if e.status.state == "restarting")
        again = await client.chat(ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=8))
        assert again.usage.completion_tokens > 0
        second_pid = server.pid

    assert manager.statuses()[0].state is ServerState.STOPPED
    assert not psutil.pid_exists(second_pid) or psutil.Process(second_pid).status() == "zombie"
    assert not list(paths.run_dir().glob("servers-*.json"))


@pytest.mark.model
async def test_live_tokens_per_second(embedded_model: Path, no_orphans: None) -> None:
    """The meter's rate comes from the server's own token counter: positive at the poll
    that sees the answer's tokens, 0 again at the next one. (How closely it follows the
    server's timing depends on the machine's load: benchmarks measure that.)"""
    async with ServerManager(
        [spec_for(embedded_model)], resolve_runtime("embedded"), stats_interval=0.1
    ) as manager:
        server = manager.server_for("main")
        await until(lambda: server.counters.at > 0)  # the first poll: the baseline
        assert manager.statuses()[0].tokens_per_s == 0.0
        result = await manager.client("main").chat(
            ChatRequest(
                [{"role": "user", "content": "Tell a long story about a dragon."}],
                max_tokens=64,
                temperature=0,
                extra={"ignore_eos": True},
            )
        )
        assert result.usage.completion_tokens == 64
        # A poll sets the counter and the rate together and the next comes a full interval
        # later, so the rate read as soon as the counter moves is that poll's.
        await until(lambda: server.counters.predicted_total > 0)
        assert manager.statuses()[0].tokens_per_s > 0
        await until(lambda: manager.statuses()[0].tokens_per_s == 0.0)  # idle again


@pytest.mark.model
async def test_fails_fast_with_log_tail(tmp_path: Path, no_orphans: None) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    manager = ServerManager([spec_for(broken)], resolve_runtime("embedded"))
    with pytest.raises(ServerStartError) as caught:
        await manager.start()
    # Fast: the manager saw the process exit, rather than waiting out its health deadline.
    assert "exited with code" in str(caught.value)
    assert caught.value.log_tail  # the server's own last words come with the error


@pytest.mark.model
async def test_shared_and_distinct_servers(
    embedded_model: Path, tmp_path: Path, no_orphans: None
) -> None:
    copy = tmp_path / "copy.gguf"
    copy.symlink_to(embedded_model)  # a second distinct model file, as far as the plan goes
    specs = [spec_for(embedded_model, ("main", "rlm")), spec_for(copy, ("memory",))]
    async with ServerManager(specs, resolve_runtime("embedded")) as manager:
        assert manager.url("main") == manager.url("rlm") != manager.url("memory")
        async with httpx.AsyncClient() as http:
            for slot in ("main", "memory"):
                health = await http.get(f"{manager.url(slot)}/health")
                assert health.status_code == 200
        assert len({s.pid for s in manager.statuses()}) == 2


@pytest.mark.model
def test_server_dies_with_a_killed_nanobot(embedded_model: Path) -> None:
    """nanobot killed with SIGKILL: its server goes too (parent-death signal), and the pid
    file it left is cleaned up by the next start."""
    script = (
        "import asyncio, os, signal\n"
        "from pathlib import Path\n"
        "from nanobot_tui.engine.serving.manager import ServerManager, resolve_runtime\n"
        "from tests.engine.serving.test_servers import spec_for\n"
        "async def main():\n"
        f"    m = ServerManager([spec_for(Path({str(embedded_model)!r}))], "
        "resolve_runtime('embedded'))\n"
        "    await m.start()\n"
        "    print(m.server_for('main').pid, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[3],
    )
    server_pid = int(out.stdout.split()[0])
    assert wait_gone(server_pid, timeout=10), "the server outlived the nanobot that started it"
    assert list(paths.run_dir().glob("servers-*.json")), "the dead parent left its pid file"
    assert reap_orphans() == 0
    assert not list(paths.run_dir().glob("servers-*.json"))


@pytest.mark.model
def test_reap_orphans_kills_servers_of_a_dead_owner(embedded_model: Path) -> None:
    """A server whose owner died without taking it along (another runtime, a stuck
    process) is killed on the next start, found through the owner's pid file."""
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "nanobot_tui.engine.serving.llama_host"),
            *("--model", str(embedded_model), "--port", "0", "--ctx-size", "512"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner_created = psutil.Process(dead_owner.pid).create_time()
    dead_owner.wait()
    paths.ensure(paths.run_dir())
    record = {
        "owner": {"pid": dead_owner.pid, "created": owner_created},
        "servers": [
            {"pid": server.pid, "created": psutil.Process(server.pid).create_time(), "port": 0}
        ],
    }
    (paths.run_dir() / f"servers-{dead_owner.pid}.json").write_text(json.dumps(record))
    # A pid file of a live owner (this test) is left alone.
    live = {"owner": {"pid": os.getpid(), "created": psutil.Process().create_time()}}
    (paths.run_dir() / f"servers-{os.getpid()}.json").write_text(
        json.dumps({**live, "servers": []})
    )
    assert reap_orphans() == 1
    assert server.wait(timeout=10) == -signal.SIGKILL
    assert [p.name for p in paths.run_dir().glob("servers-*.json")] == [
        f"servers-{os.getpid()}.json"
    ]


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == "zombie":
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.model
async def test_llama_server_binary_runtime(
    embedded_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_orphans: None
) -> None:
    """The user-binary runtime: a `llama-server` found on PATH gets the same flags. The
    binary here is a wrapper script around the embedded host (no real llama-server is
    installed on this machine), answering `--version` the way llama-server does."""
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "version: 9999 (test-wrapper)" >&2; exit 0; fi\n'
        f'exec {sys.executable} -m nanobot_tui.engine.serving.llama_host "$@"\n'
    )
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    runtime = resolve_runtime("llama-server")
    assert runtime.kind == "llama-server"
    assert runtime.command == (str(binary),)
    assert runtime.version == "9999 (test-wrapper)"
    assert resolve_runtime(str(binary)).command == (str(binary),)

    async with ServerManager([spec_for(embedded_model)], runtime) as manager:
        answer = await manager.client("main").chat(
            ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=4)
        )
        assert answer.usage.completion_tokens > 0
        # The manager logs each command it runs: the binary came first.
        assert f"['{binary}', '--model'" in manager.server_for("main").log_path.read_text()
