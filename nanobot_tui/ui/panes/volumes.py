"""The volume browser: ingested volumes, an open volume's files as a lazy tree, search and
grep hits that open the file viewer at the line.

Everything that touches the disk (listing, opening, searching, grepping) runs in a thread
worker and comes back as a message; a result that arrives after the user moved on (another
volume, a newer query) is dropped.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import getters, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import ContentSwitcher, Input, OptionList, Static, Tree
from textual.widgets.option_list import Option
from textual.widgets.tree import TreeNode
from textual.worker import get_current_worker

from nanobot_tui.engine.context.storage import VolumeError, list_volumes, volumes_stamp
from nanobot_tui.text import display_name, printable
from nanobot_tui.ui.format import human_count, one_line, screen_shown
from nanobot_tui.units import human_bytes

# Volumes and search (numpy) are imported in the workers that open and search a volume:
# they should not weigh on the app's first frame (tests/test_import_weight.py).
if TYPE_CHECKING:
    from nanobot_tui.engine.context.grep import GrepHit
    from nanobot_tui.engine.context.search import SearchHit
    from nanobot_tui.engine.context.volume import Volume, VolumeFile

EMPTY_HINT = "no volumes: nanobot ingest PATH"
GREP_PREFIX = "re:"
SEARCH_TOP = 20
GREP_MAX_HITS = 200
# A directory shows at most this many children: a Tree re-walks its expanded nodes on
# every change, and nobody scrolls through 100,000 names (search finds them instead).
MAX_CHILDREN = 1000
PREVIEW_CHARS = 160
WATCH_SECONDS = 2.0  # how often a shown list of volumes looks for changes (a CLI ingest)


@dataclass
class Directory:
    """A folder of an open volume, built from the files' paths, with totals."""

    name: str
    path: str
    dirs: dict[str, Directory] = field(default_factory=dict)
    files: list[VolumeFile] = field(default_factory=list)
    n_files: int = 0
    size: int = 0
    n_lines: int = 0


def build_tree(files: list[VolumeFile]) -> Directory:
    """The directory structure of a volume, from its files' "/"-separated paths."""
    root = Directory("", "")
    for vfile in files:
        parts = vfile.path.split("/")
        node = root
        chain = [root]
        for part in parts[:-1]:
            child = node.dirs.get(part)
            if child is None:
                child = node.dirs[part] = Directory(part, f"{node.path}{part}/")
            node = child
            chain.append(node)
        node.files.append(vfile)
        for folder in chain:
            folder.n_files += 1
            folder.size += vfile.size
            folder.n_lines += vfile.n_lines
    return root


def dir_label(folder: Directory) -> Text:
    return Text.assemble(
        (printable(f"{folder.name}/"), "bold"),
        (f"  {folder.n_files} files · {human_bytes(folder.size)}", "dim"),
    )


def file_label(vfile: VolumeFile) -> Text:
    name = printable(vfile.path.rsplit("/", 1)[-1])
    return Text.assemble(name, (f"  {human_bytes(vfile.size)} · {vfile.n_lines:,} lines", "dim"))


def volume_prompt(info: dict[str, Any]) -> Text:
    """Name, then files, size and tokens (or why the volume cannot be read)."""
    if info.get("error"):
        return Text.assemble((str(info["name"]), "bold"), "\n", (f"  {info['error']}", "red"))
    return Text.assemble(
        (str(info["name"]), "bold"),
        "\n",
        (
            f"  {info['files']} files · {human_bytes(int(info['bytes']))} · "
            f"~{human_count(int(info['est_tokens']))} tok",
            "dim",
        ),
    )


@dataclass(frozen=True)
class Hit:
    """A search or grep hit, ready to show and to open."""

    file: str
    line: int  # 1-based, in the file
    label: Text


def search_hit(volume: Volume, hit: SearchHit) -> Hit:
    """A ranked chunk: shown as its line range, opened at the line that matched best."""
    line = hit.first_fline
    try:
        vfile = volume.file(hit.file)
    except (VolumeError, KeyError):
        pass
    else:
        # best_vline is 1-based in the volume; first_line is the file's 0-based start.
        best = hit.best_vline - vfile.first_line
        if 1 <= best <= vfile.n_lines:
            line = best
    label = Text.assemble(
        (printable(f"{display_name(hit.file)}:{hit.first_fline}-{hit.last_fline}"), "bold"),
        "\n",
        (f"  {one_line(hit.preview, PREVIEW_CHARS)}", "dim"),
    )
    return Hit(hit.file, line, label)


