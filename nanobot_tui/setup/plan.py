"""The setup wizard's logic without a UI: hardware → a model per slot → downloads → a quick
server test → the config to write.

`build_plan` turns a detected (or given) machine and tier into one SlotPlan per slot: the
tier's recommended model with the best quant that fits the slot's memory budget, and the
alternatives, the embedded default always among them. Nothing here writes the config:
`planned_config` says what would be written, `config_diff` how it differs from the file on
disk, and `write_config` is the last step. The CLI (`nanobot setup --yes`) and the
SetupScreen walk the same functions. No textual here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobot_tui import paths
from nanobot_tui.config import (
    Config,
    ConfigError,
    LocalConfig,
    SlotName,
    default_config,
    load_config,
    read_config_text,
    save_config,
)
from nanobot_tui.engine.serving.slots import SLOT_NAMES
from nanobot_tui.hardware import HardwareInfo, Tier
from nanobot_tui.models import catalog, sizing
from nanobot_tui.models.catalog import CatalogModel
from nanobot_tui.setup.doctor import memory_budget
from nanobot_tui.units import human_bytes

if TYPE_CHECKING:
    from nanobot_tui.engine.serving.manager import Runtime

TEST_PROMPT = "Reply with one word: hello."
TEST_MAX_TOKENS = 8
TEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ModelOption:
    """One model a slot could use, at the quant that fits this machine best."""

    model_id: str
    name: str
    quant: str
    size_bytes: int  # the file's own size when present, else the catalog's
    present: bool
    fits: bool
    why: str
    embedded: bool

    @property
    def label(self) -> str:
        state = "present" if self.present else "download"
        fit = "" if self.fits else " · does not fit"
        return f"{self.name} {self.quant} · {human_bytes(self.size_bytes)} · {state}{fit}"


@dataclass
class SlotPlan:
    slot: SlotName
    recommended_id: str  # the tier's pick from the catalog
    options: list[ModelOption]  # the default choice first; the embedded model always present
    n_ctx: int  # context × parallel: what the slot's KV cache holds
    budget: int  # the memory its model lives in, bytes
    chosen: int = 0
    picked: bool = False  # chosen by the user rather than by the plan
    note: str = ""  # why the choice changed after planning (a failed download or test)
    # The user's own GGUF (the existing config's `path`): kept, not replaced by a catalog
    # model, unless the user picks one or the file fails its server test.
    own_path: Path | None = None

    @property
    def keeps_path(self) -> bool:
        return self.own_path is not None and not self.picked

    @property
    def choice(self) -> ModelOption:
        return self.options[self.chosen]

    def choose(self, index: int, *, by_user: bool = True) -> None:
        self.chosen = index
        self.picked = by_user
        self.note = ""

    def index_of(self, model_id: str) -> int:
        for index, option in enumerate(self.options):
            if option.model_id == model_id:
                return index
        raise KeyError(f"slot {self.slot} has no option {model_id!r}")

    def to_dict(self) -> dict[str, Any]:
        kept = self.keeps_path
        return {
            "model": None if kept else self.choice.model_id,
            "quant": None if kept else self.choice.quant,
            "path": str(self.own_path) if kept else None,
            "kept": kept,
            "sizeBytes": None if kept else self.choice.size_bytes,
            "present": True if kept else self.choice.present,
            "why": self.why,
            "fallback": bool(self.note),
            "recommended": self.recommended_id,
            "alternatives": [o.model_id for o in self.options],
        }

    @property
    def why(self) -> str:
        """Why this slot uses what it uses, in one line."""
        choice = self.choice
        if self.note:
            return self.note
        if self.keeps_path:
            return f"your own model file, kept: {self.own_path}"
        if self.picked:
            return f"your pick: {choice.why}"
        if choice.model_id == self.recommended_id:
            return f"the tier's pick: {choice.why}"
        recommended = catalog.get(self.recommended_id).name
        return f"the tier's pick, {recommended}, does not fit here; next best: {choice.why}"


@dataclass
class SetupPlan:
    hardware: HardwareInfo
    tier: Tier
    tier_detected: bool
    models_dir: Path
    slots: dict[SlotName, SlotPlan] = field(default_factory=dict)

    def downloads(self) -> list[ModelOption]:
        """The chosen options not on disk yet, each once, in slot order."""
        wanted: dict[tuple[str, str], ModelOption] = {}
        for slot in self.slots.values():
            if slot.keeps_path:
                continue
            option = slot.choice
            if not option.present:
                wanted.setdefault((option.model_id, option.quant), option)
        return list(wanted.values())

    def download_bytes(self) -> int:
        return sum(option.size_bytes for option in self.downloads())

    def mark_present(self, model_id: str, quant: str) -> None:
        """A download finished: every option naming that file is now present."""
        model = catalog.get(model_id)
        path = catalog.model_file(model, model.quant(quant), self.models_dir)
        size = path.stat().st_size
        for slot in self.slots.values():
            slot.options = [
                dataclasses.replace(o, present=True, size_bytes=size)
                if (o.model_id, o.quant) == (model_id, quant)
                else o
                for o in slot.options
            ]

    def fall_back(self, model_id: str, reason: str) -> list[SlotName]:
        """Every slot choosing `model_id` moves to the embedded default; returns those slots."""
        moved: list[SlotName] = []
        for name, slot in self.slots.items():
            if slot.keeps_path:
                continue
            if slot.choice.model_id == model_id and not slot.choice.embedded:
                slot.chosen = slot.index_of(catalog.EMBEDDED_ID)
                slot.note = f"{catalog.get(model_id).name}: {reason}; using the embedded model"
                moved.append(name)
        return moved

    def fall_back_failed(self, checks: list[ServerCheck]) -> list[SlotName]:
        """The slots whose server failed the test move to the embedded model (unless on it
        already); returns the slots moved."""
        moved: list[SlotName] = []
        for check in checks:
            if check.ok:
                continue
            for name in check.slots:
                slot = self.slots[name]  # type: ignore[index]
                if slot.keeps_path:
                    # The user's own file does not load: setup's job is a working config.
                    slot.chosen = slot.index_of(catalog.EMBEDDED_ID)
                    slot.note = (
                        f"your model file {slot.own_path} failed its server test; "
                        "using the embedded model"
                    )
                    slot.own_path = None
                    moved.append(slot.slot)
                    continue
                choice = slot.choice
                if not choice.embedded:
                    moved += self.fall_back(choice.model_id, "its server failed the test")
        return moved

    def memory_total(self) -> int:
        """What the planned servers need together: one server per file, holding the KV
        cache of every slot it serves."""
        shared: dict[tuple[str, str], int] = {}
        total = 0
        for slot in self.slots.values():
            if slot.keeps_path:
                assert slot.own_path is not None
                with contextlib.suppress(OSError):  # the weights; its server's test says more
                    total += slot.own_path.expanduser().stat().st_size
                continue
            key = (slot.choice.model_id, slot.choice.quant)
            shared[key] = shared.get(key, 0) + slot.n_ctx
        for (model_id, quant_name), n_ctx in shared.items():
            model = catalog.get(model_id)
            quant = model.quant(quant_name)
            path = catalog.model_file(model, quant, self.models_dir)
            try:
                total += sizing.estimate_bytes(model, quant, n_ctx, path)
            except sizing.GgufError:
                total += sizing.estimate_bytes(model, quant, n_ctx, None)
        return total

    def warnings(self) -> list[str]:
        """What the per-slot choices do not show on their own."""
        budget = min(slot.budget for slot in self.slots.values())
        need = self.memory_total()
        if need <= budget * sizing.FIT_FRACTION:
            return []
        return [
            f"together the servers need about {human_bytes(need)}, more than "
            f"{sizing.FIT_FRACTION:.0%} of {human_bytes(budget)}: they may not all fit at "
            "once; pick smaller alternatives"
        ]

    def quant_for(self, model_id: str) -> str:
        """The quant this plan uses (or would use) for a model."""
        for slot in self.slots.values():
            if slot.choice.model_id == model_id and not slot.keeps_path:
                return slot.choice.quant
        for slot in self.slots.values():
            for option in slot.options:
                if option.model_id == model_id:
                    return option.quant
        return catalog.get(model_id).quants[-1].name

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier.value,
            "tierDetected": self.tier_detected,
            "hardware": self.hardware.to_dict(),
            "slots": {name: slot.to_dict() for name, slot in self.slots.items()},
            "memoryTotal": self.memory_total(),
            "warnings": self.warnings(),
        }


# --- planning -------------------------------------------------------------------------


def hardware_lines(hardware: HardwareInfo, tier: Tier | None = None) -> list[str]:
    """What was detected and how, one fact a line; the tier last."""
    cpu = hardware.cpu
    lines = [
        f"CPU   {cpu.model} · {cpu.physical_cores} cores, {cpu.logical_cores} threads (psutil)",
        f"RAM   {human_bytes(hardware.ram_total)} total, "
        f"{human_bytes(hardware.ram_available)} available (psutil)",
    ]
    for gpu in hardware.gpus:
        lines.append(
            f"GPU{gpu.index}  {gpu.name} · {human_bytes(gpu.vram_total)} VRAM, "
            f"{human_bytes(gpu.vram_free)} free (via {gpu.source})"
        )
    if not hardware.gpus:
        lines.append("GPU   none")
    if hardware.notes:
        lines.append(f"how   {'; '.join(hardware.notes)}")
    rule = hardware.tier_rule
    if tier is None or tier == rule.tier:
        lines.append(f"tier  {rule.tier} (detected): {rule.description}")
    else:
        lines.append(f"tier  {tier} (chosen; detected {rule.tier})")
    return lines


def _option(
    model: CatalogModel, n_ctx: int, budget: int, budget_kind: str, models_dir: Path
) -> ModelOption:
    """The model at the quant to use here: one already on disk that fits, else the best that
    fits, else the smallest (marked as not fitting)."""
    present = catalog.present_quants(model, models_dir)
    choice = None
    if present:
        on_disk = dataclasses.replace(model, quants=tuple(present))
        choice = sizing.choose_quant(on_disk, n_ctx, budget, models_dir)
    choice = choice or sizing.choose_quant(model, n_ctx, budget, models_dir)
    if choice is not None:
        quant, fits = choice.quant, True
        why = f"{choice.reason} ({budget_kind})"
    else:
        quant, fits = model.quants[-1], False
        need = sizing.estimate_bytes(model, quant, n_ctx, None)
        why = (
            f"{quant.name} needs about {human_bytes(need)}, more than "
            f"{sizing.FIT_FRACTION:.0%} of {budget_kind} ({human_bytes(budget)})"
        )
    path = catalog.model_file(model, quant, models_dir)
    on_disk_now = path.is_file()
    return ModelOption(
        model_id=model.id,
        name=model.name,
        quant=quant.name,
        size_bytes=path.stat().st_size if on_disk_now else quant.size_bytes,
        present=on_disk_now,
        fits=fits,
        why=why,
        embedded=model.embedded,
    )


def _slot_plan(
    name: SlotName, recommended: str, base: Config, hardware: HardwareInfo, models_dir: Path
) -> SlotPlan:
    slot = base.local.slot(name)
    n_ctx = slot.context_size * slot.parallel
    budget, budget_kind = memory_budget(hardware, slot.gpu_layers)
    order = list(catalog.CATALOG)
    candidates = [m for m in catalog.CATALOG.values() if name in m.roles or m.embedded]
    options = [_option(m, n_ctx, budget, budget_kind, models_dir) for m in candidates]
    # Fitting first; among them the tier's pick, then catalog order (the embedded one last).
    options.sort(key=lambda o: (not o.fits, o.model_id != recommended, order.index(o.model_id)))
    return SlotPlan(
        slot=name,
        recommended_id=recommended,
        options=options,
        n_ctx=n_ctx,
        budget=budget,
        own_path=slot.path,
    )


def _same_quant_per_model(slots: dict[SlotName, SlotPlan]) -> None:
    """Two slots on one model share a server only on one file: give both the smaller quant,
    which fits both."""
    smallest: dict[str, ModelOption] = {}
    for slot in slots.values():
        if slot.keeps_path:
            continue
        option = slot.choice
        model = catalog.get(option.model_id)
        names = [q.name for q in model.quants]
        held = smallest.get(option.model_id)
        if held is None or names.index(option.quant) > names.index(held.quant):
            smallest[option.model_id] = option
    for slot in slots.values():
        if slot.keeps_path:
            continue
        best = smallest[slot.choice.model_id]
        if slot.choice.quant != best.quant:
            slot.options[slot.chosen] = dataclasses.replace(
                best, why=f"{best.why}; the same file as the other slots on it"
            )


def base_config(tier: Tier, existing: Config | None) -> Config:
    """The tier's defaults under what the existing config sets explicitly: a slot keeps the
    user's own context size or temperature, and gets the role's defaults for the rest."""
    defaults = default_config(tier)
    if existing is None:
        return defaults
    slots = {
        name: defaults.local.slot(name).model_copy(
            update=existing.local.slot(name).model_dump(exclude_unset=True)
        )
        for name in SLOT_NAMES
    }
    return existing.model_copy(update={"local": LocalConfig(**slots)})


def build_plan(
    hardware: HardwareInfo,
    tier: Tier | str | None = None,
    *,
    models_dir: Path | None = None,
    existing: Config | None = None,
) -> SetupPlan:
    """Recommendations per slot for this machine. `tier` overrides the detected one; the
    `existing` config's own per-slot settings (context, parallel) are kept."""
    chosen_tier = Tier(tier) if tier is not None else hardware.tier
    models_dir = models_dir or paths.models_dir()
    base = base_config(chosen_tier, existing)
    recommended = catalog.recommended_models(chosen_tier)
    plan = SetupPlan(
        hardware=hardware,
        tier=chosen_tier,
        tier_detected=chosen_tier == hardware.tier,
        models_dir=models_dir,
    )
    for name in SLOT_NAMES:
        plan.slots[name] = _slot_plan(name, recommended[name], base, hardware, models_dir)
    _same_quant_per_model(plan.slots)
    return plan


