"""Numbers as people read them: byte sizes and durations, the same in the CLI and the app."""

from __future__ import annotations


def human_bytes(n: int | float) -> str:
    """Decimal units, one decimal, as Hugging Face shows sizes: 98.4 MB, 18.6 GB."""
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1000:
        return f"{sign}{int(value)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":
            return f"{sign}{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_seconds(seconds: float) -> str:
    """Whole seconds as 42s, 3m07s or 2h05m: short enough for a progress line."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
