"""Real local servers for the channel tests, each started by the fixture that needs it.

- `telegram_emulator`: the npm package telegram-test-api, an EMULATOR of the Telegram Bot
  API (not Telegram itself), run by telegram_emulator/serve.js, which patches its two
  differences from the real API that python-telegram-bot notices (see serve.js).
- `smtp_server`: aiosmtpd, a real SMTP server, with AUTH, keeping what it receives.
- `imap_server`: pymap's in-memory ("dict") backend, a real IMAP server, user
  demouser / demopass.
- `tls_cert`: a self-signed certificate for 127.0.0.1 (made with the openssl command),
  for `running_smtp` and `running_imap` with TLS.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

EMULATOR_DIR = Path(__file__).parent / "telegram_emulator"
NODE_INSTALL_HINT = "needs node and npm for the Telegram emulator: apt-get install nodejs npm"


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"{what} exited: {log.read_text()[-2000:]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{what} not listening within 60 s"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class TelegramEmulator:
    """The running EMULATOR and a client of it that plays the Telegram user."""

    url: str  # the Bot API base URL (gateway.telegram.baseUrl)
    token: str

    def _message(self, user_id: int, chat_id: int) -> dict[str, Any]:
        return {
            "botToken": self.token,
            "from": {"id": user_id, "is_bot": False, "first_name": "Ann", "username": "ann"},
            "chat": {"id": chat_id, "type": "private", "first_name": "Ann"},
            "date": int(time.time()),
        }

    def _post(self, route: str, message: dict[str, Any]) -> None:
        answer = httpx.post(self.url + route, json=message, timeout=10)
        assert answer.status_code == 200, answer.text

    def user_says(self, text: str, *, user_id: int, chat_id: int) -> None:
        """A user sends `text` to the bot from `chat_id` (a command when it starts with /)."""
        message = self._message(user_id, chat_id) | {"text": text}
        route = "/sendMessage"
        if text.startswith("/"):
            word = text.split(" ", 1)[0]
            message["entities"] = [{"offset": 0, "length": len(word), "type": "bot_command"}]
            route = "/sendCommand"
        self._post(route, message)

    def user_sends_voice(self, *, user_id: int, chat_id: int) -> None:
        """A user sends a voice note (no text): the emulator stores it, it has no file."""
        voice = {"file_id": "voice-1", "file_unique_id": "v1", "duration": 2}
        self._post("/sendMessage", self._message(user_id, chat_id) | {"voice": voice})

    def bot_messages(self, chat_id: int) -> list[str]:
        """The texts the bot sent to `chat_id` that this client has not read yet."""
        answer = httpx.post(
            self.url + "/getUpdates", json={"token": self.token, "chatId": chat_id}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        return [update["message"]["text"] for update in answer.json()["result"]]


@pytest.fixture
def telegram_emulator(tmp_path: Path) -> Iterator[TelegramEmulator]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(NODE_INSTALL_HINT)
    if not (EMULATOR_DIR / "node_modules" / "telegram-test-api").is_dir():
        # A fresh clone: install the pinned emulator from package-lock.json.
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=EMULATOR_DIR, check=True, timeout=300
        )
    port = free_port()
    log = tmp_path / "telegram-emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [node, "serve.js", str(port)], cwd=EMULATOR_DIR, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(port, proc, log, "the Telegram emulator")
        yield TelegramEmulator(url=f"http://127.0.0.1:{port}", token="4242:emulator-secret-token")
    finally:
        _stop(proc)


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: Message


@dataclass
class SmtpServer:
    host: str
    port: int
    user: str
    password: str
    received: list[ReceivedMail] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TlsCert:
    """A self-signed certificate for 127.0.0.1. Clients trust it through SSL_CERT_FILE,
    which OpenSSL reads in place of the system's CA bundle."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsCert:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command for a test certificate: apt-get install openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [openssl, *request, "-keyout", str(key), "-out", str(cert), *names],
        check=True,
        capture_output=True,
    )
    return TlsCert(cert=cert, key=key)


@pytest.fixture
def tls_cert(tls_files: TlsCert, monkeypatch: pytest.MonkeyPatch) -> TlsCert:
    """The test certificate, trusted by every client this test makes (and no other)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.cert))
    return tls_files


@contextmanager
def running_smtp(tls: str = "none", cert: TlsCert | None = None) -> Iterator[SmtpServer]:
    """aiosmtpd with AUTH on a free port: plain ("none"), STARTTLS required ("starttls")
    or TLS from the first byte ("tls"), with `cert`."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    server = SmtpServer(host="127.0.0.1", port=free_port(), user="bot", password="smtp-secret")

    class Keep:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            server.received.append(
                ReceivedMail(
                    sender=envelope.mail_from,
                    recipients=list(envelope.rcpt_tos),
                    message=message_from_bytes(envelope.original_content),
                )
            )
            return "250 OK"

    def authenticate(
        _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == server.user
            and data.password.decode() == server.password
        )
        if ok:
            server.logins.append(data.login.decode())
        # handled=False: aiosmtpd answers 535 itself (its default, True, answers nothing).
        return AuthResult(success=ok, handled=False)

    tls_options: dict[str, Any] = {}
    if tls == "starttls":
        assert cert is not None
        tls_options = {"tls_context": cert.server_context(), "require_starttls": True}
    elif tls == "tls":
        assert cert is not None
        # aiosmtpd counts only STARTTLS as TLS when it decides to offer AUTH; here every
        # byte is encrypted from the start, so AUTH may be offered as it is.
        tls_options = {"ssl_context": cert.server_context(), "auth_require_tls": False}
    else:
        # Plain SMTP on loopback: AUTH without TLS is allowed here, never on a real server.
        tls_options = {"auth_require_tls": False}
    controller = Controller(
        Keep(), hostname=server.host, port=server.port, authenticator=authenticate, **tls_options
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with running_smtp() as server:
        yield server


@dataclass
class ImapServer:
    host: str
    port: int
    user: str
    password: str


@contextmanager
def running_imap(log: Path, cert: TlsCert | None = None) -> Iterator[ImapServer]:
    """pymap's in-memory backend on a free port: plain, or offering STARTTLS with `cert`
    (pymap has no TLS-from-the-first-byte mode)."""
    # pymap has no __main__: its console script lies beside the interpreter.
    pymap = str(Path(sys.executable).parent / "pymap")
    port = free_port()
    tls = ["--cert", str(cert.cert), "--key", str(cert.key)] if cert else ["--no-tls"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [pymap, "--host", "127.0.0.1", "--port", str(port), *tls, "dict"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, log, "pymap")
        yield ImapServer(host="127.0.0.1", port=port, user="demouser", password="demopass")
    finally:
        _stop(proc)


@pytest.fixture
def imap_server(tmp_path: Path) -> Iterator[ImapServer]:
    with running_imap(tmp_path / "pymap.log") as server:
        yield server