# --- the config -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExistingConfig:
    path: Path
    text: str | None  # None when there is no file
    config: Config | None  # None when missing or invalid
    error: str | None = None  # why an existing file cannot be used

    @property
    def exists(self) -> bool:
        return self.text is not None


def read_existing(path: Path | None = None) -> ExistingConfig:
    path = path or paths.config_path()
    try:
        text = read_config_text(path)  # never a FIFO or /dev/zero
    except FileNotFoundError:
        return ExistingConfig(path, None, None)
    except (OSError, UnicodeDecodeError) as exc:
        return ExistingConfig(path, "", None, f"cannot read: {exc}")
    try:
        config, _ = load_config(path)
    except ConfigError as exc:
        return ExistingConfig(path, text, None, str(exc))
    return ExistingConfig(path, text, config)


def planned_config(plan: SetupPlan, existing: ExistingConfig | None = None) -> Config:
    """The existing config (or the tier's defaults) with each slot set to its choice; every
    other setting (providers, agent, UI, per-slot context) is kept, and so is a slot's own
    model file (`path`) unless the user picked another model for it."""
    own = existing.config if existing else None
    base = base_config(plan.tier, own)
    slots: dict[str, Any] = {}
    for name, slot in plan.slots.items():
        if slot.keeps_path:
            # As the user wrote it: their file, and no tier default's model beside it.
            mine = own.local.slot(name) if own is not None else None
            update = {
                "path": slot.own_path,
                "model": mine.model if mine else None,
                "quant": mine.quant if mine else None,
            }
        else:
            update = {"model": slot.choice.model_id, "quant": slot.choice.quant, "path": None}
        slots[name] = base.local.slot(name).model_copy(update=update)
    return base.model_copy(update={"local": LocalConfig(**slots)})


