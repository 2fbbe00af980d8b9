"""Writing a volume's text.bin and lines.npy, one file's text after another.

Each source file is read once, in blocks, and made valid UTF-8 (bad bytes replaced by
U+FFFD and counted); its line starts are found with numpy and appended to lines.npy as it
goes, so no file is held whole in memory. An unchanged file's text can instead be copied
from the previous volume's text.bin, its line starts shifted to their new place.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nanobot_tui.engine.context.npy import HEADER_BYTES, npy_header
from nanobot_tui.engine.context.storage import LINES, TEXT

BINARY_PROBE = 8192  # a NUL byte in this many first bytes makes a file binary
BLOCK = 16 << 20  # files are read in blocks of this size
# fsync the new volume before it replaces the old one. Off: a volume is derived data that
# a re-ingest rebuilds, the swap is atomic against crashes of the process without it, and
# open() refuses a text.bin whose size disagrees with the manifest. On, it costs about
# half the ingest speed of a big volume (the writeback happens inside the ingest).
FSYNC = False


# -- UTF-8 with counted replacements ------------------------------------------------------

_bad = threading.local()


def _count_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):  # pragma: no cover - decoding only
        raise exc
    _bad.count = getattr(_bad, "count", 0) + (exc.end - exc.start)
    return "\ufffd", exc.end


codecs.register_error("nanobot-count-replace", _count_replace)


def to_utf8(data: bytes) -> tuple[bytes, int]:
    """`data` decoded with errors="replace" and encoded again, and the number of bytes
    that were replaced. Valid UTF-8 comes back as the same object."""
    if data.isascii():
        return data, 0
    try:
        data.decode("utf-8")
        return data, 0
    except UnicodeDecodeError:
        pass
    _bad.count = 0
    text = data.decode("utf-8", "nanobot-count-replace")
    return text.encode("utf-8"), _bad.count


def _char_cut(buf: bytes) -> int:
    """Where to cut `buf` so that no UTF-8 sequence is split: len(buf), or the start of an
    incomplete sequence at its end. Pieces cut this way decode independently exactly as
    the whole would (an error never spans a non-continuation byte)."""
    n = len(buf)
    for k in range(n - 1, max(n - 5, -1), -1):
        b = buf[k]
        if b < 0x80:
            return n
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4 if b < 0xF8 else 1
            return n if k + need <= n else k
    return n


# -- the writer ----------------------------------------------------------------------------


class WriteError(Exception):
    """Writing the new volume's files failed (a full disk, a quota): the sources are not
    at fault. Not an OSError, so that no reader takes it for an unreadable source."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise WriteError(exc) from exc


def _open_out(path: Path) -> BinaryIO:
    """Open one of the volume's files for writing (one place, so tests can fill the disk)."""
    return open(path, "wb", buffering=1 << 20)


class TextWriter:
    """Appends file texts to text.bin and their line starts to lines.npy. Every failure
    to write raises WriteError."""

    def __init__(self, folder: Path) -> None:
        with _writing():
            self.text = _open_out(folder / TEXT)
            try:
                self.lines = _open_out(folder / LINES)
            except BaseException:
                self.text.close()
                raise
        self._closed = False
        self.offset = 0
        self.n_lines = 0
        with _writing():
            self.lines.write(npy_header("<u8", (0,)))
            self.lines.write(np.zeros(1, "<u8").tobytes())

    def mark(self) -> tuple[int, int]:
        return self.offset, self.n_lines

    def rollback(self, mark: tuple[int, int]) -> None:
        self.offset, self.n_lines = mark
        with _writing():
            self.text.seek(self.offset)
            self.text.truncate()
            self.lines.seek(HEADER_BYTES + 8 * (self.n_lines + 1))
            self.lines.truncate()

    def piece(self, data: bytes | memoryview) -> None:
        """Text that is valid UTF-8: written, and every newline in it ends a line."""
        if not len(data):
            return
        nl = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
        with _writing():
            self.text.write(data)
            if len(nl):
                ends = (nl + (self.offset + 1)).astype("<u8")
                self.lines.write(ends.data.cast("B"))
        self.n_lines += len(nl)
        self.offset += len(data)

    def reuse(self, text: memoryview, ends: np.ndarray, old_offset: int) -> None:
        """A file's text and its line ends (positions after each "\\n") from an old volume."""
        shifted = (ends.astype(np.int64) + (self.offset - old_offset)).astype("<u8")
        with _writing():
            self.text.write(text)
            self.lines.write(shifted.data.cast("B"))
        self.offset += len(text)
        self.n_lines += len(ends)

    def finish(self) -> None:
        with _writing():
            self.lines.seek(0)
            self.lines.write(npy_header("<u8", (self.n_lines + 1,)))
            for fh in (self.text, self.lines):
                fh.flush()
                if FSYNC:
                    os.fsync(fh.fileno())

    def close(self) -> None:
        """Flush and close both files (WriteError if the last bytes cannot be written)."""
        if self._closed:
            return
        self._closed = True
        try:
            with _writing():
                self.text.close()
        finally:
            with _writing():
                self.lines.close()

    def abort(self) -> None:
        """Close both files, dropping what could not be written: the work folder they are
        in is about to be removed."""
        with contextlib.suppress(WriteError):
            self.close()


def _open_source(path: str) -> BinaryIO:
    """Open a source file for reading (one place, so tests can count the reads)."""
    return open(path, "rb", buffering=0)


def read_source(
    path: str, writer: TextWriter, tick: Callable[[int], None]
) -> tuple[int, int, str] | None:
    """Append one file's text; return (bad_bytes, bytes read, sha1), or None if binary."""
    sha = hashlib.sha1()
    bad = read = 0
    last = 10
    with _open_source(path) as fh:
        block = fh.read(BLOCK)
        if b"\0" in block[:BINARY_PROBE]:
            return None
        carry = b""
        while block:
            sha.update(block)
            read += len(block)
            nxt = fh.read(BLOCK)
            buf = carry + block if carry else block
            cut = _char_cut(buf) if nxt else len(buf)
            piece, carry = (buf, b"") if cut == len(buf) else (buf[:cut], buf[cut:])
            text, n_bad = to_utf8(piece)
            bad += n_bad
            writer.piece(text)
            if text:
                last = text[-1]
            tick(len(block))
            block = nxt
    if last != 10:
        writer.piece(b"\n")
    return bad, read, sha.hexdigest()
