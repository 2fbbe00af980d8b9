"""Regular expressions that a user or a model supplies, run in linear time.

Python's `re` backtracks: "(a+)+$" on a line of thirty a's and a b takes hours, and holds
the GIL meanwhile. Every pattern from outside (grep in the CLI, ctx_grep, the Volumes
pane's "re:" search) is compiled here instead, by RE2 (google-re2), whose matching time is
linear in the text. `_engine` is the one place that names the engine.

Patterns are written in Python's syntax and mean what they mean to `re.search` on one
line's text, as far as a linear engine can: \\d, \\w and \\s are Unicode classes as in
Python, \\Z and \\A end and start the line, {,n} is {0,n}, \\uXXXX is a character, and
with ignore_case "i" also matches "İ" and "ı". What RE2 lacks (backreferences,
lookahead and lookbehind, atomic groups, possessive quantifiers, conditionals, verbose
mode) is refused with one line saying so. Known differences that remain with RE2: \\b
and \\B see ASCII word characters only, and \\W or \\S inside [...] are ASCII (ripgrep,
which answers most greps, reads \\b as Python does). `rust_source` writes a pattern for
ripgrep (Rust's regex crate), escaping what Rust reads otherwise than Python.

Matching runs over UTF-8 bytes: text without CR before LF (`clean_piece`), so that "$"
ends a CRLF line as it ends that line's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import re2

from nanobot_tui.engine.context.storage import VolumeInputError

# Python's \s on str: the characters for which str.isspace() is true.
_SPACES = (
    r"\t\n\x0b\f\r\x1c-\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
)
_WORD = r"\p{L}\p{N}_"
# Escapes rewritten outside a character class, and inside one.
_OUTSIDE = {
    "d": r"\p{Nd}",
    "D": r"\P{Nd}",
    "w": f"[{_WORD}]",
    "W": f"[^{_WORD}]",
    "s": f"[{_SPACES}]",
    "S": f"[^{_SPACES}]",
    "A": "^",
    "Z": "$",
    "z": "$",
}
_INSIDE = {"d": r"\p{Nd}", "D": r"\P{Nd}", "w": _WORD, "s": _SPACES}
# Never matches: \B in an empty line, where Python's \B never matches.
_NEVER = r"[^\x00-\x{10FFFF}]"
_UNICODE_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))")
_EMPTY_MIN = re.compile(r"\{,(\d+)\}")
_REPEAT = re.compile(r"\{\d+(?:,\d*)?\}")
_GROUP_HEAD = re.compile(r"\(\?[^:)>]*[:)>]?")

# What RE2's error says -> what the user is told.
_LACKING = (
    (re.compile(r"invalid escape sequence: \\[1-9]|\(\?P=|\(\?P .*\(\?P="), "backreferences"),
    (re.compile(r"\(\?<?[=!]"), "lookahead and lookbehind"),
    (re.compile(r"\(\?>"), "atomic groups"),
    (re.compile(r"bad repetition operator: [*+?}]\+"), "possessive quantifiers"),
    (re.compile(r"\(\?\("), "conditionals"),
)


@dataclass(frozen=True)
class LinePattern:
    """A compiled user pattern: `scan` runs over many lines of cleaned UTF-8 joined by
    "\\n" (where ^ and $ are line edges); `search_line` tells whether one line matches."""

    scan: Any
    line: Any
    empty: Any  # the pattern for an empty line (differs only with \\B)
    verify: bool  # a hit in a scan must be checked on its line alone (\\B)

    def search_line(self, line: bytes) -> bool:
        return (self.line if line else self.empty).search(line) is not None


def compile_pattern(pattern: str, *, ignore_case: bool, literal: bool = False) -> LinePattern:
    """Compile a user's pattern, or raise VolumeInputError in one line."""
    src = re.escape(pattern) if literal else pattern
    try:
        translated, verify = _translate(src, ignore_case)
        scan = _engine(translated, ignore_case=ignore_case, multiline=True)
        line = _engine(translated, ignore_case=ignore_case, multiline=False)
        empty = line
        if verify:
            never, _ = _translate(src, ignore_case, no_edge=_NEVER)
            empty = _engine(never, ignore_case=ignore_case, multiline=False)
    except UnicodeEncodeError:
        raise VolumeInputError(f"invalid pattern {pattern!r}: a lone surrogate") from None
    except re2.error as exc:
        raise VolumeInputError(f"invalid pattern {pattern!r}: {_reason(exc, src)}") from None
    return LinePattern(scan, line, empty, verify)


