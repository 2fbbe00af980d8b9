"""Admission control for a server whose slots share one KV pool (llama.cpp `--kv-unified`).

A unified pool holds fewer cells than `parallel x window`: that is what makes it small.
But when the requests in flight together need more cells than it holds, llama.cpp fails
every one of them (HTTP 500 "Context size has been exceeded"). So each request to such a
server first reserves its worst case here, and waits (first come, first served, so a big
request is never starved by small ones) until the pool has room:

    cells = prompt tokens + n x max_tokens, each choice capped at the slot's window

Idle slots' cached prompts need no reservation: measured on the embedded runtime (and
read in llama.cpp's server: `try_clear_idle_slots`, `cache_idle_slots`), a unified pool
saves idle slots to the RAM prompt cache and clears them when a new task starts, and purges
them one by one when a batch finds no free cells, before it fails anything. The choices of
one request (`n` > 1) share the prompt's cells (the children copy the sequence, which in a
unified pool adds a sequence id to the same cells; measured: n=4 of a 780-token prompt ran
in a 2048-cell pool).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nanobot_tui.engine.llm.errors import RequestError
from nanobot_tui.engine.llm.request import ChatRequest

__all__ = ["KvPool", "KvPoolTooSmall", "prompt_bound"]

# What a chat template adds around the messages' own bytes (role markers, a default system
# prompt, a tool-calling preamble), in tokens: generous, so the bound stays an upper bound.
TEMPLATE_TOKENS = 512
# Added to a prompt the server counted, for the BOS/EOS it may add on top.
COUNT_MARGIN = 8


class KvPoolTooSmall(RequestError):
    """A request whose worst case is more than the whole pool: it could never be admitted.

    Refused before it is sent, as a 400 would be (status 400, type `kv_pool_exceeded`); the
    message names the largest `n` that fits (`n <= K`), which the voting samplers read to
    split a batch into smaller requests."""


@dataclass
class _Waiter:
    cells: int
    granted: asyncio.Future[None]


class KvPool:
    """A budget of `capacity` KV cells shared by the requests to one server (FIFO).

    `window` is the most one choice can take (llama.cpp's per-slot context). Use
    `async with pool.hold(cells):` around a request: the cells come back when the block
    ends, however it ends (answer, error, cancellation).
    """

    def __init__(self, capacity: int, window: int) -> None:
        if capacity <= 0 or window <= 0:
            raise ValueError("a KV pool needs a positive capacity and window")
        self.capacity = capacity
        self.window = window
        self.in_use = 0
        self._queue: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        return (
            f"KvPool(capacity={self.capacity}, window={self.window}, in_use={self.in_use}, "
            f"waiting={len(self._queue)})"
        )

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def cells_for(
        self, prompt_tokens: int, max_tokens: int | None, n: int = 1, *, exact: bool = True
    ) -> int:
        """The worst case of a request: its prompt plus `n` answers of `max_tokens` (None:
        as long as the window allows), each choice capped at the window. With `exact`
        False, `prompt_tokens` is only an upper bound: for n > 1 a shorter real prompt
        leaves more room for the answers, so the worst real prompt is the one taken."""
        prompt = min(max(prompt_tokens, 0), self.window)
        cap = self.window if max_tokens is None else min(max(max_tokens, 0), self.window)
        if not exact and n > 1:
            prompt = min(prompt, self.window - cap)
        return prompt + max(n, 1) * min(cap, self.window - prompt)

    def fits_now(self, cells: int) -> bool:
        """Whether `cells` would be admitted at once (nobody waiting, room left)."""
        return not self._queue and self.in_use + cells <= self.capacity

    async def acquire(self, cells: int) -> None:
        """Reserve `cells`, waiting behind earlier requests until they fit. Raises
        ValueError for more than the capacity (it would wait forever)."""
        if cells > self.capacity:
            raise ValueError(f"{cells} cells is more than the pool's {self.capacity}")
        if self.fits_now(cells):
            self.in_use += cells
            return
        waiter = _Waiter(cells, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self.release(cells)  # granted as it was cancelled: give the cells back
            else:
                self._queue.remove(waiter)
                self._wake()  # the head may have changed
            raise

    def release(self, cells: int) -> None:
        self.in_use = max(0, self.in_use - cells)
        self._wake()

    def _wake(self) -> None:
        """Admit waiters from the head while they fit; the head blocks those behind it."""
        while self._queue and self.in_use + self._queue[0].cells <= self.capacity:
            waiter = self._queue.popleft()
            self.in_use += waiter.cells
            waiter.granted.set_result(None)

    @asynccontextmanager
    async def hold(self, cells: int) -> AsyncIterator[None]:
        await self.acquire(cells)
        try:
            yield
        finally:
            self.release(cells)

    def too_small(
        self, url: str, cells: int, prompt_tokens: int, request: ChatRequest
    ) -> KvPoolTooSmall:
        """The one-line error for a request that can never fit."""
        n = max(request.n or 1, 1)
        prompt = min(prompt_tokens, self.window)
        per_choice = self.cells_for(prompt, request.max_tokens) - prompt
        fitting = (self.capacity - prompt) // max(per_choice, 1)
        message = (
            f"this request needs up to {cells} KV cells ({prompt_tokens} prompt tokens + "
            f"{n} x {per_choice} answer tokens), more than the server's pool of "
            f"{self.capacity}; ask for fewer tokens or choices (n <= {max(fitting, 0)} fits)"
        )
        return KvPoolTooSmall(
            f"{url}: {message}", status=400, server_message=message, error_type="kv_pool_exceeded"
        )


def prompt_bound(request: ChatRequest) -> int:
    """An upper bound on the prompt's tokens without asking the server: every token of a
    byte-level tokenizer covers at least one byte of the templated text, and the template
    adds at most TEMPLATE_TOKENS around the messages' (and tools') JSON."""
    parts = {"messages": list(request.messages), "tools": request.tools, "extra": request.extra}
    text = json.dumps(parts, ensure_ascii=False, default=str)
    return len(text.encode("utf-8")) + TEMPLATE_TOKENS
