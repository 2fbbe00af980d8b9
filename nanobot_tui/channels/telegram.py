"""The Telegram channel: a bot over python-telegram-bot, long polling, no webhook.

Inbound: each text message or command a chat sends becomes an `Inbound` (sender: the
user id, chat: the chat id). Outbound: `send` posts the text to the chat, split into
pieces of at most 4096 characters (the Bot API's limit). The Bot API base URL comes from
the config (a local Bot API server, or an emulator in the tests).

The token is a secret: it is part of every Bot API URL, so the loggers that print URLs
(`httpx` logs each request's at INFO) get a filter that blanks it out, and errors are
redacted the same way before they become a ChannelError.

Voice notes (channels/voice.py, the optional `voice` extra): a voice note is downloaded,
transcribed offline and delivered as a `VoiceNote`, which the commands turn into a command
only when it clearly is one; without the extra, or when the note cannot be fetched or
heard, the VoiceNote says why in one line. A chat that asked for it (`/voice on`) gets
each message also as a voice note (sendVoice). `transcribe` replaces the recognizer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from telegram import Bot, Message
from telegram.error import InvalidToken, RetryAfter, TelegramError, TimedOut
from telegram.request import HTTPXRequest

from nanobot_tui.channels import voice
from nanobot_tui.channels.base import ChannelError, Deliver, Inbound, Outbound
from nanobot_tui.config import TelegramConfig

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4096  # the Bot API refuses longer texts
TOKEN_ENV = "NANOBOT_TELEGRAM_TOKEN"
_LOGGERS_WITH_URLS = ("httpx", "telegram.Bot", "telegram.HTTPXRequest", "telegram.BaseRequest")

# A voice note's bytes (OGG/Opus, as Telegram stores them) -> the text it says.
Transcriber = Callable[[bytes], Awaitable[str]]


class _RedactToken(logging.Filter):
    """Blanks a bot token out of log records (httpx logs each request's URL at INFO)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg = message.replace(self.token, "<token>")
            record.args = ()
        return True


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Pieces of at most `limit` characters, cut at the last newline in each piece when
    there is one, so that lines stay whole where they can."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:].removeprefix("\n")
    if rest or not pieces:
        pieces.append(rest)
    return pieces


class TelegramChannel:
    """A Telegram bot that receives commands by long polling and sends messages."""

    name = "telegram"

    def __init__(self, config: TelegramConfig, *, transcribe: Transcriber | None = None) -> None:
        self.config = config
        # The environment wins over the file, as in GatewayConfig.with_env_secrets.
        self._token = os.environ.get(TOKEN_ENV) or config.token
        self._base_url = config.base_url.rstrip("/")
        self._transcribe = transcribe
        self._voice_replies = voice.VoiceReplies()
        self._bot: Bot | None = None
        self._ready = asyncio.Lock()
        if self._token:
            _install_redaction(self._token)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    def _error(self, doing: str, exc: BaseException) -> ChannelError:
        detail = self._redact(str(exc)) or type(exc).__name__
        return ChannelError(f"telegram: {doing} at {self._base_url} failed: {detail}")

    def _new_bot(self) -> Bot:
        if not self._token:
            raise ChannelError(
                f"telegram: no bot token (set gateway.telegram.token or {TOKEN_ENV})"
            )
        poll = self.config.poll_seconds
        return Bot(
            self._token,
            base_url=f"{self._base_url}/bot",
            base_file_url=f"{self._base_url}/file/bot",
            request=HTTPXRequest(connect_timeout=10.0, read_timeout=30.0),
            # A long poll holds the request open for poll_seconds: read past that.
            get_updates_request=HTTPXRequest(connect_timeout=10.0, read_timeout=poll + 15.0),
        )

    async def _ensure_bot(self) -> Bot:
        """The bot, initialized once (getMe checks the token); shared by run and send."""
        async with self._ready:
            if self._bot is None:
                bot = self._new_bot()
                try:
                    await bot.initialize()
                except InvalidToken as exc:
                    raise self._error("the token was refused", exc) from None
                except TelegramError as exc:
                    raise self._error("connecting", exc) from None
                self._bot = bot
            return self._bot

    async def aclose(self) -> None:
        """Close the bot's HTTP connections; a later call opens new ones."""
        async with self._ready:
            if self._bot is not None:
                bot, self._bot = self._bot, None
                await bot.shutdown()

    async def run(self, deliver: Deliver) -> None:
        bot = await self._ensure_bot()
        offset: int | None = None
        poll = timedelta(seconds=self.config.poll_seconds)
        while True:
            asked = time.monotonic()
            try:
                updates = await bot.get_updates(
                    offset=offset, timeout=poll, allowed_updates=["message"]
                )
            except TimedOut:
                continue  # a long poll that ended without news
            except RetryAfter as exc:
                retry = exc.retry_after
                await asyncio.sleep(
                    retry.total_seconds() if isinstance(retry, timedelta) else retry
                )
                continue
            except TelegramError as exc:
                raise self._error("polling for updates", exc) from None
            for update in updates:
                # Acknowledged before it is handled: a command is never delivered twice.
                offset = update.update_id + 1
                if update.message is not None:
                    inbound = await self._inbound(bot, update.message)
                    if inbound is not None:
                        await deliver(inbound)
            if not updates and time.monotonic() - asked < poll.total_seconds() / 2:
                # A server that answers at once instead of holding the poll (a local
                # emulator does): do not spin.
                await asyncio.sleep(min(1.0, self.config.poll_seconds))

    async def _inbound(self, bot: Bot, message: Message) -> Inbound | None:
        sender = message.from_user
        if sender is None:
            return None  # a channel post: no one to allow or answer
        if message.text is None and message.voice is not None:
            return await self._voice_note(bot, message, message.voice.file_id, str(sender.id))
        text = message.text
        if text is None:
            return None
        return Inbound(
            channel=self.name,
            sender=str(sender.id),
            chat=str(message.chat.id),
            text=_without_bot_name(text.strip(), bot.username),
            at=time.time(),
        )

    async def _voice_note(
        self, bot: Bot, message: Message, file_id: str, sender: str
    ) -> voice.VoiceNote:
        """The note as a VoiceNote: its transcript, or the one line saying why there is none
        (no voice extra, a file that cannot be fetched or heard)."""
        trouble: str | None = None
        heard = ""
        missing = None if self._transcribe is not None else voice.missing_engine()
        if missing is not None:
            trouble = f"{voice.INSTALL_HINT} ({missing} is not installed)"
        else:
            try:
                file = await bot.get_file(file_id)
                audio = bytes(await file.download_as_bytearray())
                if self._transcribe is not None:
                    heard = await self._transcribe(audio)
                else:
                    heard = await asyncio.to_thread(voice.transcribe, audio, "ogg")
            except TelegramError as exc:
                trouble = str(self._error("downloading a voice note", exc))
            except voice.VoiceError as exc:
                trouble = str(exc)
        return voice.VoiceNote(
            channel=self.name,
            sender=sender,
            chat=str(message.chat.id),
            text=heard,
            at=time.time(),
            trouble=trouble,
        )

    async def send(self, message: Outbound) -> None:
        bot = await self._ensure_bot()
        chat: int | str = int(message.chat) if _is_int(message.chat) else message.chat
        try:
            for piece in split_text(message.text):
                await bot.send_message(chat_id=chat, text=piece)
        except TelegramError as exc:
            raise self._error(f"sending to chat {message.chat}", exc) from None
        await self._send_spoken(bot, chat, message)

    async def _send_spoken(self, bot: Bot, chat: int | str, message: Outbound) -> None:
        """The message also as a voice note, for a chat that asked (`/voice on`). The text
        went already: a note that cannot be made is logged, not retried."""
        wanted = await asyncio.to_thread(self._voice_replies.wanted, self.name, message.chat)
        if not wanted or voice.missing_engine() is not None:
            return
        try:
            note = await asyncio.to_thread(voice.speak, message.text)
        except Exception as exc:  # any engine failure: raising would resend the text
            log.warning("telegram: no voice note for chat %s: %s", message.chat, exc)
            return
        try:
            await bot.send_voice(chat_id=chat, voice=note, filename="reply.ogg")
        except TelegramError as exc:
            # Not raised: the bus would send the text again with it.
            log.warning("%s", self._error(f"sending a voice note to chat {message.chat}", exc))

    async def check(self) -> str:
        if not self._token:
            return f"telegram: no bot token (set gateway.telegram.token or {TOKEN_ENV})"
        bot = self._new_bot()
        try:
            async with bot:
                me = await bot.get_me()
        except TelegramError as exc:
            return str(self._error("getMe", exc))
        return f"telegram: reachable at {self._base_url} as @{me.username}"


def _without_bot_name(text: str, username: str) -> str:
    """The command without the bot's name, which Telegram clients add in groups:
    "/status@NanoBot run-7" -> "/status run-7"."""
    command, space, rest = text.partition(" ")
    suffix = f"@{username}"
    if command.startswith("/") and command.lower().endswith(suffix.lower()):
        return command[: -len(suffix)] + space + rest
    return text


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _install_redaction(token: str) -> None:
    """Adds a filter for `token` to the loggers that could print it, once per token."""
    # A logger's filters see only the records logged on it, not on its children: name each
    # one that prints a URL (httpx: every request; telegram.Bot: its base URL at DEBUG).
    for name in _LOGGERS_WITH_URLS:
        logger = logging.getLogger(name)
        filters: list[Any] = logger.filters
        if not any(isinstance(f, _RedactToken) and f.token == token for f in filters):
            logger.addFilter(_RedactToken(token))
