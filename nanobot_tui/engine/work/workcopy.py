"""Where a process's code edits go: a snapshot of the user's tree, working copies, apply.

The user's files are touched only by `apply` (and `undo`). A run first takes a
`Snapshot`: the whole tree copied into `dest/base` (so the user's own tests can run on a
copy) with a manifest of every copied file's size and sha256. Edits are line spans of base
files; `build` applies a set of them to a fresh copy of base, checks that every changed
`.py` file still compiles and bisects a file that does not to the edit(s) that break it,
which are reverted. `diff` shows the result as a git-style patch. `apply` writes it into
the user's tree only if none of the files it changes moved since the snapshot, keeping the
originals in a backup that `undo` puts back.

Edit paths come from the decomposition, and the replacement text from a model: both are
data. A path is refused unless it is a relative path of a file the snapshot copied, and
no file is ever written outside the working copy, the backup, or (on apply) the file the
snapshot read.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tokenize
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from nanobot_tui.atomic import write_atomic
from nanobot_tui.errors import UsageError

MANIFEST = "manifest.json"
WORKING = "working.json"
BACKUP = "backup.json"

# Folders never copied: VCS data, caches, installed environments. `build` and `dist` only
# at the top (pip's own `operations/build` is a package); `venv` only at the top or when
# it holds a pyvenv.cfg (the standard library has a `venv` package).
_SKIP_ANYWHERE = frozenset(
    ".git .hg .svn .jj __pycache__ .venv node_modules .mypy_cache .pytest_cache .ruff_cache"
    " .tox .nox".split()
)
_SKIP_AT_TOP = frozenset({"build", "dist", "venv"})
_NAMES_SHOWN = 5


class WorkCopyError(UsageError):
    """A snapshot, an edit, a working copy or an apply that cannot be done as asked."""


class OverlappingEdits(WorkCopyError):
    """Two edits change the same lines of one file."""


class UserFilesChanged(WorkCopyError):
    """The user's files moved since the snapshot (or since the apply, for undo)."""

    def __init__(self, action: str, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        super().__init__(
            f"{action} refused: {name_list(self.paths)} changed since {_SINCE[action]}"
        )


_SINCE = {"apply": "the snapshot", "undo": "the apply"}


def name_list(paths: Sequence[str]) -> str:
    """The first few names, then how many more: one short line however many there are."""
    shown = ", ".join(paths[:_NAMES_SHOWN])
    more = len(paths) - _NAMES_SHOWN
    count = f"{len(paths)} file{'s' if len(paths) != 1 else ''}"
    return f"{count} ({shown}{f' and {more} more' if more > 0 else ''})"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str | None:
    """The sha256 of a regular file (not a link), or None if there is none."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        return sha256(path.read_bytes())
    except OSError:
        return None


def check_rel(path: str) -> str:
    """`path` if it is a relative posix path that stays inside a tree; else an error."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or "\x00" in path
        or pure.is_absolute()
        or path != pure.as_posix()
        or any(part in ("..", ".") for part in pure.parts)
    ):
        raise WorkCopyError(f"edit path {path!r} is not a relative path inside the tree")
    return path


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, posix
    size: int
    sha256: str


