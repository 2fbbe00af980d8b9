"""Model downloads: resumable, verified, never half-finished under the model's own name.

A file is fetched into `<dest>.part` next to its final place. A `.part` left by an interrupted
run is resumed with an HTTP Range request (and re-hashed first, so the sha256 covers every
byte); a server that ignores Range answers 200 and the download starts over. Only a file whose
size and sha256 check out is fsynced and renamed into place, so `models/` never holds a
truncated model under a model's name.

Redirects are followed by hand: Hugging Face sends `resolve/` URLs to a CDN on another host,
and the token must not travel there. Plain asyncio + httpx: no textual here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import httpx

from nanobot_tui import paths
from nanobot_tui.atomic import fsync_dir
from nanobot_tui.errors import NanobotError
from nanobot_tui.models import catalog
from nanobot_tui.models.catalog import CatalogModel, Quant
from nanobot_tui.units import human_bytes

# Above this, the CLI and the wizard ask before downloading (the 30B at Q4 is about 17 GB).
LARGE_DOWNLOAD_BYTES = 10 * 10**9

MAX_REDIRECTS = 10
PROGRESS_INTERVAL_S = 0.1
SPEED_WINDOW_S = 3.0
_HASH_BLOCK = 8 << 20


class DownloadError(NanobotError):
    """A download that did not finish; str() is one line, without the token."""


class OfflineError(DownloadError):
    """The host could not be reached at all (no network, DNS failure, refused)."""


class IntegrityError(DownloadError):
    """The bytes arrived but are not the file asked for (size or sha256)."""


class DiskSpaceError(DownloadError):
    """The file cannot fit in the free space of the destination folder."""


class _Interrupted(DownloadError):
    """The transfer broke off mid-body; the .part is kept for a resume."""


@dataclass(frozen=True)
class DownloadProgress:
    done: int  # bytes in the file so far, resumed ones included
    total: int | None  # None when the server does not say
    bytes_per_s: float  # over the last few seconds of this attempt
    eta_s: float | None


ProgressSink = Callable[[DownloadProgress], None]


def part_path(dest: Path) -> Path:
    """Where the bytes go until they are verified."""
    return dest.with_name(dest.name + ".part")


def hf_endpoint() -> str:
    """HF_ENDPOINT (a mirror, or a local server in tests), else huggingface.co."""
    return os.environ.get("HF_ENDPOINT") or catalog.HF_ENDPOINT


def hf_token() -> str | None:
    """HF_TOKEN, else the token `huggingface-cli login` saved; None when there is neither."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token.strip()
    hf_home = os.environ.get("HF_HOME")
    folder = Path(hf_home).expanduser() if hf_home else Path.home() / ".cache" / "huggingface"
    try:
        saved = (folder / "token").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return saved or None


