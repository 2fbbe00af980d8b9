"""The KV pool ledger on its own (no server): worst cases, FIFO admission, release on every
way out, and the request that can never fit."""

from __future__ import annotations

import asyncio

import pytest

from nanobot_tui.engine.llm.kv_pool import TEMPLATE_TOKENS, KvPool, KvPoolTooSmall, prompt_bound
from nanobot_tui.engine.llm.request import ChatRequest


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_worst_case_cells_cap_each_choice_at_the_window() -> None:
    pool = KvPool(capacity=2048, window=1024)
    assert pool.cells_for(100, 50) == 150
    assert pool.cells_for(100, None) == 1024  # no limit: the whole window
    assert pool.cells_for(1000, 500) == 1024  # capped at the window
    assert pool.cells_for(5000, 10) == 1024  # too long a prompt: the server refuses it
    # n choices share the prompt's cells; each answer is capped at the window's room.
    assert pool.cells_for(100, 50, n=4) == 100 + 4 * 50
    assert pool.cells_for(900, 500, n=3) == 900 + 3 * 124


def test_a_bounded_prompt_takes_the_worst_real_prompt_under_the_bound() -> None:
    pool = KvPool(capacity=4096, window=1024)
    # One choice: the longer the prompt, the more cells; the bound itself is the worst.
    assert pool.cells_for(900, 500, exact=False) == pool.cells_for(900, 500) == 1024
    # Several: a real prompt of 150 under a bound of 931 leaves 2 x 874 for the answers.
    real = pool.cells_for(150, 900, n=2)
    assert real == 1898 > pool.cells_for(931, 900, n=2)
    assert pool.cells_for(931, 900, n=2, exact=False) >= real
    assert pool.cells_for(931, None, n=3, exact=False) == 3 * 1024


def test_a_pool_needs_a_size() -> None:
    with pytest.raises(ValueError):
        KvPool(0, 1024)


async def test_requests_wait_in_order_and_a_big_one_is_not_starved() -> None:
    pool = KvPool(capacity=100, window=100)
    await pool.acquire(60)
    order: list[str] = []

    async def take(name: str, cells: int) -> None:
        async with pool.hold(cells):
            order.append(name)
            await asyncio.sleep(0.01)

    big = asyncio.create_task(take("big", 90))
    await settle()
    small = asyncio.create_task(take("small", 10))  # would fit now, but big came first
    await settle()
    assert order == [] and pool.waiting == 2 and pool.in_use == 60
    pool.release(60)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]
    assert pool.in_use == 0 and pool.waiting == 0


async def test_cells_come_back_on_an_error_inside_the_hold() -> None:
    pool = KvPool(capacity=100, window=100)
    with pytest.raises(RuntimeError):
        async with pool.hold(70):
            assert pool.in_use == 70
            raise RuntimeError("the server failed")
    assert pool.in_use == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_lets_the_next_in() -> None:
    pool = KvPool(capacity=100, window=100)
    await pool.acquire(50)
    head = asyncio.create_task(pool.acquire(80))  # blocks everyone behind it
    await settle()
    behind = asyncio.create_task(pool.acquire(40))
    await settle()
    assert pool.waiting == 2 and not behind.done()
    head.cancel()
    await settle()
    assert head.cancelled() and behind.done()  # 50 + 40 fit once the head is gone
    assert pool.in_use == 90 and pool.waiting == 0


async def test_a_waiter_cancelled_as_it_is_granted_gives_the_cells_back() -> None:
    pool = KvPool(capacity=100, window=100)
    await pool.acquire(100)
    waiter = asyncio.create_task(pool.acquire(30))
    await settle()
    pool.release(100)  # grants the waiter's future...
    waiter.cancel()  # ...and it is cancelled before it runs again
    await settle()
    assert waiter.cancelled()
    assert pool.in_use == 0


async def test_cancelling_the_holder_releases_its_cells() -> None:
    pool = KvPool(capacity=100, window=100)
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with pool.hold(60):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold_forever())
    await entered.wait()
    assert pool.in_use == 60
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.in_use == 0


async def test_more_than_the_pool_is_refused_at_once() -> None:
    pool = KvPool(capacity=100, window=100)
    with pytest.raises(ValueError):
        await pool.acquire(101)
    assert pool.waiting == 0


def test_the_too_small_error_is_one_line_and_names_the_n_that_fits() -> None:
    pool = KvPool(capacity=2048, window=1024)
    request = ChatRequest([{"role": "user", "content": "hi"}], max_tokens=600, n=4)
    cells = pool.cells_for(28, 600, 4)
    error = pool.too_small("http://127.0.0.1:1/v1/chat/completions", cells, 28, request)
    assert isinstance(error, KvPoolTooSmall)
    text = str(error)
    assert "\n" not in text and text.startswith("http://127.0.0.1:1/v1/chat/completions: ")
    assert f"needs up to {cells} KV cells" in text and "pool of 2048" in text
    assert "n <= 3 fits" in text  # (2048 - 28) // 600
    assert error.status == 400 and error.error_type == "kv_pool_exceeded"


def test_the_prompt_bound_counts_every_byte_plus_the_template() -> None:
    text = "héllo wörld"
    request = ChatRequest([{"role": "user", "content": text}])
    assert prompt_bound(request) >= len(text.encode()) + TEMPLATE_TOKENS
    with_tools = ChatRequest(request.messages, tools=[{"type": "function", "name": "x" * 500}])
    assert prompt_bound(with_tools) >= prompt_bound(request) + 500
