"""The latency from a run's milestone to its Telegram message and its email arriving, on
this machine, through real local servers.

Run: python -m benchmarks.gateway_latency [--milestones 20] [--json]
     (needs node and `npm ci` in tests/channels/telegram_emulator, and the gateway and
     test extras: python-telegram-bot, aiosmtplib, aioimaplib, aiosmtpd, pymap)

An in-process gateway (channels/gateway.py) with the real Telegram channel pointed at the
EMULATOR of the Bot API (telegram-test-api, tests/channels/telegram_emulator/serve.js:
not Telegram itself) and the real email channel sending through a local aiosmtpd, whose
handler appends each mail it accepts to the owner's mailbox in a local pymap IMAP server
(what a mail server's delivery agent does); the bot's own mailbox for commands is a
second pymap. A real simulated run (hanoi, stopped after 10 steps) is watched by both
targets. `--milestones` times its status is written to its store (`record_status`:
paused, then stopped, alternately, each at a random point between two of the gateway's
looks) and these are taken from that write:
  sent:     until the channel's send returned (the bus handed it over);
  telegram: until the message is in the emulator's chat, read with its client API
            (getUpdates, polled every POLL_S);
  email:    until the mail is in the owner's IMAP INBOX, read with an IMAP client
            (STATUS MESSAGES, polled every POLL_S).
Medians, p90 and max, at the gateway's default poll of 1 s and at 0.1 s. The polling of
the reader adds up to POLL_S to each arrival. A private NANOBOT_HOME in a temporary
folder is used and removed; the servers are stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import imaplib
import json
import logging
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

EMULATOR_DIR = Path(__file__).resolve().parent.parent / "tests/channels/telegram_emulator"
TOKEN = "4242:bench-token"
OWNER_CHAT = "1001"
OWNER_ADDR = "ann@example.org"
USER, PASSWORD = "demouser", "demopass"  # pymap's dict backend's demo login
POLL_S = 0.005  # how often the readers look for an arrival


def _stats_ms(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1e3, 1),
        "p90_ms": round(statistics.quantiles(samples, n=10, method="inclusive")[-1] * 1e3, 1),
        "max_ms": round(max(samples) * 1e3, 1),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} is not listening on {port} within 60 s")
        time.sleep(0.05)


@contextlib.contextmanager
def _process(command: list[str], port: int, what: str, cwd: Path | None = None) -> Iterator[None]:
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, what)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pymap(port: int) -> contextlib.AbstractContextManager[None]:
    pymap = str(Path(sys.executable).parent / "pymap")  # its console script, no __main__
    command = [pymap, "--host", "127.0.0.1", "--port", str(port), "--no-tls", "dict"]
    return _process(command, port, "pymap")


def _append(port: int, raw: bytes) -> None:
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(USER, PASSWORD)
        status, detail = imap.append("INBOX", None, None, raw)
        if status != "OK":
            raise imaplib.IMAP4.error(f"APPEND: {detail!r}")
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


@contextlib.contextmanager
def _relaying_smtp(port: int, mailbox_port: int, appends: list[float]) -> Iterator[None]:
    """aiosmtpd with AUTH that appends what it accepts to the owner's pymap INBOX; the
    seconds each append (connect, login, APPEND, logout) took go to `appends`."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    class Relay:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            began = time.perf_counter()
            try:
                await asyncio.to_thread(_append, mailbox_port, bytes(envelope.original_content))
            except (OSError, imaplib.IMAP4.error) as exc:
                return f"451 cannot deliver now: {exc}"
            appends.append(time.perf_counter() - began)
            return "250 OK"

    def authenticate(*args: Any) -> AuthResult:
        data = args[-1]
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        return AuthResult(success=ok, handled=False)

    controller = Controller(Relay(), hostname="127.0.0.1", port=port,
                            authenticator=authenticate, auth_require_tls=False)  # fmt: skip
    controller.start()
    try:
        yield
    finally:
        controller.stop()


