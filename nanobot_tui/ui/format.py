"""What the panes, screens and widgets show the same way: text cut to a width, bars,
durations, rates, counts, times, node and run statuses; and whether a widget's screen
can be seen at all (a pane skips its polls while it cannot).

Nothing here imports a pane, a screen or the engine: every part of the UI may use it.
"""

from __future__ import annotations

import time

from rich.cells import cell_len
from rich.text import Text
from textual.widget import Widget

from nanobot_tui.text import printable

EIGHTHS = " ▏▎▍▌▋▊▉"

# Node status -> icon and style: the process tree, the inspect screen and the agent tree.
ICONS: dict[str, tuple[str, str]] = {
    "pending": ("○", "dim"),
    "running": ("◐", "bold yellow"),
    "completed": ("●", "green"),
    "failed": ("✗", "bold red"),
    "skipped": ("⊘", "magenta"),
}
UNKNOWN_ICON = ("?", "dim")

# Run status -> style: the runs list and the process tree's header.
RUN_STYLES = {
    "running": "bold yellow",
    "paused": "bold cyan",
    "stopped": "bold magenta",
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "dim",
}


# --- text to a width ------------------------------------------------------------------


def fit(text: str, width: int) -> str:
    """`text` cut to `width` cells, with an ellipsis when cut (control sequences removed)."""
    text = printable(text)
    if cell_len(text) <= width:
        return text
    out = ""
    for char in text:
        if cell_len(out + char) > width - 1:
            break
        out += char
    return out + "…"


def pad(text: str, width: int, *, right: bool = False) -> str:
    """`text` fitted to `width` cells and padded to it (on the left when `right`)."""
    text = fit(text, width)
    gap = " " * (width - cell_len(text))
    return gap + text if right else text + gap


def one_line(text: str, limit: int) -> str:
    """Whitespace collapsed, cut to `limit` characters (control sequences removed)."""
    flat = " ".join(printable(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line of at most `limit` cells (its type when it says nothing)."""
    return fit(" ".join(str(exc).split()) or type(exc).__name__, limit)


def plural(n: int, word: str) -> str:
    """`1 error`, `3 errors`, `1,024 rounds`."""
    return f"{n:,} {word}{'s' if n != 1 else ''}"


# --- bars -----------------------------------------------------------------------------


def hbar(fraction: float, width: int, style: str) -> Text:
    """A horizontal bar in eighths of a cell; any nonzero fraction shows at least ▏."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    if fraction > 0 and eighths == 0:
        eighths = 1
    full, part = divmod(eighths, 8)
    body = "█" * full + (EIGHTHS[part] if part else "")
    return Text.assemble((body, style), " " * (width - cell_len(body)))


def progress_bar(fraction: float, width: int) -> Text:
    """Done in green blocks, the rest in dim shade, whole cells only."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(fraction * width)
    return Text.assemble(("█" * filled, "green"), ("░" * (width - filled), "dim"))


# --- numbers --------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """40 ms, 0.4 s, 12 s, 4:05, 1:02:03, 2d 03:04:05."""
    if seconds < 0.0995:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.0005 else "<1 ms"
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes}:{secs:02d}"
    days, hours = divmod(hours, 24)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {hours:02d}:{minutes:02d}:{secs:02d}" if days else clock


def millis(ms: float | None) -> str:
    """A time kept in milliseconds, as `duration` says it ("–" when not known)."""
    return "–" if ms is None else duration(float(ms) / 1000)


def rate_text(rate: float) -> str:
    """Steps a second: 110k steps/s, 420 steps/s, 0.5 steps/s."""
    if rate >= 10_000:
        return f"{rate / 1000:,.0f}k steps/s"
    if rate >= 10:
        return f"{rate:,.0f} steps/s"
    return f"{rate:.2g} steps/s" if rate > 0 else "– steps/s"


def probability(value: float | None) -> str:
    """0.9357; near 1 as 1−9.6e-07, so p_vote does not read as a flat 1.0000."""
    if value is None:
        return "–"
    if value < 0.9999 or value >= 1.0:
        return f"{value:.4f}"
    return f"1−{1.0 - value:.1e}"


def human_count(n: int) -> str:
    """1234 -> 1.2k, 3400000 -> 3.4M."""
    value = float(n)
    for unit in ("", "k", "M", "G"):
        if abs(value) < 1000 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1000
    return str(n)  # pragma: no cover


def when(value: object, now: float | None = None) -> str:
    """A timestamp (epoch seconds or ISO text) as "12 s ago", "3 h ago", or a date."""
    if value is None or value == "":
        return "–"
    if isinstance(value, int | float):
        ago = (time.time() if now is None else now) - float(value)
        if ago < 0:
            ago = 0.0
        if ago < 60:
            return f"{ago:.0f} s ago"
        if ago < 3600:
            return f"{ago / 60:.0f} min ago"
        if ago < 86400:
            return f"{ago / 3600:.0f} h ago"
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(value)))
    return str(value).replace("T", " ")[:16]


# --- statuses -------------------------------------------------------------------------


def verdict(ok: bool | None, *, right: str, wrong: str, unknown: Text) -> Text:
    """A check's outcome: `right` in green, `wrong` in red, `unknown` when there was
    nothing to check against."""
    if ok is None:
        return unknown
    return Text(right, style="bold green") if ok else Text(wrong, style="bold red")


def status_icon(status: str) -> tuple[str, str]:
    """A node's (icon, style); a cancelled one looks skipped: stopped before its end, no
    error."""
    if status == "cancelled":
        return ICONS["skipped"]
    return ICONS.get(status, UNKNOWN_ICON)


# --- what can be seen -----------------------------------------------------------------


def screen_shown(widget: Widget) -> bool:
    """Whether `widget`'s screen can be seen: on top, or under screens that all let it
    show through (the command palette). `Screen.is_current` also counts the screen just
    beneath an opaque one, so it is not used."""
    stack = widget.app.screen_stack
    screen = widget.screen
    if screen not in stack:
        return False
    above = stack[stack.index(screen) + 1 :]
    return all(other.styles.background.a < 1 for other in above)


# --- the model servers ----------------------------------------------------------------

# The palette command that starts again the servers that are down, and how to reach it.
RESTART_SERVERS = "Restart the model servers"
RESTART_HINT = f"ctrl+p › {RESTART_SERVERS}"
