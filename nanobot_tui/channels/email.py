"""The email channel: results out over SMTP (aiosmtplib), commands in over IMAP (aioimaplib).

Out: each `Outbound` is one mail to `chat` (an address), with its attachments. A message
with a `thread` ("run:<RUN_ID>") carries In-Reply-To and References naming one Message-ID
made from the thread, the same every time, so that mail clients show a run's mails as one
thread; a thread that is itself a Message-ID (an `Inbound.thread`) answers that mail.

In: every `poll_seconds` the INBOX is searched for UNSEEN mail of the last day or two.
Each one is marked seen before it is handed on (a command is never run twice) and becomes
an `Inbound`: the command is the subject (without Re:/Fwd:), or, for a reply or a mail
with no subject, the first line of the body that is not quoted. Mail that says it was
sent automatically (Auto-Submitted, as ours are) is skipped, so that nanobot never
answers itself or an out-of-office reply.

The password is a secret: NANOBOT_EMAIL_PASSWORD wins over the file, and it is never put
in a message or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import mimetypes
import os
import re
import ssl
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from typing import Any

import aioimaplib
import aiosmtplib

from nanobot_tui.channels.base import ChannelError, Deliver, Inbound, Outbound
from nanobot_tui.config import EmailConfig

PASSWORD_ENV = "NANOBOT_EMAIL_PASSWORD"
COMMAND_MAX_AGE_DAYS = 1
AUTO_SUBMITTED = "auto-generated"  # RFC 3834: machine-made mail, not to be answered
_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|aw|sv)\s*:\s*)+", re.IGNORECASE)
_FETCHED = re.compile(rb"FETCH \(.*BODY\[\]")


class EmailChannel:
    """Mail out through an SMTP server, commands in from an IMAP mailbox."""

    name = "email"

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self._password = os.environ.get(PASSWORD_ENV) or config.password
        self._from = config.from_addr or config.user

    # -- sending -------------------------------------------------------------------------

    def compose(self, message: Outbound) -> EmailMessage:
        """The mail for `message` (separate from send so that its headers can be read)."""
        if not self._from:
            raise ChannelError("email: no sender address (set gateway.email.fromAddr)")
        mail = EmailMessage()
        mail["From"] = self._from
        try:
            mail["To"] = message.chat
        except ValueError:  # a line break in the address: never a header of its own
            raise ChannelError(f"email: not an address: {message.chat!r}") from None
        subject = " ".join((message.subject or "").split())
        mail["Subject"] = subject or _first_line(message.text) or "nanobot"
        mail["Message-ID"] = make_msgid("nanobot", domain=self._domain())
        mail["Auto-Submitted"] = AUTO_SUBMITTED
        if message.thread:
            root = self.thread_id(message.thread)
            mail["In-Reply-To"] = root
            mail["References"] = root
        mail.set_content(message.text)
        for path in message.attachments:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ChannelError(
                    f"email: attachment {path} cannot be read: {exc.strerror}"
                ) from None
            kind, _ = mimetypes.guess_type(path.name)
            maintype, subtype = (kind or "application/octet-stream").split("/", 1)
            mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
        return mail

    def thread_id(self, thread: str) -> str:
        """The Message-ID that every mail of `thread` refers to: the thread itself when it is
        a Message-ID, else one made from it, the same on every run of the gateway."""
        if thread.startswith("<") and thread.endswith(">"):
            return thread
        slug = re.sub(r"[^A-Za-z0-9.-]+", "-", thread).strip("-")[:40] or "thread"
        digest = hashlib.sha256(thread.encode()).hexdigest()[:12]
        return f"<nanobot.{slug}.{digest}@{self._domain()}>"

    def _domain(self) -> str:
        return self._from.rpartition("@")[2] or "nanobot.local"

    async def send(self, message: Outbound) -> None:
        mail = self.compose(message)
        config = self.config
        if not config.smtp_host:
            raise ChannelError("email: no SMTP server (set gateway.email.smtpHost)")
        try:
            await aiosmtplib.send(
                mail,
                hostname=config.smtp_host,
                port=config.smtp_port,
                username=config.user or None,
                password=self._password if config.user else None,
                use_tls=config.smtp_tls == "tls",
                start_tls=config.smtp_tls == "starttls",
                timeout=30,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ChannelError(
                f"email: sending to {message.chat} through "
                f"{config.smtp_host}:{config.smtp_port} failed: {_one_line(exc)}"
            ) from None

    # -- receiving -----------------------------------------------------------------------

    async def _imap(self) -> aioimaplib.IMAP4:
        """A logged-in IMAP connection with INBOX selected."""
        config = self.config
        where = f"{config.imap_host}:{config.imap_port}"
        if not config.imap_host:
            raise ChannelError("email: no IMAP server (set gateway.email.imapHost)")
        try:
            client: aioimaplib.IMAP4
            if config.imap_tls == "tls":
                client = aioimaplib.IMAP4_SSL(
                    host=config.imap_host,
                    port=config.imap_port,
                    timeout=30,
                    ssl_context=ssl.create_default_context(),
                )
            else:
                client = aioimaplib.IMAP4(host=config.imap_host, port=config.imap_port, timeout=30)
            await client.wait_hello_from_server()
            if config.imap_tls == "starttls":
                await _start_tls(client, config.imap_host)
            _expect_ok(await client.login(config.user, self._password), "login")
            _expect_ok(await client.select("INBOX"), "select INBOX")
        except (OSError, TimeoutError, aioimaplib.Abort, aioimaplib.CommandTimeout) as exc:
            # ssl.SSLError (a certificate that does not verify) is an OSError too.
            raise ChannelError(f"email: IMAP {where} failed: {_one_line(exc)}") from None
        except _ImapRefused as exc:
            raise ChannelError(f"email: IMAP {where} refused {exc}") from None
        return client

    async def run(self, deliver: Deliver) -> None:
        client = await self._imap()
        where = f"{self.config.imap_host}:{self.config.imap_port}"
        try:
            while True:
                try:
                    for inbound in await self._unseen(client):
                        await deliver(inbound)
                except (OSError, TimeoutError, aioimaplib.Abort, aioimaplib.CommandTimeout) as exc:
                    raise ChannelError(f"email: IMAP {where} failed: {_one_line(exc)}") from None
                except _ImapRefused as exc:
                    raise ChannelError(f"email: IMAP {where} refused {exc}") from None
                await asyncio.sleep(self.config.poll_seconds)
        finally:
            # The server may have gone away first.
            with contextlib.suppress(
                OSError, TimeoutError, aioimaplib.Abort, aioimaplib.CommandTimeout
            ):
                await asyncio.wait_for(client.logout(), 5)

    async def _unseen(self, client: aioimaplib.IMAP4) -> list[Inbound]:
        """The unseen mails as commands, each marked seen first."""
        # A command waits at most a day or two (SINCE counts whole days): an old unread
        # backlog, or a /cancel mailed while the gateway was down last week, is not run.
        since = (datetime.now(UTC) - timedelta(days=COMMAND_MAX_AGE_DAYS)).strftime("%d-%b-%Y")
        found = await client.uid_search("UNSEEN", "SINCE", since)
        _expect_ok(found, "search UNSEEN")
        uids = [uid.decode() for line in found.lines[:-1] for uid in bytes(line).split()]
        out: list[Inbound] = []
        for uid in uids:
            # PEEK: fetching must not mark it; the STORE below does, before delivery.
            fetched = await client.uid("fetch", uid, "(BODY.PEEK[])")
            _expect_ok(fetched, f"fetch {uid}")
            _expect_ok(await client.uid("store", uid, "+FLAGS", "(\\Seen)"), f"store {uid}")
            raw = _literal(fetched.lines)
            if raw is not None:
                inbound = self.parse(raw)
                if inbound is not None:
                    out.append(inbound)
        return out

    def parse(self, raw: bytes) -> Inbound | None:
        """The command a mail carries, or None when it carries none or was machine-made."""
        mail = message_from_bytes(raw, policy=policy.default)
        if str(mail.get("Auto-Submitted", "no")).strip().lower() != "no":
            return None
        sender = parseaddr(str(mail.get("From", "")))[1].lower()
        if not sender:
            return None
        subject = _REPLY_PREFIX.sub("", str(mail.get("Subject", ""))).strip()
        body_line = _first_body_line(mail)
        is_reply = mail.get("In-Reply-To") is not None
        text = (body_line or subject) if is_reply or not subject else subject
        if not text:
            return None
        message_id = mail.get("Message-ID")
        return Inbound(
            channel=self.name,
            sender=sender,
            chat=sender,
            text=text,
            at=time.time(),
            thread=str(message_id).strip() if message_id else None,
        )

    async def check(self) -> str:
        config = self.config
        parts: list[str] = []
        if config.smtp_host:
            try:
                smtp = aiosmtplib.SMTP(
                    hostname=config.smtp_host,
                    port=config.smtp_port,
                    use_tls=config.smtp_tls == "tls",
                    start_tls=config.smtp_tls == "starttls",
                    timeout=10,
                )
                async with smtp:
                    if config.user:
                        await smtp.login(config.user, self._password)
                parts.append(f"SMTP {config.smtp_host}:{config.smtp_port} ok")
            except (aiosmtplib.SMTPException, OSError) as exc:
                parts.append(f"SMTP {config.smtp_host}:{config.smtp_port} failed: {_one_line(exc)}")
        else:
            parts.append("no SMTP server (set gateway.email.smtpHost)")
        try:
            client = await self._imap()
            await client.logout()
            parts.append(f"IMAP {config.imap_host}:{config.imap_port} ok")
        except ChannelError as exc:
            parts.append(str(exc).removeprefix("email: "))
        return "email: " + "; ".join(parts)


class _ImapRefused(Exception):
    """An IMAP command answered NO or BAD; str() says which and why."""


def _expect_ok(response: Any, doing: str) -> None:
    if response.result != "OK":
        why = b" ".join(bytes(line) for line in response.lines).decode(errors="replace")
        raise _ImapRefused(f"{doing}: {response.result} {why}".strip())


async def _start_tls(client: aioimaplib.IMAP4, host: str) -> None:
    """STARTTLS (RFC 3501 6.2.1), which aioimaplib lists but does not carry out: the
    command, then the same connection upgraded in place, then the capabilities again
    (those from before TLS must not be trusted)."""
    protocol = client.protocol
    response = await asyncio.wait_for(
        protocol.execute(aioimaplib.Command("STARTTLS", protocol.new_tag())), client.timeout
    )
    _expect_ok(response, "STARTTLS")
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(
        protocol.transport, protocol, ssl.create_default_context(), server_hostname=host
    )
    await asyncio.wait_for(protocol.capability(), client.timeout)


def _literal(lines: list[Any]) -> bytes | None:
    """The message bytes in a FETCH answer: the literal after the `BODY[] {n}` line."""
    for before, line in itertools.pairwise(lines):
        if isinstance(line, bytearray) and _FETCHED.search(bytes(before)):
            return bytes(line)
    return None


def _first_body_line(mail: Any) -> str:
    part = mail.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    for line in str(part.get_content()).splitlines():
        line = line.strip()
        if line and not line.startswith(">"):
            return line
    return ""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:120]
    return ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
