"""The server manager against the real embedded llama.cpp server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest

from nanobot_tui import paths
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.serving.manager import (
    Runtime,
    ServerEvent,
    ServerManager,
    ServerStartError,
    ServerState,
    reap_orphans,
    resolve_runtime,
    server_args,
)
from nanobot_tui.engine.serving.metrics import parse_metrics, tokens_in_flight
from nanobot_tui.engine.serving.slots import KV_CACHE_TYPE, ServerSpec
from tests.conftest import until
from tests.engine.llm.test_kv_pool_server import ask as pooled_ask


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


def test_servers_share_the_cores(embedded_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads that outnumber the cores wait on each other: each of the servers gets its
    share of the cores (at least one), unless threads are given."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    one = spec_for(embedded_model, ("main",))
    three = [one, spec_for(embedded_model, ("rlm",)), spec_for(embedded_model, ("memory",))]
    runtime = resolve_runtime("embedded")
    assert [s.threads for s in ServerManager([one], runtime).servers] == [4]
    assert [s.threads for s in ServerManager(three[:2], runtime).servers] == [2, 2]
    assert [s.threads for s in ServerManager(three, runtime).servers] == [1, 1, 1]
    assert [s.threads for s in ServerManager(three, runtime, threads=3).servers] == [3, 3, 3]


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
    """The meter's rate is live: positive while an answer is still being generated (llama.cpp
    counts a request's tokens in /metrics only when it ends; the busy slots' counts in
    /slots fill the gap), each token is counted once, and it is 0 again when idle. (How
    closely it follows the server's timing depends on the machine's load: benchmarks
    measure that.)"""
    async with ServerManager(
        [spec_for(embedded_model)], resolve_runtime("embedded"), stats_interval=0.1
    ) as manager:
        server = manager.server_for("main")
        await until(lambda: server.counters.at > 0)  # the first poll: the baseline
        assert manager.statuses()[0].tokens_per_s == 0.0
        answer = asyncio.create_task(
            manager.client("main").chat(
                ChatRequest(
                    [{"role": "user", "content": "Tell a long story about a dragon."}],
                    max_tokens=64,
                    temperature=0,
                    extra={"ignore_eos": True},
                )
            )
        )
        await until(lambda: manager.statuses()[0].tokens_per_s > 0 or answer.done())
        assert not answer.done(), "the rate showed no tokens until the answer had ended"
        assert manager.statuses()[0].in_flight == 1
        result = await answer
        assert result.usage.completion_tokens == 64
        # The server tells its last token a moment after the answer: wait for it, then
        # for idle polls. Every token is counted once, none twice.
        await until(lambda: server.counters.predicted_total == 64)
        await until(lambda: manager.statuses()[0].tokens_per_s == 0.0)
        assert server.counters.predicted_total == 64


def test_tokens_in_flight_reads_the_busy_slots() -> None:
    slots = [
        {"id": 0, "is_processing": False},
        {"id": 1, "is_processing": True, "next_token": [{"n_decoded": 7}]},
        {"id": 2, "is_processing": True, "next_token": [{"n_decoded": 3}, {"n_decoded": 2}]},
        {"id": 3, "is_processing": True},  # still reading its prompt
    ]
    assert tokens_in_flight(slots) == 12
    assert tokens_in_flight({"error": "not enabled"}) == 0
    assert (
        tokens_in_flight([None, {"is_processing": True, "next_token": [{"n_decoded": "x"}]}]) == 0
    )


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
async def test_a_full_window_prompt_fits_a_slot_of_the_lean_kv_cache(
    embedded_model: Path, no_orphans: None
) -> None:
    """Under the app's KV sizing (q8_0, every slot's own window) a prompt that fills one
    slot's whole window is read, while another slot holds a request too; one token over
    the window is refused with the server's context error. Prompts are token ids, so the
    counts are exact; the window is small so that 2 busy cores read it in seconds."""
    window = 512
    spec = replace(
        spec_for(embedded_model, ctx=window * 2), parallel=2, kv_cache_type=KV_CACHE_TYPE
    )
    async with ServerManager([spec], resolve_runtime("embedded")) as manager:
        url = f"{manager.url('main')}/completion"
        async with httpx.AsyncClient(headers=manager.auth_headers, timeout=300) as http:
            token = await http.post(f"{manager.url('main')}/tokenize", json={"content": " a"})
            a = token.json()["tokens"][0]

            def ask(n: int) -> dict[str, object]:
                return {"prompt": [a] * n, "n_predict": 1, "cache_prompt": False}

            full, other = await asyncio.gather(
                http.post(url, json=ask(window - 1)), http.post(url, json=ask(window // 4))
            )
            assert full.status_code == 200, full.text
            assert full.json()["tokens_evaluated"] == window - 1
            assert other.status_code == 200, other.text
            over = await http.post(url, json=ask(window + 1))
            assert over.status_code == 400
            assert "context" in over.text


@pytest.mark.model
@pytest.mark.timeout(600)  # four prompts on one thread of a busy machine
async def test_a_pooled_servers_client_admits_requests_into_its_pool(
    embedded_model: Path, no_orphans: None
) -> None:
    """Four slots sharing a unified pool of two 256-token windows: the client the manager
    hands out reserves each request's worst case there, so four concurrent requests that
    together overflow the pool all succeed (without it, llama.cpp fails every one of them:
    tests/engine/llm/test_kv_pool_server.py)."""
    spec = replace(
        spec_for(embedded_model, ctx=512),
        parallel=4,
        kv_cache_type=KV_CACHE_TYPE,
        kv_unified=True,
        slot_context=256,
    )
    async with ServerManager([spec], resolve_runtime("embedded"), threads=1) as manager:
        client = manager.client("main")
        pool = client.kv_pool
        assert pool is not None and (pool.capacity, pool.window) == (512, 256)
        results = await asyncio.gather(*(client.chat(pooled_ask(seed)) for seed in range(4)))
        assert [r.usage.completion_tokens for r in results] == [8] * 4
        assert sum(r.usage.prompt_tokens + 8 for r in results) > 512
        assert pool.in_use == 0


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


@pytest.mark.model
async def test_servers_want_the_managers_key_and_allow_no_other_origin(
    embedded_model: Path, no_orphans: None
) -> None:
    """A web page (or any local program) that finds the port cannot use the model: a
    request without nanobot's key is refused, a browser is allowed no other origin, and
    the key is nowhere in the server's argv or log; nanobot's own client is served."""
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    async with ServerManager([spec_for(embedded_model)], resolve_runtime("embedded")) as manager:
        url = manager.url("main")
        async with httpx.AsyncClient() as http:
            for headers in ({}, {"Authorization": "Bearer guessed"}):
                refused = await http.post(f"{url}/v1/chat/completions", json=chat, headers=headers)
                assert refused.status_code == 401
                assert (await http.get(f"{url}/metrics", headers=headers)).status_code == 401
            evil = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
            preflight = await http.options(f"{url}/v1/chat/completions", headers=evil)
            assert preflight.headers.get("access-control-allow-origin") in (None, "", url)
            assert preflight.headers.get("access-control-allow-credentials") != "true"
            assert (await http.get(f"{url}/health")).status_code == 200  # open, for probes
            served = await http.post(
                f"{url}/v1/chat/completions", json=chat, headers=manager.auth_headers
            )
            assert served.status_code == 200
        answer = await manager.client("main").chat(
            ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=4)
        )
        assert answer.usage.completion_tokens > 0
        key = manager.auth_headers["Authorization"].removeprefix("Bearer ")
        server = manager.server_for("main")
        assert server.pid is not None
        assert key not in " ".join(psutil.Process(server.pid).cmdline())
        assert key not in server.log_path.read_text()
        # The manager's own /metrics polls carry the key too.
        await until(lambda: server.counters.at > 0)


def killed(pid: int) -> None:
    """SIGKILL `pid` and wait, without yielding to the event loop (so the supervisor cannot
    act meanwhile) and without reaping it (asyncio does), until it is a zombie: its
    sockets are closed."""
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, 30), "the killed server did not exit"


@pytest.mark.model
async def test_restarts_are_counted_in_a_window_and_a_down_server_can_be_restarted(
    embedded_model: Path, no_orphans: None
) -> None:
    """The supervisor gives up on a server that crashes `max_restarts` times within the
    window, not after `max_restarts` crashes over the app's life; a server it gave up on
    is down, says so, and `restart` brings it back."""
    events: list[ServerEvent] = []
    manager = ServerManager(
        [spec_for(embedded_model)],
        resolve_runtime("embedded"),
        on_event=events.append,
        max_restarts=1,
        restart_window=3600.0,
    )
    async with manager:
        server = manager.server_for("main")
        client = manager.client("main")
        pid = server.pid
        assert pid is not None
        killed(pid)  # the first crash in the window: restarted
        await until(lambda: server.pid not in (None, pid) and server.state == "ready")
        # An hour goes by (the record of that restart is aged: no test waits an hour).
        server.recent_restarts[0] -= 3601.0
        pid = server.pid
        assert pid is not None
        killed(pid)  # the second crash over the server's life, the first in this hour
        await until(lambda: server.pid not in (None, pid) and server.state == "ready")
        assert server.restarts == 2
        pid = server.pid
        assert pid is not None
        killed(pid)  # the second within the hour: down
        await until(lambda: server.state == "failed")
        assert server.message.startswith("down: exited with code -9 after 1 restarts in 1h00m")
        assert events[-1].status.state is ServerState.FAILED
        # Asked to, the manager starts it again; the client held all along is served.
        assert await manager.restart() == ["main"]
        assert server.state is ServerState.READY and server.pid not in (None, pid)
        assert await manager.restart() == []  # nothing is down now
        answer = await client.chat(ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=4))
        assert answer.usage.completion_tokens > 0


def take(sock: socket.socket, port: int) -> None:
    """Listen on `port`, once the killed server's last thread has let it go (its process
    shows as a zombie a moment before). No yield to the event loop meanwhile."""
    deadline = time.monotonic() + 30
    while True:
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            assert time.monotonic() < deadline, f"port {port} still taken"
            time.sleep(0.01)
    sock.listen()


@pytest.mark.model
async def test_a_client_follows_its_server_to_a_fresh_port(
    embedded_model: Path, no_orphans: None
) -> None:
    """A crashed server whose port was taken meanwhile comes back on a fresh one; the
    client handed out before (which agents and samplers hold) goes there too."""
    async with ServerManager([spec_for(embedded_model)], resolve_runtime("embedded")) as manager:
        server = manager.server_for("main")
        client = manager.client("main")
        old_port, pid = server.port, server.pid
        assert pid is not None
        killed(pid)
        with socket.socket() as blocker:  # another program takes the port meanwhile
            blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            take(blocker, old_port)
            await until(lambda: server.state == "ready" and server.port != old_port)
        assert manager.client("main") is client
        assert client.base_url == server.base_url == manager.url("main")
        answer = await client.chat(ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=4))
        assert answer.usage.completion_tokens > 0


async def test_the_rate_counts_tokens_while_they_flow_each_once() -> None:
    """The sampler against a FAKE llama.cpp (httpx.MockTransport serving /metrics and
    /slots as llama.cpp does: a request's tokens reach /metrics only when it ends). The
    rate is positive while tokens flow, a request that ends between the two reads counts
    neither twice nor as a drop, and the total is every token once."""
    script = [  # (tokens_predicted_total, n_decoded of the busy slot or None)
        (0, 0),  # the baseline: a request has just begun
        (0, 10),  # ten tokens, none finished: old meters read 0 here
        (0, None),  # it ended between the reads: /metrics before, /slots after
        (25, None),  # its 25 tokens in /metrics
        (25, None),  # idle
    ]
    at = [0]  # the step of the script the fake server answers

    def fake_server(request: httpx.Request) -> httpx.Response:
        finished, decoded = script[at[0]]
        if request.url.path == "/metrics":
            lines = f"llamacpp:tokens_predicted_total {finished}\nllamacpp:requests_processing 1"
            return httpx.Response(200, text=lines)
        busy = {"id": 0, "is_processing": True, "next_token": [{"n_decoded": decoded}]}
        return httpx.Response(200, json=[busy] if decoded is not None else [{"id": 0}])

    spec = ServerSpec(Path("fake.gguf"), "fake", "FAKE", ("main",), 2048, 1, 0)
    manager = ServerManager([spec], Runtime("embedded", ("fake",), "fake"))
    manager._http = httpx.AsyncClient(transport=httpx.MockTransport(fake_server))
    server = manager.server_for("main")
    server.state = ServerState.READY
    rates = []
    for at[0] in range(len(script)):
        await manager._sample_one(server)
        rates.append(server.tokens_per_s)
    await manager._http.aclose()
    assert rates[0] == 0.0 and rates[1] > 0 and rates[3] > 0 and rates[4] == 0.0
    assert rates[2] == rates[1]  # the poll that went back was skipped
    assert server.counters.predicted_total == 25
