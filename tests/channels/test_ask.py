"""`/ask` from a chat: the agent on the real embedded model (SmolLM2-135M) answers in a
session of that chat's own, kept across questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobot_tui import paths
from nanobot_tui.channels.ask import AgentAsker, session_name
from nanobot_tui.channels.loopback import LoopbackChannel
from nanobot_tui.config import AgentConfig, Config, LocalConfig, SlotConfig
from tests.channels.gateway_helpers import OWNER, reply, running_gateway, telegram_config


def test_a_chats_session_name_is_a_valid_one() -> None:
    assert session_name("telegram", "-100123") == "gateway-telegram-100123"
    assert session_name("email", "Me@Example.org") == "gateway-email-Me_Example.org"
    assert session_name("email", "/../..") == "gateway-email-chat"
    assert len(session_name("email", "a" * 200)) == 64


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_ask_answers_in_the_chats_own_session(tmp_path: Path) -> None:
    slot = SlotConfig(model="smollm2-135m-instruct", context_size=4096, temperature=0.0)
    config = Config(
        local=LocalConfig(main=slot), agent=AgentConfig(workspace=tmp_path, max_rounds=2)
    )
    chat = LoopbackChannel("telegram")
    asker = AgentAsker(config, max_tokens=48)
    async with running_gateway(chat, config=telegram_config(), asker=asker):
        chat.say(OWNER, "/ask Say hello in one word.")
        first = (await reply(chat)).text
        chat.say(OWNER, "/ask And now say goodbye.")
        second = (await reply(chat)).text
    for answer in (first, second):
        assert answer and not answer.startswith("/ask:"), answer  # an answer, not an error
    session = paths.sessions_dir() / f"{session_name('telegram', OWNER)}.jsonl"
    text = session.read_text()
    assert "Say hello in one word." in text and "And now say goodbye." in text
    assert not asker.serving  # the gateway stopped its model servers on the way out
