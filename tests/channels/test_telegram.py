"""The Telegram channel against a local EMULATOR of the Bot API (the npm package
telegram-test-api, patched by tests/channels/telegram_emulator/serve.js): not Telegram
itself, but the same HTTP API that python-telegram-bot speaks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nanobot_tui.channels.base import ChannelError, Inbound, Outbound
from nanobot_tui.channels.telegram import MAX_MESSAGE_CHARS, TelegramChannel, split_text
from nanobot_tui.channels.voice import VoiceNote
from nanobot_tui.config import TelegramConfig
from tests.channels.conftest import TelegramEmulator
from tests.conftest import free_port, until


def channel_for(emulator: TelegramEmulator) -> TelegramChannel:
    config = TelegramConfig(
        enabled=True, token=emulator.token, base_url=emulator.url, poll_seconds=0.2
    )
    return TelegramChannel(config)


async def test_messages_from_the_emulator_arrive_as_inbound(
    telegram_emulator: TelegramEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Commands and a plain message sent by the EMULATOR's users reach `deliver` once
    each, in order; a voice note whose file the EMULATOR does not have arrives as a
    VoiceNote saying so; the token shows in no log record, at any level."""
    caplog.set_level(logging.DEBUG)
    channel = channel_for(telegram_emulator)
    received: list[Inbound] = []

    async def deliver(message: Inbound) -> None:
        received.append(message)

    task = asyncio.create_task(channel.run(deliver))
    try:
        telegram_emulator.user_says("/watch run-7", user_id=1001, chat_id=2002)
        telegram_emulator.user_says("how far along is it?", user_id=1001, chat_id=2002)
        await until(lambda: len(received) >= 2)
        telegram_emulator.user_sends_voice(user_id=1001, chat_id=2002)
        telegram_emulator.user_says("/status@TestNameBot run-7", user_id=1002, chat_id=2002)
        await until(lambda: len(received) >= 4)
        await asyncio.sleep(0.5)  # more polls: nothing is delivered twice
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await channel.aclose()
    assert [(m.channel, m.sender, m.chat, m.text) for m in received] == [
        ("telegram", "1001", "2002", "/watch run-7"),
        ("telegram", "1001", "2002", "how far along is it?"),
        ("telegram", "1001", "2002", ""),  # the voice note: nothing heard, and why
        ("telegram", "1002", "2002", "/status run-7"),  # without the bot's name
    ]
    assert isinstance(received[2], VoiceNote) and "downloading a voice note" in str(
        received[2].trouble
    )
    assert "HTTP Request" in caplog.text  # httpx did log the requests...
    assert telegram_emulator.token not in caplog.text  # ...with the token blanked out


async def test_send_arrives_at_the_emulator_chat_split_at_the_limit(
    telegram_emulator: TelegramEmulator,
) -> None:
    """A short message arrives whole; one over 4096 characters arrives in pieces that
    join back to it."""
    channel = channel_for(telegram_emulator)
    long_text = "\n".join(f"line {i}: " + "x" * 90 for i in range(100))  # ~10,000 chars
    try:
        await channel.send(Outbound(channel="telegram", chat="2002", text="run-7 started"))
        await channel.send(Outbound(channel="telegram", chat="2002", text=long_text))
    finally:
        await channel.aclose()
    messages = telegram_emulator.bot_messages(chat_id=2002)
    assert messages[0] == "run-7 started"
    pieces = messages[1:]
    assert len(pieces) == 3
    assert all(len(piece) <= MAX_MESSAGE_CHARS for piece in pieces)
    assert "\n".join(pieces) == long_text
    assert telegram_emulator.bot_messages(chat_id=3003) == []  # nothing to other chats


async def test_check_names_the_bot_or_why_not(telegram_emulator: TelegramEmulator) -> None:
    assert await channel_for(telegram_emulator).check() == (
        f"telegram: reachable at {telegram_emulator.url} as @TestNameBot"
    )
    nobody = TelegramConfig(token="1:x", base_url=f"http://127.0.0.1:{free_port()}")
    line = await TelegramChannel(nobody).check()
    assert line.startswith(f"telegram: getMe at {nobody.base_url} failed:")
    assert "1:x" not in line and "\n" not in line
    assert "no bot token" in await TelegramChannel(TelegramConfig()).check()


async def test_token_from_the_environment_wins(
    telegram_emulator: TelegramEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NANOBOT_TELEGRAM_TOKEN is the token the bot uses: the message lands in its queue."""
    monkeypatch.setenv("NANOBOT_TELEGRAM_TOKEN", telegram_emulator.token)
    config = TelegramConfig(token="999:from-the-file", base_url=telegram_emulator.url)
    channel = TelegramChannel(config)
    try:
        await channel.send(Outbound(channel="telegram", chat="5", text="hello"))
    finally:
        await channel.aclose()
    assert telegram_emulator.bot_messages(chat_id=5) == ["hello"]


async def test_an_unreachable_server_is_a_channel_error() -> None:
    config = TelegramConfig(token="1:secret", base_url=f"http://127.0.0.1:{free_port()}")
    channel = TelegramChannel(config)
    with pytest.raises(ChannelError) as caught:
        await channel.run(lambda message: asyncio.sleep(0))
    assert "1:secret" not in str(caught.value)
    with pytest.raises(ChannelError):
        await channel.send(Outbound(channel="telegram", chat="5", text="hello"))


def test_split_text_keeps_lines_whole_and_cuts_a_long_line() -> None:
    assert split_text("short") == ["short"]
    assert split_text("") == [""]
    assert split_text("aaaa\nbbbb", limit=6) == ["aaaa", "bbbb"]
    assert split_text("x" * 13, limit=5) == ["xxxxx", "xxxxx", "xxx"]
