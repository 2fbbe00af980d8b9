"""The downloader against FakeHubServer, a real HTTP server on loopback: resume after a dropped
connection, servers that ignore Range, 416, redirects, checksums, errors and disk space."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from nanobot_tui.models import download as dl
from nanobot_tui.models.catalog import CatalogModel, get, present_quants
from nanobot_tui.models.download import (
    DiskSpaceError,
    DownloadError,
    DownloadProgress,
    IntegrityError,
    OfflineError,
    download,
    part_path,
)
from tests.conftest import free_port
from tests.fake_hub import FakeHubServer, files_under, hub, random_bytes, sha256_of

__all__ = ["hub"]  # the fixture, imported for pytest

SIZE = 3_000_000  # a few MB: several chunks, quick
PATH = "/org/model-GGUF/resolve/main/model.Q4.gguf"


def model_dest(home: Path) -> Path:
    return home / "models" / "test-model" / "model.Q4.gguf"


async def test_resumed_download_matches_sha256_and_interrupted_never_appears(
    hub: FakeHubServer, nanobot_home: Path
) -> None:
    data = random_bytes(SIZE)
    url = hub.add(PATH, data)
    dest = model_dest(nanobot_home)
    hub.drop_after = SIZE // 2

    with pytest.raises(DownloadError, match=r"interrupted after .*run again to resume"):
        await download(url, dest, expected_size=SIZE, sha256=sha256_of(data))
    # Half a file sits under its temporary name only: nothing under models/ is a model.
    assert not dest.exists()
    assert files_under(nanobot_home / "models") == ["test-model/model.Q4.gguf.part"]
    kept = part_path(dest).stat().st_size
    assert kept == SIZE // 2  # every byte that arrived was kept
    assert hub.ranges() == []

    seen: list[DownloadProgress] = []
    path = await download(
        url, dest, expected_size=SIZE, sha256=sha256_of(data), on_progress=seen.append
    )
    assert path == dest
    assert hub.ranges() == [f"bytes={kept}-"]  # resumed, not restarted
    assert sha256_of(dest) == sha256_of(data)
    assert files_under(nanobot_home / "models") == ["test-model/model.Q4.gguf"]
    # Progress counts the resumed bytes and ends at the total.
    assert seen[0].done >= SIZE // 2
    assert seen[-1].done == seen[-1].total == SIZE
    assert all(p.bytes_per_s >= 0 for p in seen)


async def test_retries_resume_within_one_call(hub: FakeHubServer, tmp_path: Path) -> None:
    data = random_bytes(SIZE, seed=3)
    url = hub.add(PATH, data)
    hub.drop_after = 1_000_000
    dest = tmp_path / "m.gguf"
    await download(url, dest, sha256=sha256_of(data), retries=1, retry_delay_s=0)
    assert hub.ranges() == ["bytes=1000000-"]
    assert dest.read_bytes() == data


async def test_server_ignoring_range_restarts_from_zero(hub: FakeHubServer, tmp_path: Path) -> None:
    data = random_bytes(SIZE, seed=1)
    url = hub.add(PATH, data)
    dest = tmp_path / "m.gguf"
    # A part of garbage: if it were kept in front of a full 200 body, the hash would fail.
    part_path(dest).write_bytes(b"x" * 1000)
    hub.ignore_range = True
    await download(url, dest, expected_size=SIZE, sha256=sha256_of(data))
    assert hub.ranges() == ["bytes=1000-"]
    assert dest.read_bytes() == data


@pytest.mark.parametrize("right", [True, False], ids=["complete-part", "wrong-bytes-part"])
async def test_a_full_length_part_is_verified_on_416(
    hub: FakeHubServer, tmp_path: Path, right: bool
) -> None:
    """A .part as long as the file gets 416 to its Range request: kept if its hash matches,
    else fetched again from the start."""
    data = random_bytes(SIZE, seed=2)
    url = hub.add(PATH, data)
    dest = tmp_path / "m.gguf"
    part_path(dest).write_bytes(data if right else bytes(SIZE))
    await download(url, dest, sha256=sha256_of(data))
    expected = [f"bytes={SIZE}-"] if right else [f"bytes={SIZE}-", None]
    assert [r.range for r in hub.seen] == expected
    assert dest.read_bytes() == data and not part_path(dest).exists()


async def test_sha256_mismatch_deletes_the_part_and_says_so(
    hub: FakeHubServer, tmp_path: Path
) -> None:
    url = hub.add(PATH, random_bytes(SIZE))
    dest = tmp_path / "m.gguf"
    with pytest.raises(IntegrityError, match=r"sha256 mismatch.*partial file was deleted"):
        await download(url, dest, sha256="0" * 64)
    assert not dest.exists() and not part_path(dest).exists()


async def test_size_differs_from_expected(hub: FakeHubServer, tmp_path: Path) -> None:
    url = hub.add(PATH, random_bytes(1000))
    with pytest.raises(IntegrityError, match="the server has 1000 bytes, expected 999"):
        await download(url, tmp_path / "m.gguf", expected_size=999)
    assert not (tmp_path / "m.gguf").exists()


async def test_token_goes_to_the_hub_but_not_to_the_cdn(hub: FakeHubServer, tmp_path: Path) -> None:
    from tests.fake_hub import fake_hub

    data = random_bytes(10_000)
    with fake_hub() as cdn:
        cdn.add(PATH, data)
        hub.redirect_to = cdn.url
        await download(hub.url + PATH, tmp_path / "m.gguf", token="hf_secret")
    assert [r.authorization for r in hub.seen] == ["Bearer hf_secret"]
    assert [r.authorization for r in cdn.seen] == [None]
    assert (tmp_path / "m.gguf").read_bytes() == data


@pytest.mark.parametrize(
    ("status", "words"),
    [(404, "not found (404)"), (403, "access denied (403)"), (500, "answered 500")],
)
async def test_http_errors_are_one_line(
    hub: FakeHubServer, tmp_path: Path, status: int, words: str
) -> None:
    hub.fail_status = status
    with pytest.raises(DownloadError) as info:
        await download(hub.url + PATH, tmp_path / "m.gguf")
    message = str(info.value)
    assert words in message and "\n" not in message
    assert not list(tmp_path.glob("m.gguf*"))


async def test_connection_refused_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}{PATH}"  # nothing listens there
    with pytest.raises(OfflineError) as info:
        await download(url, tmp_path / "m.gguf", token="hf_secret")
    message = str(info.value)
    assert message.startswith("cannot reach 127.0.0.1: ")
    assert message.endswith("; check the connection or set HF_ENDPOINT")
    assert "hf_secret" not in message and "\n" not in message


async def test_not_enough_disk_space_refuses_before_writing(
    hub: FakeHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = hub.add(PATH, random_bytes(SIZE))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    # Known size: refused before any request.
    with pytest.raises(DiskSpaceError, match=r"needs 3\.0 MB more, 1\.0 kB free"):
        await download(url, tmp_path / "m.gguf", expected_size=SIZE)
    assert hub.seen == []
    # Size only from the server: refused once the headers say it, before any body is written.
    with pytest.raises(DiskSpaceError):
        await download(url, tmp_path / "m.gguf")
    assert len(hub.seen) == 1
    assert not list(tmp_path.glob("m.gguf*"))


def test_token_from_env_or_the_huggingface_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dl.hf_token() is None
    saved = tmp_path / ".cache" / "huggingface" / "token"
    saved.parent.mkdir(parents=True)
    saved.write_text("hf_from_file\n")
    assert dl.hf_token() == "hf_from_file"
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert dl.hf_token() == "hf_from_env"


def test_endpoint_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    model = get("qwen3-0.6b")
    quant = model.quant("Q8_0")
    assert model.download_url(quant, dl.hf_endpoint()).startswith(
        "https://huggingface.co/unsloth/Qwen3-0.6B-GGUF/resolve/main/"
    )
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local/")
    assert model.download_url(quant, dl.hf_endpoint()) == (
        "http://mirror.local/unsloth/Qwen3-0.6B-GGUF/resolve/main/Qwen3-0.6B-Q8_0.gguf"
    )


async def test_fetch_model_checks_the_gguf(
    hub: FakeHubServer, nanobot_home: Path, monkeypatch: pytest.MonkeyPatch, embedded_model: Path
) -> None:
    """A catalog model without a sha256 is checked by its GGUF tensor table: a file cut short
    that the server nonetheless calls complete is deleted, never kept as a model."""
    model: CatalogModel = get("qwen3-0.6b")
    quant = model.quant("Q4_K_M")
    path = f"/{model.repo}/resolve/{model.revision}/{quant.file}"
    hub.add(path, embedded_model.read_bytes()[:5_000_000])
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    with pytest.raises(IntegrityError, match=r"truncated GGUF.*the file was deleted"):
        await dl.fetch_model(model, quant)
    assert present_quants(model, nanobot_home / "models") == []

    hub.add(path, embedded_model)
    got = await dl.fetch_model(model, quant)
    assert present_quants(model, nanobot_home / "models") == [quant]
    assert got.name == quant.file and sha256_of(got) == sha256_of(embedded_model)
