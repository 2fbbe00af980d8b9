"""Ingest against names that are not UTF-8 and a disk that fills up (issue 12, items 14
and 16). The full disk is a FAULT INJECTOR at the volume writer's write call (no tiny
file system can be mounted without root): every write past a budget fails with ENOSPC."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.engine.context import ingest as ingest_module
from nanobot_tui.engine.context import writer as writer_module
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.storage import VolumeError, list_volumes, volumes_dir
from nanobot_tui.engine.context.volume import Volume

CAFE = os.fsdecode(b"caf\xe9.txt")  # the name's bytes are Latin-1: not UTF-8


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    (root / CAFE).write_text("hello from latin-1\n")
    (root / "a.txt").write_text("plain\n")
    return root


def test_a_file_name_that_is_not_utf8_is_ingested_and_updated(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    first = ingest(root, "src")
    assert (first.files, first.added) == (2, 2)
    with Volume.open("src") as volume:
        assert sorted(f.path for f in volume.files) == ["a.txt", "caf\\xe9.txt"]
    again = ingest(root, "src")  # the update that used to be blocked
    assert (again.added, again.changed, again.removed, again.unchanged) == (0, 0, 0, 2)
    (root / CAFE).write_text("hello again\n")
    assert ingest(root, "src").changed == 1
    assert [row["error"] for row in list_volumes()] == [None]


def test_a_root_folder_that_is_not_utf8_is_ingested(tmp_path: Path) -> None:
    root = tmp_path / os.fsdecode(b"d\xe9j\xe0")
    root.mkdir()
    (root / "n.txt").write_text("x\n")
    report = ingest(root, "deja")
    assert report.root.endswith("d\\xe9j\\xe0") and report.files == 1
    assert ingest(root, "deja").unchanged == 1


class _FullDisk:
    """FAULT INJECTOR: a file whose writes fail with ENOSPC once `budget` bytes are in."""

    def __init__(self, real: Any, budget: list[int]) -> None:
        self._real, self._budget = real, budget

    def write(self, data: Any) -> int:
        n = len(data.encode()) if isinstance(data, str) else len(memoryview(data).cast("B"))
        if n > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= n
        return int(self._real.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._real.close()


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    left = [budget]
    real_open = writer_module._open_out
    monkeypatch.setattr(writer_module, "_open_out", lambda p: _FullDisk(real_open(p), left))


def _old_volume(tmp_path: Path) -> Path:
    root = _tree(tmp_path)
    ingest(root, "src")
    (root / "big.txt").write_text("more text\n" * 50_000)  # 500 kB to write next time
    return root


def _intact(root: Path) -> None:
    assert [p.name for p in volumes_dir().iterdir() if p.name.startswith(".tmp-")] == []
    with Volume.open("src") as volume:  # the volume saved before is all there
        assert sorted(f.path for f in volume.files) == ["a.txt", "caf\\xe9.txt"]
        assert volume.grep("latin-1")


NO_SPACE = os.strerror(errno.ENOSPC)


def test_a_full_disk_while_writing_text_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _old_volume(tmp_path)
    _fill_disk_after(monkeypatch, 100_000)
    with pytest.raises(VolumeError) as caught:
        ingest(root, "src")
    assert str(caught.value) == (
        f"cannot write volume 'src' in {volumes_dir()}: {NO_SPACE}; the volume is unchanged"
    )
    _intact(root)


def test_a_full_disk_at_the_manifest_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _old_volume(tmp_path)
    real_open = open

    def open_manifest_on_full_disk(path: Any, *args: Any, **kwargs: Any) -> Any:
        fh = real_open(path, *args, **kwargs)
        return _FullDisk(fh, [0]) if str(path).endswith("manifest.json") else fh

    monkeypatch.setattr(ingest_module, "open", open_manifest_on_full_disk, raising=False)
    with pytest.raises(VolumeError, match=f"cannot write volume 'src' in .*: {NO_SPACE}"):
        ingest(root, "src")
    _intact(root)


def test_the_cli_says_one_line_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _old_volume(tmp_path)
    _fill_disk_after(monkeypatch, 0)
    assert cli.main(["ingest", str(root), "--name", "src"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("nanobot: cannot write volume 'src'") and NO_SPACE in err
    _intact(root)
