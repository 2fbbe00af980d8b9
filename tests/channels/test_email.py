"""The email channel against real local servers: aiosmtpd (SMTP, with AUTH) and pymap
(IMAP, its in-memory backend), both started by the fixtures in conftest.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aioimaplib
import pytest

from nanobot_tui.channels.base import ChannelError, Inbound, Outbound
from nanobot_tui.channels.email import EmailChannel
from nanobot_tui.config import EmailConfig
from tests.channels.conftest import (
    ImapServer,
    SmtpServer,
    TlsCert,
    running_imap,
    running_smtp,
)
from tests.conftest import free_port, until


def config_for(smtp: SmtpServer | None = None, imap: ImapServer | None = None) -> EmailConfig:
    return EmailConfig(
        enabled=True,
        smtp_host=smtp.host if smtp else "",
        smtp_port=smtp.port if smtp else 587,
        smtp_tls="none",
        imap_host=imap.host if imap else "",
        imap_port=imap.port if imap else 993,
        imap_tls="none",
        user=smtp.user if smtp else (imap.user if imap else ""),
        password=smtp.password if smtp else (imap.password if imap else ""),
        from_addr="nanobot@example.org",
        poll_seconds=0.2,
    )


async def test_sent_mail_arrives_with_attachment_and_thread_headers(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Two mails of one run reach the SMTP server (after AUTH), both referring to the
    same thread id, each with its own Message-ID; the attachment arrives byte for byte."""
    tree = tmp_path / "tree.json"
    tree.write_text('{"root": "done"}\n')
    channel = EmailChannel(config_for(smtp_server))
    await channel.send(
        Outbound(
            channel="email",
            chat="ann@example.org",
            text="run-7 started",
            subject="nanobot: run-7",
            thread="run:run-7",
        )
    )
    await channel.send(
        Outbound(
            channel="email",
            chat="ann@example.org",
            text="run-7 finished: done",
            subject="nanobot: run-7",
            attachments=(tree,),
            thread="run:run-7",
        )
    )
    assert smtp_server.logins == ["bot", "bot"]
    first, second = smtp_server.received
    assert first.sender == "nanobot@example.org"
    assert first.recipients == ["ann@example.org"]
    assert first.message["Subject"] == "nanobot: run-7"
    thread = channel.thread_id("run:run-7")
    for mail in (first.message, second.message):
        assert mail["In-Reply-To"] == thread
        assert mail["References"] == thread
        assert mail["Auto-Submitted"] == "auto-generated"
    assert first.message["Message-ID"] != second.message["Message-ID"]
    parts = list(second.message.walk())
    body = next(p for p in parts if p.get_content_type() == "text/plain" and not p.get_filename())
    assert body.get_payload(decode=True).decode().strip() == "run-7 finished: done"
    attached = next(p for p in parts if p.get_filename() == "tree.json")
    assert attached.get_content_type() == "application/json"
    assert attached.get_payload(decode=True) == b'{"root": "done"}\n'


async def test_a_thread_that_is_a_message_id_answers_that_mail(smtp_server: SmtpServer) -> None:
    channel = EmailChannel(config_for(smtp_server))
    await channel.send(
        Outbound(channel="email", chat="ann@example.org", text="paused", thread="<q1@example.org>")
    )
    (mail,) = smtp_server.received
    assert mail.message["In-Reply-To"] == "<q1@example.org>"
    assert mail.message["Subject"] == "paused"