@dataclass(frozen=True)
class Snapshot:
    """The user's tree as it was when a run began: `dest/base` and its manifest."""

    source: Path
    dest: Path
    files: dict[str, FileEntry] = field(repr=False)
    unreadable: tuple[str, ...] = ()  # files that could not be read, so not copied

    @property
    def base(self) -> Path:
        return self.dest / "base"

    @classmethod
    def take(
        cls, source: Path, dest: Path, progress: Callable[[int], None] | None = None
    ) -> Snapshot:
        """Copy `source` into `dest/base` and write `dest/manifest.json`;
        `progress(files_copied)` after each file."""
        if not source.is_dir():
            raise WorkCopyError(f"not a folder to snapshot: {source}")
        base = dest / "base"
        if dest.exists() and any(dest.iterdir()):
            raise WorkCopyError(f"snapshot folder is not empty: {dest}")
        base.mkdir(parents=True, exist_ok=True)
        root = source.resolve()
        entries: list[FileEntry] = []
        unreadable: list[str] = []
        for rel, kind in _walk(root, skip=dest.resolve()):
            src, dst = root / rel, base / rel
            if kind == "dir":
                dst.mkdir()
            elif kind == "link":
                # Relative, to the same file: inside the copy, never back to the user's.
                dst.symlink_to(os.path.relpath(src.resolve(), src.parent))
            else:
                try:
                    entries.append(_copy_file(src, dst, rel))
                except OSError:
                    unreadable.append(rel)  # not in the manifest, so never edited
                    continue
                if progress is not None:
                    progress(len(entries))
        files = {e.path: e for e in entries}
        snap = cls(source=root, dest=dest, files=files, unreadable=tuple(unreadable))
        manifest = {
            "version": 1,
            "source": str(root),
            "files": [asdict(e) for e in entries],
            "unreadable": unreadable,
        }
        write_atomic(dest / MANIFEST, json.dumps(manifest, indent=1) + "\n", mode=0o644)
        return snap

    @classmethod
    def open(cls, dest: Path) -> Snapshot:
        try:
            manifest = json.loads((dest / MANIFEST).read_text("utf-8"))
            files = {
                f["path"]: FileEntry(f["path"], f["size"], f["sha256"]) for f in manifest["files"]
            }
            unreadable = tuple(manifest.get("unreadable", ()))
            return cls(Path(manifest["source"]), dest, files, unreadable)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorkCopyError(f"no readable snapshot in {dest}: {exc}") from None


def _copy_file(src: Path, dst: Path, rel: str) -> FileEntry:
    """Copy one file, hashing the very bytes written (the file may change under us)."""
    data = src.read_bytes()
    dst.write_bytes(data)
    shutil.copystat(src, dst)
    return FileEntry(rel, len(data), sha256(data))


