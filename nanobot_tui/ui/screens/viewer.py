"""The file viewer: one file of a volume, full screen, scrolled without loading it whole.

`FileView` is a Line API widget: `render_line(y)` asks a small LRU of 256-line blocks for
the line under row y, so only the visible region (and what was seen lately) is ever read
from the volume's mmap. A jump far away (open at a hit, `G`, go to line) first fetches the
blocks around the target in a worker, then scrolls there; plain scrolling reads the odd
missing block in `render_line`, a few hundred lines from an mmap, well under a frame.

Lines are highlighted with pygments one line at a time, with one lexer per file: a
construct that spans lines (a docstring, a block comment) may colour imperfectly, which is
the price of never lexing a whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import _TokenType
from pygments.util import ClassNotFound
from rich.cells import cell_len
from rich.segment import Segment
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.content import Content, Span
from textual.geometry import Size
from textual.highlight import HighlightTheme
from textual.message import Message
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.widgets import Header, Input
from textual.worker import get_current_worker

from nanobot_tui.engine.context.storage import VolumeError
from nanobot_tui.text import printable
from nanobot_tui.ui.widgets.footer import Footer

if TYPE_CHECKING:
    from nanobot_tui.engine.context.volume import Volume, VolumeFile

BLOCK_LINES = 256  # lines per `file_lines` call
CACHED_BLOCKS = 64  # 16K lines of text kept
CACHED_STRIPS = 2048  # highlighted lines kept
MIN_WIDTH = 80  # virtual width before any long line is seen
MAX_LINE_CHARS = 4000  # longer lines are cut (and not highlighted past this)
TAB_SIZE = 4
PLAIN_LANGUAGES = frozenset({"", "text", "log", "txt", "plain"})
# Control characters would move the terminal's cursor: show them as control pictures
# (C0 and DEL), or as U+FFFD (C1: no pictures exist for them).
_CONTROL = (
    {code: 0x2400 + code for code in range(0x20) if code != 0x09}
    | {0x7F: 0x2421}
    | dict.fromkeys(range(0x80, 0xA0), 0xFFFD)
)


def display_text(text: str) -> str:
    """A line as the viewer draws it: tabs expanded, control characters made visible,
    very long lines cut."""
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + "…"
    return text.expandtabs(TAB_SIZE).translate(_CONTROL)


def make_lexer(language: str) -> Lexer | None:
    """A pygments lexer for one file, or None for plain text."""
    if language.lower() in PLAIN_LANGUAGES:
        return None
    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False, stripall=False)
    except ClassNotFound:
        return None


class FileView(ScrollView, can_focus=True):
    """Scrolls through one file of a volume; reads only the blocks it draws."""

    BINDINGS = [
        Binding("g", "top", "Top", id="viewer.top"),
        Binding("G", "bottom", "Bottom", id="viewer.bottom"),
        Binding("home", "top", "Top", id="viewer.home", show=False),
        Binding("end", "bottom", "Bottom", id="viewer.end", show=False),
    ]

    COMPONENT_CLASSES = {"file-view--gutter", "file-view--target"}

    DEFAULT_CSS = """
    FileView { background: $surface; }
    FileView > .file-view--gutter { color: $text-muted; }
    FileView > .file-view--target { background: $accent 25%; }
    """

    @dataclass
    class Fetched(Message):
        """Blocks read by the fetch worker, and the line to show once they are in."""

        blocks: dict[int, list[str]]
        line: int
        serial: int
        error: str = ""

    def __init__(
        self, volume: Volume, file: VolumeFile, line: int = 1, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.volume = volume
        self.file = file
        self.n_lines = max(file.n_lines, 0)
        self.target = min(max(line, 1), max(self.n_lines, 1))
        self._digits = len(str(max(self.n_lines, 1)))
        self._gutter_width = self._digits + 3  # "123 │ "
        self._blocks: LRUCache[int, list[str]] = LRUCache(CACHED_BLOCKS)
        self._strips: LRUCache[tuple[int, bool], tuple[Strip, Strip]] = LRUCache(CACHED_STRIPS)
        self._lexer = make_lexer(file.language)
        self._token_styles: dict[_TokenType, str | None] = {}
        self._widest = 0
        self._spinner: Timer | None = None
        self._serial = 0  # the latest jump; an earlier jump's blocks are kept, not shown
        self.virtual_size = Size(self._gutter_width + MIN_WIDTH, self.n_lines)

    def on_mount(self) -> None:
        self.jump_to(self.target)

    # reading

    def _read_block(self, block: int) -> list[str]:
        """Lines of one block, as drawn; this runs in the fetch worker or in render_line."""
        start = block * BLOCK_LINES + 1
        end = min(start + BLOCK_LINES - 1, self.n_lines)
        if end < start:
            return []
        lines = self.volume.file_lines(self.file.path, start, end)
        return [display_text(line.text) for line in lines]

    def _store_block(self, block: int, texts: list[str]) -> None:
        self._blocks[block] = texts
        widest = max((cell_len(text) for text in texts), default=0)
        if widest > self._widest:
            self._widest = widest
            # Grow the virtual width after this frame, never while it is being drawn.
            self.call_later(self._update_width)

    def _update_width(self) -> None:
        width = self._gutter_width + max(MIN_WIDTH, self._widest + 1)
        if width > self.virtual_size.width:
            self.virtual_size = Size(width, self.n_lines)

    def line_text(self, line: int) -> str:
        """The text of file line `line` (1-based) as drawn, from the block cache."""
        block, index = divmod(line - 1, BLOCK_LINES)
        texts = self._blocks.get(block)
        if texts is None:
            try:
                texts = self._read_block(block)
            except (VolumeError, OSError, ValueError) as exc:
                texts = [f"⚠ {exc}"]
            self._store_block(block, texts)
        return texts[index] if index < len(texts) else ""

    def _blocks_around(self, line: int) -> list[int]:
        """The blocks a screen centred on `line` draws."""
        half = max(self.scrollable_content_region.height, 50)
        first = max(line - half, 1)
        last = min(line + half, self.n_lines)
        return list(range((first - 1) // BLOCK_LINES, (last - 1) // BLOCK_LINES + 1))

    # jumping

    def jump_to(self, line: int, *, mark: bool = True) -> None:
        """Show file line `line` in the middle of the view (and mark it when `mark`); far
        jumps read their blocks in a worker first."""
        line = min(max(line, 1), max(self.n_lines, 1))
        if mark:
            self._set_target(line)
        self._serial += 1  # a fetch still on its way for an earlier jump lands unseen
        missing = [b for b in self._blocks_around(line) if b not in self._blocks]
        if missing:
            # A spinner only if the read is slow: most jumps land within a frame or two.
            if self._spinner is None:
                self._spinner = self.set_timer(0.25, self._show_spinner)
            self._fetch(missing, line, self._serial)
        else:
            self._stop_spinner()
            self._centre(line)

    @work(thread=True, exclusive=True, group="viewer-fetch", exit_on_error=False,
          description="read file lines")  # fmt: skip
    def _fetch(self, blocks: list[int], line: int, serial: int) -> None:
        try:
            read = {block: self._read_block(block) for block in blocks}
        except (VolumeError, OSError, ValueError) as exc:
            self.post_message(self.Fetched({}, line, serial, str(exc)))
        else:
            if not get_current_worker().is_cancelled:
                self.post_message(self.Fetched(read, line, serial))

    def _show_spinner(self) -> None:
        self.loading = True

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
        self.loading = False

    @on(Fetched)
    def _fetched(self, message: Fetched) -> None:
        for block, texts in message.blocks.items():
            self._store_block(block, texts)
        if message.serial != self._serial:
            return  # a later jump is on its way
        self._stop_spinner()
        if message.error:
            self.notify(message.error, title="cannot read lines", severity="error")
        self._centre(message.line)

    def _centre(self, line: int) -> None:
        def scroll() -> None:
            half = self.scrollable_content_region.height // 2
            self.scroll_to(y=max(line - 1 - half, 0), animate=False, force=True)

        # Before the first layout the view has no height to centre in.
        if self.scrollable_content_region.height:
            scroll()
        else:
            self.call_after_refresh(scroll)

    def _set_target(self, line: int) -> None:
        if line != self.target:
            self.target = line
            self.refresh()

    def action_top(self) -> None:
        self.jump_to(1, mark=False)

    def action_bottom(self) -> None:
        self.jump_to(self.n_lines, mark=False)

    # drawing

    def _token_style(self, token_type: _TokenType) -> str | None:
        if token_type not in self._token_styles:
            styles = HighlightTheme.STYLES
            kind: _TokenType | None = token_type
            while kind is not None and kind not in styles:
                kind = kind.parent
            self._token_styles[token_type] = styles.get(kind) if kind is not None else None
        return self._token_styles[token_type]

    def highlight(self, text: str) -> Content:
        """One line, highlighted on its own."""
        if self._lexer is None or not text:
            return Content(text)
        spans: list[Span] = []
        start = 0
        for token_type, token in self._lexer.get_tokens(text):
            end = start + len(token)
            if style := self._token_style(token_type):
                spans.append(Span(start, end, style))
            start = end
        return Content(text, spans)

    def _line_strips(self, line: int, target: bool) -> tuple[Strip, Strip]:
        """The gutter and the highlighted text of one line, uncropped (cached)."""
        key = (line, target)
        strips = self._strips.get(key)
        if strips is None:
            base = self.get_visual_style("file-view--target") if target else self.visual_style
            gutter_style = base if target else self.get_visual_style("file-view--gutter")
            gutter = Strip([Segment(f"{line:>{self._digits}} │ ", gutter_style.rich_style)])
            body = Strip(self.highlight(self.line_text(line)).render_segments(base))
            strips = self._strips[key] = (gutter, body)
        return strips

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        line = scroll_y + y + 1
        base = self.rich_style
        if line > self.n_lines:
            if self.n_lines == 0 and y == 0:
                return Strip([Segment("(empty file)", base)]).extend_cell_length(width, base)
            return Strip.blank(width, base)
        target = line == self.target
        gutter, body = self._line_strips(line, target)
        fill = self.get_visual_style("file-view--target").rich_style if target else base
        body = body.crop_extend(scroll_x, scroll_x + width - self._gutter_width, fill)
        return Strip.join([gutter, body]).crop(0, width)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()


class FileViewer(Screen[None]):
    """One file of a volume, full screen; Esc goes back."""

    CSS_PATH = "viewer.tcss"
    BINDINGS = [
        Binding("escape", "close", "Back", id="viewer.close"),
        Binding("ctrl+g", "goto", "Go to line", id="viewer.goto"),
    ]

    def __init__(self, volume: Volume, path: str, line: int = 1) -> None:
        super().__init__()
        self.volume = volume
        self.vfile = volume.file(path)
        self.line = line

    @property
    def view(self) -> FileView:
        return self.query_one(FileView)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield FileView(self.volume, self.vfile, self.line, id="file-view")
        yield Input(placeholder="go to line · Enter jumps · Esc cancels", type="integer", id="goto")
        yield Footer()

    def on_mount(self) -> None:
        vfile = self.vfile
        self.title = printable(f"{self.volume.name}:{vfile.path}")
        self.sub_title = f"{vfile.n_lines:,} lines · {vfile.language or 'text'}"
        self.view.focus()

    def action_close(self) -> None:
        goto = self.query_one("#goto", Input)
        if goto.has_class("shown"):
            goto.remove_class("shown")
            self.view.focus()
        else:
            self.dismiss()

    def action_goto(self) -> None:
        goto = self.query_one("#goto", Input)
        goto.add_class("shown")
        goto.clear()
        goto.focus()

    @on(Input.Submitted, "#goto")
    def _goto(self, event: Input.Submitted) -> None:
        event.input.remove_class("shown")
        self.view.focus()
        if event.value.strip().isdigit():
            self.view.jump_to(int(event.value))