async def test_send_failures_are_channel_errors(tmp_path: Path, smtp_server: SmtpServer) -> None:
    wrong_password = config_for(smtp_server).model_copy(update={"password": "nope"})
    with pytest.raises(ChannelError, match=r"through 127\.0\.0\.1"):
        await EmailChannel(wrong_password).send(Outbound(channel="email", chat="a@b.c", text="x"))
    missing = tmp_path / "gone.txt"
    with pytest.raises(ChannelError, match=r"gone\.txt cannot be read"):
        await EmailChannel(config_for(smtp_server)).send(
            Outbound(channel="email", chat="a@b.c", text="x", attachments=(missing,))
        )
    assert smtp_server.received == []
    nobody = config_for(smtp_server).model_copy(update={"smtp_port": free_port()})
    with pytest.raises(ChannelError, match="failed"):
        await EmailChannel(nobody).send(Outbound(channel="email", chat="a@b.c", text="x"))


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_mail_goes_out_over_tls(
    mode: str, tls_cert: TlsCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a server that requires STARTTLS, or speaks TLS from the first byte, the
    mail arrives after AUTH; a certificate the client does not trust stops it."""
    with running_smtp(mode, tls_cert) as server:
        config = config_for(server).model_copy(update={"smtp_tls": mode})
        await EmailChannel(config).send(Outbound(channel="email", chat="a@b.c", text="over TLS"))
        assert server.logins == ["bot"]
        (mail,) = server.received
        assert mail.message.get_payload().strip() == "over TLS"
        monkeypatch.delenv("SSL_CERT_FILE")  # back to the system's CAs: not trusted
        with pytest.raises(ChannelError, match="CERTIFICATE_VERIFY_FAILED"):
            await EmailChannel(config).send(Outbound(channel="email", chat="a@b.c", text="x"))
        assert len(server.received) == 1


async def test_imap_starttls(
    tls_cert: TlsCert, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STARTTLS, which the channel carries out itself (aioimaplib does not), against
    pymap offering it: login and INBOX work over the upgraded connection."""
    with running_imap(tmp_path / "pymap.log", tls_cert) as server:
        config = config_for(imap=server).model_copy(update={"imap_tls": "starttls"})
        line = await EmailChannel(config).check()
        assert line.endswith(f"IMAP 127.0.0.1:{server.port} ok")
        monkeypatch.delenv("SSL_CERT_FILE")
        line = await EmailChannel(config).check()
        assert f"IMAP 127.0.0.1:{server.port} failed" in line
        assert "CERTIFICATE_VERIFY_FAILED" in line


async def append(server: ImapServer, mail: EmailMessage, *, days_ago: float = 0) -> None:
    """Put `mail` into the IMAP mailbox, as a delivered mail lands there (IMAP APPEND),
    arrived `days_ago`."""
    client = aioimaplib.IMAP4(host=server.host, port=server.port, timeout=10)
    await client.wait_hello_from_server()
    assert (await client.login(server.user, server.password)).result == "OK"
    arrived = datetime.now(UTC) - timedelta(days=days_ago)
    answer = await client.append(mail.as_bytes(), mailbox="INBOX", date=arrived)
    assert answer.result == "OK"
    await client.logout()


def mail(sender: str, subject: str, body: str, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "nanobot@example.org"
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.org")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


async def test_commands_mailed_in_are_read_once(imap_server: ImapServer) -> None:
    """Commands appended to the IMAP mailbox arrive as Inbound exactly once each, whether
    they came before the channel started or while it polls; machine-made mail and a
    command five days old do not."""
    channel = EmailChannel(config_for(imap=imap_server))
    received: list[Inbound] = []

    async def deliver(message: Inbound) -> None:
        received.append(message)

    status = mail("Ann <Ann@Example.org>", "status", "thanks\n")
    await append(imap_server, mail("ann@example.org", "cancel run-1", ""), days_ago=5)
    await append(imap_server, status)
    task = asyncio.create_task(channel.run(deliver))
    try:
        await until(lambda: len(received) >= 1)
        await append(
            imap_server,
            mail(
                "ann@example.org",
                "Re: nanobot: run-7",
                "pause run-7\n\n> run-7 at 40 %\n",
                In_Reply_To="<x@example.org>",
            ),
        )
        await append(
            imap_server,
            mail("vacation@example.org", "Out of office", "away\n", Auto_Submitted="auto-replied"),
        )
        await until(lambda: len(received) >= 2)
        await asyncio.sleep(0.5)  # more polls: nothing is read twice
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(m.channel, m.sender, m.chat, m.text) for m in received] == [
        ("email", "ann@example.org", "ann@example.org", "status"),
        ("email", "ann@example.org", "ann@example.org", "pause run-7"),
    ]
    assert received[0].thread == status["Message-ID"]
    # A new connection reads only what is new: the channel marked every mail seen, the
    # machine-made one included.
    again: list[Inbound] = []

    async def deliver_again(message: Inbound) -> None:
        again.append(message)

    restarted = asyncio.create_task(channel.run(deliver_again))
    try:
        await append(imap_server, mail("ann@example.org", "runs", ""))
        await until(lambda: len(again) >= 1)
        await asyncio.sleep(0.5)
    finally:
        restarted.cancel()
        with pytest.raises(asyncio.CancelledError):
            await restarted
    assert [m.text for m in again] == ["runs"]


async def test_check_says_what_is_reachable(
    smtp_server: SmtpServer, imap_server: ImapServer
) -> None:
    both = config_for(smtp_server, imap_server).model_copy(
        update={"user": imap_server.user, "password": imap_server.password}
    )
    # One user for both servers: the SMTP fixture takes the IMAP user's login too.
    smtp_server.user, smtp_server.password = imap_server.user, imap_server.password
    line = await EmailChannel(both).check()
    assert line == (
        f"email: SMTP 127.0.0.1:{smtp_server.port} ok; IMAP 127.0.0.1:{imap_server.port} ok"
    )
    wrong = both.model_copy(update={"password": "wrong", "imap_port": imap_server.port})
    line = await EmailChannel(wrong).check()
    assert line.startswith(f"email: SMTP 127.0.0.1:{smtp_server.port} failed")
    assert f"IMAP 127.0.0.1:{imap_server.port} refused login" in line
    assert "wrong" not in line and "\n" not in line


async def test_an_unreachable_imap_server_is_a_channel_error() -> None:
    config = EmailConfig(imap_host="127.0.0.1", imap_port=free_port(), imap_tls="none")
    with pytest.raises(ChannelError, match=r"IMAP 127\.0\.0\.1"):
        await EmailChannel(config).run(lambda m: asyncio.sleep(0))
