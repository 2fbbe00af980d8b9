"""`nanobot doctor`'s line per channel, against real local servers: the Telegram Bot API
EMULATOR (telegram-test-api, conftest.py), aiosmtpd with AUTH and pymap. A channel that
answers is "ok", one that does not says why in one line, and no line, warning or JSON
holds the bot token or the mail password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanobot_tui.cli.main import main
from nanobot_tui.config import GatewayConfig
from nanobot_tui.setup.doctor import check_channels
from tests.channels.conftest import ImapServer, TelegramEmulator
from tests.channels.test_cross_channel import delivering_smtp
from tests.conftest import free_port


def email_section(imap: ImapServer, smtp_port: int, password: str) -> dict[str, object]:
    return {
        "enabled": True,
        "smtpHost": "127.0.0.1",
        "smtpPort": smtp_port,
        "smtpTls": "none",
        "imapHost": imap.host,
        "imapPort": imap.port,
        "imapTls": "none",
        "user": imap.user,
        "password": password,
        "fromAddr": "nanobot@example.org",
    }


def test_each_enabled_channel_is_reached_in_one_line(
    telegram_emulator: TelegramEmulator, imap_server: ImapServer
) -> None:
    with delivering_smtp(imap_server, imap_server) as smtp:
        config = GatewayConfig.model_validate(
            {
                "telegram": {"enabled": True, "token": telegram_emulator.token,
                             "baseUrl": telegram_emulator.url},
                "email": email_section(imap_server, smtp.port, imap_server.password),
            }
        )  # fmt: skip
        checked = check_channels(config)
    assert list(checked) == ["telegram", "email", "web"]
    assert checked["telegram"] == {
        "ok": True,
        "line": f"telegram: reachable at {telegram_emulator.url} as @"
        + checked["telegram"]["line"].rsplit("@", 1)[1],
    }
    assert checked["telegram"]["line"].rsplit("@", 1)[1]  # the emulator's bot name
    assert checked["email"] == {
        "ok": True,
        "line": f"email: SMTP 127.0.0.1:{smtp.port} ok (logged in); "
        f"IMAP {imap_server.host}:{imap_server.port} ok (logged in)",
    }
    assert checked["web"]["line"].startswith("web: nothing to reach; `nanobot web` serves on ")
    assert all("\n" not in entry["line"] for entry in checked.values())


def test_unreachable_channels_say_why_and_never_show_their_secrets(
    nanobot_home: Path, imap_server: ImapServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "123456:doctor-secret-token"
    password = "wrong-secret-password"
    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "gateway": {
            "telegram": {"enabled": True, "token": token, "baseUrl": dead},
            "email": email_section(imap_server, free_port(), password),  # no SMTP there
        }
    }
    nanobot_home.mkdir(parents=True, exist_ok=True)
    (nanobot_home / "config.json").write_text(json.dumps(config))
    (nanobot_home / "config.json").chmod(0o600)

    main(["doctor", "--json"])
    out = capsys.readouterr().out
    assert token not in out and password not in out
    channels = json.loads(out)["channels"]
    assert channels["telegram"]["ok"] is False
    assert channels["telegram"]["line"].startswith(f"telegram: getMe at {dead} failed: ")
    assert channels["email"]["ok"] is False
    line = channels["email"]["line"]
    assert line.startswith("email: SMTP 127.0.0.1:") and " failed: " in line
    assert f"; IMAP {imap_server.host}:{imap_server.port} failed: " in line  # wrong password
    assert channels["telegram"]["line"] in json.loads(out)["warnings"]

    main(["doctor"])
    text = capsys.readouterr().out
    assert token not in text and password not in text
    section = text.split("\nChannels (nanobot gateway)\n", 1)[1].split("\n\n", 1)[0]
    assert [ln.split()[:2] for ln in section.splitlines()] == [
        ["FAIL", "telegram:"],
        ["FAIL", "email:"],
        ["ok", "web:"],
    ]


def test_with_no_channel_enabled_doctor_says_so(
    nanobot_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["doctor"])
    text = capsys.readouterr().out
    section = text.split("\nChannels (nanobot gateway)\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines()[0].startswith("  none enabled: gateway.telegram.enabled")
    assert section.splitlines()[1].startswith("  ok   web: nothing to reach")
