"""A watched run's milestones, read from its store and sent to the chats that watch it.

The watcher looks at every watched run every `poll_s` seconds and says, once each:
started; every `every_percent` % of its steps (several crossed between two looks make one
message: the latest); every `every_hours` hours while it runs with no other news; an
anomaly (the learning loops' line in meta `learning.anomaly`); stopped or paused (and
resumed); finished (completed, failed or cancelled) with the root summary. An email
target's finished message carries the exported tree (`RunStore.export_json`). What was
said is kept with the subscription, so a restarted gateway says nothing twice; the bus
rate-limits each chat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanobot_tui.channels.base import Outbound
from nanobot_tui.channels.files import gateway_dir
from nanobot_tui.channels.subscriptions import Subscriptions, Target
from nanobot_tui.engine.runs.store import RunNotFound, RunStatus, RunStore, StoreError
from nanobot_tui.engine.runs.store.create import NOT_STARTED
from nanobot_tui.text import printable

log = logging.getLogger(__name__)

FINISHED = ("completed", "failed", "cancelled")
HALTED = ("paused", "stopped")


@dataclass(frozen=True, slots=True)
class Milestone:
    run_id: str
    kind: (
        str  # started | progress | still-running | anomaly | paused | stopped | resumed | finished
    )
    text: str
    store_updated: float | None = None  # the store's last write when it was read
    export: Path | None = None  # finished: the exported tree, for email targets


@dataclass(frozen=True, slots=True)
class Reading:
    """What one look at a run's store gives."""

    status: RunStatus
    anomaly: str | None
    summary: str | None


def read_run(run_id: str) -> Reading:
    """A fresh look at the run (blocking: call it in a thread); StoreError as
    RunStore.open raises."""
    with RunStore.open(run_id) as store:
        status = store.status()
        meta = store.meta()
        learning = meta.get("learning")
        anomaly = learning.get("anomaly") if isinstance(learning, dict) else None
        summary = None
        if status.finished:
            summary = _root_summary(store, meta, status.steps_done)
    return Reading(status, str(anomaly) if anomaly else None, summary)


def _root_summary(store: RunStore, meta: dict[str, Any], steps_done: int) -> str | None:
    if "summary" in meta:  # a process's summary (engine/work/summaries.py)
        from nanobot_tui.engine.work.summaries import stored_summary

        return stored_summary(meta, steps_done)
    try:
        text = store.root().summary
    except StoreError:
        return None
    return " ".join(printable(text).split()) if text else None


def export_tree(run_id: str) -> Path:
    """The run's tree as `nanobot export` writes it, under NANOBOT_HOME/gateway/exports/."""
    from nanobot_tui import paths

    folder = paths.ensure(gateway_dir() / "exports")
    path = folder / f"{run_id}.json"
    with RunStore.open(run_id) as store:
        store.export_json(path)
    return path


def _progress(st: RunStatus) -> str:
    # Floored, as the milestone marks are: 69.6 % is "69%", never the 70 % mark early.
    share = 100 * st.steps_done // st.steps_total if st.steps_total else 0
    errors = f", {st.errors:,} errors" if st.errors else ""
    return f"{st.steps_done:,}/{st.steps_total:,} steps ({share}%){errors}"