def _walk(root: Path, skip: Path) -> Iterable[tuple[str, str]]:
    """(relative path, "dir" | "file" | "link") for everything to copy, parents first,
    sorted. Links are kept as links, and only those that resolve inside `root`; folders
    behind links are never entered."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(root / rel_dir), key=lambda e: e.name)
        except OSError:
            continue  # unreadable: the copy simply lacks it, as the manifest says
        subdirs: list[str] = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                if _inside(root, root / rel):
                    yield rel, "link"
            elif entry.is_dir():
                if not _skipped_dir(entry, top=not rel_dir, skip=skip):
                    yield rel, "dir"
                    subdirs.append(rel)
            elif entry.is_file():
                yield rel, "file"
        stack.extend(reversed(subdirs))


def _skipped_dir(entry: os.DirEntry[str], top: bool, skip: Path) -> bool:
    if entry.name in _SKIP_ANYWHERE or (top and entry.name in _SKIP_AT_TOP):
        return True
    path = Path(entry.path)
    return (path / "pyvenv.cfg").exists() or path.resolve() == skip


def _inside(root: Path, link: Path) -> bool:
    try:
        return link.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a loop of links
        return False


# ---------------------------------------------------------------------------- edits


@dataclass(frozen=True)
class Edit:
    """Replace lines `start`..`end` (1-based, inclusive) of base file `path` with `new`.

    `end == start - 1` inserts `new` before line `start`; `new == ""` deletes the span.
    A non-empty `new` without a final line break gets the one the span's last line had.
    """

    path: str
    start: int
    end: int
    new: str
    step: int

    def __post_init__(self) -> None:
        check_rel(self.path)
        if self.start < 1 or self.end < self.start - 1:
            raise WorkCopyError(
                f"step {self.step}: bad line span {self.start}..{self.end} in {self.path}"
            )


@dataclass(frozen=True)
class Reverted:
    """An edit taken back out, and why (`output`: the check's output tail, if any)."""

    edit: Edit
    reason: str
    output: str = ""


# Line ends as Python's own tokenizer counts them (str.splitlines also splits on form
# feeds and other separators, which would shift line numbers against `ast`).
_LINE_END = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")


def split_lines(text: str) -> list[str]:
    """The lines of `text`, each with its line break."""
    lines = _LINE_END.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _line_break(line: str) -> str:
    return line[len(line.rstrip("\r\n")) :]


def check_overlaps(edits: Sequence[Edit]) -> None:
    """Refuse two edits of one file whose line spans share a line."""
    by_path: dict[str, list[Edit]] = {}
    for e in edits:
        by_path.setdefault(e.path, []).append(e)
    for path, group in by_path.items():
        group = sorted(group, key=lambda e: (e.start, e.end))
        widest: Edit | None = None
        for e in group:
            # Sorted by start, so only the widest span so far can reach this one; an
            # insertion (end = start - 1) conflicts only when strictly inside a span.
            if widest is not None and widest.end >= e.start:
                raise OverlappingEdits(
                    f"edits of steps {widest.step} and {e.step} overlap in {path} "
                    f"(lines {widest.start}-{widest.end} and {e.start}-{e.end})"
                )
            if widest is None or e.end > widest.end:
                widest = e


def apply_to_text(text: str, edits: Sequence[Edit]) -> str:
    """`text` with `edits` (of one file, not overlapping) applied bottom-up, so each
    span still means the base file's lines."""
    lines = split_lines(text)
    default_break = next((_line_break(x) for x in lines if _line_break(x)), "\n")
    # Bottom-up; of two insertions at one line the later in the list is placed first,
    # so they end up in list order.
    order = sorted(enumerate(edits), key=lambda ie: (ie[1].start, ie[1].end, ie[0]))
    for _, e in reversed(order):
        if e.end > len(lines) or e.start > len(lines) + 1:
            raise WorkCopyError(
                f"step {e.step}: lines {e.start}..{e.end} are past the end of {e.path} "
                f"({len(lines)} lines)"
            )
        new = e.new
        if default_break == "\r\n":  # a model writes \n; keep a CRLF file CRLF
            new = new.replace("\r\n", "\n").replace("\n", "\r\n")
        if new and not new.endswith(("\n", "\r")):
            new += _line_break(lines[e.end - 1]) if e.end >= e.start else default_break
        if new and e.start > len(lines) and lines and not _line_break(lines[-1]):
            lines[-1] += default_break  # appending after a last line with no break
        lines[e.start - 1 : e.end] = [new] if new else []
    return "".join(lines)


def _encoding(path: str, data: bytes) -> str:
    """A .py file's declared encoding (PEP 263), else UTF-8."""
    if path.endswith(".py"):
        try:
            return tokenize.detect_encoding(io.BytesIO(data).readline)[0]
        except SyntaxError:
            return "utf-8"
    return "utf-8"


def compile_error(text: str, path: str) -> str | None:
    """Why `text` does not compile as Python (one line), or None if it does."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like still compile
            compile(text, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"does not compile: {type(exc).__name__} at line {exc.lineno}: {exc.msg}"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"does not compile: {type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------------- working copies


@dataclass(frozen=True)
class WorkingCopy:
    """A copy of base with edits applied, in `root/tree`; what it holds in
    `root/working.json`. `changed` are the files whose bytes differ from base."""

    root: Path
    applied: tuple[Edit, ...]
    reverted: tuple[Reverted, ...]
    changed: tuple[str, ...]

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    def save(self) -> None:
        doc = {
            "version": 1,
            "applied": [asdict(e) for e in self.applied],
            "reverted": [asdict(r) for r in self.reverted],
            "changed": list(self.changed),
        }
        write_atomic(self.root / WORKING, json.dumps(doc, indent=1) + "\n", mode=0o644)

    @classmethod
    def open(cls, root: Path) -> WorkingCopy:
        try:
            doc = json.loads((root / WORKING).read_text("utf-8"))
            applied = tuple(Edit(**e) for e in doc["applied"])
            reverted = tuple(
                Reverted(Edit(**r["edit"]), r["reason"], r.get("output", ""))
                for r in doc["reverted"]
            )
            return cls(root, applied, reverted, tuple(doc["changed"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorkCopyError(f"no readable working copy in {root}: {exc}") from None


def build(snapshot: Snapshot, edits: Sequence[Edit], dest: Path) -> WorkingCopy:
    """A fresh copy of base in `dest/tree` with `edits` applied; each changed .py file
    that compiled before must compile after, else the edits that break it are reverted."""
    edits = list(edits)
    check_overlaps(edits)
    for e in edits:
        if e.path not in snapshot.files:
            raise WorkCopyError(f"step {e.step}: {e.path} is not a file of the snapshot")
    if dest.exists() and any(dest.iterdir()):
        raise WorkCopyError(f"working copy folder is not empty: {dest}")
    groups: dict[str, list[Edit]] = {}
    for e in edits:
        groups.setdefault(e.path, []).append(e)
    new: dict[str, bytes] = {}
    kept: set[int] = set()
    reverted: list[Reverted] = []
    for path in sorted(groups):
        data, ok, bad = edit_file(path, (snapshot.base / path).read_bytes(), groups[path])
        kept.update(id(e) for e in ok)
        reverted.extend(bad)
        if data is not None:
            new[path] = data
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(snapshot.base, dest / "tree", symlinks=True)
    for path, data in new.items():
        (dest / "tree" / path).write_bytes(data)  # a copy, never the snapshot's own file
    order = {id(e): i for i, e in enumerate(edits)}
    reverted.sort(key=lambda r: order[id(r.edit)])
    wc = WorkingCopy(
        dest, tuple(e for e in edits if id(e) in kept), tuple(reverted), tuple(sorted(new))
    )
    wc.save()
    return wc


def edit_file(
    path: str, data: bytes, edits: Sequence[Edit]
) -> tuple[bytes | None, list[Edit], list[Reverted]]:
    """Base bytes `data` of `path` with `edits` applied: (the new bytes, or None if they
    equal base; the edits kept; the edits reverted and why)."""
    enc = _encoding(path, data)
    try:
        text = data.decode(enc)
    except (UnicodeDecodeError, LookupError):
        return None, [], [Reverted(e, f"{path} is not {enc} text") for e in edits]
    kept: list[Edit] = []
    reverted: list[Reverted] = []
    for e in edits:
        try:
            e.new.encode(enc)
            kept.append(e)
        except UnicodeEncodeError:
            reverted.append(Reverted(e, f"the new text cannot be written in {enc}"))
    # Only a file that compiled before can be broken by an edit.
    if path.endswith(".py") and compile_error(text, path) is None:
        while kept and (err := compile_error(apply_to_text(text, kept), path)):
            culprit = first_failing(
                kept, lambda sub: compile_error(apply_to_text(text, sub), path) is None
            )
            err = compile_error(apply_to_text(text, kept[: culprit + 1]), path) or err
            reverted.append(Reverted(kept.pop(culprit), err))
    new = apply_to_text(text, kept).encode(enc)
    return (None if new == data else new), kept, reverted


def first_failing(edits: Sequence[Edit], passes: Callable[[list[Edit]], bool]) -> int:
    """The index of the edit whose prefix first fails `passes`, by halves: the empty
    prefix is known to pass and the whole list to fail, so ~log2(n) probes."""
    lo, hi = 0, len(edits)  # edits[:lo] passes, edits[:hi] fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(list(edits[:mid])):
            lo = mid
        else:
            hi = mid
    return hi - 1


def new_files(snapshot: Snapshot, working: WorkingCopy) -> dict[str, bytes]:
    """The changed files' new bytes, rebuilt from base and the applied edits (so what a
    check wrote into the tree never reaches a diff or an apply)."""
    groups: dict[str, list[Edit]] = {}
    for e in working.applied:
        groups.setdefault(e.path, []).append(e)
    out: dict[str, bytes] = {}
    for path in working.changed:
        data = (snapshot.base / path).read_bytes()
        enc = _encoding(path, data)
        out[path] = apply_to_text(data.decode(enc), groups.get(path, [])).encode(enc)
    return out


def diff(snapshot: Snapshot, working: WorkingCopy) -> str:
    """The working copy's changes as a unified diff with git's a/ b/ paths, by path."""
    out: list[str] = []
    for path, new in sorted(new_files(snapshot, working).items()):
        old = (snapshot.base / path).read_bytes()
        enc = _encoding(path, old)
        a, b = split_lines(old.decode(enc)), split_lines(new.decode(enc))
        out.append(f"diff --git a/{path} b/{path}\n")
        for line in difflib.unified_diff(a, b, f"a/{path}", f"b/{path}", lineterm="\n"):
            if line.endswith(("\n", "\r")):
                out.append(line)
            else:  # a last line without a break, marked as git marks it
                out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


# ------------------------------------------------------------------------ apply, undo


def _current_sha(target: Path, path: str) -> str | None:
    """The sha256 of `target/path` if it is a regular file inside `target`."""
    full = target / check_rel(path)
    try:
        if not full.resolve().is_relative_to(target.resolve()):
            return None  # a folder on the way became a link out of the tree
    except (OSError, RuntimeError):
        return None
    return _file_sha(full)


@dataclass(frozen=True)
class _Backed:
    """One file an apply replaced: its mode, and its sha256 before and after."""

    path: str
    mode: int
    before: str
    after: str


def _write_backup(backup: Path, target: Path, records: list[_Backed], undone: bool) -> None:
    meta = {
        "version": 1,
        "target": str(target.resolve()),
        "files": [asdict(r) for r in records],
        "undone": undone,
    }
    write_atomic(backup / BACKUP, json.dumps(meta, indent=1) + "\n", mode=0o644, sync_dir=True)


def apply(snapshot: Snapshot, working: WorkingCopy, target: Path, backup: Path) -> list[str]:
    """Write the working copy's changed files into `target` if none of them changed since
    the snapshot; keep the originals in `backup` for `undo`. Returns the paths written."""
    new = new_files(snapshot, working)
    paths = sorted(new)
    moved = [p for p in paths if _current_sha(target, p) != snapshot.files[p].sha256]
    if moved:
        raise UserFilesChanged("apply", moved)
    if backup.exists() and any(backup.iterdir()):
        raise WorkCopyError(f"backup folder is not empty: {backup}")
    records: list[_Backed] = []
    for p in paths:
        src, dst = target / p, backup / "files" / p
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        mode = stat.S_IMODE(src.stat().st_mode)
        records.append(_Backed(p, mode, snapshot.files[p].sha256, sha256(new[p])))
    _write_backup(backup, target, records, undone=False)
    written: list[_Backed] = []
    try:
        for rec in records:
            current = _current_sha(target, rec.path)
            if current != rec.before or _file_sha(backup / "files" / rec.path) != rec.before:
                raise UserFilesChanged("apply", [rec.path])  # it moved while we worked
            write_atomic(target / rec.path, new[rec.path], mode=rec.mode)
            written.append(rec)
    except BaseException:
        for rec in written:  # all or nothing: put back what was already written
            data = (backup / "files" / rec.path).read_bytes()
            write_atomic(target / rec.path, data, mode=rec.mode)
        raise
    return [rec.path for rec in written]


def undo(backup: Path, target: Path) -> list[str]:
    """Put back the files an `apply` replaced, if the user has not changed them since."""
    try:
        meta = json.loads((backup / BACKUP).read_text("utf-8"))
        records = [
            _Backed(check_rel(r["path"]), int(r["mode"]), r["before"], r["after"])
            for r in meta["files"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WorkCopyError(f"no readable backup in {backup}: {exc}") from None
    if meta.get("undone"):
        raise WorkCopyError(f"already undone: {backup}")
    moved = [r.path for r in records if _current_sha(target, r.path) != r.after]
    if moved:
        raise UserFilesChanged("undo", moved)
    originals = {r.path: (backup / "files" / r.path).read_bytes() for r in records}
    damaged = [r.path for r in records if sha256(originals[r.path]) != r.before]
    if damaged:
        raise WorkCopyError(f"undo refused: the backup of {name_list(damaged)} is damaged")
    for r in records:
        write_atomic(target / r.path, originals[r.path], mode=r.mode)
    _write_backup(backup, target, records, undone=True)
    return [r.path for r in records]
