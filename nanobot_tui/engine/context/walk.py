"""Which files of a folder an ingest reads: a sorted, deterministic walk.

It skips VCS folders and nanobot's own data folder, honours .gitignore files (the root's
and every subfolder's, plus .git/info/exclude) as git does, does not follow symlinked
folders, and skips symlinks that point outside the root. What it cannot read is listed
with the reason, not fatal (except the root itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pathspec import GitIgnoreSpec

from nanobot_tui import paths
from nanobot_tui.engine.context.storage import VolumeInputError

VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", ".pijul"})


@dataclass
class Source:
    rel: str  # the path in the volume
    abs: str
    size: int
    mtime_ns: int


@dataclass
class Scan:
    sources: list[Source] = field(default_factory=list)
    ignored: int = 0
    links: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def reason(exc: OSError) -> str:
    """Why a file could not be read, in a few words."""
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


def walk(root: str, tick: Callable[[int, str], None]) -> Scan:
    """The files under folder `root` to ingest, sorted; `tick(found, rel)` after each."""
    return _Walk(root, tick).run()


# An open folder: its entries still to visit, its path in the volume ("" or ending in
# "/"), and how many .gitignore specs applied before it was entered.
_Frame = tuple[Iterator[os.DirEntry[str]], str, int]


class _Walk:
    def __init__(self, root: str, tick: Callable[[int, str], None]) -> None:
        self.root = root
        self.tick = tick
        self.scan = Scan()
        self.root_real = os.path.realpath(root)
        try:  # nanobot's own data folder is never ingested (found by inode, cheaply)
            home = os.stat(paths.home())
            self.home_id: tuple[int, int] | None = (home.st_dev, home.st_ino)
        except OSError:
            self.home_id = None
        self.specs: list[tuple[str, GitIgnoreSpec]] = []
        exclude = _load_ignore(os.path.join(root, ".git", "info", "exclude"))
        if exclude is not None:
            self.specs.append(("", exclude))

    def run(self) -> Scan:
        stack = [self._enter(self.root, "")]
        while stack:
            it, prefix, depth = stack[-1]
            entry = next(it, None)
            if entry is None:
                stack.pop()
                del self.specs[depth:]
                continue
            rel = prefix + entry.name
            try:
                found = self._visit(entry, rel)
            except OSError as exc:
                self.scan.unreadable.append((rel, reason(exc)))
                continue
            if isinstance(found, Source):
                self.scan.sources.append(found)
                self.tick(len(self.scan.sources), rel)
            elif found is not None:
                stack.append(found)
        return self.scan

    def _enter(self, path: str, rel: str) -> _Frame:
        depth = len(self.specs)
        spec = _load_ignore(os.path.join(path, ".gitignore"))
        if spec is not None:
            self.specs.append((rel, spec))
        return self._entries(path, rel), rel, depth

    def _entries(self, path: str, rel: str) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if not rel:
                raise VolumeInputError(f"cannot read {path}: {reason(exc)}") from None
            self.scan.unreadable.append((rel.rstrip("/"), reason(exc)))
            return iter(())
        return iter(items)

    def _visit(self, entry: os.DirEntry[str], rel: str) -> Source | _Frame | None:
        """Count one entry as skipped, or return it: a file to read, a folder to walk."""
        scan = self.scan
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            inside = target.startswith(self.root_real + os.sep)
            if not inside or not os.path.isfile(target):
                if not _ignored(self.specs, rel, os.path.isdir(target)):
                    scan.links += 1
                else:
                    scan.ignored += 1
                return None
            is_dir, is_file = False, True
        else:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and entry.is_file(follow_symlinks=False)
        if is_dir:
            if entry.name in VCS_DIRS:
                return None
            if self._is_home(entry) or _ignored(self.specs, rel, True):
                scan.ignored += 1
                return None
            return self._enter(entry.path, rel + "/")
        if _ignored(self.specs, rel, False):
            scan.ignored += 1
        elif not is_file:
            scan.unreadable.append((rel, "not a regular file"))
        else:
            st = entry.stat()
            return Source(rel, entry.path, st.st_size, st.st_mtime_ns)
        return None

    def _is_home(self, entry: os.DirEntry[str]) -> bool:
        return (
            self.home_id is not None
            and entry.inode() == self.home_id[1]
            and entry.stat(follow_symlinks=False).st_dev == self.home_id[0]
        )
