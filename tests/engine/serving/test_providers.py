"""Per-slot providers: the config, the fallback to local without a key, the clients, the
workbench and doctor; cloud endpoints are FakeOpenAIServer / FakeAnthropicServer."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui import paths
from nanobot_tui.config import Config, ConfigError, parse_config
from nanobot_tui.engine.llm.anthropic import AnthropicClient
from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.errors import RequestError
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import StreamDone, TextDelta, ToolCallDelta
from nanobot_tui.engine.serving.providers import open_client, resolve_provider, resolve_providers
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.models import catalog
from nanobot_tui.setup.doctor import build_report, format_report
from tests.fake_cloud import (
    QUESTION,
    TOOL_INPUT,
    TOOL_RESULT,
    WEATHER,
    FakeAnthropicServer,
    FakeOpenAIServer,
    after_tool_call,
)
from tests.setup.test_doctor import no_gpu

OPENAI_KEY = "sk-openai-test-secret-42"
ANTHROPIC_KEY = "sk-ant-test-secret-43"


@pytest.fixture(autouse=True)
def no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=OPENAI_KEY, model="gpt-fake-1") as server:
        yield server


def config_of(data: dict[str, Any]) -> Config:
    return parse_config(json.dumps(data), Path("config.json"))


def on_openai(fake: FakeOpenAIServer, *, key: str | None = OPENAI_KEY, **main: Any) -> Config:
    """main on the fake endpoint; rlm and memory local, on the embedded model."""
    openai: dict[str, Any] = {"apiBase": fake.base_url + "/v1"}
    if key:
        openai["apiKey"] = key
    slot = {"model": catalog.EMBEDDED_ID, "contextSize": 1024, "provider": "openai"}
    slot |= {"remoteModel": fake.model, **main}
    return config_of({"local": {"main": slot}, "providers": {"openai": openai}})


# --- config and resolution ---------------------------------------------------------------


TWO_CLOUD_SLOTS = {
    "main": {"provider": "anthropic", "remoteModel": "claude-sonnet-4-5"},
    "rlm": {"provider": "openai", "remoteModel": "gpt-4.1-mini"},
}


def test_provider_per_slot_parses_from_camel_case() -> None:
    config = config_of(
        {
            "local": TWO_CLOUD_SLOTS,
            "providers": {"anthropic": {"apiKey": ANTHROPIC_KEY, "apiBase": "http://proxy:1"}},
        }
    )
    assert config.local.main.provider == "anthropic"
    assert config.local.main.remote_model == "claude-sonnet-4-5"
    assert config.local.rlm.provider == "openai"
    assert config.local.memory.provider == "local"
    assert config.providers.anthropic.api_base == "http://proxy:1"
    assert Config().providers.anthropic.api_base == "https://api.anthropic.com"
    again = config_of(json.loads(config.to_json()))
    assert again == config
    assert '"remoteModel": "claude-sonnet-4-5"' in config.to_json()


def test_unknown_provider_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        config_of({"local": {"main": {"provider": "gemini"}}})
    assert str(info.value).startswith("config.json: local.main.provider: Input should be")
    assert "\n" not in str(info.value)


def test_no_key_anywhere_keeps_every_slot_local() -> None:
    choices = resolve_providers(config_of({"local": TWO_CLOUD_SLOTS}), env={})
    assert [c.provider for c in choices.values()] == ["local", "local", "local"]
    assert choices["main"].note == (
        "provider anthropic has no API key (providers.anthropic.apiKey or "
        "ANTHROPIC_API_KEY); running locally"
    )
    assert "OPENAI_API_KEY" in choices["rlm"].note
    assert choices["memory"].note == ""
    assert all(not c.is_cloud for c in resolve_providers(Config(), env={}).values())


def test_keys_come_from_the_file_first_then_the_environment() -> None:
    wants = {"main": {"provider": "anthropic", "remoteModel": "claude-x"}}
    from_env = resolve_provider(config_of({"local": wants}), "main", {"ANTHROPIC_API_KEY": "env"})
    assert from_env.provider == "anthropic"
    assert from_env.api_key is not None and from_env.api_key.value == "env"
    assert from_env.key_from == "ANTHROPIC_API_KEY"
    assert from_env.api_base == "https://api.anthropic.com"

    in_file = config_of({"local": wants, "providers": {"anthropic": {"apiKey": ANTHROPIC_KEY}}})
    choice = resolve_provider(in_file, "main", {"ANTHROPIC_API_KEY": "env"})
    assert choice.api_key is not None and choice.api_key.value == ANTHROPIC_KEY
    assert choice.key_from == "config"
    assert ANTHROPIC_KEY not in repr(choice)
    assert choice.label == "claude-x (Anthropic)"


def test_a_cloud_slot_needs_a_remote_model() -> None:
    config = config_of(
        {
            "local": {"rlm": {"provider": "openai"}},
            "providers": {"openai": {"apiKey": OPENAI_KEY}},
        }
    )
    choice = resolve_provider(config, "rlm", env={})
    assert choice.provider == "local"
    assert choice.note == "provider openai needs local.rlm.remoteModel; running locally"


def test_a_self_hosted_openai_endpoint_needs_no_key(openai_fake: FakeOpenAIServer) -> None:
    choice = resolve_provider(on_openai(openai_fake, key=None), "main", env={})
    assert choice.provider == "openai"
    assert choice.api_key is None and choice.key_from == "none"
    assert choice.api_base == openai_fake.base_url + "/v1"


async def test_every_client_is_a_chat_client() -> None:
    anthropic = config_of(
        {
            "local": {"main": {"provider": "anthropic", "remoteModel": "claude-x"}},
            "providers": {"anthropic": {"apiKey": ANTHROPIC_KEY}},
        }
    )
    claude = open_client(resolve_provider(anthropic, "main", env={}))
    assert isinstance(claude, AnthropicClient) and isinstance(claude, ChatClient)
    assert (claude.model, claude.base_url) == ("claude-x", "https://api.anthropic.com")
    openai = config_of(
        {"local": {"main": {"provider": "openai", "remoteModel": "gpt-x"}}},
    )
    gpt = open_client(resolve_provider(openai, "main", env={"OPENAI_API_KEY": OPENAI_KEY}))
    assert isinstance(gpt, LLMClient) and isinstance(gpt, ChatClient)
    assert (gpt.model, gpt.base_url) == ("gpt-x", "https://api.openai.com/v1")
    for client in (claude, gpt):
        assert ANTHROPIC_KEY not in repr(client) and OPENAI_KEY not in repr(client)
        await client.close()
    with pytest.raises(ValueError, match="runs locally"):
        open_client(resolve_provider(Config(), "main", env={}))


# --- OpenAI-compatible endpoints ---------------------------------------------------------


async def test_openai_chat_and_stream_tool_call_round_trip(openai_fake: FakeOpenAIServer) -> None:
    gpt = open_client(resolve_provider(on_openai(openai_fake), "main", env={}))
    try:
        first = await gpt.chat(ChatRequest(QUESTION, tools=[WEATHER]))
        [call] = first.tool_calls
        assert (first.finish_reason, call.name) == ("tool_calls", "get_weather")
        assert call.parsed_arguments() == TOOL_INPUT
        history = after_tool_call(call, first.content)
        second = await gpt.chat(ChatRequest(history, tools=[WEATHER]))
        assert second.content == f"The tool said: {TOOL_RESULT}"

        events = [e async for e in gpt.stream_chat(ChatRequest(QUESTION, tools=[WEATHER]))]
        done = events[-1]
        assert isinstance(done, StreamDone)
        assert done.result.tool_calls[0].parsed_arguments() == TOOL_INPUT
        assert sum(isinstance(e, ToolCallDelta) for e in events) > 1
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text == done.result.content == "Let me check."
        answer = [e async for e in gpt.stream_chat(ChatRequest(history, tools=[WEATHER]))][-1]
        assert isinstance(answer, StreamDone)
        assert answer.result.content == f"The tool said: {TOOL_RESULT}"
    finally:
        await gpt.close()
    for request in openai_fake.received:
        assert request.path == "/v1/chat/completions"
        assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert request.body["model"] == "gpt-fake-1"
    assert openai_fake.received[1].body["messages"][-1]["tool_call_id"] == call.id


async def test_openai_errors_never_show_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(api_key="the-right-one", echo_key_in_errors=True) as fake:
        client = open_client(resolve_provider(on_openai(fake), "main", env={}))
        try:
            with pytest.raises(RequestError) as info:
                await client.chat(ChatRequest(QUESTION))
            fake.fail_next(503, {"error": {"message": f"down, {OPENAI_KEY}"}}, times=3)
            with pytest.raises(Exception) as down:
                await client.chat(ChatRequest(QUESTION))
        finally:
            await client.close()
    assert info.value.status == 401
    assert "Incorrect API key provided: Bearer ***" in str(info.value)
    for exc in (info.value, down.value):
        assert OPENAI_KEY not in str(exc) and OPENAI_KEY not in repr(exc)
    assert OPENAI_KEY not in caplog.text


# --- the workbench -----------------------------------------------------------------------


@pytest.mark.model
async def test_workbench_main_on_an_openai_endpoint_starts_no_server_for_it(
    openai_fake: FakeOpenAIServer,
) -> None:
    config = on_openai(openai_fake)
    only_main = Workbench(config, only_slots=("main",))
    assert only_main.specs == []
    assert only_main.slots["main"].provider == "openai"
    assert only_main.slots["main"].display_name == "gpt-fake-1 (OpenAI-compatible)"

    async with Workbench(config) as bench:
        # rlm and memory have no model of their own: they share one local server.
        [status] = bench.statuses()
        assert bench.specs[0].slots == ("rlm", "memory")
        assert status.state == "ready"
        main = bench.client("main")
        assert main.base_url == openai_fake.base_url + "/v1"
        assert bench.client("main") is main
        result = await main.chat(ChatRequest([{"role": "user", "content": "hi"}], max_tokens=8))
        assert result.content == "Hello from the fake."
        local = await bench.client("rlm").chat(
            ChatRequest([{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0.0)
        )
        assert local.usage.completion_tokens > 0
        assert local.model != "gpt-fake-1"
    assert len(openai_fake.received) == 1
    assert openai_fake.received[0].body["model"] == "gpt-fake-1"


async def test_workbench_anthropic_slot_reaches_the_fake() -> None:
    with FakeAnthropicServer(api_key=ANTHROPIC_KEY) as fake:
        config = config_of(
            {
                "local": {"memory": {"provider": "anthropic", "remoteModel": fake.model}},
                "providers": {"anthropic": {"apiKey": ANTHROPIC_KEY, "apiBase": fake.base_url}},
            }
        )
        bench = Workbench(config, only_slots=("memory",))
        assert bench.specs == []
        try:
            await bench.start()
            result = await bench.client("memory").chat(
                ChatRequest([{"role": "user", "content": "hi"}])
            )
        finally:
            await bench.stop()
    assert result.content == "Hello from the fake."
    assert fake.received[0].headers["x-api-key"] == ANTHROPIC_KEY


def test_workbench_cloud_slot_without_a_key_stays_local(caplog: pytest.LogCaptureFixture) -> None:
    config = config_of(
        {"local": {"main": {"provider": "anthropic", "remoteModel": "claude-x"}}},
    )
    bench = Workbench(config, only_slots=("main",))
    assert bench.slots["main"].provider == "local"
    assert bench.specs and "main" in bench.specs[0].slots  # its local server is planned
    assert "no API key" in bench.providers["main"].note
    assert "slot main: provider anthropic has no API key" in caplog.text


# --- doctor -------------------------------------------------------------------------------


def write_config(data: dict[str, Any]) -> None:
    path = paths.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_doctor_shows_the_provider_and_the_fallback_never_the_key() -> None:
    write_config(
        {
            "local": {
                "main": {"model": catalog.EMBEDDED_ID, "provider": "openai", "remoteModel": "g"},
                "rlm": {"provider": "anthropic", "remoteModel": "claude-x"},
            },
            "providers": {"openai": {"apiKey": OPENAI_KEY}},
        }
    )
    report = build_report(hardware=no_gpu())
    main = report.data["slots"]["main"]
    assert main == {
        "provider": "openai",
        "model": "g",
        "displayName": "g (OpenAI-compatible)",
        "apiBase": "https://api.openai.com/v1",
        "keyFrom": "config",
    }
    rlm = report.data["slots"]["rlm"]
    assert rlm["provider"] == "local"
    assert "no API key" in rlm["providerNote"]
    assert f"slot rlm: {rlm['providerNote']}" in report.warnings
    assert report.ok  # falling back to local is not a problem
    assert [server["slots"] for server in report.data["servers"]] == [["rlm", "memory"]]
    text = format_report(report)
    assert "  main     g (OpenAI-compatible) · https://api.openai.com/v1 · key from config" in text
    assert rlm["providerNote"] in text
    assert OPENAI_KEY not in text and OPENAI_KEY not in report.to_json()
