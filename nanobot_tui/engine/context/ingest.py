"""Ingest a file or a folder into a volume (see volume.py for the storage format).

The walk is sorted and deterministic; it skips VCS folders, honours .gitignore files
(the root's and every subfolder's, plus .git/info/exclude), does not follow symlinked
folders, skips symlinks that point outside the root and files with a NUL byte in their
first 8 KiB (binary). Each file is read once in binary, validated as UTF-8 (bad bytes
replaced and counted), and its line starts found with numpy; text.bin and lines.npy are
written sequentially in a work folder that replaces the previous volume only when
complete. Re-ingesting the same root reuses every file whose size and mtime did not
change: its text is copied from the old text.bin and its line starts shifted.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pathspec import GitIgnoreSpec

from nanobot_tui import paths
from nanobot_tui.engine.context.volume import (
    INDEX_DIR,
    LINES,
    MANIFEST,
    TEXT,
    Volume,
    VolumeError,
    VolumeFile,
    install,
    manifest_dict,
    recover,
    valid_name,
    volumes_dir,
    work_dir,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", ".pijul"})
BINARY_PROBE = 8192  # a NUL byte in this many first bytes makes a file binary
BLOCK = 16 << 20  # files are read in blocks of this size
PROGRESS_INTERVAL = 0.05  # seconds between progress calls within a phase
# fsync the new volume before it replaces the old one. Off: a volume is derived data that
# a re-ingest rebuilds, the swap is atomic against crashes of the process without it, and
# open() refuses a text.bin whose size disagrees with the manifest. On, it costs about
# half the ingest speed of a big volume (the writeback happens inside the ingest).
FSYNC = False
_NPY_HEADER = 128  # bytes: lines.npy's header is written first and rewritten at the end


@dataclass(frozen=True)
class IngestProgress:
    """Where an ingest is. Units per phase: scan: files found (total 0, not known yet);
    read: bytes of the files (their sizes on disk); write: steps; index: whatever the
    index builder counts (chunks)."""

    phase: str  # "scan" | "read" | "write" | "index"
    done: int
    total: int
    path: str = ""


@dataclass
class IngestReport:
    name: str
    root: str
    files: int
    lines: int
    bytes: int
    bad_bytes: int
    est_tokens: int
    added: int
    changed: int
    removed: int
    unchanged: int
    skipped_binary: int
    skipped_ignored: int  # ignored entries (an ignored folder counts once)
    unreadable: list[tuple[str, str]]  # (path, reason)
    seconds: float
    indexed: bool
    replaced: bool = False  # an existing volume of another root (or unreadable) was replaced
    skipped_links: int = 0  # symlinks to folders, outside the root, or broken
    read_bytes: int = 0  # bytes read from source files (not reused from the old volume)
    index: dict[str, object] | None = None  # the chunk index's report: chunks, reused, ...

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unreadable"] = [{"path": p, "reason": r} for p, r in self.unreadable]
        return d


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


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


# -- languages -----------------------------------------------------------------------------

_SIMPLE_GLOB = re.compile(r"\*\.[^*?\[\].]+")
_special: re.Pattern[str] | None = None
_languages: dict[str, str] = {}


def language_of(path: str) -> str:
    """A file's language from its name, as pygments' lexer lookup says: the lexer's first
    alias ("python", "markdown"), "log" for *.log, "text" when no lexer claims it."""
    global _special
    base = path.rsplit("/", 1)[-1]
    if base.endswith(".log"):
        return "log"
    if _special is None:
        try:
            from pygments.lexers._mapping import LEXERS

            globs = {g for lx in LEXERS.values() for g in lx[3] if not _SIMPLE_GLOB.fullmatch(g)}
        except Exception:  # a private table: without it every name is looked up
            globs = {"*"}
        _special = re.compile("|".join(fnmatch.translate(g) for g in sorted(globs)) or "(?!)")
    # Names that only "*.ext" globs can claim share their answer with their extension.
    if _special.match(base):
        key = "=" + base
    else:
        dot = base.rfind(".")
        key = base[dot:] if dot >= 0 else ""
    lang = _languages.get(key)
    if lang is None:
        from pygments.lexers import find_lexer_class_for_filename

        try:
            cls = find_lexer_class_for_filename(base)
        except Exception:  # a broken plugin lexer must not stop an ingest
            cls = None
        lang = (cls.aliases[0] if cls.aliases else cls.name.lower()) if cls else "text"
        _languages[key] = lang
    return lang


# -- progress ------------------------------------------------------------------------------


class _Progress:
    """Calls the user's callback at most every PROGRESS_INTERVAL within a phase (the first
    and the last call of a phase always go through)."""

    def __init__(self, callback: Callable[[IngestProgress], None] | None) -> None:
        self.callback = callback
        self.phase = ""
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int, path: str = "", *, force=False):
        if self.callback is None:
            return
        now = time.monotonic()
        if force or phase != self.phase or now - self.last >= PROGRESS_INTERVAL:
            self.phase, self.last = phase, now
            self.callback(IngestProgress(phase, done, total, path))

    def for_index(self) -> Callable[..., None] | None:
        """A callback for the index builder: takes an IngestProgress, or
        ([phase,] done, total[, path]), phase "index" by default."""
        if self.callback is None:
            return None

        def report(*args: Any, **kwargs: Any) -> None:
            if args and isinstance(args[0], IngestProgress):
                p = args[0]
                self(p.phase, p.done, p.total, p.path, force=p.done >= p.total)
                return
            phase = str(kwargs.get("phase", "index"))
            if args and isinstance(args[0], str):
                phase, args = args[0], args[1:]
            done = int(kwargs.get("done", args[0] if args else 0))
            total = int(kwargs.get("total", args[1] if len(args) > 1 else 0))
            path = str(kwargs.get("path", args[2] if len(args) > 2 else ""))
            self(phase, done, total, path, force=done >= total)

        return report


# -- the walk ------------------------------------------------------------------------------


@dataclass
class _Source:
    rel: str  # the path in the volume
    abs: str
    size: int
    mtime_ns: int


@dataclass
class _Scan:
    sources: list[_Source] = field(default_factory=list)
    ignored: int = 0
    links: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "vanished during ingest"
    return exc.strerror or str(exc) or type(exc).__name__


def _load_ignore(path: str) -> GitIgnoreSpec | None:
    try:
        with open(path, "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    return GitIgnoreSpec.from_lines(lines) if lines else None


def _ignored(specs: list[tuple[str, GitIgnoreSpec]], rel: str, is_dir: bool) -> bool:
    """Git's answer: the deepest .gitignore with a matching pattern decides, and within
    it the last matching pattern (so "!keep.log" re-includes a file)."""
    for base, spec in reversed(specs):
        sub = rel[len(base) :] + ("/" if is_dir else "")
        result = spec.check_file(sub).include
        if result is not None:
            return bool(result)
    return False


def _walk(root: str, tick: Callable[[int, str], None]) -> _Scan:
    scan = _Scan()
    root_real = os.path.realpath(root)
    try:  # nanobot's own data folder is never ingested (found by inode, cheaply)
        home = os.stat(paths.home())
        home_id: tuple[int, int] | None = (home.st_dev, home.st_ino)
    except OSError:
        home_id = None
    specs: list[tuple[str, GitIgnoreSpec]] = []
    exclude = _load_ignore(os.path.join(root, ".git", "info", "exclude"))
    if exclude is not None:
        specs.append(("", exclude))

    def entries(path: str, rel: str) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if not rel:
                raise VolumeError(f"cannot read {path}: {_reason(exc)}") from None
            scan.unreadable.append((rel.rstrip("/"), _reason(exc)))
            return iter(())
        return iter(items)

    def enter(path: str, rel: str) -> tuple[Iterator[os.DirEntry[str]], str, int]:
        depth = len(specs)
        spec = _load_ignore(os.path.join(path, ".gitignore"))
        if spec is not None:
            specs.append((rel, spec))
        return entries(path, rel), rel, depth

    stack = [enter(root, "")]
    while stack:
        it, prefix, depth = stack[-1]
        entry = next(it, None)
        if entry is None:
            stack.pop()
            del specs[depth:]
            continue
        rel = prefix + entry.name
        try:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                inside = target.startswith(root_real + os.sep)
                if not inside or not os.path.isfile(target):
                    if not _ignored(specs, rel, os.path.isdir(target)):
                        scan.links += 1
                    else:
                        scan.ignored += 1
                    continue
                is_dir, is_file = False, True
            else:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = not is_dir and entry.is_file(follow_symlinks=False)
            if is_dir:
                if entry.name in VCS_DIRS:
                    continue
                is_home = (
                    home_id is not None
                    and entry.inode() == home_id[1]
                    and entry.stat(follow_symlinks=False).st_dev == home_id[0]
                )
                if is_home or _ignored(specs, rel, True):
                    scan.ignored += 1
                    continue
                stack.append(enter(entry.path, rel + "/"))
                continue
            if _ignored(specs, rel, False):
                scan.ignored += 1
                continue
            if not is_file:
                scan.unreadable.append((rel, "not a regular file"))
                continue
            st = entry.stat()
        except OSError as exc:
            scan.unreadable.append((rel, _reason(exc)))
            continue
        scan.sources.append(_Source(rel, entry.path, st.st_size, st.st_mtime_ns))
        tick(len(scan.sources), rel)
    return scan


# -- writing -------------------------------------------------------------------------------


def _open_source(path: str) -> BinaryIO:
    """Open a source file for reading (one place, so tests can count the reads)."""
    return open(path, "rb", buffering=0)


def _npy_header(n: int) -> bytes:
    """A .npy v1.0 header for a 1-D little-endian uint64 array of n items, padded to a
    fixed _NPY_HEADER bytes so it can be written first and rewritten at the end."""
    text = f"{{'descr': '<u8', 'fortran_order': False, 'shape': ({n},), }}"
    size = _NPY_HEADER - 10
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", size) + (text.ljust(size - 1) + "\n").encode()


class _Writer:
    """Appends file texts to text.bin and their line starts to lines.npy."""

    def __init__(self, folder: Path) -> None:
        self.text = open(folder / TEXT, "wb", buffering=1 << 20)  # noqa: SIM115
        self.lines = open(folder / LINES, "wb", buffering=1 << 20)  # noqa: SIM115
        self.lines.write(_npy_header(0))
        self.lines.write(np.zeros(1, "<u8").tobytes())
        self.offset = 0
        self.n_lines = 0

    def mark(self) -> tuple[int, int]:
        return self.offset, self.n_lines

    def rollback(self, mark: tuple[int, int]) -> None:
        self.offset, self.n_lines = mark
        self.text.seek(self.offset)
        self.text.truncate()
        self.lines.seek(_NPY_HEADER + 8 * (self.n_lines + 1))
        self.lines.truncate()

    def piece(self, data: bytes | memoryview) -> None:
        """Text that is valid UTF-8: written, and every newline in it ends a line."""
        if not len(data):
            return
        nl = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
        self.text.write(data)
        if len(nl):
            ends = (nl + (self.offset + 1)).astype("<u8")
            self.lines.write(memoryview(ends).cast("B"))
            self.n_lines += len(nl)
        self.offset += len(data)

    def reuse(self, text: memoryview, ends: np.ndarray, old_offset: int) -> None:
        """A file's text and its line ends (positions after each "\\n") from an old volume."""
        shifted = (ends.astype(np.int64) + (self.offset - old_offset)).astype("<u8")
        self.text.write(text)
        self.lines.write(memoryview(shifted).cast("B"))
        self.offset += len(text)
        self.n_lines += len(ends)

    def finish(self) -> None:
        self.lines.seek(0)
        self.lines.write(_npy_header(self.n_lines + 1))
        for fh in (self.text, self.lines):
            fh.flush()
            if FSYNC:
                os.fsync(fh.fileno())

    def close(self) -> None:
        self.text.close()
        self.lines.close()


