"""KV admission control against a real embedded server whose four slots share one small
unified pool (512 cells, 256 per slot, q8_0): what llama.cpp does when requests overflow
it, and that the client's KvPool keeps them from doing so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from nanobot_tui.engine.llm.errors import ServerError
from nanobot_tui.engine.llm.kv_pool import KvPool, KvPoolTooSmall, prompt_bound
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import StreamDone, TextDelta
from tests.conftest import free_port, running_host

# Slow on a busy 2-core machine (one server thread), though small: more time than usual.
pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

POOL, WINDOW = 512, 256
WORDS = "red green blue river stone cloud apple table window garden".split()


def words(count: int, seed: int) -> str:
    """About 3 tokens a word: distinct prompts, so no slot reuses another's cache."""
    return " ".join(f"{WORDS[(seed * 7 + k * 3) % 10]}{k % 97}" for k in range(count))


def ask(
    seed: int, count: int = 40, max_tokens: int | None = 8, n: int | None = None
) -> ChatRequest:
    """A ~150-token prompt: four of them (with their answers) overflow the pool."""
    messages = [{"role": "user", "content": words(count, seed)}]
    extra = {"ignore_eos": True}
    return ChatRequest(messages, max_tokens=max_tokens, n=n, temperature=0.7, extra=extra)


@pytest.fixture(scope="module")
def pooled_server(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--model", str(embedded_model), "--port", str(free_port()), "--threads", "1"]
    args += ["--ctx-size", str(POOL), "--parallel", "4", "--slots", "--jinja"]
    args += ["--kv-unified", "--kv-unified-per-slot", str(WINDOW)]
    args += ["--flash-attn", "on", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0"]
    with running_host(args, tmp_path_factory.mktemp("kv-pool") / "server.log") as url:
        yield url


@pytest.fixture
async def pooled(pooled_server: str) -> AsyncIterator[LLMClient]:
    async with LLMClient(pooled_server, kv_pool=KvPool(POOL, WINDOW)) as client:
        yield client


async def test_without_admission_an_overflowing_pool_fails_every_request(
    pooled_server: str,
) -> None:
    """The failure the pool exists for (llama.cpp's own behaviour, no KvPool)."""
    async with LLMClient(pooled_server) as bare:
        results = await asyncio.gather(
            *(bare.chat(ask(seed)) for seed in range(4)), return_exceptions=True
        )
    failed = [r for r in results if isinstance(r, ServerError)]
    assert failed and all("Context size has been exceeded" in str(r) for r in failed)


async def test_more_requests_than_the_pool_holds_all_succeed(pooled: LLMClient) -> None:
    pool = pooled.kv_pool
    assert pool is not None
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, pool.in_use)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(*(pooled.chat(ask(10 + seed)) for seed in range(4)))
    finally:
        watcher.cancel()
    assert [r.usage.completion_tokens for r in results] == [8] * 4
    assert all(r.usage.prompt_tokens > POOL // 4 for r in results)  # four overflow the pool
    assert WINDOW < peak <= POOL  # several ran together, never more than fits
    assert pool.in_use == 0 and pool.waiting == 0


async def test_streams_are_admitted_too_and_release_when_done(pooled: LLMClient) -> None:
    async def stream(seed: int) -> int:
        async with contextlib.aclosing(pooled.stream_chat(ask(20 + seed))) as events:
            async for event in events:
                if isinstance(event, StreamDone):
                    return event.result.usage.completion_tokens
        return 0

    assert await asyncio.gather(*(stream(seed) for seed in range(4))) == [8] * 4
    assert pooled.kv_pool is not None and pooled.kv_pool.in_use == 0


async def test_a_cancelled_request_releases_its_reservation(
    pooled: LLMClient, pooled_server: str
) -> None:
    pool = pooled.kv_pool
    assert pool is not None
    first_text = asyncio.Event()

    async def long_stream() -> None:
        request = ask(30, count=10, max_tokens=300, n=2)  # ~60 + 2 x ~190 cells
        async with contextlib.aclosing(pooled.stream_chat(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    first_text.set()

    streaming = asyncio.create_task(long_stream())
    await asyncio.wait_for(first_text.wait(), 60)
    held = pool.in_use
    assert held > 400
    # A request that does not fit beside it waits; cancelled, it leaves the queue.
    waiting = asyncio.create_task(pooled.chat(ask(31)))
    for _ in range(200):
        if pool.waiting:
            break
        await asyncio.sleep(0.01)
    assert pool.waiting == 1 and pool.in_use == held
    waiting.cancel()
    streaming.cancel()
    for task in (waiting, streaming):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert pool.in_use == 0 and pool.waiting == 0
    result = await pooled.chat(ask(32))  # and the next one is admitted
    assert result.usage.completion_tokens == 8
    async with httpx.AsyncClient(timeout=10) as probe:
        slots = (await probe.get(f"{pooled_server}/slots")).json()
    assert not any(slot["is_processing"] for slot in slots)


async def test_a_request_larger_than_the_pool_is_refused_in_one_line(pooled: LLMClient) -> None:
    # Four answers of 150 tokens can never fit in 512 cells, whatever the prompt.
    request = ChatRequest([{"role": "user", "content": "Name a colour."}], max_tokens=150, n=4)
    with pytest.raises(KvPoolTooSmall) as info:
        await asyncio.wait_for(pooled.chat(request), 30)
    text = str(info.value)
    assert "\n" not in text and "more than the server's pool of 512" in text
    assert "n <= 3 fits" in text
    assert pooled.kv_pool is not None and pooled.kv_pool.waiting == 0


async def test_the_prompt_bound_and_the_count_hold_the_real_prompt(pooled: LLMClient) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    requests = [
        ask(40, count=60, max_tokens=1),
        ChatRequest([{"role": "user", "content": "héllo wörld ✓ 日本語"}], max_tokens=1),
        ChatRequest(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
            tools=[tool],
            max_tokens=1,
        ),
    ]
    for request in requests:
        result = await pooled.chat(request)
        counted = await pooled.count_prompt_tokens(pooled._payload(request))
        assert counted == result.usage.prompt_tokens
        assert prompt_bound(request) >= result.usage.prompt_tokens
