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

`r` resumes a stopped or paused run and `p` pauses a running one, through the `nanobot`
command in a subprocess (`run_nanobot`, in a thread worker: the UI never waits on it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from nanobot_tui.ui.panes.votes import duration, fit, rate_text
from nanobot_tui.ui.screens.inspect_node import ICONS, InspectScreen
from nanobot_tui.ui.screens.runs import RUN_STYLES, open_run, pick_run, read_runs
from nanobot_tui.ui.widgets.agent_tree import AgentTree

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.store import NodeRow, RunStatus, RunStore

T = TypeVar("T")

PAGE = 200  # children loaded at a time
INTERVAL = 0.25  # seconds between the end of a poll and the next one
LATEST_EVERY = 2.0  # following the most recent run: how often the runs are listed again
BAR_WIDTH = 5  # the left column is narrow: the counts say it exactly, the bar at a glance
NO_RUN = "no run"
HINT = "nanobot run hanoi --disks N --detach"

RESUMABLE = frozenset({"paused", "stopped", "failed"})
PAUSABLE = frozenset({"running"})


# --- the `nanobot` command ------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    args: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, as printed


def run_nanobot(args: list[str], timeout: float = 60.0) -> CommandResult:
    """Run `nanobot ARGS` (this interpreter, `-m nanobot_tui`) in its own session and
    wait for it. Output goes to a file, not a pipe: a detached runner that inherited
    the descriptor would otherwise hold the pipe open and this call would never end."""
    with tempfile.TemporaryFile(mode="w+") as out:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "nanobot_tui", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=timeout,
                env=os.environ.copy(),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return CommandResult(tuple(args), -1, str(exc))
        out.seek(0)
        return CommandResult(tuple(args), proc.returncode, out.read())


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
    from nanobot_tui.engine.runs.store import status_from_meta

    return status_from_meta(store.run_id, store.meta(), {})


@dataclass(frozen=True, slots=True)
class Reading:
    """What one poll read."""

    status: RunStatus
    rows: dict[Any, NodeRow]  # the nodes asked for, by id
    root: NodeRow | None = None  # a run read for the first time: its root ...
    children: list[NodeRow] | None = None  # ... and the root's first page of children
    seconds: float = 0.0  # how long the read took


def read_run(store: RunStore, ids: list[Any], fresh: bool) -> Reading:
    started = time.perf_counter()
    status = read_status(store)
    if fresh:
        root = store.root()
        children = store.children(root.id, 0, PAGE)
        return Reading(status, {}, root, children, time.perf_counter() - started)
    rows = {node_id: store.node(node_id) for node_id in ids}
    return Reading(status, rows, seconds=time.perf_counter() - started)


# --- labels ---------------------------------------------------------------------------


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(fraction * width)
    return Text.assemble(("█" * filled, "green"), ("░" * (width - filled), "dim"))


def node_icon(status: str) -> tuple[str, str]:
    return ICONS.get(status, ("?", "dim"))


def span_text(row: NodeRow) -> str:
    """The steps a node covers, numbered from 1 like the header's done/total."""
    first, last = row.first_step + 1, row.last_step + 1
    return f"{first:,}" if first == last else f"{first:,}–{last:,}"


def node_total(row: NodeRow) -> int:
    """Steps under a node."""
    return max(row.last_step - row.first_step + 1, 0)


def node_label(row: NodeRow) -> Text:
    """One line, most telling first (the column is narrow and the tree indents): status
    icon; for a step its number, for an inner node done/total children and a bar; errors
    in red; then a block's span of steps or a step's summary."""
    icon, style = node_icon(row.status)
    text = Text.assemble((icon, style), " ")
    if row.kind == "step":
        text.append(f"step {row.first_step + 1:,}", "bold" if row.status == "running" else "")
        if row.attempts > 1:
            text.append(f" ×{row.attempts}", "yellow")
    else:
        done = row.completed_children
        total = children_total(row)
        text.append(f"{done:,}/{total:,} ")
        text.append_text(progress_bar(done / total if total else 0.0))
    if row.errors:
        text.append(f" {row.errors:,} error{'s' if row.errors != 1 else ''}", "bold red")
    if row.kind != "step":
        text.append(f"  {span_text(row)}", "dim")
    elif row.summary:
        text.append(f"  {fit(str(row.summary), 40)}", "dim")
    if row.error and row.status == "failed":
        text.append(f"  {fit(str(row.error), 60)}", "red")
    return text


def children_total(row: NodeRow) -> int:
    """How many children an inner node has."""
    count = getattr(row, "children", None)
    if isinstance(count, int):
        return count
    return node_total(row)


def state_hint(status: RunStatus) -> str:
    """The line under the tree: why the run is where it is, and the key that moves it."""
    reason = status.reason or status.status
    if status.status in RESUMABLE:
        return f"{reason} · r resumes"
    if status.status in PAUSABLE:
        return "p pauses · enter inspects"
    return reason


def run_header(status: RunStatus, width: int = 28) -> Text:
    """Four short lines, for a narrow column: status and run id; a bar and the ETA (the
    percent once the run is not going); steps done/total and percent; errors and rate."""
    state = status.status
    run_id = status.run_id
    total = status.steps_total
    done = status.steps_done
    fraction = done / total if total else 0.0
    percent = f"{100 * fraction:.1f}%"
    # The status first: a long run id is what gets cut.
    line1 = Text.assemble((state, RUN_STYLES.get(state, "")), (" · ", "dim"), (run_id, "bold"))
    after = percent
    if state == "running" and status.eta_s is not None:
        after = f"ETA {duration(status.eta_s)}"
    line2 = Text.assemble(progress_bar(fraction, max(width - len(after) - 1, 4)), " ", after)
    line3 = Text.assemble(f"{done:,}/{total:,}", (" · ", "dim"), percent)
    errors = status.errors
    elapsed = status.elapsed_s
    line4 = Text.assemble(
        (f"{errors:,} error{'s' if errors != 1 else ''}", "bold red" if errors else "green"),
        (" · ", "dim"),
        rate_text(status.rate or 0.0) if state == "running" else f"ran {duration(elapsed)}",
    )
    return Text("\n").join([line1, line2, line3, line4])


# --- the tree -------------------------------------------------------------------------


@dataclass(slots=True)
class Entry:
    """What a tree node holds: the store node, the row its label was drawn from, and how
    many of its children are in the tree."""

    node_id: Any
    kind: str
    row: NodeRow
    label: Text | None = None  # the label drawn from `row`
    loaded: int | None = None  # children added so far; None: never asked for
    loading: bool = False


@dataclass(frozen=True, slots=True)
class More:
    """The "… more" leaf after a page of children: choosing it loads the next page."""

    parent: Any  # the store node id
    offset: int


class RunTree(Tree[Entry | More | None]):
    """A Tree whose Enter opens the inspect screen (not expand), with left and right to
    collapse and expand."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Inspect", id="process.inspect"),
        Binding("space", "toggle_node", "Expand", id="process.toggle"),
        Binding("right", "expand", "Expand", id="process.expand", show=False),
        Binding("left", "collapse", "Collapse", id="process.collapse", show=False),
        # Tree's default expands every loaded node; one level at a time is enough here.
        Binding("shift+space", "toggle_node", "Expand", id="process.toggle_alt", show=False),
    ]

    def action_expand(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand and not node.is_expanded:
            node.expand()

    def action_collapse(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None and not (node.parent.is_root and not self.show_root):
            self.move_cursor(node.parent)

    def visible_nodes(self) -> list[TreeNode[Entry | More | None]]:
        """The nodes on the lines now on screen."""
        top = self.scroll_offset.y
        height = max(self.scrollable_content_region.height, 1)
        nodes = []
        for line in range(top, top + height):
            node = self.get_node_at_line(line)
            if node is None:
                break
            nodes.append(node)
        return nodes


class ProcessTree(Vertical):
    """The watched run's process tree with a header line; see the module note."""

    BINDINGS = [
        Binding("r", "resume", "Resume", id="process.resume"),
        Binding("p", "pause", "Pause", id="process.pause"),
        Binding("ctrl+r", "pick_run", "Runs", id="process.runs"),
    ]

    DEFAULT_CSS = """
    ProcessTree { border: round $primary 50%; border-title-color: $text-primary; }
    ProcessTree:focus-within { border: round $primary; }
    ProcessTree #process-header {
        height: auto; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    ProcessTree #process-tree { height: 1fr; background: transparent; overflow-x: hidden; }
    ProcessTree #process-status {
        height: 1; padding: 0 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    INTERVAL = INTERVAL

    class Polled(Message):
        """One poll: what was read of run `run_id` (None: there is no run), the most
        recent run when the runs were listed, or why the run could not be read."""

        def __init__(
            self,
            run_id: str | None,
            reading: Reading | None = None,
            latest: str | None = None,
            error: str = "",
        ) -> None:
            super().__init__()
            self.run_id = run_id
            self.reading = reading
            self.latest = latest
            self.error = error

    class ChildrenLoaded(Message):
        def __init__(
            self, run_id: str, parent: Any, offset: int, rows: list[NodeRow], error: str = ""
        ) -> None:
            super().__init__()
            self.run_id = run_id
            self.parent = parent
            self.offset = offset
            self.rows = rows
            self.error = error

    class CommandDone(Message):
        def __init__(self, result: CommandResult) -> None:
            super().__init__()
            self.result = result

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: str | None = None  # the run shown
        self.status: RunStatus | None = None
        self._latest: str | None = None  # the most recent run, when none is attached
        self._latest_at = 0.0  # when the runs were last listed
        self._by_id: dict[Any, TreeNode[Entry | More | None]] = {}  # store id -> tree node
        self._header: Text | None = None
        self._polling = False
        self._reader = StoreReader()
        self._state: tuple[str, str | None] | None = None  # the run's (status, reason) shown
        self.polls = 0  # polls that read the store (tests read it)
        self.relabels = 0  # labels set in place (tests read it)
        self.read_seconds = 0.0  # the last poll's read, in its worker
        self.update_seconds = 0.0  # the last poll's update of the pane, on the UI thread

    @property
    def run_tree(self) -> RunTree:
        return self.query_one("#process-tree", RunTree)

    def compose(self) -> ComposeResult:
        yield Static(Text(NO_RUN, style="dim"), id="process-header", markup=False)
        tree = RunTree("", id="process-tree")
        tree.auto_expand = False
        tree.guide_depth = 2
        tree.show_root = False  # the header stands for the run: one indent less
        yield tree
        yield Static("", id="process-status", markup=False)
        yield AgentTree(id="agent-tree")

    def on_unmount(self) -> None:
        self._reader.close()

    def on_mount(self) -> None:
        self.border_title = "Process"
        self.run_tree.display = False
        self._status(HINT)
        self.poll()

    # --- polling ----------------------------------------------------------------------

    @property
    def wanted_run(self) -> str | None:
        """The run to show: the app's attached run, else the most recent one."""
        attached = getattr(self.app, "attached_run", None)
        return attached if attached else self._latest

    def poll(self) -> None:
        """Start one poll, unless one is under way; while hidden, just look again later."""
        if not self.is_attached or self._polling:
            return
        if not self._visible():
            self.set_timer(self.INTERVAL, self.poll)
            return
        self._polling = True
        attached = getattr(self.app, "attached_run", None)
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

    def _visible(self) -> bool:
        """Whether this pane's screen can be seen (see VoteCounter._visible)."""
        stack = self.app.screen_stack
        screen = self.screen
        if screen not in stack:
            return False
        above = stack[stack.index(screen) + 1 :]
        return all(other.styles.background.a < 1 for other in above)

    def _visible_ids(self) -> list[Any]:
        if not self.run_tree.display:
            return []
        nodes = self.run_tree.visible_nodes()
        return [node.data.node_id for node in nodes if isinstance(node.data, Entry)]

    @work(thread=True, exclusive=True, exit_on_error=False, group="process-poll",
          description="read the run store")  # fmt: skip
    def _read(self, run_id: str | None, ids: list[Any], fresh: bool, list_latest: bool) -> None:
        latest = None
        try:
            if list_latest:
                latest = most_recent(read_runs())
                if run_id is None:
                    run_id, fresh = latest, True
            if run_id is None:
                self.post_message(self.Polled(None, latest=latest))
                return
            reading = self._reader.read(run_id, lambda store: read_run(store, ids, fresh))
        except Exception as exc:  # a run being created, deleted, or not a run at all
            self.post_message(self.Polled(run_id, latest=latest, error=one_line_error(exc)))
        else:
            self.post_message(self.Polled(run_id, reading, latest))

    @on(Polled)
    def _polled(self, message: Polled) -> None:
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
                self._show_run(message.run_id, reading.root, reading.children or [])
            else:
                self._relabel(reading.rows)
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
        self._by_id.clear()
        self.run_tree.clear()
        self.run_tree.display = False
        self._set_header(Text.assemble((NO_RUN, "bold dim")))
        self._status(HINT)
        self.refresh_bindings()

    def _show_run(self, run_id: str, root: NodeRow, children: list[NodeRow]) -> None:
        """Another run: a new tree, its root expanded with the first page of children."""
        tree = self.run_tree
        had_focus = self.app.focused is tree
        self.run_id = run_id
        self._by_id.clear()
        with self.app.batch_update():
            tree.reset(node_label(root), Entry(root.id, root.kind, root))
            self._by_id[root.id] = tree.root
            self._add_children(tree.root, 0, children)
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
            if node is None or not isinstance(node.data, Entry):
                continue
            entry = node.data
            if row == entry.row:
                continue
            entry.row = row
            label = node_label(row)
            if label != entry.label:
                entry.label = label
                node.set_label(label)
                self.relabels += 1

    def _show_status(self, status: RunStatus) -> None:
        self.status = status
        self._set_header(run_header(status, self._header_width()))
        state = (status.status, status.reason)
        if state != self._state:
            self._state = state
            self._status(state_hint(status))
            self.refresh_bindings()

    def _header_width(self) -> int:
        return self.query_one("#process-header", Static).content_size.width or 28

    def on_resize(self) -> None:
        if self.run_id is not None and self.status is not None:
            self._set_header(run_header(self.status, self._header_width()))

    def _set_header(self, text: Text) -> None:
        if text != self._header:
            self._header = text
            self.query_one("#process-header", Static).update(text)

    def _status(self, text: str) -> None:
        self.query_one("#process-status", Static).update(text)

    def shown_header(self) -> str:
        """The header's plain text (tests read it)."""
        return "" if self._header is None else self._header.plain

    # --- lazy children ----------------------------------------------------------------

    def _add_children(
        self, node: TreeNode[Entry | More | None], offset: int, rows: list[NodeRow]
    ) -> None:
        entry = node.data
        assert isinstance(entry, Entry)
        for row in rows:
            if row.id in self._by_id:
                continue
            label = node_label(row)
            self._by_id[row.id] = node.add(
                label, Entry(row.id, row.kind, row, label), allow_expand=row.kind != "step"
            )
        entry.loaded = offset + len(rows)
        if len(rows) == PAGE and entry.loaded < children_total(entry.row):
            left = children_total(entry.row) - entry.loaded
            node.add_leaf(
                Text(f"… {left:,} more: enter loads {min(left, PAGE)}", style="dim italic"),
                More(entry.node_id, entry.loaded),
            )

    @on(Tree.NodeExpanded, "#process-tree")
    def _expanded(self, event: Tree.NodeExpanded[Entry | More | None]) -> None:
        event.stop()
        entry = event.node.data
        if isinstance(entry, Entry) and entry.loaded is None and not entry.loading:
            self._load(event.node, 0)

    def _load(self, node: TreeNode[Entry | More | None], offset: int) -> None:
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
            self.post_message(self.ChildrenLoaded(run_id, parent, offset, [], one_line_error(exc)))
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
            self._add_children(node, message.offset, message.rows)

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
            self._command(["resume", self.run_id, "--detach"])

    def action_pause(self) -> None:
        if self.run_id is not None and self.status and self.status.status in PAUSABLE:
            self._status(f"pausing {self.run_id}…")
            self._command(["pause", self.run_id])

    def action_pick_run(self) -> None:
        pick_run(self.app)

    @work(thread=True, exit_on_error=False, group="process-command",
          description="nanobot command")  # fmt: skip
    def _command(self, args: list[str]) -> None:
        self.post_message(self.CommandDone(run_nanobot(args)))

    @on(CommandDone)
    def _command_done(self, message: CommandDone) -> None:
        result = message.result
        what = f"nanobot {' '.join(result.args)}"
        last = next((ln for ln in reversed(result.output.splitlines()) if ln.strip()), "")
        if result.returncode == 0:
            self._status(f"{what}: ok{f' · {last}' if last else ''}")
        else:
            self._status(f"{what} failed: {last or f'exit {result.returncode}'}")
            self.notify(last or f"exit {result.returncode}", title=what, severity="error")


def most_recent(runs: list[dict[str, Any]]) -> str | None:
    """The id of the most recently created run."""
    if not runs:
        return None
    newest = max(runs, key=lambda run: (float(run.get("created") or 0.0), str(run.get("id"))))
    return str(newest["id"])


def one_line_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return fit(text, 200)
