"""The process tree pane: the watched run's tree of nodes, live, from its run store.

The pane reads the store of one run (the app's `attached_run`, else the most recent run)
the way an attached terminal would: through the store's read-only connection, safe while
a runner writes (SQLite WAL), whether the runner is this process or a detached one.

A million-step run is a tree of depth ~6 with fan-out 10, so nothing is read or built
that cannot be seen:

- children load when their parent is expanded, 200 at a time, with a "… more" node that
  loads the next page when chosen;
- a poll (chained: the next is scheduled when the last one landed, at most four a
  second, none while another screen covers the pane) reads the run's status and the rows
  of the nodes on screen only, in a thread worker; labels that changed are set IN PLACE
  (`TreeNode.set_label` repaints one line; adding or removing nodes would re-walk the
  tree), so a poll costs a few dozen indexed reads and a few repainted lines, whatever
  the size of the run. Measured attached to a 2^20-step run going at ~110k steps/s in a
  detached runner, 52 nodes on screen: a poll reads in 0.85 ms (median) in its thread
  and updates the pane in 0.4 ms on the UI thread (p95 0.8 ms). The header comes from the
  run's meta row alone: `RunStore.status()` also counts every block by status, 18 ms.

`r` resumes a stopped or paused run in a detached runner and `p` pauses a running one,
through the engine's run control (`engine.runs.control`) in a thread worker: the UI never
waits on a runner starting or stopping. The tree itself is a `RunTree` (ui/widgets).
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rich.text import Text
from textual import getters, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static, Tree

from nanobot_tui.errors import NanobotError
from nanobot_tui.text import printable
from nanobot_tui.ui.engine_app import EngineApp
from nanobot_tui.ui.format import (
    RUN_STYLES,
    duration,
    error_line,
    plural,
    progress_bar,
    rate_text,
    screen_shown,
)
from nanobot_tui.ui.widgets.agent_tree import AgentTree
from nanobot_tui.ui.widgets.run_tree import PAGE, Entry, More, RunNode, RunTree

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.store import NodeRow, RunStatus, RunStore

T = TypeVar("T")

INTERVAL = 0.25  # seconds between the end of a poll and the next one
LATEST_EVERY = 2.0  # following the most recent run: how often the runs are listed again
NO_RUN = "no run"
HINT = "nanobot run hanoi --disks N --detach"

RESUMABLE = frozenset({"paused", "stopped", "failed"})
PAUSABLE = frozenset({"running"})
# A run whose cost was an anomaly: a mark before its status, and its line in the header.
ANOMALY_MARK = "! "
ANOMALY_STYLE = "bold yellow"


# --- reading the store ----------------------------------------------------------------


class StoreReader:
    """One run's store, opened on first use and kept open between polls (a read-only
    SQLite connection: opening one costs more than a whole poll). The pane's workers
    use it one at a time; any error closes it, and the next read opens it afresh (a run
    deleted and made again, a database replaced)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._store: RunStore | None = None
        self._closed = False

    def read(self, run_id: str, fn: Callable[[RunStore], T]) -> T:
        with self._lock:
            if self._closed:
                raise RuntimeError("the pane is gone")
            if self._store is None or self._key != run_id:
                self._close()
                from nanobot_tui.ui.screens.runs import open_run  # in the worker's thread

                self._store = open_run(run_id)
                self._key = run_id
            try:
                return fn(self._store)
            except Exception:
                self._close()
                raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close()

    def _close(self) -> None:
        store, self._store, self._key = self._store, None, None
        if store is not None:
            store.close()


def read_status(store: RunStore) -> RunStatus:
    """The run's status from its meta row alone. `RunStore.status()` also counts nodes by
    status with a GROUP BY over every block (18 ms on a 2^20-step run); the header does
    not show those counts, and this is ~0.1 ms."""
    return _status_and_anomaly(store)[0]


def anomaly_of(meta: dict[str, Any]) -> str | None:
    """The one line the learning loops left in a run's meta when its cost was an anomaly
    (engine/learning/run_memory.py), else None."""
    learning = meta.get("learning")
    anomaly = learning.get("anomaly") if isinstance(learning, dict) else None
    return str(anomaly) if anomaly else None


