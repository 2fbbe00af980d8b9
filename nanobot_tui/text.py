"""Text from a model or a file, made safe to draw: no terminal control sequences.

A reply holding ESC ] 0 ; title BEL set the terminal's title, and ESC [ 31 m turned what
followed red: terminals act on such bytes wherever they appear. `printable` removes them
from every model- or file-supplied text before the app or the CLI draws it: ESC
sequences (CSI, OSC, DCS, SOS, PM, APC, and the two-character ones), their 8-bit C1
forms, and every other C0 or C1 control character except newline and tab.
"""

from __future__ import annotations

import re

# A string sequence (OSC, DCS, SOS, PM, APC) runs to BEL or ST (ESC \ or 0x9c); one
# without its end runs to the next control character. No nested quantifiers: linear.
_STRING_BODY = r"[^\x07\x1b\x9c\x00-\x06\x08-\x1a\x1c-\x1f]*(?:\x07|\x1b\\|\x9c)?"
_SEQUENCE = re.compile(
    "|".join(
        (
            r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?",  # CSI
            rf"(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f]){_STRING_BODY}",  # OSC DCS SOS PM APC
            r"\x1b[ -/]*[0-~]?",  # the other ESC sequences, or a lone ESC
            r"[\x00-\x08\x0b-\x1f\x7f-\x9f]",  # other C0 and C1 controls, and DEL
        )
    )
)
_ANY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without terminal control sequences or control characters, newline and tab
    kept."""
    if _ANY_CONTROL.search(text) is None:
        return text
    return _SEQUENCE.sub("", text)


_NAME_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def display_name(name: str) -> str:
    """A file name for a one-line `file:line` form: control characters (a newline, a tab,
    ESC, ...) shown escaped as the two characters `\\n`, `\\t`, or `\\xNN`, so that a name
    holding one cannot break the line or forge another. JSON output keeps the real name."""
    if _NAME_CONTROL.search(name) is None:
        return name
    return _NAME_CONTROL.sub(lambda m: _NAME_ESCAPES.get(m[0], f"\\x{ord(m[0]):02x}"), name)
