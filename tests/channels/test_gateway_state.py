"""What the gateway writes to state.json for the app's Channels screen: a failed channel's
error and when it is started again, the error kept once it runs, each channel's messages
in and out, a send given up on. The channels are in-process loopback channels whose
failures are asked for (fail_runs, fail_sends)."""

from __future__ import annotations

from typing import Any

from nanobot_tui.channels.files import read_json
from nanobot_tui.channels.gateway import state_path
from nanobot_tui.channels.loopback import LoopbackChannel
from tests.channels.gateway_helpers import STRANGER, reply, running_gateway
from tests.conftest import until


def saved(name: str) -> dict[str, Any]:
    channels: dict[str, Any] = read_json(state_path()).get("channels") or {}
    return channels.get(name) or {}


async def test_a_restart_keeps_the_last_error_and_the_file_says_when_it_comes() -> None:
    flaky = LoopbackChannel("flaky", fail_runs=1)
    async with running_gateway(flaky, restart_backoff_s=1.0) as gateway:
        await until(lambda: saved("flaky").get("state") == "failed")
        failed = saved("flaky")
        assert (
            failed["last_error"] == failed["reason"] == "flaky: failed at start, as asked (0 more)"
        )
        assert failed["restart_at"] > failed["since"]  # a second's backoff
        await until(lambda: saved("flaky").get("state") == "running")
        running = saved("flaky")
        assert running["reason"] is None and running["restart_at"] is None
        assert running["last_error"] == failed["last_error"] and running["restarts"] == 1
        assert gateway.states["flaky"].last_error == failed["last_error"]


async def test_messages_in_and_out_and_a_send_given_up_on() -> None:
    steady = LoopbackChannel("steady", fail_sends=2)
    async with running_gateway(steady, send_retries=1, send_backoff_s=0.01) as gateway:
        steady.say(STRANGER, "/status")  # its answer fails twice: given up
        await until(lambda: saved("steady").get("send_failures") == 1)
        entry = saved("steady")
        assert entry["messages_in"] == 1 and entry["messages_out"] == 0
        assert entry["last_send_error"] == "steady: send failed, as asked"
        assert entry["last_in"] is not None and entry["last_out"] is None
        steady.say(STRANGER, "/status")
        assert "Pairing code" in (await reply(steady)).text
        await until(lambda: saved("steady").get("messages_out") == 1)
        entry = saved("steady")
        assert entry["messages_in"] == 2 and entry["last_out"] >= entry["last_in"]
        assert read_json(state_path())["bus"] == gateway.bus.counters.to_dict()
