"""One tool call in the chat transcript: a compact call line and its result, collapsed.

    ▸ read_file(path="src/app.py")
      ▶ ✓ 12 ms · 1.4 kB

The result's body is highlighted when it is code: a read_file result (numbered lines)
with the lexer guessed from the file's name, or JSON; anything else is plain text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widgets import Collapsible, Static

from nanobot_tui.text import printable
from nanobot_tui.ui.format import duration, fit
from nanobot_tui.units import human_bytes

ARG_CELLS = 40  # one argument's value on the call line, at most
RAW_ARG_CELLS = 80  # arguments that are not a JSON object, at most
# read_file's numbered lines ("  12| text"), as workspace.read_file writes them.
_NUMBERED = re.compile(r"^\s*(\d+)\| ?(.*)$")
OK_ICON, ERROR_ICON, CANCELLED_ICON, RUNNING_ICON = "✓", "✗", "⊘", "…"


def call_line(name: str, arguments: str | dict[str, Any] | None) -> Text:
    """`▸ name(key="value", n=3)`: each value as JSON, clipped."""
    parsed: object = arguments
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            parsed = arguments
    if isinstance(parsed, dict):
        shown = ", ".join(
            f"{key}={fit(json.dumps(value, ensure_ascii=False), ARG_CELLS)}"
            for key, value in parsed.items()
        )
    else:
        shown = fit(" ".join(str(parsed if parsed is not None else "").split()), RAW_ARG_CELLS)
    return Text.assemble(("▸ ", "dim"), (printable(name), "bold"), f"({printable(shown)})")


def parsed_arguments(arguments: str | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def lexer_for(path: str) -> str | None:
    """Pygments' lexer name for a file's name; None when it names none."""
    # pygments (and rich.syntax) load with the first result shown, not at start-up.
    from pygments.lexers import get_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_for_filename(path)
    except ClassNotFound:
        return None
    aliases = lexer.aliases
    return aliases[0] if aliases and aliases[0] != "text" else None


def result_body(content: str, arguments: dict[str, Any], *, dark: bool = True) -> RenderableType:
    """The result as it reads best: numbered file lines highlighted by the file's type,
    JSON pretty and highlighted, anything else as plain text (control sequences removed)."""
    from rich.syntax import Syntax

    content = printable(content)
    theme = "ansi_dark" if dark else "ansi_light"
    path = arguments.get("path")
    if isinstance(path, str) and (lexer := lexer_for(path)):
        code = _numbered_code(content)
        if code is not None:
            head, first, lines, tail = code
            syntax = Syntax(
                "\n".join(lines),
                lexer,
                theme=theme,
                line_numbers=True,
                start_line=first,
                word_wrap=True,
                background_color="default",
            )
            parts: list[RenderableType] = [Text(line, style="dim") for line in head]
            parts.append(syntax)
            parts += [Text(line, style="dim") for line in tail]
            return Group(*parts)
    stripped = content.strip()
    if stripped[:1] in ("{", "["):
        try:
            value = json.loads(stripped)
        except ValueError:
            pass
        else:
            pretty = json.dumps(value, indent=2, ensure_ascii=False)
            return Syntax(pretty, "json", theme=theme, word_wrap=True, background_color="default")
    return Text(content)


def _numbered_code(content: str) -> tuple[list[str], int, list[str], list[str]] | None:
    """(lines before, first line number, the code, lines after) of a run of numbered
    lines; None when there is none."""
    lines = content.splitlines()
    start = next((i for i, line in enumerate(lines) if _NUMBERED.match(line)), None)
    if start is None:
        return None
    end = start
    code: list[str] = []
    while end < len(lines) and (match := _NUMBERED.match(lines[end])):
        code.append(match.group(2))
        end += 1
    first = _NUMBERED.match(lines[start])
    assert first is not None
    return lines[:start], int(first.group(1)), code, lines[end:]


@dataclass(frozen=True)
class Outcome:
    """How a call ended, as its block shows it."""

    content: str
    ok: bool
    elapsed_s: float | None = None  # None: not known (a result read back without timing)
    truncated: bool = False
    cancelled: bool = False

    def title(self) -> str:
        if self.cancelled:
            return f"{CANCELLED_ICON} cancelled"
        parts = [] if self.ok else ["error"]
        if self.elapsed_s is not None:
            parts.append(duration(self.elapsed_s))
        parts.append(human_bytes(len(self.content.encode("utf-8"))))
        if self.truncated:
            parts.append("cut")
        return f"{OK_ICON if self.ok else ERROR_ICON} {' · '.join(parts)}"


class ToolBlock(Vertical):
    """A tool call and, once it is done, its result (collapsed; Enter or a click opens it)."""

    DEFAULT_CSS = """
    ToolBlock { height: auto; }
    ToolBlock .tool-call { color: $text-secondary; text-wrap: nowrap; text-overflow: ellipsis; }
    ToolBlock Collapsible {
        background: transparent; border-top: none; padding: 0 0 0 2;
    }
    ToolBlock Collapsible > Contents { padding: 0 0 0 2; }
    ToolBlock CollapsibleTitle { padding: 0 1 0 0; }
    ToolBlock.-error CollapsibleTitle { color: $text-error; }
    ToolBlock.-running CollapsibleTitle, ToolBlock.-cancelled CollapsibleTitle {
        color: $text-muted;
    }
    """

    def __init__(self, call_id: str, name: str, arguments: str | dict[str, Any] | None) -> None:
        super().__init__(classes="-running")
        self.call_id = call_id
        self.tool_name = name
        self.arguments = parsed_arguments(arguments)
        self._line = call_line(name, arguments)
        self.outcome: Outcome | None = None

    def compose(self) -> ComposeResult:
        yield Static(self._line, classes="tool-call", markup=False)
        with Collapsible(title=self._title(), collapsed=True):
            yield Static(self._body(), classes="tool-result", markup=False)

    def _title(self) -> str:
        return f"{RUNNING_ICON} running" if self.outcome is None else self.outcome.title()

    def _body(self) -> RenderableType:
        if self.outcome is None:
            return ""
        dark = self.app.current_theme.dark if self.is_attached else True
        return result_body(self.outcome.content, self.arguments, dark=dark)

    def finish(self, outcome: Outcome) -> None:
        """Show how the call ended (before or after the block is mounted)."""
        self.outcome = outcome
        self.set_class(outcome.cancelled, "-cancelled")
        self.set_class(not outcome.ok and not outcome.cancelled, "-error")
        self.remove_class("-running")
        try:
            collapsible = self.query_one(Collapsible)
            body = self.query_one(".tool-result", Static)
        except NoMatches:
            return  # not composed yet: compose draws the outcome
        collapsible.title = self._title()
        body.update(self._body())

    @property
    def running(self) -> bool:
        return self.outcome is None