def grep_hit(hit: GrepHit) -> Hit:
    """A line that matched: shown with its place, opened at it."""
    label = Text.assemble(
        (printable(f"{display_name(hit.file)}:{hit.fline}:"), "bold"),
        f" {one_line(hit.text, PREVIEW_CHARS)}",
    )
    return Hit(hit.file, hit.fline, label)


class VolumeBrowser(Vertical):
    """Volumes with their sizes; Enter opens one as a file tree with a search box."""

    BINDINGS = [
        Binding("r", "refresh", "Refresh", id="volumes.refresh"),
        Binding("slash", "focus_search", "Search", id="volumes.search"),
        Binding("escape", "back", "Back", id="volumes.back"),
        Binding("backspace", "back", "Back", id="volumes.back_alt", show=False),
    ]

    switcher = getters.query_one(ContentSwitcher)
    volume_list = getters.query_one("#volumes-list", OptionList)
    volume_header = getters.query_one("#volume-header", Static)
    volume_tree = getters.query_one("#volume-tree", Tree)
    query_input = getters.query_one("#volume-query", Input)
    hit_list = getters.query_one("#volume-hits", OptionList)
    status_line = getters.query_one("#volumes-status", Static)

    @dataclass
    class Listed(Message):
        volumes: list[dict[str, Any]]
        error: str = ""
        stamp: tuple[tuple[str, int, int, int], ...] | None = None

    @dataclass
    class Opened(Message):
        name: str
        volume: Volume | None
        root: Directory | None
        error: str = ""

    @dataclass
    class Searched(Message):
        volume: Volume
        serial: int
        hits: list[Hit]
        summary: str
        error: str = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.volumes: list[dict[str, Any]] = []
        self.volume: Volume | None = None
        self.opening: str | None = None
        self.hits: list[Hit] = []
        self._loaded: set[int] = set()  # ids of tree nodes whose children were added
        self._serial = 0  # the latest query's number; older results are dropped
        self._view = "volumes-list-view"
        self._stamp: tuple[tuple[str, int, int, int], ...] | None = None  # of the list shown

    def compose(self) -> ComposeResult:
        # The open volume's view is mounted when a volume is first opened: until then it
        # is hidden, and mounting it would weigh on the app's first frame.
        with ContentSwitcher(initial="volumes-list-view"), Vertical(id="volumes-list-view"):
            yield OptionList(id="volumes-list")
        yield Static("", id="volumes-status", markup=False)

    async def _mount_open_view(self) -> None:
        """The open volume's view (header, file tree, search box, hits), mounted hidden
        in the switcher the first time a volume opens."""
        if self.switcher.query_one_optional("#volumes-open-view") is not None:
            return
        tree: Tree[Directory | VolumeFile | None] = Tree("", id="volume-tree")
        tree.show_root = False
        tree.guide_depth = 2
        view = Vertical(
            Static(id="volume-header", markup=False),
            tree,
            Input(placeholder="search · re:REGEX greps", id="volume-query"),
            OptionList(id="volume-hits"),
            id="volumes-open-view",
        )
        view.display = False  # the switcher shows it
        await self.switcher.mount(view)

    def on_mount(self) -> None:
        self.border_title = "Volumes"
        self._status("loading volumes…")
        # After the first frame: the listing's thread would slow it down.
        self.call_after_refresh(self.load_volumes)
        self.set_timer(WATCH_SECONDS, self._watch)

    def on_unmount(self) -> None:
        self._close_volume()

    # helpers

    @property
    def is_open(self) -> bool:
        """Whether a volume's tree is shown (rather than the list of volumes)."""
        return self._view == "volumes-open-view"

    def _show(self, view: str) -> None:
        self._view = view
        self.switcher.current = view
        self.refresh_bindings()

    def _status(self, text: str) -> None:
        self.status_line.update(text)

    def _close_volume(self) -> None:
        volume, self.volume = self.volume, None
        if volume is not None:
            self.workers.cancel_group(self, "volumes-search")
            # A search still running in its thread fails on the closed volume; its
            # result would be dropped anyway.
            with contextlib.suppress(OSError):
                volume.close()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "refresh":
            return not self.is_open
        if action in ("focus_search", "back"):
            return self.is_open
        return True

    # the list of volumes

    @work(thread=True, exclusive=True, exit_on_error=False, group="volumes-list",
          description="list volumes")  # fmt: skip
    def load_volumes(self) -> None:
        stamp = volumes_stamp()  # before the listing: a change during it is seen next time
        try:
            volumes = list_volumes()
        except (OSError, VolumeError) as exc:
            self.post_message(self.Listed([], str(exc), stamp))
        else:
            self.post_message(self.Listed(volumes, stamp=stamp))

    def _watch(self) -> None:
        """One look at the volumes folder (a listing and a stat per volume, no manifest
        read), then the next, chained: the list is read again when a volume was added,
        removed or re-ingested elsewhere (the CLI). Only while the list is shown."""
        if not self.is_attached:
            return
        shown = screen_shown(self) and self.is_on_screen and not self.is_open
        if shown and self._stamp is not None and volumes_stamp() != self._stamp:
            self._stamp = None  # one reload at a time; Listed sets it again
            self.load_volumes()
        self.set_timer(WATCH_SECONDS, self._watch)

    @on(Listed)
    def _listed(self, message: Listed) -> None:
        self.volumes = message.volumes
        self._stamp = message.stamp
        listing = self.volume_list
        highlighted = listing.highlighted_option
        keep = highlighted.id if highlighted is not None else None
        names = [str(info["name"]) for info in message.volumes]
        if names and names == [option.id for option in listing.options]:
            # The same volumes: update the prompts that changed, keep the cursor.
            for option, info in zip(listing.options, message.volumes, strict=True):
                prompt = volume_prompt(info)
                if str(option.prompt) != str(prompt):
                    listing.replace_option_prompt(str(option.id), prompt)
        elif names:
            listing.set_options(
                Option(volume_prompt(info), id=name)
                for name, info in zip(names, message.volumes, strict=True)
            )
            listing.highlighted = names.index(keep) if keep in names else 0
        else:
            listing.set_options([Option(Text(EMPTY_HINT, style="dim"), disabled=True)])
        if message.error:
            self._status(f"cannot list volumes: {message.error}")
        elif message.volumes:
            total = sum(int(info["est_tokens"] or 0) for info in message.volumes)
            self._status(f"{len(message.volumes)} volumes · ~{human_count(total)} tokens")
        else:
            self._status("")

    def action_refresh(self) -> None:
        self._status("loading volumes…")
        self.load_volumes()

    # opening a volume

    @on(OptionList.OptionSelected, "#volumes-list")
    def _volume_chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.open_volume(event.option.id)

    def open_volume(self, name: str) -> None:
        self.opening = name
        self._status(f"opening {name}…")
        self._open(name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="volumes-open",
          description="open a volume")  # fmt: skip
    def _open(self, name: str) -> None:
        from nanobot_tui.engine.context.volume import Volume

        try:
            volume = Volume.open(name)
        except (OSError, VolumeError) as exc:
            self.post_message(self.Opened(name, None, None, str(exc)))
            return
        root = build_tree(volume.files)
        self.post_message(self.Opened(name, volume, root))

    @on(Opened)
    async def _opened(self, message: Opened) -> None:
        if message.volume is not None:
            await self._mount_open_view()  # first: what follows reads the state after it
        if message.name != self.opening or message.volume is None or message.root is None:
            if message.volume is not None:
                message.volume.close()  # the user moved on while it opened
            if message.error and message.name == self.opening:
                self.opening = None
                self._status(f"cannot open {message.name}: {message.error}")
            return
        self.opening = None
        self._close_volume()
        volume = self.volume = message.volume
        root = message.root
        self.volume_header.update(
            Text.assemble(
                (volume.name, "bold"),
                f" · {len(volume.files)} files · {human_bytes(volume.n_bytes)} · "
                f"~{human_count(volume.est_tokens)} tokens\n",
                (str(volume.root), "dim italic"),
            )
        )
        tree = self.volume_tree
        tree.reset(volume.name, root)
        self._loaded = set()
        self._add_folder(tree.root)
        tree.root.expand()
        self.query_input.clear()
        self.hit_list.clear_options()
        self.hits = []
        self._show("volumes-open-view")
        self._status(f"{volume.n_lines:,} lines · Enter opens a file · / searches")
        tree.focus()

    # the lazy tree

    def _add_folder(self, node: TreeNode[Directory | VolumeFile | None]) -> None:
        """Add a directory node's children, once: its subfolders collapsed (their own
        children come when they are expanded), then its files."""
        folder = node.data
        if not isinstance(folder, Directory) or node.id in self._loaded:
            return
        self._loaded.add(node.id)
        shown = 0
        for name in sorted(folder.dirs):
            if shown == MAX_CHILDREN:
                break
            child = folder.dirs[name]
            node.add(dir_label(child), child, allow_expand=True)
            shown += 1
        for vfile in sorted(folder.files, key=lambda f: f.path):
            if shown == MAX_CHILDREN:
                break
            node.add_leaf(file_label(vfile), vfile)
            shown += 1
        hidden = len(folder.dirs) + len(folder.files) - shown
        if hidden > 0:
            node.add_leaf(Text(f"… {hidden:,} more: search to find them", style="dim"), None)

    @on(Tree.NodeExpanded, "#volume-tree")
    def _expanded(self, event: Tree.NodeExpanded[Directory | VolumeFile | None]) -> None:
        event.stop()
        self._add_folder(event.node)

    @on(Tree.NodeSelected, "#volume-tree")
    def _file_chosen(self, event: Tree.NodeSelected[Directory | VolumeFile | None]) -> None:
        from nanobot_tui.engine.context.volume import VolumeFile

        event.stop()
        if isinstance(event.node.data, VolumeFile):
            self.open_file(event.node.data.path, 1)

    def open_file(self, path: str, line: int) -> None:
        if self.volume is not None:
            # The viewer (and pygments under it) is loaded on first use, not at start-up.
            from nanobot_tui.ui.screens.viewer import FileViewer

            self.app.push_screen(FileViewer(self.volume, path, line))

    # search

    def action_focus_search(self) -> None:
        if self.is_open:
            self.query_input.focus()

    @on(Input.Submitted, "#volume-query")
    def _query(self, event: Input.Submitted) -> None:
        event.stop()
        query = event.value.strip()
        self._serial += 1
        if self.volume is None:
            return
        if not query or query == GREP_PREFIX:
            self.workers.cancel_group(self, "volumes-search")
            self.hits = []
            self.hit_list.clear_options()
            self._status("")
            return
        self._status(f"searching {query!r}…")
        self.run_query(self.volume, query, self._serial)

    @work(thread=True, exclusive=True, exit_on_error=False, group="volumes-search",
          description="search a volume")  # fmt: skip
    def run_query(self, volume: Volume, query: str, serial: int) -> None:
        from nanobot_tui.engine.context.search import SearchError, search

        start = time.perf_counter()
        try:
            if query.startswith(GREP_PREFIX):
                result = volume.grep(query[len(GREP_PREFIX) :], max_hits=GREP_MAX_HITS)
                hits = [grep_hit(hit) for hit in result.hits]
                more = " (first hits only)" if result.truncated else ""
                summary = f"grep · {len(hits)} hits{more}"
            else:
                found = search(volume, query, top=SEARCH_TOP)
                hits = [search_hit(volume, hit) for hit in found.hits]
                summary = f"{found.method} · {len(hits)} hits"
        except (SearchError, VolumeError, OSError) as exc:
            self.post_message(self.Searched(volume, serial, [], "", str(exc)))
            return
        if not get_current_worker().is_cancelled:
            summary += f" · {time.perf_counter() - start:.2f} s"
            self.post_message(self.Searched(volume, serial, hits, summary))

    @on(Searched)
    def _searched(self, message: Searched) -> None:
        if message.volume is not self.volume or message.serial != self._serial:
            return
        self.hits = message.hits
        listing = self.hit_list
        if message.error:
            listing.clear_options()
            self._status(message.error)
            return
        if message.hits:
            listing.set_options(
                Option(hit.label, id=f"hit-{index}") for index, hit in enumerate(message.hits)
            )
            listing.highlighted = 0
        else:
            listing.set_options([Option(Text("no hits", style="dim"), disabled=True)])
        self._status(message.summary)

    @on(OptionList.OptionSelected, "#volume-hits")
    def _hit_chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if 0 <= event.option_index < len(self.hits) and event.option.id:
            hit = self.hits[event.option_index]
            self.open_file(hit.file, hit.line)

    # back to the list

    def action_back(self) -> None:
        if not self.is_open:
            return
        self._serial += 1
        self._close_volume()
        self.volume_tree.clear()
        self.hit_list.clear_options()
        self.hits = []
        self._show("volumes-list-view")
        self.volume_list.focus()
        self.action_refresh()