def check_disk_space(folder: Path, needed: int) -> None:
    """Raise DiskSpaceError when `needed` more bytes do not fit in `folder`'s filesystem."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DiskSpaceError(
            f"not enough disk space in {folder}: the download needs {human_bytes(needed)} more, "
            f"{human_bytes(free)} free"
        )


class _Meter:
    """Speed over a sliding window, and progress calls at most every PROGRESS_INTERVAL_S."""

    def __init__(self, sink: ProgressSink | None) -> None:
        self.sink = sink
        self.samples: list[tuple[float, int]] = []
        self.last_report = 0.0

    def start(self, done: int) -> None:
        self.samples = [(time.monotonic(), done)]

    def report(self, done: int, total: int | None, *, force: bool = False) -> None:
        if self.sink is None:
            return
        now = time.monotonic()
        if not force and now - self.last_report < PROGRESS_INTERVAL_S:
            return
        self.last_report = now
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > SPEED_WINDOW_S:
            self.samples.pop(0)
        t0, d0 = self.samples[0]
        speed = (done - d0) / (now - t0) if now > t0 else 0.0
        eta = (total - done) / speed if total is not None and speed > 0 else None
        self.sink(DownloadProgress(done, total, speed, eta))


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _status_error(url: str, response: httpx.Response) -> DownloadError:
    status = response.status_code
    if status in (401, 403):
        return DownloadError(
            f"{url}: access denied ({status}); if the repository is gated, accept its terms "
            "on Hugging Face and set HF_TOKEN"
        )
    if status == 404:
        return DownloadError(f"{url}: not found (404)")
    return DownloadError(f"{url}: the server answered {status} {response.reason_phrase}".rstrip())


def _content_range_start_total(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); `*` totals give None."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.partition("-")[0]
    return (
        int(start) if start.isdigit() else None,
        int(total) if total.isdigit() else None,
    )


def _hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return digest, size


async def _open(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], token: str | None
) -> tuple[httpx.Response, str]:
    """Send a GET, following redirects by hand; the Authorization header only goes to the
    origin it was meant for. Returns the streaming response (to be closed) and its URL."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        sent = dict(headers)
        if token and _same_origin(current, url):
            sent["Authorization"] = f"Bearer {token}"
        request = http.build_request("GET", current, headers=sent)
        try:
            response = await http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            reason = str(exc) or type(exc).__name__
            raise OfflineError(
                f"cannot reach {_host(current)}: {reason}; check the connection or set HF_ENDPOINT"
            ) from None
        if response.is_redirect and "location" in response.headers:
            await response.aclose()
            current = urljoin(current, response.headers["location"])
            continue
        return response, current
    raise DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _verify(
    part: Path, size: int, digest: hashlib._Hash, total: int | None, sha256: str | None
) -> None:
    if total is not None and size < total:
        raise _Interrupted(f"{part.name}: {size} of {total} bytes arrived; run again to resume")
    if total is not None and size > total:
        part.unlink(missing_ok=True)
        raise IntegrityError(
            f"{part.name}: got {size} bytes, expected {total}; the partial file was deleted"
        )
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        part.unlink(missing_ok=True)
        raise IntegrityError(
            f"{part.name}: sha256 mismatch (expected {sha256.lower()[:16]}…, got "
            f"{digest.hexdigest()[:16]}…); the partial file was deleted, run again to re-fetch"
        )


def _finish(part: Path, dest: Path) -> Path:
    with part.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


def _content_length(response: httpx.Response) -> int | None:
    length = response.headers.get("content-length", "")
    return int(length) if length.isdigit() else None


async def _attempt(
    http: httpx.AsyncClient,
    url: str,
    dest: Path,
    expected_size: int | None,
    sha256: str | None,
    token: str | None,
    meter: _Meter,
) -> Path:
    """One request: resume or start over, stream into the .part, verify, move into place."""
    part = part_path(dest)
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()  # longer than the file can be: not a prefix of it
        have = 0
    # Re-hash what is there so the final sha256 covers every byte of the file.
    if have and sha256 is not None:
        digest, have = await asyncio.to_thread(_hash_file, part)
    else:
        digest = hashlib.sha256()
    if expected_size is not None:
        check_disk_space(dest.parent, expected_size - have)

    headers = {"Range": f"bytes={have}-"} if have else {}
    response, final_url = await _open(http, url, headers, token)
    restart = False
    try:
        status = response.status_code
        if have and status == 416:
            # Nothing past what we hold: it is the whole file, or it is not the file at all.
            _, total = _content_range_start_total(response.headers.get("content-range"))
            total = expected_size if expected_size is not None else total
            try:
                _verify(part, have, digest, total, sha256)
            except DownloadError:
                restart = True
            else:
                return _finish(part, dest)
        elif have and status == 206:
            start, total = _content_range_start_total(response.headers.get("content-range"))
            # Resumed at another offset than asked for: cannot be stitched on.
            restart = start != have
        elif status == 200:
            # A fresh start, or a server that ignored Range: the body is the whole file.
            have, digest, total = 0, hashlib.sha256(), _content_length(response)
        else:
            raise _status_error(final_url, response)
        if not restart:
            if expected_size is not None:
                if total is not None and total != expected_size:
                    raise IntegrityError(
                        f"{final_url}: the server has {total} bytes, expected {expected_size}"
                    )
                total = expected_size
            if total is not None:
                check_disk_space(dest.parent, total - have)
            meter.start(have)
            with part.open("ab" if have else "wb") as fh:
                have = await _stream(response, fh, digest, have, total, meter)
    finally:
        await response.aclose()
    if restart:
        part.unlink(missing_ok=True)
        return await _attempt(http, url, dest, expected_size, sha256, token, meter)
    meter.report(have, total, force=True)
    _verify(part, have, digest, total, sha256)
    return _finish(part, dest)


