"""Where volumes live: NANOBOT_HOME/volumes/<name>/, one folder per volume.

A volume folder holds text.bin, lines.npy, manifest.json and index/ (see volume.py for
what they hold). A new volume is written in a work folder ".<kind>-<name>-<pid>-<token>"
beside it and installed by renames; `recover` finishes what a crashed process left, so
either the old or the new volume is in place at every moment. Listing reads only the
manifests; deleting renames the folder away before removing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.errors import NanobotError, UsageError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TEXT = "text.bin"
LINES = "lines.npy"
INDEX_DIR = "index"

_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


class VolumeError(NanobotError):
    """A volume that cannot be read or written (corrupt, closed, locked), said in one line."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))


class VolumeInputError(VolumeError, UsageError):
    """The user's input was wrong: a volume name, a path, a pattern, a line range."""


def volumes_dir() -> Path:
    return paths.home() / "volumes"


def valid_name(name: str) -> str:
    """The name itself if it is a valid volume name ([A-Za-z0-9._-]{1,64}, no leading ".")."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise VolumeInputError(
            f"bad volume name {name!r}: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'"
        )
    return name


def volume_dir(name: str) -> Path:
    return volumes_dir() / valid_name(name)


def no_such_volume(name: str) -> VolumeInputError:
    return VolumeInputError(f"no volume named {name!r} (in {volumes_dir()})")


# -- work folders and crash recovery -------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(entry: str) -> int:
    """The pid in a work folder name ".<kind>-<name>-<pid>-<token>", or -1."""
    try:
        return int(entry.rsplit("-", 2)[1])
    except (IndexError, ValueError):
        return -1


def work_dir(kind: str, name: str) -> Path:
    """A fresh path in volumes/ for work on volume `name`: ".<kind>-<name>-<pid>-<token>".
    Its leading dot keeps it out of list_volumes and makes it an invalid volume name."""
    return volumes_dir() / f".{kind}-{name}-{os.getpid()}-{secrets.token_hex(4)}"


def _work_dirs(kind: str, name: str) -> list[Path]:
    base = volumes_dir()
    prefix = f".{kind}-{name}-"
    try:
        entries = os.listdir(base)
    except OSError:
        return []
    return [base / e for e in entries if e.startswith(prefix) and e[len(prefix) :].count("-") == 1]


def recover(name: str) -> None:
    """Finish what a crashed process left of volume `name`: put back a previous volume
    set aside by a swap that did not complete, and remove dead processes' work folders."""
    final = volumes_dir() / name
    olds = [p for p in _work_dirs("old", name) if not _pid_alive(_owner_pid(p.name))]
    if olds and not final.exists():
        newest = max(olds, key=lambda p: p.stat().st_mtime_ns)
        with contextlib.suppress(OSError):
            os.rename(newest, final)
    for kind in ("tmp", "old", "del"):
        for p in _work_dirs(kind, name):
            if p.exists() and not _pid_alive(_owner_pid(p.name)):
                shutil.rmtree(p, ignore_errors=True)


def install(tmp: Path, name: str) -> bool:
    """Make the complete volume folder `tmp` volume `name`, replacing any previous one.
    Returns True when a previous volume was replaced. Either the old or the new volume
    is in place at every moment except between two renames (microseconds), and recover()
    repairs even that after a crash."""
    final = volume_dir(name)
    if not final.exists():
        os.rename(tmp, final)
        return False
    old = work_dir("old", name)
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True


# -- listing and deleting ------------------------------------------------------------------


def list_volumes() -> list[dict[str, Any]]:
    """One dict per volume, from the manifests: name, root, files, lines, bytes,
    est_tokens, updated, and error (None, or one line saying why it cannot be read)."""
    base = volumes_dir()
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    return [
        _listing(base / entry, entry)
        for entry in entries
        if _NAME_RE.fullmatch(entry) and (base / entry).is_dir()
    ]


def volumes_stamp() -> tuple[tuple[str, int, int, int], ...]:
    """A cheap fingerprint of the volumes folder, with no manifest read: each volume's
    name and its manifest's inode, size and mtime. It changes when a volume is added,
    removed or replaced (an ingest swaps in a new folder, so a new manifest)."""
    base = volumes_dir()
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return ()
    stamp = []
    for entry in entries:
        if not _NAME_RE.fullmatch(entry):
            continue
        try:
            st = os.stat(base / entry / MANIFEST)
        except OSError:
            stamp.append((entry, 0, 0, 0))
        else:
            stamp.append((entry, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def _listing(folder: Path, name: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name,
        "root": None,
        "files": 0,
        "lines": 0,
        "bytes": 0,
        "est_tokens": 0,
        "updated": None,
        "error": None,
    }
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if m.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {m.get('format')!r}")
        row.update(
            root=m["root"],
            files=int(m["files_count"]),
            lines=int(m["lines"]),
            bytes=int(m["bytes"]),
            est_tokens=int(m["bytes"]) // 4,
            updated=m["updated"],
        )
    except FileNotFoundError:
        row["error"] = f"volume {name!r} is corrupt: {MANIFEST} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        row["error"] = f"volume {name!r} is corrupt: bad {MANIFEST} ({exc})"
    return row


def delete_volume(name: str) -> None:
    """Remove volume `name`; VolumeError if there is none. Open Volume objects keep
    working on their mapped files until closed."""
    final = volume_dir(name)
    if not final.is_dir():
        raise no_such_volume(name)
    gone = work_dir("del", name)
    try:
        os.rename(final, gone)
    except OSError as exc:
        raise VolumeError(f"cannot delete volume {name!r}: {exc.strerror or exc}") from None
    shutil.rmtree(gone, ignore_errors=True)