class Timed:
    """A channel whose sends are timed: when each text's send returned."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.name: str = channel.name
        self.sent_at: dict[str, float] = {}

    async def run(self, deliver: Any) -> None:
        await self.channel.run(deliver)

    async def send(self, message: Any) -> None:
        await self.channel.send(message)
        self.sent_at[message.text] = time.time()

    async def check(self) -> str:
        return str(await self.channel.check())


class Readers:
    """Where a person would read: the emulator's chat, the owner's IMAP INBOX."""

    def __init__(self, emulator_url: str, mailbox_port: int) -> None:
        self.url = emulator_url
        self.http = httpx.Client(timeout=10)
        self.imap = imaplib.IMAP4("127.0.0.1", mailbox_port)
        self.imap.login(USER, PASSWORD)

    def chat(self) -> list[str]:
        """The bot's messages to the owner's chat not read yet."""
        answer = self.http.post(
            self.url + "/getUpdates", json={"token": TOKEN, "chatId": int(OWNER_CHAT)}
        )
        answer.raise_for_status()
        return [u["message"]["text"] for u in answer.json()["result"]]

    def mails(self) -> int:
        _, data = self.imap.status("INBOX", "(MESSAGES)")
        text = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
        return int(text.rsplit("MESSAGES", 1)[1].strip(" )"))

    def close(self) -> None:
        self.http.close()
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self.imap.logout()


def _run_gateway(gateway: Any, ready: threading.Event, stop: threading.Event) -> None:
    async def main() -> None:
        task = asyncio.create_task(gateway.run())
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def measure(
    count: int, poll_s: float, emulator_url: str, smtp_port: int, bot_port: int, owner_port: int
) -> dict[str, Any]:
    from nanobot_tui.channels.email import EmailChannel
    from nanobot_tui.channels.gateway import Gateway
    from nanobot_tui.channels.subscriptions import Subscriptions, Target
    from nanobot_tui.channels.telegram import TelegramChannel
    from nanobot_tui.config import GatewayConfig
    from nanobot_tui.engine.runs.control import record_status
    from nanobot_tui.engine.runs.durable import execute, start_run
    from nanobot_tui.engine.runs.spec import Budgets, RunSpec
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig

    config = GatewayConfig.model_validate(
        {
            "telegram": {"enabled": True, "token": TOKEN, "baseUrl": emulator_url,
                         "allow": [OWNER_CHAT], "pollSeconds": 1},
            "email": {"enabled": True, "smtpHost": "127.0.0.1", "smtpPort": smtp_port,
                      "smtpTls": "none", "imapHost": "127.0.0.1", "imapPort": bot_port,
                      "imapTls": "none", "user": USER, "password": PASSWORD,
                      "fromAddr": "nanobot@example.org", "pollSeconds": 5},
            "rateLimitPerMinute": 10_000,  # 20 a minute would hold some back
        }
    )  # fmt: skip
    spec = RunSpec(domain="hanoi", params={"disks": 6}, sampler="simulated:0.99",
                   vote=VoteConfig(k=3), label="bench")  # fmt: skip

    async def make_run() -> str:
        rid = await start_run(spec)
        await execute(rid, budgets=Budgets(steps=10))
        return rid

    rid = asyncio.run(make_run())
    subscriptions = Subscriptions()
    subscriptions.subscribe(rid, Target("telegram", OWNER_CHAT))
    subscriptions.subscribe(rid, Target("email", OWNER_ADDR))
    telegram = Timed(TelegramChannel(config.telegram))
    email = Timed(EmailChannel(config.email))
    gateway = Gateway([telegram, email], config, poll_s=poll_s, write_state=False)
    readers = Readers(emulator_url, owner_port)
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_run_gateway, args=(gateway, ready, stop), daemon=True)
    thread.start()
    ready.wait()
    rows: dict[str, list[float]] = {"sent_telegram": [], "sent_email": [],
                                    "telegram": [], "email": []}  # fmt: skip
    try:
        mails = _arrived(readers, f"run {rid}: stopped", readers.mails())  # the first look
        rng = random.Random(0)
        for n in range(count):
            time.sleep(rng.uniform(0, poll_s))  # anywhere between two looks
            status = "paused" if n % 2 == 0 else "stopped"
            record_status(rid, status, f"benchmark {n}")
            written = time.time()
            wanted = f"run {rid}: {status} (benchmark {n})"
            seen: dict[str, float] = {}
            deadline = time.monotonic() + 60
            while len(seen) < 2:
                if "telegram" not in seen and any(t.startswith(wanted) for t in readers.chat()):
                    seen["telegram"] = time.time()
                if "email" not in seen and readers.mails() > mails:
                    seen["email"] = time.time()
                if time.monotonic() > deadline:
                    raise SystemExit(f"milestone {n} did not arrive within 60 s: {seen}")
                time.sleep(POLL_S)
            mails += 1
            rows["telegram"].append(seen["telegram"] - written)
            rows["email"].append(seen["email"] - written)
            for name, channel in (("telegram", telegram), ("email", email)):
                # The relay stores a mail before it answers the DATA command: the mail can
                # be read a moment before the channel's send returns.
                while not any(text.startswith(wanted) for text in list(channel.sent_at)):
                    time.sleep(POLL_S)
                sent = next(at for text, at in channel.sent_at.items() if text.startswith(wanted))
                rows[f"sent_{name}"].append(sent - written)
    finally:
        stop.set()
        thread.join(30)
        readers.close()
    return {"poll_s": poll_s, "milestones": count,
            **{name: _stats_ms(samples) for name, samples in rows.items()}}  # fmt: skip


def _arrived(readers: Readers, prefix: str, mails: int) -> int:
    """Wait for the run's first milestone in both places; the mail count after it."""
    deadline = time.monotonic() + 60
    chat = False
    while True:
        chat = chat or any(t.startswith(prefix) for t in readers.chat())
        now = readers.mails()
        if chat and now > mails:
            return now
        if time.monotonic() > deadline:
            raise SystemExit(f"the first milestone did not arrive within 60 s ({prefix!r})")
        time.sleep(0.05)