def next_milestones(
    reading: Reading, sent: dict[str, Any], now: float, every_percent: int, every_hours: float
) -> tuple[list[Milestone], dict[str, Any]]:
    """The milestones a reading brings given what was `sent` before, and the new `sent`."""
    st = reading.status
    rid = st.run_id
    new = dict(sent)
    out: list[Milestone] = []

    def say(kind: str, text: str) -> None:
        out.append(Milestone(rid, kind, f"run {rid}: {text}", st.updated))

    if new.get("finished") or (st.status == "stopped" and st.reason == NOT_STARTED):
        return out, new  # a run its runner has not picked up yet has nothing to say
    running = st.status == "running"
    if running and not new.get("started"):
        say("started", f"started: {st.domain} with {st.sampler}, k = {st.k}; {_progress(st)}")
        new["started"] = True
        new["progress_at"] = now
    elif running and new.get("halted"):
        say("resumed", f"resumed; {_progress(st)}")
        new["progress_at"] = now
    if running:
        new["halted"] = None
    if reading.anomaly and not new.get("anomaly"):
        say("anomaly", f"anomaly: {printable(reading.anomaly)}")
        new["anomaly"] = True
    if st.status in FINISHED:
        reason = f" ({st.reason})" if st.reason else ""
        summary = f"; summary: {reading.summary}" if reading.summary else ""
        say("finished", f"{st.status}{reason}: {_progress(st)}{summary}")
        new["finished"] = True
        return out, new
    if st.steps_total:
        mark = (100 * st.steps_done // st.steps_total) // every_percent * every_percent
        if 0 < mark < 100 and mark > int(new.get("percent") or 0):
            if running:  # a halted run's share is in its paused/stopped line
                say("progress", _progress(st))
            new["percent"] = mark
            new["progress_at"] = now
    if running and now - float(new.get("progress_at", now)) >= every_hours * 3600:
        say("still-running", f"still running: {_progress(st)}")
        new["progress_at"] = now
    if st.status in HALTED and new.get("halted") != st.status:
        reason = f" ({st.reason})" if st.reason else ""
        say(st.status, f"{st.status}{reason}: {_progress(st)}")
        new["halted"] = st.status
    return out, new


def outbound_for(milestone: Milestone, target: Target) -> Outbound:
    """The message a target gets: an email keeps one thread per run, and its finished
    message carries the exported tree."""
    if target.channel != "email":
        return Outbound(target.channel, target.chat, milestone.text)
    attachments = (milestone.export,) if milestone.export is not None else ()
    return Outbound(
        target.channel,
        target.chat,
        milestone.text,
        subject=f"nanobot run {milestone.run_id}: {milestone.kind}",
        attachments=attachments,
        thread=f"run:{milestone.run_id}",
    )


class MilestoneWatcher:
    def __init__(
        self,
        subscriptions: Subscriptions,
        publish: Callable[[Outbound], None],
        *,
        every_percent: int = 10,
        every_hours: float = 2.0,
        poll_s: float = 1.0,
    ) -> None:
        self.subscriptions = subscriptions
        self.publish = publish
        self.every_percent = every_percent
        self.every_hours = every_hours
        self.poll_s = poll_s

    async def run(self) -> None:
        """Look at the watched runs every poll_s seconds, until cancelled."""
        while True:
            try:
                await self.poll_once()
            except Exception:  # a run that cannot be read must not stop the others' news
                log.exception("milestones: a look at the watched runs failed")
            await asyncio.sleep(self.poll_s)

    async def poll_once(self) -> list[Milestone]:
        """One look at every watched run: publish what is new; return it."""
        watched = await asyncio.to_thread(self.subscriptions.watched)
        said: list[Milestone] = []
        for run_id, entry in watched.items():
            if entry["sent"].get("finished") or not entry["targets"]:
                continue
            try:
                reading = await asyncio.to_thread(read_run, run_id)
            except RunNotFound:  # removed (`nanobot runs rm`): nothing more will come
                await asyncio.to_thread(self.subscriptions.forget, run_id)
                continue
            except StoreError as exc:
                log.warning("milestones: run %s: %s", run_id, exc)
                continue
            milestones, sent = next_milestones(
                reading, entry["sent"], time.time(), self.every_percent, self.every_hours
            )
            if not milestones:
                continue
            targets: list[Target] = entry["targets"]
            if any(m.kind == "finished" for m in milestones) and any(
                t.channel == "email" for t in targets
            ):
                milestones = [await self._with_export(m) for m in milestones]
            await asyncio.to_thread(self.subscriptions.record_sent, run_id, sent)
            for milestone in milestones:
                for target in targets:
                    self.publish(outbound_for(milestone, target))
            said += milestones
        return said

    async def _with_export(self, milestone: Milestone) -> Milestone:
        if milestone.kind != "finished":
            return milestone
        try:
            path = await asyncio.to_thread(export_tree, milestone.run_id)
        except (StoreError, OSError) as exc:
            log.warning("milestones: run %s: no export: %s", milestone.run_id, exc)
            return milestone
        return Milestone(milestone.run_id, milestone.kind, milestone.text,
                         milestone.store_updated, path)  # fmt: skip
