"""The gateway: the enabled channels over one bus, commands answered, milestones sent.

`Gateway.run` starts the bus's dispatcher, one supervisor per channel, the command
handler and the milestone watcher, until cancelled. A channel whose `run` raises is marked
failed (with its one-line reason) and started again after a backoff that doubles up to
`restart_backoff_max_s`; the other channels go on. Each channel's state (starting,
running, failed: waiting to be restarted, stopped), its last error (kept after a restart),
its messages in and out with the time of the last, and the bus's counters are written to
NANOBOT_HOME/gateway/state.json, atomically, on every change of state and at most
STATE_GAP_S after a message (a busy bus does not write a file per message), for
`nanobot gateway status` and the app's Channels screen.

One gateway at a time: it holds an flock on NANOBOT_HOME/gateway/gateway.pid, which holds
its pid. `start_detached` starts one in a session of its own (as detached runners are:
engine/runs/control.py), its output appended to gateway/gateway.log; `stop` sends it
SIGTERM and waits until the lock is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.channels.ask import AgentAsker
from nanobot_tui.channels.base import Channel, ChannelError, GatewayError, Inbound
from nanobot_tui.channels.bus import Bus
from nanobot_tui.channels.commands import Commands
from nanobot_tui.channels.files import gateway_dir, read_json
from nanobot_tui.channels.milestones import MilestoneWatcher
from nanobot_tui.channels.pairing import Pairing
from nanobot_tui.channels.subscriptions import Subscriptions
from nanobot_tui.config import GatewayConfig
from nanobot_tui.errors import NanobotError
from nanobot_tui.pidlock import LockHeld, PidLock, holder

log = logging.getLogger(__name__)

STATE_EVERY_S = 5.0  # state.json is rewritten at least this often ("updated")
STATE_GAP_S = 0.25  # and at most this long after a message came or went
# What each configured channel is: its module under nanobot_tui/channels/ and class.
CHANNEL_CLASSES = {"telegram": "TelegramChannel", "email": "EmailChannel"}


def state_path() -> Path:
    return gateway_dir() / "state.json"


def pid_path() -> Path:
    return gateway_dir() / "gateway.pid"


def log_path() -> Path:
    return gateway_dir() / "gateway.log"


@dataclass
class ChannelState:
    state: str = "starting"  # starting | running | failed | stopped
    reason: str | None = None  # failed: why, in one line; stopped: why, if not asked
    restarts: int = 0
    since: float = 0.0
    last_error: str | None = None  # the latest failure's reason, kept once restarted
    restart_at: float | None = None  # failed: when it is started again (time.time())

    def line(self, name: str) -> str:
        reason = f": {self.reason}" if self.reason else ""
        restarts = f" ({self.restarts} restarts)" if self.restarts else ""
        return f"{name}: {self.state}{reason}{restarts}"


def channels_from_config(config: GatewayConfig) -> list[Channel]:
    """The channels the config enables, secrets from the environment where set."""
    config = config.with_env_secrets()
    out: list[Channel] = []
    for name, class_name in CHANNEL_CLASSES.items():
        section = getattr(config, name)
        if section.enabled:
            try:
                module = importlib.import_module(f"nanobot_tui.channels.{name}")
            except ImportError as exc:  # the channel's library is an optional extra
                raise GatewayError(
                    f"the {name} channel needs the optional 'gateway' extra ({exc.name} is "
                    "not installed): pip install 'nanobot-tui[gateway]'"
                ) from None
            out.append(getattr(module, class_name)(section))
    return out


class Gateway:
    def __init__(
        self,
        channels: Sequence[Channel],
        config: GatewayConfig,
        *,
        poll_s: float = 1.0,
        restart_backoff_s: float = 1.0,
        restart_backoff_max_s: float = 60.0,
        send_retries: int = 4,
        send_backoff_s: float = 1.0,
        write_state: bool = True,
        on_state: Callable[[str, ChannelState], None] | None = None,
        asker: AgentAsker | None = None,
    ) -> None:
        self.config = config
        self.channels = {c.name: c for c in channels}
        self.bus = Bus(
            self.channels,
            rate_limit=config.rate_limit_per_minute,
            retries=send_retries,
            backoff_s=send_backoff_s,
        )
        self.subscriptions = Subscriptions()
        self.asker = asker or AgentAsker()
        self.commands = Commands(config, Pairing(), self.subscriptions, asker=self.asker)
        self.milestones = MilestoneWatcher(
            self.subscriptions,
            self.bus.publish,
            every_percent=config.milestone_every_percent,
            every_hours=config.milestone_every_hours,
            poll_s=poll_s,
        )
        self.restart_backoff_s = restart_backoff_s
        self.restart_backoff_max_s = restart_backoff_max_s
        self.write_state = write_state
        self.on_state = on_state
        self.states = {name: ChannelState(since=time.time()) for name in self.channels}
        self.started = time.time()
        self._answering: set[asyncio.Task[None]] = set()
        self._dirty = asyncio.Event()
        self.bus.on_change = self._dirty.set
        secrets_ = config.with_env_secrets()
        self._secrets = [s for s in (secrets_.telegram.token, secrets_.email.password) if s]

    async def run(self) -> None:
        """Run everything until cancelled; every channel ends stopped."""
        tasks = [
            asyncio.create_task(self.bus.dispatch(), name="bus"),
            asyncio.create_task(self._serve_commands(), name="commands"),
            asyncio.create_task(self.milestones.run(), name="milestones"),
            asyncio.create_task(self._keep_state(), name="state"),
            *(asyncio.create_task(self._supervise(c), name=c.name) for c in self.channels.values()),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in (*tasks, *self._answering):
                task.cancel()
            await asyncio.gather(*tasks, *self._answering, return_exceptions=True)
            for name, st in self.states.items():
                if st.state != "stopped":
                    self._set(name, "stopped", None)
            self._save()
            await self.asker.close()

    # --- channels --------------------------------------------------------------------

    def restart_delay(self, attempt: int) -> float:
        return float(min(self.restart_backoff_s * 2 ** (attempt - 1), self.restart_backoff_max_s))

    async def _supervise(self, channel: Channel) -> None:
        attempt = 0
        while True:
            self._set(channel.name, "starting", None)
            began = time.monotonic()
            task = asyncio.ensure_future(channel.run(self.bus.deliver))
            await asyncio.sleep(0)  # let it start: one that fails at once is not "running"
            try:
                if not task.done():
                    self._set(channel.name, "running", None)
                await task
            except asyncio.CancelledError:
                task.cancel()
                raise
            except Exception as exc:
                reason = str(exc) if isinstance(exc, NanobotError) else repr(exc)
                if not isinstance(exc, ChannelError):
                    log.exception("channel %s crashed", channel.name)
                # One that ran a while before failing starts its backoff over.
                attempt = (
                    1 if time.monotonic() - began > self.restart_backoff_max_s else attempt + 1
                )
                delay = self.restart_delay(attempt)
                st = self.states[channel.name]
                st.restarts += 1
                st.last_error = self._scrub(reason)
                st.restart_at = time.time() + delay
                self._set(channel.name, "failed", st.last_error)
                await asyncio.sleep(delay)
                st.restart_at = None
                continue
            self._set(channel.name, "stopped", "its receiving ended")
            return

    def _scrub(self, text: str) -> str:
        """A reason without the secrets in it (a URL with a bot token, say)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _set(self, name: str, state: str, reason: str | None) -> None:
        st = self.states[name]
        st.state, st.reason, st.since = state, reason, time.time()
        log.debug("%s", st.line(name))
        if self.on_state is not None:
            self.on_state(name, st)
        self._save()

    # --- commands --------------------------------------------------------------------

    async def _serve_commands(self) -> None:
        while True:
            message = await self.bus.inbound.get()
            # Each its own task: a /pause that waits for its runner holds up no one.
            task = asyncio.create_task(self._answer(message))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, message: Inbound) -> None:
        try:
            reply = await self.commands.handle(message)
        except Exception:
            log.exception("%s: answering %s failed", message.channel, message.sender)
            return
        self.bus.publish(reply)

    # --- state -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "channels": {name: self._channel_entry(name) for name in self.states},
            "bus": self.bus.counters.to_dict(),
        }

    def _channel_entry(self, name: str) -> dict[str, Any]:
        entry = asdict(self.states[name])
        traffic = self.bus.traffic.get(name)
        if traffic is not None:
            entry.update(traffic.to_dict())
            if traffic.last_send_error:
                entry["last_send_error"] = self._scrub(traffic.last_send_error)
        return entry

    def _save(self) -> None:
        if not self.write_state:
            return
        try:
            paths.ensure(gateway_dir())
            write_atomic(state_path(), json.dumps(self.snapshot(), indent=1) + "\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", state_path(), exc)

    async def _keep_state(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), STATE_EVERY_S)
                await asyncio.sleep(STATE_GAP_S)  # the messages of a burst: one write
            self._dirty.clear()
            self._save()


