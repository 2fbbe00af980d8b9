"""The cross-channel story, end to end, against real local servers: a detached
`nanobot gateway` with the Telegram channel pointed at the EMULATOR of the Bot API
(telegram-test-api, see conftest.py) and the email channel at aiosmtpd (SMTP) and pymap
(IMAP, the bot's own mailbox for commands); a simulated run started from the CLI with
`--notify`; its milestones in the emulator's chat; /pause from the allowed chat; a
stranger's /cancel refused with a pairing code; /resume; the finished message with the
summary and the exported tree in the owner's IMAP mailbox.

Mail for the owner goes through the SMTP server into a second pymap server, the owner's
mailbox: the SMTP server's handler appends each mail it accepts to that mailbox over IMAP
(what a mail server's delivery agent does), so the test reads the result where a person
would, with an IMAP client.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psutil
import pytest

from nanobot_tui.channels.gateway import log_path, running_pid, start_detached, stop
from nanobot_tui.engine.runs.control import cancel_run, run_status
from tests.channels.conftest import ImapServer, TelegramEmulator, running_imap
from tests.conftest import free_port
from tests.engine.runs.runner_hold import (
    HANG_GUARD_S,
    held_runner,
    let_go,
    step_until,
    wait_pending,
)

OWNER = 1001  # on gateway.telegram.allow; a private chat's id is its user's id
STRANGER = 666
OWNER_ADDR = "ann@example.org"
BOT_ADDR = "nanobot@example.org"
DISKS = 16  # 65,535 steps: the store shows them in many writes, so it is seen mid-run
STEPS = f"{2**DISKS - 1:,}"
CODE = re.compile(r"Pairing code: ([A-Z0-9]+)")


@dataclass
class MailServer:
    """aiosmtpd with AUTH (the bot's login, as for its IMAP mailbox), delivering what it
    accepts for OWNER_ADDR into the owner's pymap mailbox."""

    host: str
    port: int
    accepted: list[EmailMessage] = field(default_factory=list)


@contextlib.contextmanager
def delivering_smtp(login: ImapServer, mailbox: ImapServer) -> Iterator[MailServer]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    server = MailServer(host="127.0.0.1", port=free_port())

    class Deliver:
        async def handle_RCPT(
            self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
        ) -> str:
            if address.lower() != OWNER_ADDR:
                return "550 no such mailbox here"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            raw = bytes(envelope.original_content)
            try:
                append_mail(mailbox, raw)
            except (OSError, imaplib.IMAP4.error) as exc:
                return f"451 cannot deliver now: {exc}"
            message = message_from_bytes(raw, policy=policy.default)
            assert isinstance(message, EmailMessage)
            server.accepted.append(message)
            return "250 OK"

    def authenticate(
        _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == login.user
            and data.password.decode() == login.password
        )
        return AuthResult(success=ok, handled=False)

    controller = Controller(
        Deliver(),
        hostname=server.host,
        port=server.port,
        authenticator=authenticate,
        auth_require_tls=False,  # plain SMTP on loopback only
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def append_mail(mailbox: ImapServer, raw: bytes) -> None:
    imap = imaplib.IMAP4(mailbox.host, mailbox.port)
    try:
        imap.login(mailbox.user, mailbox.password)
        status, detail = imap.append("INBOX", None, None, raw)
        if status != "OK":
            raise imaplib.IMAP4.error(f"APPEND: {detail!r}")
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


def mailbox_messages(mailbox: ImapServer) -> list[EmailMessage]:
    """Every mail in the mailbox's INBOX, read with an IMAP client (without marking it)."""
    imap = imaplib.IMAP4(mailbox.host, mailbox.port)
    try:
        imap.login(mailbox.user, mailbox.password)
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "ALL")
        out = []
        for number in found[0].split():
            _, data = imap.fetch(number.decode(), "(BODY.PEEK[])")
            raw = next(part[1] for part in data if isinstance(part, tuple))
            message = message_from_bytes(raw, policy=policy.default)
            assert isinstance(message, EmailMessage)
            out.append(message)
        return out
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


@dataclass
class Chat:
    """What the bot has said in one emulator chat, read as it comes."""

    emulator: TelegramEmulator
    chat_id: int
    said: list[str] = field(default_factory=list)

    def wait_for(self, wanted: Callable[[str], bool], what: str) -> str:
        """The first message (seen before or arriving now) that is `wanted`."""
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            found = [text for text in self.said if wanted(text)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, (
                f"never got {what}; got {self.said}; {gateway_log()}"
            )
            self.said += self.emulator.bot_messages(self.chat_id)
            time.sleep(0.05)


def gateway_log() -> str:
    try:
        lines = log_path().read_text(errors="replace").splitlines()
    except OSError:
        return "(no gateway log)"
    # Without httpx's line per long poll of the emulator.
    return "gateway log:\n" + "\n".join(ln for ln in lines if "HTTP Request" not in ln)[-3000:]


def write_config(
    home: Path, emulator: TelegramEmulator, smtp: MailServer, imap: ImapServer
) -> None:
    config = {
        "gateway": {
            "telegram": {
                "enabled": True,
                "token": emulator.token,
                "baseUrl": emulator.url,
                "allow": [str(OWNER)],
                "pollSeconds": 0.2,
            },
            "email": {
                "enabled": True,
                "smtpHost": smtp.host,
                "smtpPort": smtp.port,
                "smtpTls": "none",
                "imapHost": imap.host,
                "imapPort": imap.port,
                "imapTls": "none",
                "user": imap.user,
                "password": imap.password,
                "fromAddr": BOT_ADDR,
                "allow": [OWNER_ADDR],
                "pollSeconds": 0.5,
            },
            "milestoneEveryPercent": 10,
            # Room for every message of the story: the default 20 a minute would only
            # delay some, and this test is about what arrives.
            "rateLimitPerMinute": 1000,
        }
    }
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.json").write_text(json.dumps(config))


@pytest.mark.timeout(300)  # a hang guard: servers, a gateway and a run on shared cores
def test_a_run_from_the_cli_is_watched_on_telegram_and_its_result_mailed(
    nanobot_home: Path, telegram_emulator: TelegramEmulator, imap_server: ImapServer, tmp_path: Path
) -> None:
    """The story with the EMULATOR standing in for Telegram (see the module docstring)."""
    with (
        running_imap(tmp_path / "owner-pymap.log") as owner_mailbox,
        delivering_smtp(imap_server, owner_mailbox) as smtp,
    ):
        write_config(nanobot_home, telegram_emulator, smtp, imap_server)
        gateway_pid, _ = start_detached()
        run_id = None
        runner = None
        try:
            owner = Chat(telegram_emulator, OWNER)
            stranger = Chat(telegram_emulator, STRANGER)
            cli = subprocess.Popen(
                [sys.executable, "-m", "nanobot_tui", "run", "hanoi", "--disks", str(DISKS),
                 "--sampler", "simulated:0.99", "--k", "2", "--detach",
                 "--notify", f"telegram:{OWNER},email:{OWNER_ADDR}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            runner = held_runner(cli.pid)  # held before it has imported anything
            run_id = psutil.Process(runner).cmdline()[-1]  # `python -m WORKER RUN_ID`
            # A fifth of the way: the gateway sees it running, however fast it would go.
            step_until(runner, run_id, lambda st: 5 * st.steps_done >= st.steps_total)
            stdout, stderr = cli.communicate(timeout=HANG_GUARD_S)
            assert cli.returncode == 0, stderr
            assert stdout.strip().splitlines()[-1] == run_id
            assert f"milestones go to telegram:{OWNER}, email:{OWNER_ADDR}" in stdout

            # Milestones reach the owner's chat while the runner is held mid-run.
            started = owner.wait_for(lambda t: t.startswith(f"run {run_id}: started"), "started")
            assert started.startswith(f"run {run_id}: started: hanoi-{DISKS} with simulated")
            progress = owner.wait_for(
                lambda t: bool(
                    re.fullmatch(
                        rf"run {run_id}: [\d,]+/{STEPS} steps \(\d+%\)(, [\d,]+ errors)?", t
                    )
                ),
                "a progress milestone",
            )
            assert int(re.findall(r"\((\d+)%\)", progress)[0]) >= 10

            # /pause from the allowed chat: the held runner gets the request, then goes on.
            telegram_emulator.user_says(f"/pause {run_id}", user_id=OWNER, chat_id=OWNER)
            wait_pending(runner, signal.SIGUSR1)
            let_go(runner)
            # Two messages: the reply to /pause ("run R: paused (why)", this chat only) and
            # the milestone, which every target gets once the watcher (a look a second)
            # has seen the paused run. Waiting for the reply alone let /resume come before
            # that look, and then no target, the mailbox included, heard of the pause.
            owner.wait_for(lambda t: t.startswith(f"run {run_id}: paused (") and
                           "steps" not in t, "the reply to /pause")  # fmt: skip
            paused = owner.wait_for(
                lambda t: bool(re.fullmatch(rf"run {run_id}: paused \(.+\): [\d,]+/{STEPS} .+", t)),
                "the paused milestone",
            )
            st = run_status(run_id)
            assert st.status == "paused" and 0 < st.steps_done < st.steps_total, paused

            # A stranger's /cancel: a pairing code, and nothing done.
            telegram_emulator.user_says(f"/cancel {run_id}", user_id=STRANGER, chat_id=STRANGER)
            refusal = stranger.wait_for(lambda t: "Pairing code" in t, "a pairing code")
            assert refusal.startswith("you are not paired with this nanobot: nothing was done.")
            (code,) = CODE.findall(refusal)
            assert run_status(run_id).status == "paused"
            pending = json.loads((nanobot_home / "gateway" / "pairing.json").read_text())
            assert code in json.dumps(pending)

            # /resume from the allowed chat: a new detached runner finishes the run.
            telegram_emulator.user_says(f"/resume {run_id}", user_id=OWNER, chat_id=OWNER)
            owner.wait_for(lambda t: t.startswith(f"run {run_id}: resumed: "), "resumed")
            finished = owner.wait_for(
                lambda t: t.startswith(f"run {run_id}: completed"), "the finished milestone"
            )
            assert finished.startswith(f"run {run_id}: completed (")  # solved, or with errors
            assert f": {STEPS}/{STEPS} steps (100%)" in finished
            assert "; summary: " in finished
            assert run_status(run_id).status == "completed"

            # The result in the owner's IMAP mailbox, with the exported tree attached.
            subject = f"nanobot run {run_id}: finished"
            deadline = time.monotonic() + HANG_GUARD_S
            while True:
                mails = mailbox_messages(owner_mailbox)
                if any(m["Subject"] == subject for m in mails):
                    break
                assert time.monotonic() < deadline, [m["Subject"] for m in mails]
                time.sleep(0.1)
        finally:
            if runner is not None:
                let_go(runner)
            if run_id is not None:  # a failed test leaves no runner behind
                with contextlib.suppress(Exception):
                    if not run_status(run_id).finished:
                        cancel_run(run_id)
            stop()
        assert running_pid() is None  # the gateway let go of its lock: it stopped
        with contextlib.suppress(psutil.Error):
            psutil.Process(gateway_pid).wait(HANG_GUARD_S)  # reap it (our child)

    (result,) = [m for m in mails if m["Subject"] == subject]
    assert result["From"] == BOT_ADDR and result["To"] == OWNER_ADDR
    body = result.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == finished
    (tree,) = list(result.iter_attachments())
    exported = json.loads(tree.get_content())
    assert exported["run"] == run_id and exported["status"]["status"] == "completed"
    assert exported["nodes"][0]["kind"] == "root"
    # Every milestone by mail too, in the order they happened, in one thread.
    prefix = f"nanobot run {run_id}: "
    assert all(m["Subject"].startswith(prefix) for m in mails)
    kinds = [m["Subject"].removeprefix(prefix) for m in mails]
    # (A "resumed" mail comes only if the gateway looks while the resumed runner runs.)
    story = [kinds.index(kind) for kind in ("started", "progress", "paused")]
    assert story == sorted(story) and kinds[-1] == "finished", kinds
    assert kinds[0] == "started", kinds  # a run not yet picked up by its runner says nothing
    assert len({m["In-Reply-To"] for m in mails}) == 1
    assert len(smtp.accepted) == len(mails)
    # The stranger's chat saw only the refusal: nothing of the run.
    assert all(run_id not in text for text in stranger.said)
