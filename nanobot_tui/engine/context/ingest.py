"""Ingest a file or a folder into a volume (see volume.py for the storage format).

The walk (walk.py) is sorted and deterministic; files with a NUL byte in their first
8 KiB are binary and skipped. Each file is read once in binary, validated as UTF-8 (bad
bytes replaced and counted), and its line starts found with numpy (writer.py); text.bin
and lines.npy are written sequentially in a work folder that replaces the previous
volume only when complete. Re-ingesting the same root reuses every file whose size,
mtime and SHA-1 did not change: its text is copied from the old text.bin and its line starts
shifted. The chunk index (index.py) is built in the work folder before the swap.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.engine.context.index import build_index
from nanobot_tui.engine.context.storage import (
    INDEX_DIR,
    MANIFEST,
    VolumeError,
    VolumeInputError,
    install,
    recover,
    valid_name,
    volumes_dir,
    work_dir,
)
from nanobot_tui.engine.context.volume import Volume, VolumeFile, manifest_dict
from nanobot_tui.engine.context.walk import Scan, Source, reason, walk
from nanobot_tui.engine.context.writer import FSYNC, TextWriter, WriteError, read_source

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

PROGRESS_INTERVAL = 0.05  # seconds between progress calls within a phase
HASH_BLOCK = 1 << 20  # bytes per read when hashing a file that looks unchanged
WRITE_STEPS = 3  # the write phase: text and lines flushed, manifest, index and swap


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

    def __call__(
        self, phase: str, done: int, total: int, path: str = "", *, force: bool = False
    ) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if force or phase != self.phase or now - self.last >= PROGRESS_INTERVAL:
            self.phase, self.last = phase, now
            self.callback(IngestProgress(phase, done, total, path))

    def for_index(self) -> Callable[[str, int, int], None] | None:
        """The index builder's callback: progress(phase, done, total)."""
        if self.callback is None:
            return None

        def report(phase: str, done: int, total: int) -> None:
            self(phase, done, total, force=done >= total)

        return report


# -- ingest --------------------------------------------------------------------------------


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
    if not str(path).strip():
        # Path("") means the current folder: an empty argument is a mistake, not a choice.
        raise VolumeInputError("no path given: name a file or a folder to ingest")
    source = Path(path).expanduser()
    if not os.path.lexists(source) or not source.exists():
        raise VolumeInputError(f"no such file or folder: {path}")
    source = source.resolve()
    name = valid_name(name) if name is not None else _default_name(source)
    is_dir = source.is_dir()
    if not is_dir and not source.is_file():
        raise VolumeInputError(f"{path} is not a file or a folder")
    root = printable_path(str(source))
    report = _Progress(progress)
    try:
        paths.ensure(volumes_dir())
    except OSError as exc:
        raise _cannot_write(name, exc) from None
    with _lock(name):
        recover(name)
        if is_dir:
            scan = walk(str(source), lambda n, rel: report("scan", n, 0, rel))
        else:
            st = source.stat()
            scan = Scan(sources=[Source(source.name, str(source), st.st_size, st.st_mtime_ns)])
        _printable_names(scan)
        report("scan", len(scan.sources), len(scan.sources), force=True)
        return _build(name, root, is_dir, scan, report, index, t0)


