"""Commands from a chat: an allowed sender's are carried out, a stranger gets a pairing code
and nothing else until the owner pairs it (`nanobot gateway pair CODE`). The chat is the
in-process loopback channel, named "telegram" so that the config's telegram allow-list
applies; the runs are real simulated durable runs with detached runners."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import pytest

from nanobot_tui.channels.base import GatewayError, Inbound
from nanobot_tui.channels.commands import Commands
from nanobot_tui.channels.loopback import LoopbackChannel
from nanobot_tui.channels.pairing import Pairing
from nanobot_tui.channels.subscriptions import Subscriptions, Target
from nanobot_tui.cli.main import main
from nanobot_tui.engine.runs.control import run_status, start_detached
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets
from tests.channels.gateway_helpers import (
    OWNER,
    STRANGER,
    WAIT_S,
    hanoi_spec,
    reply,
    running_gateway,
    telegram_config,
)
from tests.engine.runs.runner_hold import hold, let_go, wait_pending

CODE = re.compile(r"Pairing code: ([A-Z0-9]+)")


async def stopped_run(disks: int, steps: int) -> str:
    rid = await start_run(hanoi_spec(disks))
    await execute(rid, budgets=Budgets(steps=steps))
    return rid


def said(sender: str, text: str, channel: str = "telegram") -> Inbound:
    return Inbound(channel, sender, sender, text, time.time())


async def test_a_stranger_gets_a_pairing_code_and_nothing_is_done_until_paired(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rid = await stopped_run(6, 10)
    chat = LoopbackChannel("telegram")
    async with running_gateway(chat, config=telegram_config()):
        codes = []
        for text in (f"/cancel {rid}", "/status", "/runs", "/help"):
            chat.say(STRANGER, text)
            answer = await reply(chat)
            assert "nothing was done" in answer.text and answer.chat == STRANGER
            codes += CODE.findall(answer.text)
        assert len(codes) == 4 and len(set(codes)) == 1  # one code, while it is pending
        code = codes[0]
        assert run_status(rid).status == "stopped"  # the stranger's /cancel did nothing
        chat.say(STRANGER, "/status")
        assert CODE.findall((await reply(chat)).text) == [code]

        assert main(["gateway", "pair", code.lower()]) == 0  # typed in lower case
        assert capsys.readouterr().out == (
            f"paired telegram sender {STRANGER}: its commands are now answered\n"
        )
        chat.say(STRANGER, f"/cancel {rid}")
        assert (await reply(chat)).text == f"run {rid}: cancelled (no runner was running)"
    assert run_status(rid).status == "cancelled"
    # Paired on telegram only: the same id on another channel is still a stranger.
    other = await Commands(telegram_config()).handle(said(STRANGER, "/status", "email"))
    assert "Pairing code" in other.text


def test_a_code_that_is_unknown_or_expired_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gateway", "pair", "NOPE2345"]) == 2
    assert capsys.readouterr().err == (
        "nanobot: pair: 'NOPE2345' is not a pending pairing code (ask the sender to write again)\n"
    )
    code = Pairing(ttl_s=0.0).code_for("telegram", STRANGER, STRANGER)
    with pytest.raises(GatewayError, match=f"^pair: '{code}' has expired"):
        Pairing(ttl_s=0.0).confirm(code)
    assert not Pairing().is_paired("telegram", STRANGER)


async def test_pause_and_cancel_a_running_detached_run_from_an_allowed_chat() -> None:
    rid = await asyncio.to_thread(start_detached, hanoi_spec(19))
    chat = LoopbackChannel("telegram")
    async with running_gateway(chat, config=telegram_config()):
        runner = await asyncio.to_thread(_hold_once_running, rid)
        chat.say(OWNER, f"/pause {rid[:-2]}")  # a unique prefix will do
        await asyncio.to_thread(wait_pending, runner, signal.SIGUSR1)
        let_go(runner)
        answer = (await reply(chat)).text
        assert answer.startswith(f"run {rid}: paused (") and answer.endswith(")")
        st = run_status(rid)
        assert st.status == "paused" and st.pid is None and 0 < st.steps_done < st.steps_total

        chat.say(OWNER, f"/resume {rid}")
        assert (await reply(chat)).text.startswith(f"run {rid}: resumed: detached runner pid ")
        runner = await asyncio.to_thread(_hold_once_running, rid)
        chat.say(OWNER, f"/cancel {rid}")
        await asyncio.to_thread(wait_pending, runner, signal.SIGTERM)
        let_go(runner)
        assert (await reply(chat)).text.startswith(f"run {rid}: cancelled (")
        chat.say(OWNER, f"/pause {rid}")
        assert (await reply(chat)).text == f"/pause: run {rid} is cancelled; nothing to pause"
    assert run_status(rid).status == "cancelled"


def _hold_once_running(rid: str) -> int:
    """Hold the run's runner still once it has done a step; return its pid."""
    deadline = time.monotonic() + WAIT_S
    while True:
        st = run_status(rid)
        if st.pid is not None and st.status == "running" and st.steps_done > 0:
            hold(st.pid)
            return st.pid
        assert time.monotonic() < deadline, f"run {rid} never ran: {st}"
        time.sleep(0.005)


async def test_status_runs_watch_and_the_rest_for_an_allowed_sender() -> None:
    rid = await stopped_run(6, 10)
    commands = Commands(telegram_config())

    async def ask(text: str) -> str:
        return (await commands.handle(said(OWNER, text))).text

    assert await ask(f"/status {rid[:-1]}") == (
        f"run {rid}: stopped (budget); 10/63 steps (16%), 0 errors; hanoi-6 with simulated p=0.99"
    )
    assert await ask("/status") == "no run is running (1 runs in all; /runs lists them)"
    assert (await ask("/runs")) == f"runs:\n{rid} stopped 10/63 16%"
    assert await ask(f"/watch {rid[:-1]}") == f"watching run {rid}"
    assert await ask(f"/watch {rid}") == f"already watching run {rid}"
    assert Subscriptions().targets(rid) == [Target("telegram", OWNER)]
    assert await ask(f"/unwatch {rid}") == f"no longer watching run {rid}"
    assert Subscriptions().targets(rid) == []
    assert (await ask("/watch nosuchrun")).startswith("/watch: ")
    assert (await ask("/frobnicate")).startswith("unknown command '/frobnicate'; commands: ")
    assert (await ask("/pause")).startswith("/pause needs an argument")
    assert (await ask("status@nanobot_bot")).startswith("no run is running")  # email style
    assert (await ask("/start nightly")) == (
        "/start: no template 'nightly' (templates: none in the config)"
    )


async def test_start_runs_a_named_template_as_a_detached_process(tmp_path: Path) -> None:
    code = tmp_path / "repo"
    code.mkdir()
    (code / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    config = telegram_config(
        templates={
            "docs": {
                "task": "add docstrings",
                "on": str(code),
                "recipe": "docstrings",
                "sampler": "simulated:0.99",
            },
        }
    )
    answer = (await Commands(config).handle(said(OWNER, "/start docs"))).text
    found = re.match(r"started docs: run (\S+) \(.*\) in [\d.]+ s; /watch \1 to follow it$", answer)
    assert found, answer
    rid = found.group(1)
    deadline = time.monotonic() + WAIT_S
    while not run_status(rid).finished:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    st = run_status(rid)
    assert st.status == "completed" and st.steps_total == 1 and st.domain == "code"
