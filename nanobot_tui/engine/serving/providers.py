"""Where each slot's requests go: its local llama.cpp server, any OpenAI-compatible
endpoint, or Anthropic's Messages API, chosen per slot in the config.

    {"local": {"main": {"provider": "anthropic", "remoteModel": "claude-sonnet-4-5"}},
     "providers": {"anthropic": {"apiKey": "..."}}}

Cloud is an accelerator, never a dependency: a slot that asks for a cloud provider with
no key (in the config file, else OPENAI_API_KEY / ANTHROPIC_API_KEY) or no remote model
stays local, and its `ProviderChoice.note` says why. An OpenAI-compatible provider with an
`apiBase` of its own needs no key (a self-hosted vLLM or Ollama often has none).

Every client satisfies `engine.llm.chat_client.ChatClient`: LLMClient for local servers
and OpenAI-compatible endpoints, AnthropicClient for Anthropic. Keys are held in the
transport's `Secret` and never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from nanobot_tui.config import Config, ProviderName, SlotName
from nanobot_tui.engine.llm.anthropic import DEFAULT_BASE_URL as ANTHROPIC_BASE_URL
from nanobot_tui.engine.llm.anthropic import AnthropicClient
from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.transport import Secret
from nanobot_tui.engine.serving.slots import SLOT_NAMES, ResolvedSlot

__all__ = [
    "KEY_ENV",
    "OPENAI_BASE_URL",
    "ProviderChoice",
    "open_client",
    "resolve_provider",
    "resolve_providers",
    "with_provider",
]

OPENAI_BASE_URL = "https://api.openai.com/v1"
KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_NAMES: dict[str, str] = {"local": "local", "openai": "OpenAI-compatible", "anthropic": "Anthropic"}


@dataclass(frozen=True)
class ProviderChoice:
    """One slot's provider after the config and the environment have had their say."""

    slot: SlotName
    wanted: ProviderName  # what the config asks for
    provider: ProviderName  # what the slot runs on: `wanted`, or local when that cannot be had
    model: str | None = None  # the remote model's name (cloud only)
    api_base: str | None = None
    api_key: Secret | None = None
    key_from: str = ""  # "config" or the environment variable, for doctor
    note: str = ""  # why a cloud slot stays local

    @property
    def is_cloud(self) -> bool:
        return self.provider != "local"

    @property
    def label(self) -> str:
        """How the slot's model is shown: 'claude-sonnet-4-5 (Anthropic)'."""
        return f"{self.model} ({_NAMES[self.provider]})" if self.is_cloud else "local"


def resolve_provider(
    config: Config, slot: SlotName, env: Mapping[str, str] | None = None
) -> ProviderChoice:
    env = os.environ if env is None else env
    wanted: ProviderName = config.local.slot(slot).provider
    model = config.local.slot(slot).remote_model
    if wanted == "local":
        return ProviderChoice(slot, wanted, "local")
    section = config.providers.openai if wanted == "openai" else config.providers.anthropic
    key, key_from = section.api_key, "config"
    if not key:
        key, key_from = env.get(KEY_ENV[wanted]) or None, KEY_ENV[wanted]
    base = section.api_base or (OPENAI_BASE_URL if wanted == "openai" else ANTHROPIC_BASE_URL)
    # A self-hosted OpenAI-compatible endpoint often asks for no key.
    own_endpoint = wanted == "openai" and section.api_base is not None
    where = f"providers.{wanted}.apiKey or {KEY_ENV[wanted]}"
    if not key and not own_endpoint:
        why = f"provider {wanted} has no API key ({where})"
    elif not model:
        why = f"provider {wanted} needs local.{slot}.remoteModel"
    else:
        return ProviderChoice(
            slot,
            wanted,
            wanted,
            model=model,
            api_base=base,
            api_key=Secret(key) if key else None,
            key_from=key_from if key else "none",
        )
    return ProviderChoice(slot, wanted, "local", model=model, note=f"{why}; running locally")


def resolve_providers(
    config: Config, env: Mapping[str, str] | None = None
) -> dict[SlotName, ProviderChoice]:
    return {name: resolve_provider(config, name, env) for name in SLOT_NAMES}


def with_provider(slot: ResolvedSlot, choice: ProviderChoice) -> ResolvedSlot:
    """The slot as the workbench shows it: a cloud slot names its remote model and
    provider and has no local file (so no server is planned for it)."""
    if not choice.is_cloud:
        return slot
    return replace(
        slot,
        model_id=choice.model or "",
        display_name=choice.label,
        path=None,
        quant=None,
        wanted=choice.label,
        note="",
        provider=choice.provider,
    )


def open_client(choice: ProviderChoice, *, timeout: float = 300.0) -> ChatClient:
    """A client for a cloud slot; local slots get theirs from the ServerManager."""
    key = choice.api_key.value if choice.api_key else None
    if choice.provider == "openai":
        return LLMClient(
            choice.api_base or OPENAI_BASE_URL, api_key=key, model=choice.model, timeout=timeout
        )
    if choice.provider == "anthropic" and key and choice.model:
        return AnthropicClient(
            key, choice.model, base_url=choice.api_base or ANTHROPIC_BASE_URL, timeout=timeout
        )
    raise ValueError(f"slot {choice.slot} runs locally: its client comes from its server")