def _read_file(
    src: _Source, writer: _Writer, tick: Callable[[int], None]
) -> tuple[int, int, str] | None:
    """Append one file's text; return (bad_bytes, bytes read, sha1), or None if binary."""
    sha = hashlib.sha1()
    bad = read = 0
    last = 10
    with _open_source(src.abs) as fh:
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


def _moved(f: VolumeFile, offset: int, first_line: int) -> VolumeFile:
    """`f` at a new place in text.bin and the line table (dataclasses.replace, faster)."""
    return VolumeFile(
        f.path,
        f.size,
        f.mtime_ns,
        f.sha1,
        f.language,
        offset,
        f.length,
        first_line,
        f.n_lines,
        f.bad_bytes,
    )


def _default_name(path: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).lstrip(".-")[:64].rstrip("-")
    return base or "volume"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """One ingest per volume name at a time (across processes)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(volumes_dir() / f".lock-{name}", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise VolumeError(f"volume {name!r} is being ingested by another process") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ingest(
    path: Path | str,
    name: str | None = None,
    *,
    progress: Callable[[IngestProgress], None] | None = None,
    index: bool = True,
) -> IngestReport:
    """Ingest file or folder `path` as volume `name` (default: the path's base name).

    Re-ingesting the same root updates only what changed. The previous volume stays
    intact and openable until the new one is complete; an exception (from `progress`
    too) leaves it as it was and no work folder behind. VolumeError for bad input.
    """
    t0 = time.perf_counter()
    source = Path(path).expanduser()
    if not os.path.lexists(source) or not source.exists():
        raise VolumeError(f"no such file or folder: {path}")
    source = source.resolve()
    name = valid_name(name) if name is not None else _default_name(source)
    is_dir = source.is_dir()
    if not is_dir and not source.is_file():
        raise VolumeError(f"{path} is not a file or a folder")
    root = str(source)
    report = _Progress(progress)
    paths.ensure(volumes_dir())
    with _lock(name):
        recover(name)
        if is_dir:
            scan = _walk(root, lambda n, rel: report("scan", n, 0, rel))
        else:
            st = source.stat()
            scan = _Scan(sources=[_Source(source.name, root, st.st_size, st.st_mtime_ns)])
        report("scan", len(scan.sources), len(scan.sources), force=True)
        return _build(name, root, is_dir, scan, report, index, t0)


def _open_old(name: str) -> Volume | None:
    try:
        return Volume.open(name)
    except VolumeError:
        return None


def _build(
    name: str,
    root: str,
    is_dir: bool,
    scan: _Scan,
    report: _Progress,
    index: bool,
    t0: float,
) -> IngestReport:
    old = _open_old(name)
    existed = old is not None or (volumes_dir() / name).exists()
    same_root = old is not None and old.root == root
    old_files = {f.path: f for f in old.files} if old is not None and same_root else {}
    tmp = work_dir("tmp", name)
    tmp.mkdir(mode=0o700)
    installed = False
    writer: _Writer | None = None
    old_view: memoryview | None = None
    try:
        writer = _Writer(tmp)
        if old_files and old is not None:
            old_view = memoryview(old.raw())
        files: list[VolumeFile] = []
        unreadable = list(scan.unreadable)
        binary = added = changed = unchanged = 0
        read_bytes = 0
        total = sum(s.size for s in scan.sources)
        done = 0

        # Unchanged files that lie next to each other in the old volume are copied as
        # one run: one write of their text, one shift of their line ends.
        run: list[int] = []  # old [byte_a, byte_b, line_a, line_b]

        def flush_run() -> None:
            if run and old is not None and old_view is not None:
                a, b, la, lb = run
                writer.reuse(old_view[a:b], old.starts[la + 1 : lb + 1], a)
                run.clear()

        for src in scan.sources:
            report("read", done, total, src.rel)
            prev = old_files.get(src.rel)
            if prev is not None and prev.size == src.size and prev.mtime_ns == src.mtime_ns:
                if run and (run[1], run[3]) != (prev.offset, prev.first_line):
                    flush_run()
                if not run:
                    run.extend((prev.offset, prev.offset, prev.first_line, prev.first_line))
                offset = writer.offset + (prev.offset - run[0])
                first = writer.n_lines + (prev.first_line - run[2])
                run[1] += prev.length
                run[3] += prev.n_lines
                files.append(_moved(prev, offset, first))
                unchanged += 1
                done += src.size
                continue
            flush_run()

            mark = writer.mark()
            base = done

            def tick(n: int, rel: str = src.rel) -> None:
                nonlocal done
                done += n
                report("read", done, total, rel)

            try:
                got = _read_file(src, writer, tick)
            except OSError as exc:
                writer.rollback(mark)
                unreadable.append((src.rel, _reason(exc)))
                done = base + src.size
                continue
            done = base + src.size
            if got is None:
                binary += 1
                continue
            bad, n_read, sha1 = got
            read_bytes += n_read
            offset, first = mark
            files.append(
                VolumeFile(
                    path=src.rel,
                    size=n_read,
                    mtime_ns=src.mtime_ns,
                    sha1=sha1,
                    language=language_of(src.rel),
                    offset=offset,
                    length=writer.offset - offset,
                    first_line=first,
                    n_lines=writer.n_lines - first,
                    bad_bytes=bad,
                )
            )
            if prev is None:
                added += 1
            elif prev.sha1 == sha1:
                unchanged += 1
            else:
                changed += 1
        flush_run()
        report("read", total, total, force=True)

        if not files:
            what = f"{root} is a binary file" if binary and not is_dir else None
            if what is None and unreadable and not is_dir:
                what = f"cannot read {root}: {unreadable[0][1]}"
            if what is None:
                what = (
                    f"nothing to ingest in {root}: no text files ({binary} binary, "
                    f"{scan.ignored} ignored, {len(unreadable)} unreadable)"
                )
            raise VolumeError(what)

        steps = 3
        report("write", 0, steps)
        writer.finish()
        writer.close()
        report("write", 1, steps)
        now = _now()
        kept = {f.path for f in files}
        removed = (
            sum(1 for p in old_files if p not in kept)
            if same_root
            else (len(old.files) if old is not None else 0)
        )
        manifest = manifest_dict(
            name,
            root,
            files,
            created=old.created if same_root and old is not None else now,
            updated=now,
            extra={"kind": "folder" if is_dir else "file"},
        )
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            # dumps, not dump: dump streams through the pure-Python encoder (5x slower).
            fh.write(json.dumps(manifest, ensure_ascii=False, separators=(",", ":")))
            fh.flush()
            if FSYNC:
                os.fsync(fh.fileno())
        report("write", 2, steps)

        indexed = False
        index_report: dict[str, object] | None = None
        if index:
            try:
                from nanobot_tui.engine.context.index import build_index
            except ImportError:
                build_index = None  # the chunk index is optional
            if build_index is not None:
                if old is not None and (old.dir / INDEX_DIR).is_dir():
                    # Hard links, not a move: the old volume keeps its index until replaced,
                    # and a 1 GB volume's index (with vectors) costs nothing to carry over.
                    # The builder writes new files and renames; it never edits these.
                    shutil.copytree(old.dir / INDEX_DIR, tmp / INDEX_DIR, copy_function=_link)
                with Volume.open_dir(tmp, name) as fresh:
                    index_report = build_index(fresh, progress=report.for_index()).to_dict()
                indexed = True

        # The last word before the swap: a callback that raises here still cancels.
        report("write", steps, steps, force=True)
        if old_view is not None:
            old_view.release()
            old_view = None
        if old is not None:
            old.close()
        replaced = install(tmp, name)
        installed = True
        _fsync_dir(volumes_dir())
        n_bytes = writer.offset
        return IngestReport(
            name=name,
            root=root,
            files=len(files),
            lines=writer.n_lines,
            bytes=n_bytes,
            bad_bytes=sum(f.bad_bytes for f in files),
            est_tokens=n_bytes // 4,
            added=added,
            changed=changed,
            removed=removed,
            unchanged=unchanged,
            skipped_binary=binary,
            skipped_ignored=scan.ignored,
            unreadable=unreadable,
            seconds=time.perf_counter() - t0,
            indexed=indexed,
            index=index_report,
            replaced=replaced and existed and not same_root,
            skipped_links=scan.links,
            read_bytes=read_bytes,
        )
    finally:
        if old_view is not None:
            old_view.release()
        if old is not None:
            old.close()
        if writer is not None:
            writer.close()
        if not installed:
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    if not FSYNC:
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["IngestProgress", "IngestReport", "ingest", "language_of", "to_utf8"]