# --- one gateway at a time, detached or not ---------------------------------------------


class GatewayLock(PidLock):
    """flock on gateway.pid (pidlock.py), which holds the holder's pid."""

    def __init__(self) -> None:
        super().__init__(pid_path())

    def acquire(self, patience: float = 0.0) -> None:
        paths.ensure(gateway_dir())
        try:
            super().acquire(patience)
        except LockHeld as exc:
            raise GatewayError(
                f"a gateway is already running (pid {exc.pid if exc.pid > 0 else '?'}); "
                "`nanobot gateway stop` stops it"
            ) from None


def running_pid() -> int | None:
    """The running gateway's pid (-1: its pid file does not say); None when none holds
    the lock."""
    return holder(pid_path())


def read_state() -> dict[str, Any]:
    """The gateway's state for the app and `nanobot gateway status`: state.json with
    "running" (a gateway holds the lock) and, when none does, every channel stopped."""
    state = read_json(state_path())
    pid = running_pid()
    state["running"] = pid is not None
    state["pid"] = pid
    if pid is None:
        for st in (state.get("channels") or {}).values():
            if isinstance(st, dict) and st.get("state") != "stopped":
                st["state"], st["reason"] = "stopped", "the gateway is not running"
    return state


def start_detached(timeout: float = 30.0) -> tuple[int, Path]:
    """Start `nanobot gateway` in a session of its own; wait until it holds the lock.
    Returns (pid, log path); GatewayError with its last log line when it did not start."""
    if running_pid() is not None:
        raise GatewayError(f"a gateway is already running (pid {running_pid()})")
    paths.ensure(gateway_dir())
    log_file = log_path()
    with open(log_file, "ab") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} detached gateway\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "nanobot_tui", "gateway"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GatewayError(f"the detached gateway did not start: {_last_line(log_file)}")
        if running_pid() == proc.pid:
            return proc.pid, log_file
        time.sleep(0.02)
    raise GatewayError(f"the gateway did not start within {timeout:.0f} s (see {log_file})")


def stop(wait: float = 30.0) -> str:
    """Stop the running gateway (SIGTERM) and wait until it let go of its lock."""
    pid = running_pid()
    if pid is None:
        return "no gateway is running"
    if pid <= 0:
        raise GatewayError(f"a gateway holds {pid_path()} but its pid cannot be read")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if running_pid() is None:
            return f"gateway (pid {pid}) stopped"
        time.sleep(0.05)
    raise GatewayError(f"asked the gateway (pid {pid}) to stop, but it has not within {wait:g} s")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(an empty log)"


async def serve(gateway: Gateway) -> None:
    """Run `gateway` under the lock until SIGTERM or SIGINT (the foreground command and
    the detached process both)."""
    lock = GatewayLock()
    lock.acquire()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(gateway.run())
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        lock.release()