def main() -> None:
    # aiosmtpd logs its own use of its deprecated Session.login_data at every login.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--milestones", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None or not (EMULATOR_DIR / "node_modules" / "telegram-test-api").is_dir():
        raise SystemExit(f"needs node and the emulator: cd {EMULATOR_DIR} && npm ci")
    home = tempfile.mkdtemp(prefix="nanobot-bench-latency-")
    os.environ["NANOBOT_HOME"] = home
    emulator, smtp, bot, owner = (_free_port() for _ in range(4))
    results = []
    appends: list[float] = []
    try:
        with (
            _process(
                [node, "serve.js", str(emulator)],
                emulator,
                "the Telegram emulator",
                cwd=EMULATOR_DIR,
            ),  # fmt: skip
            _pymap(bot),
            _pymap(owner),
            _relaying_smtp(smtp, owner, appends),
        ):
            url = f"http://127.0.0.1:{emulator}"
            for poll_s in (1.0, 0.1):
                appends.clear()
                result = measure(args.milestones, poll_s, url, smtp, bot, owner)
                # The test mail server's own share of the email figure (not nanobot's).
                results.append(result | {"relay_append": _stats_ms(appends)})
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(home)
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(f"gateway poll {r['poll_s']} s, {r['milestones']} milestones (store write -> ...):")
        for name in ("sent_telegram", "telegram", "sent_email", "email", "relay_append"):
            s = r[name]
            print(f"  {name:<14} median {s['median_ms']} ms, p90 {s['p90_ms']} ms, "
                  f"max {s['max_ms']} ms")  # fmt: skip


if __name__ == "__main__":
    main()