def printable_path(path: str) -> str:
    """A path as text that can be stored and shown: a name's bytes that are not UTF-8
    (which Python keeps as lone surrogates) become \\xNN escapes, as in `caf\\xe9.txt`."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = path.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that no byte makes
            return path.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return path


def _printable_names(scan: Scan) -> None:
    """The volume's paths as printable text; the sources are still read by their real
    names."""
    scan.sources = [
        s
        if printable_path(s.rel) is s.rel
        else Source(printable_path(s.rel), s.abs, s.size, s.mtime_ns)
        for s in scan.sources
    ]
    scan.unreadable = [(printable_path(rel), why) for rel, why in scan.unreadable]


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
    try:
        fh = open(volumes_dir() / f".lock-{name}", "a+b")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise _cannot_write(name, exc) from None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise VolumeError(f"volume {name!r} is being ingested by another process") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _open_old(name: str) -> Volume | None:
    try:
        return Volume.open(name)
    except VolumeError:
        return None


def _build(
    name: str,
    root: str,
    is_dir: bool,
    scan: Scan,
    report: _Progress,
    index: bool,
    t0: float,
) -> IngestReport:
    """Write the volume in a work folder, index it, and swap it in for the old one."""
    old = _open_old(name)
    existed = old is not None or (volumes_dir() / name).exists()
    same_root = old is not None and old.root == root
    tmp = work_dir("tmp", name)
    try:
        tmp.mkdir(mode=0o700)
    except OSError as exc:
        if old is not None:
            old.close()
        raise _cannot_write(name, exc) from None
    installed = False
    writer: TextWriter | None = None
    reader: _Reader | None = None
    try:
        writer = TextWriter(tmp)
        reader = _Reader(writer, old if same_root else None, report)
        reader.read_all(scan)
        if not reader.files:
            raise VolumeInputError(_nothing_to_ingest(root, is_dir, scan, reader))
        report("write", 0, WRITE_STEPS)
        writer.finish()
        writer.close()
        report("write", 1, WRITE_STEPS)
        created = old.created if same_root and old is not None else None
        _write_manifest(tmp, name, root, is_dir, reader.files, created)
        report("write", 2, WRITE_STEPS)
        index_report = _index(tmp, name, old, report) if index else None
        # The last word before the swap: a callback that raises here still cancels.
        report("write", WRITE_STEPS, WRITE_STEPS, force=True)
        reader.release()
        if old is not None:
            old.close()
        replaced = install(tmp, name)
        installed = True
        _fsync_dir(volumes_dir())
        removed = reader.removed() if same_root else len(old.files) if old is not None else 0
        return reader.report(
            name,
            root,
            scan,
            removed=removed,
            seconds=time.perf_counter() - t0,
            index=index_report,
            replaced=replaced and existed and not same_root,
        )
    except (WriteError, OSError) as exc:
        # Sources that cannot be read are counted by the reader, so what ends up here
        # failed to be written: the disk is full, or the folder not writable.
        error = exc.error if isinstance(exc, WriteError) else exc
        raise _cannot_write(name, error) from None
    finally:
        if reader is not None:
            reader.release()
        if old is not None:
            old.close()
        if writer is not None:
            writer.abort()
        if not installed:
            shutil.rmtree(tmp, ignore_errors=True)


def _cannot_write(name: str, exc: OSError) -> VolumeError:
    return VolumeError(
        f"cannot write volume {name!r} in {volumes_dir()}: {exc.strerror or exc}; "
        "the volume is unchanged"
    )


def _nothing_to_ingest(root: str, is_dir: bool, scan: Scan, reader: _Reader) -> str:
    """Why an ingest found no text, in one line."""
    if reader.binary and not is_dir:
        return f"{root} is a binary file"
    if reader.unreadable and not is_dir:
        return f"cannot read {root}: {reader.unreadable[0][1]}"
    return (
        f"nothing to ingest in {root}: no text files ({reader.binary} binary, "
        f"{scan.ignored} ignored, {len(reader.unreadable)} unreadable)"
    )


def _write_manifest(
    folder: Path, name: str, root: str, is_dir: bool, files: list[VolumeFile], created: str | None
) -> None:
    now = _now()
    manifest = manifest_dict(
        name,
        root,
        files,
        created=created or now,
        updated=now,
        extra={"kind": "folder" if is_dir else "file"},
    )
    with open(folder / MANIFEST, "w", encoding="utf-8") as fh:
        # dumps, not dump: dump streams through the pure-Python encoder (5x slower).
        fh.write(json.dumps(manifest, ensure_ascii=False, separators=(",", ":")))
        fh.flush()
        if FSYNC:
            os.fsync(fh.fileno())


def _index(folder: Path, name: str, old: Volume | None, report: _Progress) -> dict[str, object]:
    """Build the chunk index of the volume in `folder`, reusing the old volume's."""
    if old is not None and (old.dir / INDEX_DIR).is_dir():
        # Hard links, not a move: the old volume keeps its index until replaced, and a
        # 1 GB volume's index (with vectors) costs nothing to carry over. The builder
        # writes new files and renames; it never edits these.
        shutil.copytree(old.dir / INDEX_DIR, folder / INDEX_DIR, copy_function=_link)
    with Volume.open_dir(folder, name) as fresh:
        return build_index(fresh, progress=report.for_index()).to_dict()


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _fsync_dir(path: Path) -> None:
    if not FSYNC:
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- the read phase ------------------------------------------------------------------------


