"""What every `nanobot` command shares: exit codes, the one-line error, argument types."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from nanobot_tui.text import printable

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

N = TypeVar("N", int, float)


def fail(message: str, code: int = EXIT_FAIL) -> int:
    """Print one line on stderr and return the exit code. A path or a server's reply in the
    message may hold terminal control sequences: they are dropped, never acted on."""
    print(f"nanobot: {printable(message)}", file=sys.stderr)
    return code


def number_type(
    convert: Callable[[str], N], kind: str, accept: Callable[[N], bool], rule: str
) -> Callable[[str], N]:
    """An argparse `type=` that converts, then checks a range, saying which it failed:
    "not a whole number: 'x'" or "must be at least 1, not 0"."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {value}")
        return value

    return parse


positive_int = number_type(int, "whole number", lambda v: v >= 1, "at least 1")
positive_float = number_type(float, "number", lambda v: v > 0, "positive")
probability = number_type(float, "number", lambda v: 0.0 < v < 1.0, "strictly between 0 and 1")