async def _stream(
    response: httpx.Response,
    fh: BinaryIO,
    digest: hashlib._Hash,
    have: int,
    total: int | None,
    meter: _Meter,
) -> int:
    try:
        # No chunk_size: httpx would hold back a partial chunk and lose it when the
        # connection drops; as received, every byte that arrived reaches the .part.
        async for chunk in response.aiter_bytes():
            fh.write(chunk)
            digest.update(chunk)
            have += len(chunk)
            meter.report(have, total)
    except httpx.TransportError as exc:
        fh.flush()
        got = f"{human_bytes(have)} of {human_bytes(total)}" if total else human_bytes(have)
        reason = str(exc) or type(exc).__name__
        raise _Interrupted(
            f"download interrupted after {got} ({reason}); run again to resume"
        ) from None
    return have


async def download(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    token: str | None = None,
    on_progress: ProgressSink | None = None,
    retries: int = 0,
    retry_delay_s: float = 1.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Path:
    """Fetch `url` into `dest` (its folder is created), resuming a `.part` left before.

    Verified against `expected_size` (else the server's length) and `sha256` when given.
    An interrupted transfer is resumed up to `retries` times, `retry_delay_s` × attempt apart;
    after that the `.part` stays for the next call. Raises DownloadError (one line).
    """
    paths.ensure(dest.parent)
    meter = _Meter(on_progress)
    timeout = httpx.Timeout(30.0, connect=15.0)
    async with httpx.AsyncClient(timeout=timeout, transport=transport) as http:
        attempt = 0
        while True:
            try:
                return await _attempt(http, url, dest, expected_size, sha256, token, meter)
            except _Interrupted as exc:
                if attempt >= retries:
                    raise DownloadError(str(exc)) from None
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if attempt >= retries:
                    reason = str(exc) or type(exc).__name__
                    raise DownloadError(f"{_host(url)}: {reason}; run again to resume") from None
            attempt += 1
            await asyncio.sleep(retry_delay_s * attempt)


async def fetch_model(
    model: CatalogModel,
    quant: Quant,
    *,
    models_dir: Path | None = None,
    on_progress: ProgressSink | None = None,
    retries: int = 2,
) -> Path:
    """Download one catalog quant into models/<id>/<file> from HF_ENDPOINT with the HF token.

    The catalog's size is exact only where it also has a sha256 (the others are estimates
    from listings), so only then is it the expected size; otherwise the server's length is.
    The finished file must be a complete GGUF (its tensor table fits in the file).
    """
    from nanobot_tui.models import sizing

    dest = catalog.model_file(model, quant, models_dir or paths.models_dir())
    exact = quant.sha256 is not None
    path = await download(
        model.download_url(quant, hf_endpoint()),
        dest,
        expected_size=quant.size_bytes if exact else None,
        sha256=quant.sha256,
        token=hf_token(),
        on_progress=on_progress,
        retries=retries,
    )
    try:
        await asyncio.to_thread(sizing.read_gguf_facts, path)
    except sizing.GgufError as exc:
        path.unlink(missing_ok=True)
        raise IntegrityError(f"{exc}; the file was deleted") from None
    return path