def _engine(source: str, *, ignore_case: bool, multiline: bool) -> Any:
    """The linear-time engine: a compiled pattern over UTF-8 bytes, with .search(buf, pos)
    returning None or a match with .start() and .end() in bytes."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print parse errors on stderr
    options.never_capture = True
    options.case_sensitive = not ignore_case
    options.max_mem = 64 << 20
    return re2.compile(("(?m)" if multiline else "") + source, options)


def clean_piece(raw: bytes) -> bytes:
    """Text of whole lines as the engine reads it: valid UTF-8 (invalid bytes become
    U+FFFD, as bytes.decode(errors="replace") makes them) with the CR before each LF
    dropped. Line numbers (the count of LF) are unchanged."""
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raw = raw.decode("utf-8", "replace").encode("utf-8")
    return raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw


def _reason(exc: Exception, pattern: str) -> str:
    arg = exc.args[0] if exc.args else exc
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    text = " ".join(text.split())
    for rx, what in _LACKING:
        if rx.search(f"{text} {pattern}" if text.endswith("(?P") else text):
            return f"{what} are not supported (patterns run in linear time, with RE2)"
    return text


def rust_source(pattern: str, *, ignore_case: bool, literal: bool = False) -> str | None:
    """The pattern in the syntax of Rust's regex crate (ripgrep's), with Python's meaning,
    for a pattern that compile_pattern accepted; None for one with \\B (which Python never
    matches in an empty line, Rust does: only the RE2 path checks that)."""
    src = re.escape(pattern) if literal else pattern
    translated, verify = _translate(src, ignore_case, rust=True)
    return None if verify else translated


def _translate(
    pattern: str, ignore_case: bool, no_edge: str = r"\B", *, rust: bool = False
) -> tuple[str, bool]:
    """Python's syntax -> RE2's (or, with `rust`, the regex crate's), with Python's
    meaning (see the module's docstring): (translated, verify), verify when the pattern
    holds \\B (written as `no_edge`). For Rust, what it reads otherwise than Python is
    escaped: "[", "&&", "~~" and "--" inside a class (nesting and set operations), a "{"
    that is no repetition, and \\< \\> (word edges there, the characters in Python)."""
    out: list[str] = []
    verify = False
    i, n = 0, len(pattern)
    in_class = False
    class_start = 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            m = _UNICODE_ESCAPE.match(pattern, i)
            if m:
                out.append(f"\\x{{{m.group(1) or m.group(2)}}}")
                i = m.end()
                continue
            esc = pattern[i + 1 : i + 2]
            if esc in "pPx" and pattern[i + 2 : i + 3] == "{":  # \p{Greek}, \x{1F600}
                end = pattern.find("}", i)
                end = n if end < 0 else end + 1
                out.append(pattern[i:end])
                i = end
                continue
            if esc and (esc in "<>" or not esc.isascii()):
                out.append(esc)  # Python: the character; RE2 refuses, Rust: a word edge
            elif esc == "B" and not in_class:
                verify = True
                out.append(no_edge)
            else:
                out.append((_INSIDE if in_class else _OUTSIDE).get(esc, "\\" + esc))
            i += 2
            continue
        if in_class:
            # "]" right after "[" or "[^" is a literal member, not the end of the class.
            if c == "]" and i > class_start:
                in_class = False
            elif rust and (c in "[&~" or (c == "-" and pattern[i - 1] == "-")):
                c = "\\" + c  # nesting or a set operation in Rust, a member in Python
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            class_start = i + 1
            if pattern[i + 1 : i + 2] == "^":
                class_start += 1
        elif c == "(" and pattern[i + 1 : i + 2] == "?":
            # A group's head, copied as it is: (?i), (?i:, (?P<name>, (?P=name)
            m = _GROUP_HEAD.match(pattern, i)
            end = m.end() if m else i + 2
            out.append(pattern[i:end])
            i = end
            continue
        elif c == "{" and (m := _EMPTY_MIN.match(pattern, i)):
            out.append(f"{{0,{m.group(1)}}}")
            i = m.end()
            continue
        elif rust and c == "{":
            m = _REPEAT.match(pattern, i)
            out.append(m.group() if m else "\\{")  # Python: a literal "{"; Rust: an error
            i = m.end() if m else i + 1
            continue
        elif rust and c == "}":
            out.append("\\}")
            i += 1
            continue
        elif ignore_case and c in "iI":
            out.append("[iIİı]")  # Python's IGNORECASE folds these, Unicode's does not
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out), verify