class _Reader:
    """The read phase: every source's text into the writer, copied from the old volume
    (of the same root) when its size, mtime and hash did not change, read from disk when
    they did; and the tally of what it found, for the report."""

    def __init__(self, writer: TextWriter, old: Volume | None, report: _Progress) -> None:
        self.writer = writer
        self.old = old
        self.old_files = {f.path: f for f in old.files} if old is not None else {}
        self.old_view = memoryview(old.raw()) if old is not None and self.old_files else None
        self.progress = report
        self.files: list[VolumeFile] = []
        self.unreadable: list[tuple[str, str]] = []
        self.binary = self.added = self.changed = self.unchanged = self.read_bytes = 0
        self.done = self.total = 0
        # Unchanged files that lie next to each other in the old volume are copied as
        # one run: one write of their text, one shift of their line ends.
        self._run: list[int] = []  # old [byte_a, byte_b, line_a, line_b]

    def read_all(self, scan: Scan) -> None:
        self.unreadable = list(scan.unreadable)
        self.total = sum(s.size for s in scan.sources)
        for src in scan.sources:
            self.progress("read", self.done, self.total, src.rel)
            prev = self.old_files.get(src.rel)
            if (
                prev is not None
                and prev.size == src.size
                and prev.mtime_ns == src.mtime_ns
                and self._same_bytes(src, prev)
            ):
                self._reuse(prev)
                continue
            self._flush_run()
            self._read(src, prev)
        self._flush_run()
        self.progress("read", self.total, self.total, force=True)

    def _same_bytes(self, src: Source, prev: VolumeFile) -> bool:
        """Whether `src` (of the old file's size and mtime) still has the old bytes: an
        edit can keep both (a copy with -p, a restored mtime), so its hash decides. Counts
        the bytes hashed as done; False (read it again) if it cannot be read."""
        sha = hashlib.sha1()
        base = self.done
        try:
            with open(src.abs, "rb", buffering=0) as fh:
                while block := fh.read(HASH_BLOCK):
                    sha.update(block)
                    self.done += len(block)
                    self.progress("read", self.done, self.total, src.rel)
        except OSError:
            self.done = base
            return False
        self.done = base + src.size
        if sha.hexdigest() == prev.sha1:
            return True
        self.done = base
        return False

    def _reuse(self, prev: VolumeFile) -> None:
        run, writer = self._run, self.writer
        if run and (run[1], run[3]) != (prev.offset, prev.first_line):
            self._flush_run()
        if not run:
            run.extend((prev.offset, prev.offset, prev.first_line, prev.first_line))
        offset = writer.offset + (prev.offset - run[0])
        first = writer.n_lines + (prev.first_line - run[2])
        run[1] += prev.length
        run[3] += prev.n_lines
        self.files.append(_moved(prev, offset, first))
        self.unchanged += 1

    def _flush_run(self) -> None:
        if self._run and self.old is not None and self.old_view is not None:
            a, b, la, lb = self._run
            self.writer.reuse(self.old_view[a:b], self.old.starts[la + 1 : lb + 1], a)
            self._run.clear()

    def _read(self, src: Source, prev: VolumeFile | None) -> None:
        writer = self.writer
        mark = writer.mark()
        base = self.done

        def tick(n: int) -> None:
            self.done += n
            self.progress("read", self.done, self.total, src.rel)

        try:
            got = read_source(src.abs, writer, tick)
        except OSError as exc:
            writer.rollback(mark)
            self.unreadable.append((src.rel, reason(exc)))
            self.done = base + src.size
            return
        self.done = base + src.size
        if got is None:
            self.binary += 1
            return
        bad, n_read, sha1 = got
        self.read_bytes += n_read
        offset, first = mark
        self.files.append(
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
            self.added += 1
        elif prev.sha1 == sha1:
            self.unchanged += 1
        else:
            self.changed += 1

    def removed(self) -> int:
        """Files of the old volume (of the same root) that are gone."""
        kept = {f.path for f in self.files}
        return sum(1 for p in self.old_files if p not in kept)

    def release(self) -> None:
        """Let go of the old volume's text (before it is closed and replaced)."""
        if self.old_view is not None:
            self.old_view.release()
            self.old_view = None

    def report(
        self,
        name: str,
        root: str,
        scan: Scan,
        *,
        removed: int,
        seconds: float,
        index: dict[str, object] | None,
        replaced: bool,
    ) -> IngestReport:
        n_bytes = self.writer.offset
        return IngestReport(
            name=name,
            root=root,
            files=len(self.files),
            lines=self.writer.n_lines,
            bytes=n_bytes,
            bad_bytes=sum(f.bad_bytes for f in self.files),
            est_tokens=n_bytes // 4,
            added=self.added,
            changed=self.changed,
            removed=removed,
            unchanged=self.unchanged,
            skipped_binary=self.binary,
            skipped_ignored=scan.ignored,
            unreadable=self.unreadable,
            seconds=seconds,
            indexed=index is not None,
            index=index,
            replaced=replaced,
            skipped_links=scan.links,
            read_bytes=self.read_bytes,
        )


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


__all__ = ["IngestProgress", "IngestReport", "ingest", "language_of"]
