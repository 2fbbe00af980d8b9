"""The chat's prompt: a text area that takes multi-line text. Enter sends the whole text;
ctrl+j starts a new line (so do shift+enter and alt+enter, in terminals that report them:
most send alt+enter as a plain Enter, and shift+enter not at all); a paste is inserted
whole, newlines included (a terminal sends them as CR), never sends, and draws no control
sequence. It grows with its text up to a few lines, then scrolls. Its placeholder is the
longest of its hints that fits its width on one line.

Send and new line are bindings (so the Keys panel lists them and a keymap can move them)
that the prompt runs itself, in its key handler: keys a terminal delivers in one burst
("hello" and Enter, from fast typing or a script) then act in the order they came, where
a binding's action would run before the text queued ahead of it (a priority binding) or
after the text behind it. A keymap that moves `chat.send` off Enter gives Enter back to new
lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from nanobot_tui.text import printable

# Rows the prompt grows to, its border included (a tall border takes two): then it scrolls.
MAX_HEIGHT = 8


class PromptArea(TextArea):
    """A prompt that sends on Enter and keeps multi-line text whole."""

    DEFAULT_CSS = f"""
    PromptArea {{ height: auto; max-height: {MAX_HEIGHT}; }}
    """
    BINDINGS = [
        Binding("enter", "submit", "Send", id="chat.send", show=False),
        # Not in the footer: at 80 columns it would push Quit out. The placeholder and the
        # help (F1) say it.
        Binding(
            "ctrl+j,shift+enter,alt+enter", "newline", "New line", id="chat.newline", show=False
        ),
    ]

    @dataclass
    class Submitted(Message):
        """Enter in the prompt: `value` is its whole text, newlines included."""

        prompt: PromptArea
        value: str

        @property
        def control(self) -> PromptArea:
            """For `@on(PromptArea.Submitted, "#id")`."""
            return self.prompt

    def __init__(self, *, placeholders: Sequence[str] = (), id: str | None = None) -> None:
        """`placeholders`: the hints to show while it is empty, longest first."""
        self.placeholders = tuple(placeholders)
        super().__init__(
            soft_wrap=True,
            tab_behavior="focus",  # Tab moves the focus and Esc is left to the pane
            highlight_cursor_line=False,
            placeholder=self.placeholders[0] if self.placeholders else "",
            id=id,
        )

    def on_resize(self, event: events.Resize) -> None:
        # A placeholder that wraps would show its first line only, cut mid-phrase.
        width = self.content_size.width
        fitting = (hint for hint in self.placeholders if cell_len(hint) <= width)
        self.placeholder = next(fitting, self.placeholders[-1] if self.placeholders else "")

    @property
    def value(self) -> str:
        """The prompt's text (as Input names it)."""
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)

    async def _on_key(self, event: events.Key) -> None:
        action = self._own_action(event.key)
        if action is None:
            await super()._on_key(event)
            return
        event.stop()
        event.prevent_default()
        if action == "submit":
            self.action_submit()
        else:
            self.action_newline()

    def _own_action(self, key: str) -> str | None:
        """ "submit" or "newline" when `key` is bound to one of them (the user's keymap
        applied), else None."""
        bindings = self._bindings.copy()
        if self.app._keymap:
            bindings.apply_keymap(self.app._keymap)
        for binding in bindings.key_to_bindings.get(key, ()):
            if binding.action in ("submit", "newline"):
                return binding.action
        return None

    async def _on_paste(self, event: events.Paste) -> None:
        event.prevent_default()  # in place of TextArea's own, which keeps CRs and ESCs
        if self.read_only:
            return
        text = printable(event.text.replace("\r\n", "\n").replace("\r", "\n"))
        result = self.replace(text, *self.selection, maintain_selection_offset=False)
        self.move_cursor(result.end_location)
        self.focus()

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        # In place of the selection, the cursor after it: as typing does.
        self.replace("\n", *self.selection, maintain_selection_offset=False)
