"""Milestones of real simulated durable runs reach the chats that watch them, through the
gateway's bus to in-process loopback channels (one named "email", so that its messages
are shaped as emails: a thread per run, the exported tree attached when it finishes);
and `nanobot run --notify` subscribes, or says in one line what is wrong."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import signal
import time
from pathlib import Path

import pytest

from nanobot_tui.channels.base import GatewayError
from nanobot_tui.channels.loopback import LoopbackChannel
from nanobot_tui.channels.milestones import Reading, next_milestones
from nanobot_tui.channels.subscriptions import Subscriptions, Target, parse_notify
from nanobot_tui.cli.main import main
from nanobot_tui.engine.runs.control import pause_run, run_status, start_detached
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets
from nanobot_tui.engine.runs.store import list_runs
from nanobot_tui.engine.runs.store.places import all_run_ids
from tests.channels.gateway_helpers import hanoi_spec, reply, running_gateway
from tests.engine.runs.runner_hold import held_when, step_until, wait_pending

PERCENT = re.compile(r"\((\d+)%\)")


async def test_a_watched_runs_milestones_arrive_from_start_to_finish() -> None:
    rid = await asyncio.to_thread(start_detached, hanoi_spec(16))
    chat = LoopbackChannel("loopback")
    mail = LoopbackChannel("email")
    subscriptions = Subscriptions()
    subscriptions.subscribe(rid, Target("loopback", "c1"))
    subscriptions.subscribe(rid, Target("email", "me@example.org"))
    async with running_gateway(chat, mail):
        # Held at a quarter of its steps: the gateway sees it running, whatever the speed.
        with held_when(rid, lambda st: st.steps_done > 0) as st:
            runner = st.pid
            assert runner is not None
            await asyncio.to_thread(
                step_until, runner, rid, lambda s: 4 * s.steps_done >= s.steps_total
            )
            first = await reply(chat)
            assert first.text.startswith(f"run {rid}: started: hanoi-16 with simulated p=0.99")
            texts = [first.text]
            while _share(texts[-1]) < 20:  # the 20% mark is passed: it comes while held
                texts.append((await reply(chat)).text)
        while not (last := await reply(chat)).text.startswith(f"run {rid}: completed"):
            texts.append(last.text)
        texts.append(last.text)
        emails = [await reply(mail) for _ in texts]
    shares = [int(m.group(1)) for t in texts[1:-1] if (m := PERCENT.search(t))]
    bands = [share // 10 for share in shares]  # milestoneEveryPercent is 10
    assert bands == sorted(set(bands)) and bands[0] >= 1  # each 10% mark once, in order
    st = run_status(rid)
    assert st.status == "completed"
    assert texts[-1].startswith(f"run {rid}: completed (solved): 65,535/65,535 steps (100%)")
    assert "; summary: " in texts[-1]
    assert [e.text for e in emails] == texts
    assert {e.thread for e in emails} == {f"run:{rid}"} and {e.chat for e in emails} == {
        "me@example.org"
    }
    assert emails[0].subject == f"nanobot run {rid}: started"
    assert emails[-1].subject == f"nanobot run {rid}: finished"
    assert all(not e.attachments for e in emails[:-1])
    (tree,) = emails[-1].attachments
    exported = json.loads(Path(tree).read_text())
    assert exported["run"] == rid and exported["status"]["status"] == "completed"
    assert exported["nodes"][0]["kind"] == "root"
    assert Subscriptions().watched()[rid]["sent"]["finished"] is True


async def test_a_paused_run_says_so_once_and_a_new_gateway_repeats_nothing() -> None:
    rid = await asyncio.to_thread(start_detached, hanoi_spec(19))
    chat = LoopbackChannel("loopback")
    Subscriptions().subscribe(rid, Target("loopback", "c1"))
    async with running_gateway(chat):
        with held_when(rid, lambda st: st.steps_done > 0) as st:
            assert (await reply(chat)).text.startswith(f"run {rid}: started")
            pausing = asyncio.create_task(asyncio.to_thread(pause_run, rid))
            assert st.pid is not None
            await asyncio.to_thread(wait_pending, st.pid, signal.SIGUSR1)
        await pausing
        while not (text := (await reply(chat)).text).startswith(f"run {rid}: paused ("):
            assert PERCENT.search(text), text  # progress on the way, nothing else
    before = len(chat.sent)
    async with running_gateway(chat) as gateway:  # a restarted gateway
        await gateway.milestones.poll_once()
        await gateway.milestones.poll_once()
    assert len(chat.sent) == before


def test_notify_targets_parse_or_say_what_is_wrong() -> None:
    assert parse_notify("telegram:123456, email:Me@Example.org,telegram:123456") == (
        Target("telegram", "123456"),
        Target("email", "me@example.org"),
    )
    assert parse_notify("telegram:-100200300")[0].chat == "-100200300"
    for text, problem in (
        ("telegram", "'telegram' is not CHANNEL:ADDRESS (telegram:CHAT_ID or email:ADDR)"),
        ("sms:123", "unknown channel 'sms' in 'sms:123' (one of telegram, email)"),
        ("email:nobody", "'nobody' is not an email address"),
        ("telegram:12ab", "'12ab' is not a Telegram chat (a number such as 123456789, or "
                          "@channelname)"),
        ("telegram:1,,email:a@b.c", "an empty target in 'telegram:1,,email:a@b.c'"),
    ):  # fmt: skip
        with pytest.raises(GatewayError) as caught:
            parse_notify(text)
        assert str(caught.value) == f"--notify: {problem}"
        assert caught.value.exit_code == 2


def test_run_notify_subscribes_the_run_and_a_bad_one_starts_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["run", "hanoi", "--disks", "4", "--sampler", "simulated:0.99", "--k", "2"]
    assert main([*argv, "--notify", "email:nobody"]) == 2
    assert capsys.readouterr().err == "nanobot: --notify: 'nobody' is not an email address\n"
    assert all_run_ids() == []
    assert main([*argv, "--notify", "telegram:42,email:me@example.org"]) == 0
    out = capsys.readouterr().out
    assert "milestones go to telegram:42, email:me@example.org" in out
    (run,) = list_runs()
    assert run["status"] == "completed"
    assert Subscriptions().targets(run["id"]) == [
        Target("telegram", "42"),
        Target("email", "me@example.org"),
    ]


def _share(text: str) -> int:
    found = PERCENT.search(text)
    return int(found.group(1)) if found else 0


async def test_an_anomaly_and_a_long_quiet_run_are_said_once_each() -> None:
    rid = await start_run(hanoi_spec(6))
    await execute(rid, budgets=Budgets(steps=10))
    st = run_status(rid)
    # The same run read as running (its runner held elsewhere), with the learning loops'
    # anomaly line in its meta: what next_milestones makes of such a reading.
    running = Reading(
        dataclasses.replace(st, status="running"), "3.2x the steps of its history", None
    )
    hour, t0 = 3600.0, time.time()
    said, sent = next_milestones(running, {}, t0, every_percent=10, every_hours=1.0)
    assert [m.kind for m in said] == ["started", "anomaly", "progress"]
    assert said[1].text == f"run {rid}: anomaly: 3.2x the steps of its history"
    said, sent = next_milestones(running, sent, t0 + 0.5 * hour, 10, 1.0)
    assert said == []
    said, sent = next_milestones(running, sent, t0 + hour, 10, 1.0)
    assert [m.kind for m in said] == ["still-running"]
    assert said[0].text == f"run {rid}: still running: 10/63 steps (15%)"
    said, sent = next_milestones(
        Reading(st, "3.2x the steps of its history", None), sent, t0 + hour, 10, 1.0
    )
    assert [m.text for m in said] == [f"run {rid}: stopped (budget): 10/63 steps (15%)"]
    said, sent = next_milestones(running, sent, t0 + hour, 10, 1.0)
    assert [m.kind for m in said] == ["resumed"]


async def test_a_removed_run_is_no_longer_watched() -> None:
    from nanobot_tui.engine.runs.prune import remove_run

    rid = await start_run(hanoi_spec(6))
    await execute(rid, budgets=Budgets(steps=10))
    Subscriptions().subscribe(rid, Target("loopback", "c1"))
    chat = LoopbackChannel("loopback")
    async with running_gateway(chat) as gateway:
        assert (await reply(chat)).text == f"run {rid}: stopped (budget): 10/63 steps (15%)"
        remove_run(rid)
        assert await gateway.milestones.poll_once() == []
    assert rid not in Subscriptions().watched()
