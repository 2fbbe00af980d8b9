"""The engine facade: a config in, running model servers and clients out.

The app, `nanobot agent` and the benchmarks all go config → resolved slots → server specs
→ a ServerManager through here, so they start exactly the same servers. A slot on a cloud
provider (engine.providers) gets no server: its client talks to the provider instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from nanobot_tui import paths
from nanobot_tui.config import Config, SlotName
from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.serving.adapter_registry import served_adapters
from nanobot_tui.engine.serving.manager import (
    EventSink,
    Runtime,
    ServerManager,
    ServerStartError,
    ServerState,
    ServerStatus,
    resolve_runtime,
)
from nanobot_tui.engine.serving.providers import (
    ProviderChoice,
    open_client,
    resolve_providers,
    with_provider,
)
from nanobot_tui.engine.serving.slots import ResolvedSlot, ServerSpec, plan_servers, resolve_slots

log = logging.getLogger(__name__)


class Workbench:
    def __init__(
        self,
        config: Config,
        *,
        on_event: EventSink | None = None,
        only_slots: tuple[SlotName, ...] | None = None,
        runtime: Runtime | None = None,
        extra_adapters: Mapping[SlotName, Sequence[Path]] | None = None,
        threads: int | None = None,
    ) -> None:
        """Plan the servers for `config`; `only_slots` starts just the servers those need.
        Each server loads its model's promoted LoRA adapters (adapter_registry.py) at
        scale 0, then `extra_adapters` of the slots it serves (an adapter under test).
        `threads`: each server's threads (default: its share of the cores)."""
        self.config = config
        self.providers: dict[SlotName, ProviderChoice] = resolve_providers(config)
        for choice in self.providers.values():
            if choice.note:
                log.warning("slot %s: %s", choice.slot, choice.note)
        local = resolve_slots(config, paths.models_dir())
        self.slots: dict[SlotName, ResolvedSlot] = {
            name: with_provider(slot, self.providers[name]) for name, slot in local.items()
        }
        served = {name: s for name, s in self.slots.items() if s.provider == "local"}
        missing = [s for s in served.values() if s.path is None]
        if missing:
            raise ServerStartError(f"slot {missing[0].name}: {missing[0].note}")
        specs = plan_servers(served)
        if only_slots is not None:
            specs = [spec for spec in specs if set(spec.slots) & set(only_slots)]
        self._extra_adapters: dict[SlotName, tuple[Path, ...]] = {
            slot: tuple(paths) for slot, paths in (extra_adapters or {}).items()
        }
        specs = [replace(spec, lora_adapters=self._adapters_for(spec)) for spec in specs]
        self.specs: list[ServerSpec] = specs
        self.runtime = runtime or resolve_runtime(config.runtime)
        self.manager = ServerManager(specs, self.runtime, on_event=on_event, threads=threads)
        self._cloud_clients: dict[SlotName, ChatClient] = {}

    async def start(self) -> None:
        await self.manager.start()

    async def stop(self) -> None:
        clients, self._cloud_clients = list(self._cloud_clients.values()), {}
        for client in clients:
            await client.close()
        await self.manager.stop()

    def client(self, slot: SlotName) -> ChatClient:
        """The slot's client: its local server's, or its cloud provider's."""
        choice = self.providers[slot]
        if not choice.is_cloud:
            return self.manager.client(slot)
        if slot not in self._cloud_clients:
            self._cloud_clients[slot] = open_client(choice)
        return self._cloud_clients[slot]

    def temperature(self, slot: SlotName) -> float:
        return self.slots[slot].temperature

    def statuses(self) -> list[ServerStatus]:
        return self.manager.statuses()

    async def restart(self, slot: SlotName | None = None) -> list[str]:
        """Start again `slot`'s server, or every one that is down; the labels restarted."""
        return await self.manager.restart(slot)

    # --- LoRA adapters that changed since a server started --------------------------------

    def _adapters_for(self, spec: ServerSpec) -> tuple[Path, ...]:
        """What a server of `spec` loads: its model's promoted adapters (the registry's
        list now), then the extra ones of the slots it serves."""
        extra = tuple(path for slot in spec.slots for path in self._extra_adapters.get(slot, ()))
        return served_adapters(spec.model_path) + extra

    def stale_adapters(self) -> dict[SlotName, tuple[Path, ...]]:
        """The servers (by their first slot) whose loaded adapters are no longer what the
        registry says they should be (a promotion, a demotion, `nanobot adapters
        on/off/rm` since they started), each with the list to restart it with.
        Blocking: it reads the registry."""
        stale: dict[SlotName, tuple[Path, ...]] = {}
        for server in self.manager.servers:
            wanted = self._adapters_for(server.spec)
            if wanted != tuple(server.spec.lora_adapters):
                stale[server.spec.slots[0]] = wanted
        return stale

    async def reload_adapters(self, slot: SlotName, adapters: Sequence[Path]) -> bool:
        """Restart `slot`'s server with `adapters` (a new file needs a new process) when
        it is idle: ready, with no request in flight. False, and nothing done, when it
        is busy or not ready (ask again later); ServerStartError if it cannot start.
        Runs that resolved adapter ids on the old process ask the new one (run_memory)
        when they start again."""
        server = self.manager.server_for(slot)
        if server.state is not ServerState.READY or server.in_flight:
            return False
        server.spec = replace(server.spec, lora_adapters=tuple(adapters))
        self.specs = [server.spec if s.label == server.spec.label else s for s in self.specs]
        log.info("%s: restarting with %d LoRA adapter(s)", server.spec.label, len(adapters))
        await self.manager.restart(slot)
        return True

    async def __aenter__(self) -> Workbench:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
