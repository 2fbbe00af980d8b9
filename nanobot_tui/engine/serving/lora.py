"""LoRA adapters on a running llama.cpp server: list them, set their scales, pick them per
request.

A server loads its adapters at start (`ServerSpec.lora_adapters`; the manager sets them
all to scale 0 once it is up) and numbers them in that order; only their scales change
while it runs, and a new file needs a restart. A request picks its own scales with
`lora_fields`, merged into `ChatRequest.extra`:

    adapters = await manager.lora_adapters("main")     # list_adapters(http, url, headers)
    await manager.set_lora_scales("main", {0: 1.0})    # set_scales(http, url, scales, headers)
    request = ChatRequest(messages, extra=lora_fields({0: 1.0}))

Off is an explicit scale 0: llama.cpp reads an empty `lora` list as "the global scales".
A server may answer a prompt from KV cells computed under other scales, so a request that
switches scales asks for a fresh prompt (`cache_prompt: false`). Requests with different
scales are not batched together, so mixing them on one server costs throughput.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nanobot_tui.errors import NanobotError

__all__ = [
    "LoraAdapter",
    "LoraServerError",
    "list_adapters",
    "list_adapters_blocking",
    "lora_fields",
    "set_scales",
]

LIST_TIMEOUT_S = 10.0  # a server that does not list its adapters in this long is taken as down


class LoraServerError(NanobotError):
    """A server refused or garbled a LoRA request."""


@dataclass(frozen=True, slots=True)
class LoraAdapter:
    """One adapter a server has loaded."""

    id: int
    path: Path
    scale: float


def lora_fields(scales: Mapping[int, float], fresh_prompt: bool = True) -> dict[str, Any]:
    """The request body fields that run one request at `scales` ({adapter id: scale};
    adapters not named run at 0), for `ChatRequest.extra`."""
    fields: dict[str, Any] = {
        "lora": [{"id": int(adapter), "scale": float(scale)} for adapter, scale in scales.items()]
    }
    if fresh_prompt:
        fields["cache_prompt"] = False
    return fields


async def list_adapters(
    http: httpx.AsyncClient, base_url: str, headers: Mapping[str, str] | None = None
) -> list[LoraAdapter]:
    """The adapters the server at `base_url` has loaded, with their global scales."""
    url = f"{base_url}/lora-adapters"
    return _adapters(url, await _call(http, "GET", url, headers))


def list_adapters_blocking(
    base_url: str, headers: Mapping[str, str] | None = None, timeout: float = LIST_TIMEOUT_S
) -> list[LoraAdapter]:
    """`list_adapters` for a caller off the event loop (a worker thread)."""
    url = f"{base_url}/lora-adapters"
    try:
        with httpx.Client(timeout=timeout) as http:
            response = http.get(url, headers=dict(headers or {}))
    except httpx.HTTPError as exc:
        raise LoraServerError(f"GET {url}: {exc}") from None
    return _adapters(url, _body(response, "GET", url))


def _adapters(url: str, body: Any) -> list[LoraAdapter]:
    try:
        return [
            LoraAdapter(id=int(entry["id"]), path=Path(entry["path"]), scale=float(entry["scale"]))
            for entry in body
        ]
    except (TypeError, KeyError, ValueError):
        raise LoraServerError(f"GET {url}: unexpected answer {str(body)[:200]}") from None


async def set_scales(
    http: httpx.AsyncClient,
    base_url: str,
    scales: Mapping[int, float],
    headers: Mapping[str, str] | None = None,
) -> None:
    """Set the global scales of the adapters named ({id: scale}); llama.cpp sets every
    adapter not named to 0."""
    url = f"{base_url}/lora-adapters"
    # llama.cpp answers success for an id it does not have, and changes nothing.
    loaded = {adapter.id for adapter in await list_adapters(http, base_url, headers)}
    if unknown := sorted(set(scales) - loaded):
        raise LoraServerError(f"POST {url}: no adapter {unknown[0]} (loaded: {sorted(loaded)})")
    payload = [{"id": int(adapter), "scale": float(scale)} for adapter, scale in scales.items()]
    await _call(http, "POST", url, headers, payload)


async def _call(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    payload: object = None,
) -> Any:
    try:
        response = await http.request(method, url, headers=dict(headers or {}), json=payload)
    except httpx.HTTPError as exc:
        raise LoraServerError(f"{method} {url}: {exc}") from None
    return _body(response, method, url)


def _body(response: httpx.Response, method: str, url: str) -> Any:
    if response.status_code != 200:
        raise LoraServerError(f"{method} {url}: HTTP {response.status_code} {response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise LoraServerError(f"{method} {url}: not JSON: {response.text[:200]}") from None
