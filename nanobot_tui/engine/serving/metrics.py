"""What a llama.cpp server says about its work: /metrics and /slots, read for the meter.

llama.cpp adds a request's generated tokens to `llamacpp:tokens_predicted_total` only when
the request ends, so that counter alone reads 0 tok/s while tokens flow and then jumps by
the whole answer. The tokens generated so far are that counter plus each busy slot's
`n_decoded` (/slots, live). /metrics is read first: a request that ends between the two
reads is then in neither and the total seems to go back, which the sampler skips (its next
poll spans both intervals), rather than counted twice.
"""

from __future__ import annotations

import contextlib

import httpx


async def sample(http: httpx.AsyncClient, base_url: str) -> tuple[float, int] | None:
    """(tokens generated so far, requests in flight) of the server at `base_url`; None if
    it did not answer. Without /slots (a server started without --slots) the total is the
    finished requests' alone."""
    try:
        response = await http.get(f"{base_url}/metrics", timeout=2.0)
        slots = await http.get(f"{base_url}/slots", timeout=2.0)
    except httpx.HTTPError:
        return None
    values = parse_metrics(response.text)
    total = values.get("llamacpp:tokens_predicted_total", 0.0)
    if slots.status_code == 200:
        with contextlib.suppress(ValueError):
            total += tokens_in_flight(slots.json())
    return total, int(values.get("llamacpp:requests_processing", 0))


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format, the plain `name value` lines llama.cpp writes."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value.split()[0])
    return values


def tokens_in_flight(slots: object) -> int:
    """Tokens generated so far by the requests a llama.cpp server is processing, from its
    /slots answer (`next_token[].n_decoded` of each busy slot); 0 for anything else."""
    total = 0
    for slot in slots if isinstance(slots, list) else ():
        if not isinstance(slot, dict) or not slot.get("is_processing"):
            continue
        for token in slot.get("next_token") or ():
            decoded = token.get("n_decoded") if isinstance(token, dict) else None
            if isinstance(decoded, int):
                total += decoded
    return total
