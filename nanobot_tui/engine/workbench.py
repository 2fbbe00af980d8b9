"""The engine facade: a config in, running model servers and clients out.

The app, `nanobot agent` and the benchmarks all go config → resolved slots → server specs
→ a ServerManager through here, so they start exactly the same servers.
"""

from __future__ import annotations

from nanobot_tui import paths
from nanobot_tui.config import Config, SlotName
from nanobot_tui.engine.llm import LLMClient
from nanobot_tui.engine.servers import (
    EventSink,
    Runtime,
    ServerError,
    ServerManager,
    ServerStatus,
    resolve_runtime,
)
from nanobot_tui.slots import ResolvedSlot, ServerSpec, plan_servers, resolve_slots


class Workbench:
    def __init__(
        self,
        config: Config,
        *,
        on_event: EventSink | None = None,
        only_slots: tuple[SlotName, ...] | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        """Plan the servers for `config`; `only_slots` starts just the servers those need."""
        self.config = config
        self.slots: dict[SlotName, ResolvedSlot] = resolve_slots(config, paths.models_dir())
        missing = [s for s in self.slots.values() if s.path is None]
        if missing:
            raise ServerError(f"slot {missing[0].name}: {missing[0].note}")
        specs = plan_servers(self.slots)
        if only_slots is not None:
            specs = [spec for spec in specs if set(spec.slots) & set(only_slots)]
        self.specs: list[ServerSpec] = specs
        self.runtime = runtime or resolve_runtime(config.runtime)
        self.manager = ServerManager(specs, self.runtime, on_event=on_event)

    async def start(self) -> None:
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.stop()

    def client(self, slot: SlotName) -> LLMClient:
        return self.manager.client(slot)

    def temperature(self, slot: SlotName) -> float:
        return self.slots[slot].temperature

    def statuses(self) -> list[ServerStatus]:
        return self.manager.statuses()

    async def __aenter__(self) -> Workbench:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