def _status_and_anomaly(store: RunStore) -> tuple[RunStatus, str | None]:
    from nanobot_tui.engine.runs.store import status_from_meta

    meta = store.meta()
    return status_from_meta(store.run_id, meta, {}), anomaly_of(meta)


@dataclass(frozen=True, slots=True)
class Reading:
    """What one poll read."""

    status: RunStatus
    rows: dict[Any, NodeRow]  # the nodes asked for, by id
    root: NodeRow | None = None  # a run read for the first time: its root ...
    children: list[NodeRow] | None = None  # ... and the root's first page of children
    seconds: float = 0.0  # how long the read took
    anomaly: str | None = None  # the run's cost was an anomaly: the learning loops' line


def read_run(store: RunStore, ids: list[Any], fresh: bool) -> Reading:
    started = time.perf_counter()
    status, anomaly = _status_and_anomaly(store)
    if fresh:
        root = store.root()
        children = store.children(root.id, 0, PAGE)
        return Reading(status, {}, root, children, time.perf_counter() - started, anomaly)
    rows = {node_id: store.node(node_id) for node_id in ids}
    return Reading(status, rows, seconds=time.perf_counter() - started, anomaly=anomaly)


# --- the header and the hint ---------------------------------------------------------


def state_hint(status: RunStatus) -> str:
    """The line under the tree: why the run is where it is, and the key that moves it."""
    reason = status.reason or status.status
    if status.status in RESUMABLE:
        return f"{reason} · r resumes"
    if status.status in PAUSABLE:
        return "p pauses · enter inspects"
    return reason


def run_header(status: RunStatus, width: int = 28, anomaly: str | None = None) -> Text:
    """Four short lines, for a narrow column: status and run id; a bar and the ETA (the
    percent once the run is not going); steps done/total and percent; errors and rate.
    A run whose cost was an anomaly is marked "!" before its status, and the learning
    loops' line about it follows (wrapped by the pane)."""
    state = status.status
    run_id = status.run_id
    total = status.steps_total
    done = status.steps_done
    fraction = done / total if total else 0.0
    percent = f"{100 * fraction:.1f}%"
    # The status first: a long run id is what gets cut.
    line1 = Text.assemble((state, RUN_STYLES.get(state, "")), (" · ", "dim"), (run_id, "bold"))
    if anomaly:
        line1 = Text.assemble((ANOMALY_MARK, ANOMALY_STYLE), line1)
    after = percent
    if state == "running" and status.eta_s is not None:
        after = f"ETA {duration(status.eta_s)}"
    line2 = Text.assemble(progress_bar(fraction, max(width - len(after) - 1, 4)), " ", after)
    line3 = Text.assemble(f"{done:,}/{total:,}", (" · ", "dim"), percent)
    errors = status.errors
    elapsed = status.elapsed_s
    line4 = Text.assemble(
        (plural(errors, "error"), "bold red" if errors else "green"),
        (" · ", "dim"),
        rate_text(status.rate or 0.0) if state == "running" else f"ran {duration(elapsed)}",
    )
    lines = [line1, line2, line3, line4]
    if anomaly:
        # Wrapped here: the header's lines do not wrap (each is cut at the pane's edge).
        wrapped = textwrap.wrap(f"anomaly: {printable(anomaly)}", max(width, 12))
        lines += [Text(line, style="yellow") for line in wrapped]
    return Text("\n").join(lines)


# --- the pane -------------------------------------------------------------------------


