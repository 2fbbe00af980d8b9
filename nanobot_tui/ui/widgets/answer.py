"""The model's answer in the chat, drawn as Markdown.

A module of its own so that Markdown (markdown-it, and pygments for code blocks) is
loaded with the first answer, not before the app's first frame.
"""

from __future__ import annotations

from typing import Any

from textual.await_complete import AwaitComplete
from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownStream

from nanobot_tui.text import printable


class Answer(Markdown):
    """The model's answer, without terminal control sequences (text.printable)."""

    def __init__(self, markdown: str | None = None, **kwargs: Any) -> None:
        super().__init__(None if markdown is None else printable(markdown), **kwargs)

    def update(self, markdown: str) -> AwaitComplete:
        return super().update(printable(markdown))

    def append(self, markdown: str) -> AwaitComplete:
        return super().append(printable(markdown))

    def stream(self) -> MarkdownStream:
        """A stream that appends to this answer as text arrives."""
        return Markdown.get_stream(self)