def config_diff(existing: ExistingConfig, new: Config) -> str:
    """A unified diff of the file on disk against what would be written; '' when there is no
    file or nothing changes."""
    if existing.text is None:
        return ""
    lines = difflib.unified_diff(
        existing.text.splitlines(keepends=True),
        new.to_json().splitlines(keepends=True),
        fromfile=f"{existing.path} (now)",
        tofile=f"{existing.path} (new)",
    )
    return "".join(lines)


def write_config(new: Config, existing: ExistingConfig) -> Path:
    return save_config(new, existing.path)


# --- the quick server test ------------------------------------------------------------


@dataclass(frozen=True)
class ServerCheck:
    slots: tuple[str, ...]
    model: str
    ok: bool
    detail: str  # the answer, or the error in one line
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": list(self.slots),
            "model": self.model,
            "ok": self.ok,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }

    @property
    def line(self) -> str:
        label = "+".join(self.slots)
        if self.ok:
            return f"{label}: {self.model} answered {self.detail!r} in {self.seconds:.1f} s"
        model = f" {self.model}" if self.model else ""
        return f"{label}:{model} failed: {self.detail}"


async def _check_one(config: Config, slots: tuple[SlotName, ...], runtime: Runtime) -> ServerCheck:
    from nanobot_tui.engine.llm.errors import LLMError
    from nanobot_tui.engine.llm.request import ChatRequest
    from nanobot_tui.engine.serving.manager import ServerStartError
    from nanobot_tui.engine.serving.workbench import Workbench

    started = time.monotonic()
    workbench: Workbench | None = None
    model = ""
    try:
        workbench = Workbench(config, only_slots=slots, runtime=runtime)
        model = workbench.specs[0].display_name if workbench.specs else ""
        await workbench.start()
        reply = await asyncio.wait_for(
            workbench.client(slots[0]).chat(
                ChatRequest(
                    [{"role": "user", "content": TEST_PROMPT}],
                    max_tokens=TEST_MAX_TOKENS,
                    temperature=0.0,
                )
            ),
            TEST_TIMEOUT_S,
        )
        answer = " ".join(reply.content.split())[:60]
        return ServerCheck(slots, model, True, answer, time.monotonic() - started)
    except (ServerStartError, LLMError) as exc:
        return ServerCheck(slots, model, False, str(exc), time.monotonic() - started)
    except TimeoutError:
        detail = f"no answer within {TEST_TIMEOUT_S:.0f} s"
        return ServerCheck(slots, model, False, detail, time.monotonic() - started)
    finally:
        if workbench is not None:
            await workbench.stop()


async def check_servers(
    config: Config, *, on_check: Callable[[ServerCheck], None] | None = None
) -> list[ServerCheck]:
    """Start each server `config` plans, one at a time (only one in memory at once), ask it
    one tiny question, stop it. One ServerCheck per server."""
    from nanobot_tui.engine.serving.manager import ServerStartError
    from nanobot_tui.engine.serving.workbench import Workbench

    try:
        planned = Workbench(config)
    except ServerStartError as exc:
        check = ServerCheck(SLOT_NAMES, "", False, str(exc), 0.0)
        if on_check:
            on_check(check)
        return [check]
    checks = []
    for spec in planned.specs:
        check = await _check_one(config, spec.slots, planned.runtime)
        checks.append(check)
        if on_check:
            on_check(check)
    return checks
