"""The gateway keeps going when a channel fails: the failed one is restarted with backoff,
the others answer meanwhile, and each channel's state reaches state.json. The channels are
in-process loopback channels whose failures at start are asked for (fail_runs)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from nanobot_tui.channels.base import GatewayError
from nanobot_tui.channels.files import read_json
from nanobot_tui.channels.gateway import (
    Gateway,
    GatewayLock,
    read_state,
    running_pid,
    serve,
    state_path,
)
from nanobot_tui.channels.loopback import LoopbackChannel
from nanobot_tui.cli.main import main
from nanobot_tui.config import GatewayConfig
from tests.channels.gateway_helpers import STRANGER, reply, running_gateway
from tests.conftest import free_port, until


async def test_a_failing_channel_is_restarted_while_another_goes_on() -> None:
    flaky = LoopbackChannel("flaky", fail_runs=3)
    steady = LoopbackChannel("steady")
    seen: list[tuple[str, str, str | None]] = []
    async with running_gateway(
        flaky,
        steady,
        restart_backoff_s=0.05,
        on_state=lambda n, s: seen.append((n, s.state, s.reason)),
    ) as gateway:
        steady.say(STRANGER, "/status")  # answered while flaky is failing
        assert "Pairing code" in (await reply(steady)).text
        await until(lambda: gateway.states["flaky"].state == "running")
        flaky.say(STRANGER, "/status")
        assert "Pairing code" in (await reply(flaky)).text
        assert flaky.runs == 4 and gateway.states["flaky"].restarts == 3
        saved = read_json(state_path())["channels"]
        assert saved["flaky"]["state"] == "running" and saved["flaky"]["restarts"] == 3
        assert saved["steady"]["state"] == "running"
    flaky_states = [(state, reason) for name, state, reason in seen if name == "flaky"]
    failed = ("failed", "flaky: failed at start, as asked")
    assert flaky_states[:2] == [
        ("starting", None),
        ("failed", "flaky: failed at start, as asked (2 more)"),
    ]
    assert [s for s, _ in flaky_states] == [
        "starting", "failed", "starting", "failed", "starting", "failed",
        "starting", "running", "stopped",
    ]  # fmt: skip
    assert failed[0] not in [state for name, state, _ in seen if name == "steady"]
    assert [gateway.restart_delay(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    saved = read_json(state_path())
    assert {n: c["state"] for n, c in saved["channels"].items()} == {
        "flaky": "stopped",
        "steady": "stopped",
    }
    assert saved["bus"]["sent"] == 2


async def test_one_gateway_at_a_time_and_its_state_for_the_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert running_pid() is None
    gateway = Gateway([LoopbackChannel()], GatewayConfig(), poll_s=0.05)
    task = asyncio.create_task(serve(gateway))
    await until(lambda: running_pid() is not None)
    assert running_pid() == os.getpid()
    with pytest.raises(GatewayError, match=r"^a gateway is already running \(pid \d+\)"):
        GatewayLock().acquire()
    await until(lambda: read_state()["channels"]["loopback"]["state"] == "running")
    assert main(["gateway", "status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"gateway: running (pid {running_pid()})\n  loopback: running\n")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert running_pid() is None
    state = read_state()
    assert not state["running"] and state["channels"]["loopback"]["state"] == "stopped"
    assert main(["gateway", "status", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["running"] is False
    assert main(["gateway", "stop"]) == 0
    assert capsys.readouterr().out == "no gateway is running\n"


def test_the_gateway_without_an_enabled_channel_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gateway"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nanobot: gateway: no channel is enabled: set gateway.telegram.enabled")
    assert err.count("\n") == 1


def test_a_detached_gateway_keeps_restarting_an_unreachable_channel_until_stopped(
    nanobot_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "123456:not-a-real-token-kept-secret"
    config = {"gateway": {"telegram": {"enabled": True, "token": token, "pollSeconds": 1,
                                       "baseUrl": f"http://127.0.0.1:{free_port()}"}}}  # fmt: skip
    nanobot_home.mkdir(parents=True, exist_ok=True)
    (nanobot_home / "config.json").write_text(json.dumps(config))
    assert main(["gateway", "--detach", "--json"]) == 0
    started = json.loads(capsys.readouterr().out)
    try:
        assert running_pid() == started["pid"] and os.getsid(started["pid"]) == started["pid"]
        deadline = time.monotonic() + 90
        while (read_state().get("channels") or {}).get("telegram", {}).get("restarts", 0) < 2:
            assert time.monotonic() < deadline, read_state()
            time.sleep(0.05)
        assert main(["gateway", "--detach"]) == 2  # one at a time
        assert capsys.readouterr().err.startswith("nanobot: a gateway is already running (pid ")
    finally:
        assert main(["gateway", "stop"]) == 0
    assert capsys.readouterr().out == f"gateway (pid {started['pid']}) stopped\n"
    assert read_state()["channels"]["telegram"]["state"] == "stopped"
    for path in (nanobot_home / "gateway").iterdir():  # the token is never written down
        assert token not in path.read_text(errors="replace"), path
