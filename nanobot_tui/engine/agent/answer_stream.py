"""The readable text of a constrained reply as it streams: the string of its
`{"answer": "..."}`, decoded as it comes (a tool call, another first key, gives nothing)."""

from __future__ import annotations

import re

_ANSWER_HEAD = re.compile(r'\s*\{\s*"answer"\s*:\s*"')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class AnswerStream:
    """The text of a constrained reply's `{"answer": "..."}` string as it streams: `feed`
    takes the reply's next characters and returns the answer's text they complete. A
    tool call (another first key) gives nothing."""

    def __init__(self) -> None:
        self.head = ""  # the reply before the answer's string starts
        self.inside = False
        self.ended = False
        self.escape = ""  # an escape sequence begun and not finished
        self.high = 0  # the first half of a surrogate pair, waiting for its second

    def feed(self, chunk: str) -> str:
        if self.ended:
            return ""
        if not self.inside:
            self.head += chunk
            found = _ANSWER_HEAD.match(self.head)
            if found is None:
                if len(self.head) > 64 or not could_open_answer(self.head):
                    self.ended = True
                return ""
            self.inside = True
            chunk, self.head = self.head[found.end() :], ""
        out: list[str] = []
        for ch in chunk:
            if self.escape:
                self.escape += ch
                if self.escape[1] == "u":
                    if len(self.escape) == 6:
                        out.append(self._unicode(self.escape[2:]))
                        self.escape = ""
                else:
                    out.append(_ESCAPES.get(self.escape[1], self.escape[1]))
                    self.escape = ""
            elif ch == "\\":
                self.escape = ch
            elif ch == '"':
                self.ended = True
                break
            else:
                out.append(ch)
        return "".join(out)

    def _unicode(self, digits: str) -> str:
        """One \\uXXXX escape; a surrogate pair's halves are joined into one character."""
        try:
            code = int(digits, 16)
        except ValueError:
            return "\ufffd"
        if 0xD800 <= code < 0xDC00:
            self.high = code
            return ""
        high, self.high = self.high, 0
        if 0xDC00 <= code < 0xE000:
            return chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)) if high else "\ufffd"
        return chr(code)


def could_open_answer(head: str) -> bool:
    """Whether `head` may still become the start of `{"answer": "`."""
    compact = re.sub(r"\s+", "", head)
    return '{"answer":"'.startswith(compact)


__all__ = ["AnswerStream", "could_open_answer"]
