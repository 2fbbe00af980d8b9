""".npy files written as a stream: the header first, the data appended, the header
rewritten with the final length at the end (volumes' lines.npy, the index's arrays).

The header is numpy's version 1.0 format padded to HEADER_BYTES, enough for any 1-D or
2-D shape, so its length never changes when it is rewritten; `np.load` reads the result.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

HEADER_BYTES = 128


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for an array of dtype `descr` and `shape`, padded to
    exactly HEADER_BYTES."""
    shape_text = "(" + "".join(f"{n}," for n in shape) + ")"
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}"
    body = text.encode("latin1")
    pad = HEADER_BYTES - 10 - len(body) - 1
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", HEADER_BYTES - 10) + body + b" " * pad + b"\n"


class NpyAppender:
    """Appends 1-D arrays of one dtype to a .npy file without holding them in memory."""

    def __init__(self, path: Path, dtype: str) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._file = path.open("wb")
        self._file.write(b"\0" * HEADER_BYTES)

    def append(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array, dtype=self.dtype)
        self._file.write(data.tobytes())
        self.count += data.size

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(npy_header(self.dtype.str, (self.count,)))
        self._file.close()
