"""LoRA adapters served by the embedded llama.cpp host: a random adapter written by
adapter_gguf loads at scale 0, changes nothing there, changes the greedy output at scale 1
(per request or globally), and a malformed one stops the server with a line naming it."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from nanobot_tui.engine.learning.distill.adapter_gguf import (
    random_adapter,
    read_base_model,
    write_adapter,
)
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.serving.llama_host import build_parser, lora_adapters
from nanobot_tui.engine.serving.lora import (
    LoraAdapter,
    LoraServerError,
    list_adapters,
    lora_fields,
    set_scales,
)
from nanobot_tui.engine.serving.manager import (
    ServerManager,
    ServerStartError,
    free_port,
    resolve_runtime,
    server_args,
)
from nanobot_tui.engine.serving.slots import ServerSpec
from tests.conftest import running_host

PROMPT = "Name three colours."


def spec_for(model: Path, adapters: tuple[Path, ...] = ()) -> ServerSpec:
    return ServerSpec(
        model_path=model,
        model_id="smollm2-135m-instruct",
        display_name="SmolLM2-135M-Instruct",
        slots=("main",),
        context_size=1024,
        parallel=1,
        gpu_layers=0,
        size_bytes=model.stat().st_size,
        lora_adapters=adapters,
    )


def request(prompt: str, extra: dict[str, object] | None = None) -> ChatRequest:
    messages = [{"role": "user", "content": prompt}]
    return ChatRequest(messages, max_tokens=12, temperature=0.0, extra=extra)


def test_adapters_go_to_the_server_loaded_off(tmp_path: Path) -> None:
    adapters = (tmp_path / "a.gguf", tmp_path / 'odd, "quoted" name.gguf')
    args = server_args(spec_for(Path(__file__), adapters), port=1, threads=1)
    assert args[-5:] == [
        "--lora",
        str(adapters[0]),
        "--lora",
        f'"{tmp_path}/odd, ""quoted"" name.gguf"',  # llama.cpp splits the flag at commas
        "--lora-init-without-apply",
    ]
    # The host reads the flags back as llama-server does: in order, at scale 0.
    assert lora_adapters(build_parser().parse_args(args)) == [
        (str(adapters[0]), 0.0),
        (str(adapters[1]), 0.0),
    ]
    flags = ["-m", "m.gguf", "--port", "1", "--lora-scaled", "b.gguf:0.5,c.gguf:2"]
    parsed = build_parser().parse_args([*flags, "--lora", "a.gguf"])
    assert lora_adapters(parsed) == [("b.gguf", 0.5), ("c.gguf", 2.0), ("a.gguf", 1.0)]


def test_lora_fields_make_off_explicit() -> None:
    assert lora_fields({0: 0}) == {"lora": [{"id": 0, "scale": 0.0}], "cache_prompt": False}
    assert lora_fields({1: 1.0}, fresh_prompt=False) == {"lora": [{"id": 1, "scale": 1.0}]}


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_random_adapter_off_at_0_and_on_at_1(embedded_model: Path, tmp_path: Path) -> None:
    base = read_base_model(embedded_model)
    # Strong on purpose: B @ A of about the size of the weights themselves.
    weights = random_adapter(base, rank=8, targets=("q_proj", "v_proj"), seed=3, scale=0.05)
    adapter = write_adapter(tmp_path / "random.gguf", base, weights, alpha=8.0).path

    # The base model's greedy answer, from a host started without the adapter.
    plain = server_args(spec_for(embedded_model), port=free_port(), threads=2)
    with running_host(plain, tmp_path / "plain.log") as url:
        plain_client = LLMClient(url)
        try:
            base_answer = (await plain_client.chat(request(PROMPT))).content
        finally:
            await plain_client.close()
    assert base_answer.strip()

    manager = ServerManager([spec_for(embedded_model, (adapter,))], resolve_runtime(), threads=2)
    async with manager:
        assert await manager.lora_adapters("main") == [LoraAdapter(0, adapter, 0.0)]
        client = manager.client("main")

        async def answer(extra: dict[str, object] | None) -> str:
            return (await client.chat(request(PROMPT, extra))).content

        # Loaded at scale 0: the base model's output, by default and asked for explicitly.
        assert await answer(None) == base_answer
        assert await answer(lora_fields({0: 0.0})) == base_answer
        # Scale 1 for these requests only: something else.
        on = await answer(lora_fields({0: 1.0}))
        assert on != base_answer
        # Off again, with no prompt reused from the scale-1 requests.
        assert await answer(lora_fields({0: 0.0})) == base_answer

        # The global scale: every request without its own `lora` gets it.
        await manager.set_lora_scales("main", {0: 1.0})
        assert await manager.lora_adapters("main") == [LoraAdapter(0, adapter, 1.0)]
        assert await answer({"cache_prompt": False}) == on
        assert await answer(lora_fields({0: 0.0})) == base_answer  # a request overrides it
        await manager.set_lora_scales("main", {0: 0.0})
        assert await answer({"cache_prompt": False}) == base_answer

        with pytest.raises(LoraServerError, match=r"lora-adapters: no adapter 5 \(loaded: \[0\]\)"):
            await manager.set_lora_scales("main", {5: 1.0})
        async with httpx.AsyncClient() as http:
            with pytest.raises(LoraServerError, match="HTTP 401"):
                await list_adapters(http, manager.url("main"))  # the app's servers want a key
            await set_scales(http, manager.url("main"), {0: 0.5}, manager.auth_headers)
            assert await list_adapters(http, manager.url("main"), manager.auth_headers) == [
                LoraAdapter(0, adapter, 0.5)
            ]


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_malformed_adapter_stops_the_server_naming_it(
    embedded_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    base = read_base_model(embedded_model)
    good = write_adapter(tmp_path / "good.gguf", base, random_adapter(base, rank=2), 2.0).path
    broken.write_bytes(good.read_bytes()[:5000])  # cut short, as by a full disk

    manager = ServerManager([spec_for(embedded_model, (broken,))], resolve_runtime(), threads=2)
    with pytest.raises(ServerStartError) as caught:
        await manager.start()
    message = str(caught.value)
    assert "\n" not in message and str(broken) in message
    assert "could not start the server: " in caught.value.log_tail
    assert str(broken) in caught.value.log_tail

    # A missing file is refused before the runtime loads the model.
    missing = replace(spec_for(embedded_model), lora_adapters=(tmp_path / "gone.gguf",))
    args = server_args(missing, port=free_port(), threads=1)
    host = resolve_runtime().command
    done = subprocess.run([*host, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"llama_host: LoRA adapter file not found: {tmp_path}/gone.gguf"
