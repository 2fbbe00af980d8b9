"""text.printable: what a model or a file supplies is drawn without control sequences."""

from __future__ import annotations

import pytest

from nanobot_tui.text import printable

HOSTILE = [
    ("\x1b]0;PWNED\x07title", "title"),  # OSC ended by BEL: sets the window title
    ("\x1b]2;PWNED\x1b\\title", "title"),  # OSC ended by ST
    ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # a hyperlink
    ("\x1b[31mred\x1b[0m", "red"),  # CSI: colour
    ("\x1b[2J\x1b[H\x1b[?1049h", ""),  # clear, home, alternate screen
    ("\x1bPq#0;2;0;0;0\x1b\\sixel", "sixel"),  # DCS
    ("\x1b_APC\x1b\\ \x1b^PM\x1b\\ \x1bXSOS\x1b\\", "  "),  # APC, PM, SOS
    ("\x1bc\x1b(B\x1b7\x1b8reset", "reset"),  # two-character ESC sequences
    ("\x9b31mC1 csi", "C1 csi"),  # 8-bit CSI
    ("\x9d0;PWNED\x07C1 osc", "C1 osc"),  # 8-bit OSC
    ("\x1b]0;never ended", ""),  # an OSC without its end
    ("bell\x07 back\x08 cr\r del\x7f nul\x00 esc\x1b", "bell back cr del nul esc"),
    ("\x85\x8d\x9c\x9f", ""),  # the other C1 controls
]


@pytest.mark.parametrize(("raw", "shown"), HOSTILE)
def test_control_sequences_are_removed(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_text_newlines_tabs_and_unicode_are_kept() -> None:
    text = "a\tb\nc ÉCOLE 日本 😀 [1, 2] ✓ \u00a0 ÿ"
    assert printable(text) is text
    assert printable("x\x1b[1my\n\tz") == "xy\n\tz"


def test_a_long_hostile_text_is_cleaned_in_one_pass() -> None:
    text = ("\x1b]0;" + "a" * 1000) * 200 + "\x1b[" * 10_000 + "0m end"
    assert printable(text).endswith("end") and "\x1b" not in printable(text)
