"""What a chat may ask the gateway, and who may ask it.

    /status [RUN]     the runs that run now, or one run's status
    /runs             the latest runs, a line each
    /pause RUN        pause a run after its current step
    /resume RUN       resume it in a detached runner
    /cancel RUN       cancel it for good
    /watch RUN        get its milestones in this chat
    /unwatch RUN      stop them
    /ask TEXT         ask the agent, in this chat's own session (channels/ask.py)
    /start TEMPLATE   start a process from a named template (config gateway.templates)
    /voice on|off     Telegram: send this chat's messages also as voice notes
    /help             this list

Only an allowed sender gets an answer: one on its channel's allow-list in the config, or
one paired with `nanobot gateway pair CODE`. Anyone else gets a pairing code and nothing
is executed for them, not even /status. An email's subject or body may leave out the
slash ("status"). A Telegram voice note (channels/voice.py) is a command only when its
transcript clearly says one ("hold the latest task"); otherwise the answer is what was
heard. Either way it is handled as the typed command would be, stranger or not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nanobot_tui.channels.ask import AgentAsker
from nanobot_tui.channels.base import Inbound, Outbound
from nanobot_tui.channels.pairing import Pairing
from nanobot_tui.channels.subscriptions import Subscriptions, Target
from nanobot_tui.channels.voice import (
    INSTALL_HINT,
    SPOKEN_HELP,
    VoiceNote,
    VoiceReplies,
    command_from_speech,
    missing_engine,
)
from nanobot_tui.config import GatewayConfig
from nanobot_tui.errors import NanobotError
from nanobot_tui.text import printable

RUNS_SHOWN = 10
DEFAULT_K = 2  # `nanobot process`'s k without --k or a calibration
Handler = Callable[[Inbound, str], Awaitable[str]]

HELP = (
    "commands: /status [RUN], /runs, /pause RUN, /resume RUN, /cancel RUN, /watch RUN, "
    "/unwatch RUN, /ask TEXT, /start TEMPLATE, /voice on|off, /help"
)


class Commands:
    def __init__(
        self,
        config: GatewayConfig,
        pairing: Pairing | None = None,
        subscriptions: Subscriptions | None = None,
        *,
        asker: AgentAsker | None = None,
        wait_s: float = 30.0,
    ) -> None:
        self.config = config
        self.asker = asker or AgentAsker()
        self.pairing = pairing or Pairing()
        self.subscriptions = subscriptions or Subscriptions()
        self.voice_replies = VoiceReplies()
        self.wait_s = wait_s  # how long /pause and /cancel wait for the runner to stop
        self.handlers: dict[str, tuple[Handler, bool]] = {  # name: (handler, needs an argument)
            "status": (self._status, False),
            "runs": (self._runs, False),
            "pause": (self._pause, True),
            "resume": (self._resume, True),
            "cancel": (self._cancel, True),
            "watch": (self._watch, True),
            "unwatch": (self._unwatch, True),
            "ask": (self._ask, True),
            "start": (self._start, True),
            "voice": (self._voice, True),
            "help": (self._help, False),
        }

    def allowed(self, channel: str, sender: str) -> bool:
        section = getattr(self.config, channel) if channel in ("telegram", "email") else None
        listed = section.allow if section is not None else []
        return sender in listed or self.pairing.is_paired(channel, sender)

    async def handle(self, message: Inbound) -> Outbound:
        """The answer to one message (a stranger's: its pairing code)."""
        allowed = await asyncio.to_thread(self.allowed, message.channel, message.sender)
        if not allowed:
            code = await asyncio.to_thread(
                self.pairing.code_for, message.channel, message.sender, message.chat
            )
            text = (
                f"you are not paired with this nanobot: nothing was done. Pairing code: {code} "
                f"(the owner runs `nanobot gateway pair {code}`)"
            )
        else:
            text = await self.answer(message)
        return Outbound(
            message.channel,
            message.chat,
            text,
            subject="nanobot" if message.channel == "email" else None,
            thread=message.thread,
        )

    async def answer(self, message: Inbound) -> str:
        """An allowed sender's command, carried out; its answer (errors as one line)."""
        if isinstance(message, VoiceNote):
            return await self._spoken(message)
        words = message.text.strip().split(None, 1)
        if not words:
            return HELP
        name = words[0].lstrip("/").split("@", 1)[0].lower()  # Telegram: /status@botname
        arg = words[1].strip() if len(words) > 1 else ""
        if name not in self.handlers:
            return f"unknown command {printable(words[0])!r}; {HELP}"
        handler, needs_arg = self.handlers[name]
        if needs_arg and not arg:
            return f"/{name} needs an argument; {HELP}"
        try:
            return await handler(message, arg)
        except NanobotError as exc:
            return f"/{name}: {exc}"

    async def _spoken(self, note: VoiceNote) -> str:
        """A voice note's answer: the command it clearly says, carried out, or what was
        heard; never a guess."""
        if note.trouble:
            return note.trouble
        heard = printable(note.text)
        if not heard:
            return f"heard nothing in that voice note; {SPOKEN_HELP}"
        try:
            command = await asyncio.to_thread(
                command_from_speech,
                note.text,
                latest_run=_latest_run_id,
                templates=list(self.config.templates),
            )
        except NanobotError as exc:
            return f'heard "{heard}": {exc}'
        if command is None:
            return f'heard "{heard}": not a command, so nothing was done; {SPOKEN_HELP}'
        typed = Inbound(note.channel, note.sender, note.chat, command, note.at, note.thread)
        return f'heard "{heard}" ({command}): {await self.answer(typed)}'

    # --- the commands ------------------------------------------------------------------

    async def _help(self, message: Inbound, arg: str) -> str:
        return HELP

    async def _status(self, message: Inbound, arg: str) -> str:
        from nanobot_tui.engine.runs.control import run_status
        from nanobot_tui.engine.runs.store import list_runs

        if arg:
            st = await asyncio.to_thread(run_status, arg)
            share = 100 * st.steps_done / st.steps_total if st.steps_total else 0.0
            reason = f" ({st.reason})" if st.reason else ""
            return (
                f"run {st.run_id}: {st.status}{reason}; {st.steps_done:,}/{st.steps_total:,} "
                f"steps ({share:.0f}%), {st.errors:,} errors; {st.domain} with {st.sampler}"
            )
        runs = await asyncio.to_thread(list_runs)
        running = [r for r in runs if r.get("status") == "running"]
        if not running:
            return f"no run is running ({len(runs):,} runs in all; /runs lists them)"
        return f"{len(running)} running: " + "; ".join(_run_line(r) for r in running)

    async def _runs(self, message: Inbound, arg: str) -> str:
        from nanobot_tui.engine.runs.store import list_runs

        runs = await asyncio.to_thread(list_runs)
        if not runs:
            return "no runs yet"
        latest = runs[-RUNS_SHOWN:]
        more = f" (the latest {len(latest)} of {len(runs)})" if len(runs) > len(latest) else ""
        return f"runs{more}:\n" + "\n".join(_run_line(r) for r in latest)

    async def _pause(self, message: Inbound, arg: str) -> str:
        from nanobot_tui.engine.runs.control import pause_run

        return await asyncio.to_thread(pause_run, arg, wait=self.wait_s)

    async def _cancel(self, message: Inbound, arg: str) -> str:
        from nanobot_tui.engine.runs.control import cancel_run

        return await asyncio.to_thread(cancel_run, arg, wait=self.wait_s)

    async def _resume(self, message: Inbound, arg: str) -> str:
        from nanobot_tui.engine.runs.control import resume_detached

        line = await asyncio.to_thread(resume_detached, arg)
        return line if line.startswith("run ") else f"run {arg}: resumed: {line}"

    async def _watch(self, message: Inbound, arg: str) -> str:
        rid = await asyncio.to_thread(_whole_id, arg)
        target = Target(message.channel, message.chat)
        new = await asyncio.to_thread(self.subscriptions.subscribe, rid, target)
        return f"watching run {rid}" if new else f"already watching run {rid}"

    async def _unwatch(self, message: Inbound, arg: str) -> str:
        rid = await asyncio.to_thread(_whole_id, arg)
        target = Target(message.channel, message.chat)
        gone = await asyncio.to_thread(self.subscriptions.unsubscribe, rid, target)
        return f"no longer watching run {rid}" if gone else f"this chat was not watching run {rid}"

    async def _ask(self, message: Inbound, arg: str) -> str:
        return await self.asker.ask(message.channel, message.chat, arg)

    async def _start(self, message: Inbound, arg: str) -> str:
        name = arg.split()[0]
        template = self.config.templates.get(name)
        if template is None:
            known = ", ".join(sorted(self.config.templates)) or "none in the config"
            return f"/start: no template {name!r} (templates: {known})"
        return await asyncio.to_thread(start_template, name, self.config)

    async def _voice(self, message: Inbound, arg: str) -> str:
        on = {"on": True, "off": False}.get(arg.lower())
        if on is None:
            return f"/voice: say on or off, not {printable(arg)!r}"
        if message.channel != "telegram":
            return "/voice: spoken replies are sent on Telegram only"
        missing = missing_engine() if on else None
        if missing is not None:
            return f"/voice: {INSTALL_HINT} ({missing} is not installed)"
        await asyncio.to_thread(self.voice_replies.set, message.channel, message.chat, on)
        return "replies here come also as voice notes" if on else "replies here are text only"


def _latest_run_id() -> str:
    """The newest run's id (ids start with their start time); RunNotFound when none."""
    from nanobot_tui.engine.runs.store import RunNotFound
    from nanobot_tui.engine.runs.store.places import all_run_ids

    ids = all_run_ids()
    if not ids:
        raise RunNotFound("there is no run yet")
    return ids[-1]


def _whole_id(run_id: str) -> str:
    """A run's whole id from a unique prefix; RunNotFound otherwise."""
    from nanobot_tui.engine.runs.store import resolve_run_id

    return resolve_run_id(run_id)


def _run_line(run: dict[str, Any]) -> str:
    done, total = int(run.get("steps_done") or 0), int(run.get("steps_total") or 0)
    share = f" {100 * done / total:.0f}%" if total else ""
    return f"{run['id']} {run.get('status', '?')} {done:,}/{total:,}{share}"


def start_template(name: str, config: GatewayConfig) -> str:
    """Start the process the template `name` describes in a detached runner (blocking);
    the line saying so. NanobotError when it cannot start."""
    from nanobot_tui.engine.runs.control import start_detached
    from nanobot_tui.engine.work.process import prepare

    template = config.templates[name]
    started = time.perf_counter()
    plan = prepare(
        template.task,
        template.on.expanduser(),
        template.recipe,
        sampler=template.sampler,
        k=DEFAULT_K,
    )
    run_id = start_detached(plan.spec)
    return (
        f"started {name}: run {run_id} ({plan.line()}) in "
        f"{time.perf_counter() - started:.1f} s; /watch {run_id} to follow it"
    )
