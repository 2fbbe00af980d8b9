"""Which chats watch which runs: `/watch RUN` from a chat, or `nanobot run ... --notify
telegram:CHAT,email:ADDR`. Kept in NANOBOT_HOME/gateway/subscriptions.json, with what each
run has reported so far (so a restarted gateway does not repeat a milestone):

    {"runs": {RUN_ID: {"targets": [[CHANNEL, CHAT], ...], "sent": {...}}}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanobot_tui.channels.base import GatewayError
from nanobot_tui.channels.files import changing, gateway_dir, read_json

NOTIFY_CHANNELS = ("telegram", "email")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
_TELEGRAM_CHAT = re.compile(r"^(-?\d+|@[A-Za-z]\w{3,})$")


@dataclass(frozen=True, slots=True)
class Target:
    channel: str
    chat: str

    def __str__(self) -> str:
        return f"{self.channel}:{self.chat}"


def parse_notify(text: str) -> tuple[Target, ...]:
    """`telegram:CHAT,email:ADDR` as targets; GatewayError naming the part that is wrong."""
    targets: list[Target] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise GatewayError(f"--notify: an empty target in {text!r}")
        channel, sep, chat = part.partition(":")
        channel, chat = channel.strip().lower(), chat.strip()
        if not sep or not chat:
            raise GatewayError(
                f"--notify: {part!r} is not CHANNEL:ADDRESS (telegram:CHAT_ID or email:ADDR)"
            )
        if channel not in NOTIFY_CHANNELS:
            raise GatewayError(
                f"--notify: unknown channel {channel!r} in {part!r} "
                f"(one of {', '.join(NOTIFY_CHANNELS)})"
            )
        if channel == "email":
            if not _EMAIL.match(chat):
                raise GatewayError(f"--notify: {chat!r} is not an email address")
            chat = chat.lower()
        elif not _TELEGRAM_CHAT.match(chat):
            raise GatewayError(
                f"--notify: {chat!r} is not a Telegram chat (a number such as 123456789, "
                "or @channelname)"
            )
        target = Target(channel, chat)
        if target not in targets:
            targets.append(target)
    return tuple(targets)


class Subscriptions:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or gateway_dir() / "subscriptions.json"

    def subscribe(self, run_id: str, target: Target) -> bool:
        """Subscribe `target` to the run; False when it already was."""
        with changing(self.path) as data:
            entry = data.setdefault("runs", {}).setdefault(run_id, {"targets": [], "sent": {}})
            pair = [target.channel, target.chat]
            if pair in entry["targets"]:
                return False
            entry["targets"].append(pair)
            return True

    def unsubscribe(self, run_id: str, target: Target) -> bool:
        """Unsubscribe; False when it was not subscribed. A run nobody watches is dropped."""
        with changing(self.path) as data:
            runs = data.setdefault("runs", {})
            entry = runs.get(run_id)
            pair = [target.channel, target.chat]
            if not entry or pair not in entry["targets"]:
                return False
            entry["targets"].remove(pair)
            if not entry["targets"]:
                del runs[run_id]
            return True

    def watched(self) -> dict[str, dict[str, Any]]:
        """Every watched run: {run_id: {"targets": [Target...], "sent": {...}}}."""
        runs = read_json(self.path).get("runs") or {}
        return {
            rid: {
                "targets": [Target(str(c), str(a)) for c, a in entry.get("targets") or []],
                "sent": dict(entry.get("sent") or {}),
            }
            for rid, entry in runs.items()
            if isinstance(entry, dict)
        }

    def targets(self, run_id: str) -> list[Target]:
        entry = self.watched().get(run_id)
        return entry["targets"] if entry else []

    def forget(self, run_id: str) -> None:
        """Drop the run and everyone's subscription to it."""
        with changing(self.path) as data:
            (data.get("runs") or {}).pop(run_id, None)

    def record_sent(self, run_id: str, sent: dict[str, Any]) -> None:
        """Keep what the run has reported so far (milestones.py decides what it means)."""
        with changing(self.path) as data:
            entry = (data.get("runs") or {}).get(run_id)
            if entry is not None:
                entry["sent"] = sent
