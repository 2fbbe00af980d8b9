"""Voice notes through the Telegram Bot API EMULATOR (telegram-test-api, with the voice
additions of tests/channels/telegram_emulator/voice.js: a file store, getFile, file
download and sendVoice): not Telegram itself. The notes are spoken by hibari-tts and heard
by pocketsphinx, through a real gateway."""

from __future__ import annotations

import asyncio
import base64
import io
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import soundfile

from nanobot_tui.channels.gateway import Gateway
from nanobot_tui.channels.subscriptions import Subscriptions, Target
from nanobot_tui.channels.telegram import TelegramChannel
from nanobot_tui.channels.voice import INSTALL_HINT, VoiceReplies, speak
from nanobot_tui.config import GatewayConfig
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets
from tests.channels.conftest import TelegramEmulator
from tests.channels.gateway_helpers import OWNER, STRANGER, WAIT_S, hanoi_spec, running_gateway

OWNER_CHAT, STRANGER_CHAT = 5001, 5002


def send_voice_note(emulator: TelegramEmulator, audio: bytes, user_id: int, chat_id: int) -> None:
    """A user sends `audio` as a voice note: stored in the EMULATOR's file store, then sent."""
    stored = httpx.post(
        emulator.url + "/storeFile", json={"data": base64.b64encode(audio).decode()}, timeout=10
    )
    assert stored.status_code == 200, stored.text
    voice = stored.json()["result"] | {"duration": 2, "mime_type": "audio/ogg"}
    message = {
        "botToken": emulator.token,
        "from": {"id": user_id, "is_bot": False, "first_name": "Ann"},
        "chat": {"id": chat_id, "type": "private", "first_name": "Ann"},
        "date": int(time.time()),
        "voice": voice,
    }
    answer = httpx.post(emulator.url + "/sendMessage", json=message, timeout=10)
    assert answer.status_code == 200, answer.text


class BotChat:
    """What the bot sent to one chat of the EMULATOR: texts, and voice notes' bytes."""

    def __init__(self, emulator: TelegramEmulator, chat_id: int) -> None:
        self.emulator, self.chat_id = emulator, chat_id
        self.texts: list[str] = []
        self.voices: list[bytes] = []

    def _read(self) -> None:
        answer = httpx.post(
            self.emulator.url + "/getUpdates",
            json={"token": self.emulator.token, "chatId": self.chat_id},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        for update in answer.json()["result"]:
            message: dict[str, Any] = update["message"]
            if "voice" in message:
                self.voices.append(self._download(message["voice"]["file_id"]))
            else:
                self.texts.append(message["text"])

    def _download(self, file_id: str) -> bytes:
        bot = f"{self.emulator.url}/bot{self.emulator.token}"
        info = httpx.post(f"{bot}/getFile", json={"file_id": file_id}, timeout=10).json()
        path = info["result"]["file_path"]
        url = f"{self.emulator.url}/file/bot{self.emulator.token}/{path}"
        return httpx.get(url, timeout=10).content

    async def next_text(self, starting: str = "") -> str:
        """The next text that starts with `starting`; the texts before it are passed over
        (a watched run's milestones come between the answers)."""
        deadline = time.monotonic() + WAIT_S  # only stops a hang
        while True:
            while self.texts:
                text = self.texts.pop(0)
                if text.startswith(starting):
                    return text
            assert time.monotonic() < deadline, f"no message to chat {self.chat_id}"
            await asyncio.to_thread(self._read)
            await asyncio.sleep(0.05)


@asynccontextmanager
async def telegram_gateway(emulator: TelegramEmulator) -> AsyncIterator[Gateway]:
    config = GatewayConfig.model_validate(
        {
            "telegram": {
                "enabled": True,
                "token": emulator.token,
                "baseUrl": emulator.url,
                "pollSeconds": 0.2,
                "allow": [OWNER],
            }
        }
    )
    channel = TelegramChannel(config.telegram)
    try:
        async with running_gateway(channel, config=config) as gateway:  # type: ignore[arg-type]
            yield gateway
    finally:
        await channel.aclose()


async def test_a_voice_note_runs_the_command_for_an_allowed_chat_and_not_a_stranger(
    telegram_emulator: TelegramEmulator,
) -> None:
    """A real stopped simulated run. The owner's "follow the latest job" subscribes the
    chat to it; the stranger's gets a pairing code and subscribes nothing. "start voice
    replies" turns spoken replies on: the answer comes as text and as an Ogg/Opus note."""
    rid = await start_run(hanoi_spec(6))
    await execute(rid, budgets=Budgets(steps=10))
    owner, stranger = (
        BotChat(telegram_emulator, OWNER_CHAT),
        BotChat(telegram_emulator, STRANGER_CHAT),
    )
    async with telegram_gateway(telegram_emulator):
        follow = await asyncio.to_thread(speak, "follow the latest job")
        send_voice_note(telegram_emulator, follow, int(STRANGER), STRANGER_CHAT)
        refused = await stranger.next_text()
        assert "nothing was done" in refused and "Pairing code: " in refused
        send_voice_note(telegram_emulator, follow, int(OWNER), OWNER_CHAT)
        assert await owner.next_text() == (
            f'heard "follow the latest job" (/watch {rid}): watching run {rid}'
        )
        assert Subscriptions().targets(rid) == [Target("telegram", str(OWNER_CHAT))]

        on = await asyncio.to_thread(speak, "start voice replies")
        send_voice_note(telegram_emulator, on, int(OWNER), OWNER_CHAT)
        assert await owner.next_text('heard "start') == (
            'heard "start voice replies" (/voice on): replies here come also as voice notes'
        )
        assert VoiceReplies().wanted("telegram", str(OWNER_CHAT))
        deadline = time.monotonic() + WAIT_S
        while not owner.voices:  # sent right after the text
            assert time.monotonic() < deadline, "no voice note came"
            await asyncio.to_thread(owner._read)
            await asyncio.sleep(0.05)
    info = soundfile.info(io.BytesIO(owner.voices[0]))
    assert (info.format, info.subtype) == ("OGG", "OPUS") and info.duration > 1.0
    assert stranger.voices == []


async def test_without_the_extra_a_voice_note_gets_one_line_on_installing_it(
    telegram_emulator: TelegramEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pocketsphinx made unimportable, as when the `voice` extra is not installed."""
    note = await asyncio.to_thread(speak, "what is the status")
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    owner = BotChat(telegram_emulator, OWNER_CHAT)
    async with telegram_gateway(telegram_emulator):
        send_voice_note(telegram_emulator, note, int(OWNER), OWNER_CHAT)
        assert await owner.next_text() == f"{INSTALL_HINT} (pocketsphinx is not installed)"
    assert "\n" not in INSTALL_HINT