class ProcessTree(Vertical):
    """The watched run's process tree with a header line; see the module note."""

    BINDINGS = [
        Binding("r", "resume", "Resume", id="process.resume"),
        Binding("p", "pause", "Pause", id="process.pause"),
        Binding("ctrl+r", "pick_run", "Runs", id="process.runs"),
    ]

    INTERVAL = INTERVAL

    app = getters.app(EngineApp)
    run_tree = getters.query_one("#process-tree", RunTree)
    header = getters.query_one("#process-header", Static)
    status_line = getters.query_one("#process-status", Static)

    @dataclass
    class Polled(Message):
        """One poll: what was read of run `run_id` (None: there is no run), the most
        recent run when the runs were listed, or why the run could not be read."""

        run_id: str | None
        reading: Reading | None = None
        latest: str | None = None
        error: str = ""

    @dataclass
    class ChildrenLoaded(Message):
        run_id: str
        parent: Any
        offset: int
        rows: list[NodeRow]
        error: str = ""

    @dataclass
    class ControlDone(Message):
        """The engine's run control did `action` to run `run_id`: what became of it, in
        one line, or why it could not."""

        action: str
        run_id: str
        line: str
        error: str = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: str | None = None  # the run shown
        self.status: RunStatus | None = None
        self.anomaly: str | None = None  # the shown run's anomaly line
        self._latest: str | None = None  # the most recent run, when none is attached
        self._latest_at = 0.0  # when the runs were last listed
        self._by_id: dict[Any, RunNode] = {}  # store id -> tree node
        self._header: Text | None = None
        self._polling = False
        self._reader = StoreReader()
        self._state: tuple[str, str | None] | None = None  # the run's (status, reason) shown
        self.polls = 0  # polls that read the store (tests read it)
        self.relabels = 0  # labels set in place (tests read it)
        self.read_seconds = 0.0  # the last poll's read, in its worker
        self.update_seconds = 0.0  # the last poll's update of the pane, on the UI thread

    def compose(self) -> ComposeResult:
        # The run's tree (between these two lines) is mounted when a run is first shown:
        # with no run it is hidden, and mounting it would weigh on the app's first frame.
        yield Static(Text(NO_RUN, style="dim"), id="process-header", markup=False)
        yield Static("", id="process-status", markup=False)
        yield AgentTree(id="agent-tree")

    def _mounted_tree(self) -> RunTree | None:
        """The run's tree, None until a run was first shown."""
        return self.query_one_optional("#process-tree", RunTree)

    async def _mount_tree(self) -> RunTree:
        """The run's tree, mounted hidden under the header the first time it is needed."""
        tree = self._mounted_tree()
        if tree is None:
            tree = RunTree("", id="process-tree")
            tree.auto_expand = False
            tree.guide_depth = 2
            tree.show_root = False  # the header stands for the run: one indent less
            tree.display = False
            await self.mount(tree, after=self.header)
        return tree

    def on_unmount(self) -> None:
        self._reader.close()

    def on_mount(self) -> None:
        self.border_title = "Process"
        self._status(HINT)
        # After the first frame: the first poll's thread (the run stores) would slow it.
        self.call_after_refresh(self.poll)

    # --- polling ----------------------------------------------------------------------

    @property
    def wanted_run(self) -> str | None:
        """The run to show: the app's attached run, else the most recent one."""
        attached = self.app.attached_run
        return attached if attached else self._latest

    def poll(self) -> None:
        """Start one poll, unless one is under way; while hidden, just look again later."""
        if not self.is_attached or self._polling:
            return
        if not screen_shown(self):
            self.set_timer(self.INTERVAL, self.poll)
            return
        self._polling = True
        attached = self.app.attached_run
        list_latest = not attached and time.monotonic() - self._latest_at >= LATEST_EVERY
        if list_latest:
            self._latest_at = time.monotonic()
        run_id = attached or self._latest
        if run_id is None and not list_latest:
            # No run to read and not yet time to list the runs again: no worker at all.
            self._polling = False
            self.set_timer(self.INTERVAL, self.poll)
            return
        ids = [] if run_id != self.run_id else self._visible_ids()
        self._read(run_id, ids, fresh=run_id != self.run_id, list_latest=list_latest)

    def _visible_ids(self) -> list[Any]:
        tree = self._mounted_tree()
        if tree is None or not tree.display:
            return []
        nodes = tree.visible_nodes()
        return [node.data.node_id for node in nodes if isinstance(node.data, Entry)]

    @work(thread=True, exclusive=True, exit_on_error=False, group="process-poll",
          description="read the run store")  # fmt: skip
    def _read(self, run_id: str | None, ids: list[Any], fresh: bool, list_latest: bool) -> None:
        latest = None
        try:
            if list_latest:
                from nanobot_tui.ui.screens.runs import read_runs  # in the worker's thread

                latest = most_recent(read_runs())
                if run_id is None:
                    run_id, fresh = latest, True
            if run_id is None:
                self.post_message(self.Polled(None, latest=latest))
                return
            reading = self._reader.read(run_id, lambda store: read_run(store, ids, fresh))
        except Exception as exc:  # a run being created, deleted, or not a run at all
            self.post_message(self.Polled(run_id, latest=latest, error=error_line(exc)))
        else:
            self.post_message(self.Polled(run_id, reading, latest))

    @on(Polled)
    async def _polled(self, message: Polled) -> None:
        self._polling = False
        started = time.perf_counter()
        try:
            if message.latest is not None:
                self._latest = message.latest
            if message.run_id != self.wanted_run and message.run_id is not None:
                return  # the user picked another run while this one was read
            if message.run_id is None:
                self._show_no_run()
                return
            reading = message.reading
            if reading is None:
                self._state = None  # show the run's state again once it reads
                self._status(f"{message.run_id}: {message.error}")
                return
            self.polls += 1
            self.read_seconds = reading.seconds
            if reading.root is not None:
                await self._show_run(message.run_id, reading.root, reading.children or [])
            else:
                self._relabel(reading.rows)
            self.anomaly = reading.anomaly
            self._show_status(reading.status)
        finally:
            self.update_seconds = time.perf_counter() - started
            if self.is_attached:
                self.set_timer(self.INTERVAL, self.poll)

    def _show_no_run(self) -> None:
        if self.run_id is None and self._header is not None:
            return
        self.run_id = None
        self.status = None
        self.anomaly = None
        self._by_id.clear()
        tree = self._mounted_tree()
        if tree is not None:
            tree.clear()
            tree.display = False
        self._set_header(Text.assemble((NO_RUN, "bold dim")))
        self._status(HINT)
        self.refresh_bindings()

    async def _show_run(self, run_id: str, root: NodeRow, children: list[NodeRow]) -> None:
        """Another run: a new tree, its root expanded with the first page of children."""
        tree = await self._mount_tree()
        # The focus stays on the tree across runs; and a tree that appears in a pane on
        # screen while nothing has the focus (`nanobot attach` starts so) takes it.
        had_focus = self.app.focused is tree or (self.app.focused is None and self.display)
        self.run_id = run_id
        self._by_id.clear()
        with self.app.batch_update():
            self._by_id[root.id] = tree.reset_to(root)
            tree.add_page(tree.root, 0, children, self._by_id)
            tree.root.expand()
            tree.display = True
            tree.cursor_line = 0
        self._state = None
        if had_focus:
            tree.focus()

    def _relabel(self, rows: dict[Any, NodeRow]) -> None:
        """Set, in place, the labels of the nodes whose rows changed. A label set this way
        repaints its own line; the tree's lines are not rebuilt."""
        for node_id, row in rows.items():
            node = self._by_id.get(node_id)
            if node is not None and RunTree.relabel(node, row):
                self.relabels += 1

    def _show_status(self, status: RunStatus) -> None:
        self.status = status
        self._set_header(run_header(status, self._header_width(), self.anomaly))
        state = (status.status, status.reason)
        if state != self._state:
            self._state = state
            self._status(state_hint(status))
            self.refresh_bindings()

    def _header_width(self) -> int:
        return self.header.content_size.width or 28

    def on_resize(self) -> None:
        if self.run_id is not None and self.status is not None:
            self._set_header(run_header(self.status, self._header_width(), self.anomaly))

    def _set_header(self, text: Text) -> None:
        if text != self._header:
            self._header = text
            self.header.update(text)

    def _status(self, text: str) -> None:
        self.status_line.update(text)

    def shown_header(self) -> str:
        """The header's plain text (tests read it)."""
        return "" if self._header is None else self._header.plain

    # --- lazy children ----------------------------------------------------------------

    @on(Tree.NodeExpanded, "#process-tree")
    def _expanded(self, event: Tree.NodeExpanded[Entry | More | None]) -> None:
        event.stop()
        entry = event.node.data
        if isinstance(entry, Entry) and entry.loaded is None and not entry.loading:
            self._load(event.node, 0)

    def _load(self, node: RunNode, offset: int) -> None:
        entry = node.data
        if not isinstance(entry, Entry) or self.run_id is None:
            return
        entry.loading = True
        self._read_children(self.run_id, entry.node_id, offset)

    @work(thread=True, exit_on_error=False, group="process-children",
          description="read children")  # fmt: skip
    def _read_children(self, run_id: str, parent: Any, offset: int) -> None:
        try:
            rows = self._reader.read(run_id, lambda store: store.children(parent, offset, PAGE))
        except Exception as exc:
            self.post_message(self.ChildrenLoaded(run_id, parent, offset, [], error_line(exc)))
        else:
            self.post_message(self.ChildrenLoaded(run_id, parent, offset, rows))

    @on(ChildrenLoaded)
    def _children_loaded(self, message: ChildrenLoaded) -> None:
        if message.run_id != self.run_id:
            return
        node = self._by_id.get(message.parent)
        if node is None or not isinstance(node.data, Entry):
            return
        node.data.loading = False
        if message.error:
            self._status(f"cannot read children: {message.error}")
            return
        with self.app.batch_update():
            for child in list(node.children):
                if isinstance(child.data, More):
                    child.remove()
            self.run_tree.add_page(node, message.offset, message.rows, self._by_id)

    # --- choosing a node --------------------------------------------------------------

    @on(Tree.NodeSelected, "#process-tree")
    def _selected(self, event: Tree.NodeSelected[Entry | More | None]) -> None:
        event.stop()
        data = event.node.data
        if isinstance(data, More):
            parent = self._by_id.get(data.parent)
            if parent is not None and isinstance(parent.data, Entry) and not parent.data.loading:
                event.node.set_label(Text("… loading", style="dim italic"))
                self._load(parent, data.offset)
        elif isinstance(data, Entry) and self.run_id is not None:
            from nanobot_tui.ui.screens.inspect_node import InspectScreen

            self.app.push_screen(InspectScreen(self.run_id, data.node_id))

    # --- commands ---------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.status.status if self.status is not None else None
        if action == "resume":
            return True if state in RESUMABLE else None
        if action == "pause":
            return True if state in PAUSABLE else None
        return True

    def action_resume(self) -> None:
        if self.run_id is not None and self.status and self.status.status in RESUMABLE:
            self._status(f"resuming {self.run_id}…")
            self._control("resume", self.run_id)

    def action_pause(self) -> None:
        if self.run_id is not None and self.status and self.status.status in PAUSABLE:
            self._status(f"pausing {self.run_id}…")
            self._control("pause", self.run_id)

    def action_pick_run(self) -> None:
        from nanobot_tui.ui.screens.runs import pick_run

        pick_run(self.app)

    @work(thread=True, exit_on_error=False, group="process-control",
          description="run control")  # fmt: skip
    def _control(self, action: str, run_id: str) -> None:
        """Pause (waiting for the runner to finish its step) or resume (waiting for the
        detached runner to hold the run): seconds, at times, so never on the UI thread."""
        from nanobot_tui.engine.runs import control

        act = control.pause_run if action == "pause" else control.resume_detached
        try:
            line = act(run_id)
        except NanobotError as exc:
            self.post_message(self.ControlDone(action, run_id, "", str(exc)))
        else:
            self.post_message(self.ControlDone(action, run_id, line))

    @on(ControlDone)
    def _control_done(self, message: ControlDone) -> None:
        what = f"{message.action} {message.run_id}"
        if message.error:
            self._status(f"{what} failed: {message.error}")
            self.notify(message.error, title=what, severity="error")
        else:
            self._status(f"{what}: ok · {message.line}")


def most_recent(runs: list[dict[str, Any]]) -> str | None:
    """The id of the most recently created run."""
    if not runs:
        return None
    newest = max(runs, key=lambda run: (float(run.get("created") or 0.0), str(run.get("id"))))
    return str(newest["id"])
