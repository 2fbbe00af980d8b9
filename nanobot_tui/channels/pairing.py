"""Pairing: how a stranger becomes an allowed sender.

A sender on no allow-list gets a pairing code instead of an answer; the owner confirms it
with `nanobot gateway pair CODE` (or in the app), which adds the sender to the paired
senders of that channel. Codes expire after `CODE_TTL_S`. Kept in
NANOBOT_HOME/gateway/pairing.json:

    {"pending": {CODE: {"channel", "sender", "chat", "at"}}, "paired": {CHANNEL: [SENDER]}}
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanobot_tui.channels.base import GatewayError
from nanobot_tui.channels.files import changing, gateway_dir, read_json

CODE_TTL_S = 15 * 60
# No 0/O or 1/I: a code is read off a phone and typed into a terminal.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


@dataclass(frozen=True)
class Paired:
    channel: str
    sender: str
    chat: str


class Pairing:
    def __init__(self, path: Path | None = None, ttl_s: float = CODE_TTL_S) -> None:
        self.path = path or gateway_dir() / "pairing.json"
        self.ttl_s = ttl_s

    def is_paired(self, channel: str, sender: str) -> bool:
        paired = read_json(self.path).get("paired") or {}
        return sender in (paired.get(channel) or [])

    def code_for(self, channel: str, sender: str, chat: str) -> str:
        """The sender's pending code: the one it was given while still valid, else new."""
        now = time.time()
        with changing(self.path) as data:
            pending = _fresh(data, now, self.ttl_s)
            for code, who in pending.items():
                if who["channel"] == channel and who["sender"] == sender:
                    return code
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            pending[code] = {"channel": channel, "sender": sender, "chat": chat, "at": now}
            return code

    def confirm(self, code: str) -> Paired:
        """Pair the sender who was given `code`; GatewayError for an unknown or expired
        code."""
        wanted = code.strip().upper()
        now = time.time()
        with changing(self.path) as data:
            raw = (data.get("pending") or {}).get(wanted)
            pending = _fresh(data, now, self.ttl_s)
            if wanted not in pending:
                why = "has expired" if raw else "is not a pending pairing code"
                raise GatewayError(f"pair: {code.strip()!r} {why} (ask the sender to write again)")
            who = pending.pop(wanted)
            paired = data.setdefault("paired", {})
            senders = paired.setdefault(who["channel"], [])
            if who["sender"] not in senders:
                senders.append(who["sender"])
            return Paired(who["channel"], who["sender"], who["chat"])

    def paired(self) -> dict[str, list[str]]:
        return dict(read_json(self.path).get("paired") or {})


def _fresh(data: dict[str, Any], now: float, ttl_s: float) -> dict[str, dict[str, Any]]:
    """The document's pending codes with the expired ones dropped."""
    pending = data.get("pending")
    kept = {
        code: who
        for code, who in (pending.items() if isinstance(pending, dict) else ())
        if isinstance(who, dict) and now - float(who.get("at") or 0) < ttl_s
    }
    data["pending"] = kept
    return kept
