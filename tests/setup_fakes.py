"""What the setup tests share: a fake machine (a GPU is out of reach here) and a catalog entry
whose file is the real embedded GGUF, served by FakeHubServer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nanobot_tui.hardware import CpuInfo, GpuInfo, HardwareInfo
from nanobot_tui.models import catalog
from nanobot_tui.models.catalog import CatalogModel
from tests.fake_hub import FakeHubServer, hub

__all__ = ["copy_on_hub", "hub"]  # fixtures, for the test modules to import

GIB = 1024**3

# A fixed machine so plans and snapshots are the same everywhere: 12 GB GPU and 32 GB RAM
# is the hybrid tier, whose main model (the 30B MoE) does not fit in 11 GiB of free VRAM.
FAKE_HARDWARE = HardwareInfo(
    cpu=CpuInfo(model="FakeCPU 8-core (test fake)", physical_cores=8, logical_cores=16),
    ram_total=32 * GIB,
    ram_available=24 * GIB,
    gpus=(
        GpuInfo(
            index=0,
            name="FakeGPU 12GB (test fake)",
            vram_total=12 * GIB,
            vram_free=11 * GIB,
            vram_used=1 * GIB,
            utilization=3.0,
            source="nvml",
        ),
    ),
    unified_memory=False,
    gpu_source="nvml",
    notes=("NVML: 1 GPU (a test fake)",),
)

COPY_ID = "smollm2-copy"


@pytest.fixture
def copy_on_hub(
    hub: FakeHubServer, monkeypatch: pytest.MonkeyPatch, embedded_model: Path
) -> CatalogModel:
    """A catalog model (for this test only) whose one quant is the embedded GGUF, with its
    real size and sha256, served by `hub`; HF_ENDPOINT points there."""
    embedded = catalog.get(catalog.EMBEDDED_ID)
    # The embedded entry's exact size and sha256 are the file's: the download is verified.
    quant = dataclasses.replace(embedded.quants[0], file="SmolLM2-copy.Q4_1.gguf")
    model = dataclasses.replace(
        embedded,
        id=COPY_ID,
        name="SmolLM2-copy",
        repo="fake-org/SmolLM2-copy-GGUF",
        quants=(quant,),
        description="The embedded model's file under another id, for tests.",
        embedded=False,
    )
    monkeypatch.setitem(catalog.CATALOG, COPY_ID, model)
    hub.add(f"/{model.repo}/resolve/{model.revision}/{quant.file}", embedded_model)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    return model
