"""Hardware detection, the tier table and the live sampler (no GPU needed: NVML is faked)."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pynvml
import pytest

from nanobot_tui.hardware import (
    GIB,
    MIB,
    CpuInfo,
    GpuInfo,
    HardwareInfo,
    HardwareSampler,
    Tier,
    classify,
    detect,
    parse_nvidia_smi,
)

RTX_3090_TOTAL = 24 * GIB  # what NVML reports for a 3090: 25769803776
H100_TOTAL = 81559 * MIB  # "NVIDIA H100 80GB HBM3": 79.6 GiB


@dataclass
class FakeGpu:
    name: str | bytes
    total: int
    used: int
    util: float | None = 0.0  # None: the board does not support utilization


@dataclass
class FakeNvml:
    """Stands in for the pynvml module: same function names, counts the calls."""

    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: Exception | None = None
    calls: dict[str, int] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def nvmlInit(self) -> None:
        self._count("init")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self._count("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._count("handle")
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        self._count("name")
        return self.gpus[handle[1]].name

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._count("memory")
        if handle[1] in self.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        gpu = self.gpus[handle[1]]
        return SimpleNamespace(total=gpu.total, free=gpu.total - gpu.used, used=gpu.used)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self._count("util")
        gpu = self.gpus[handle[1]]
        if gpu.util is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=gpu.util, memory=0)


def broken_nvml() -> FakeNvml:
    return FakeNvml(init_error=pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))


def fake_smi_never() -> str | None:
    raise AssertionError("nvidia-smi must not run when NVML answered")


def info(vram: list[int], ram: int, unified: bool = False) -> HardwareInfo:
    gpus = tuple(GpuInfo(i, f"gpu{i}", v, v, 0, None, "nvml") for i, v in enumerate(vram))
    return HardwareInfo(
        cpu=CpuInfo("test cpu", 4, 8),
        ram_total=ram,
        ram_available=ram // 2,
        gpus=gpus,
        unified_memory=unified,
        gpu_source="apple" if unified else ("nvml" if gpus else "none"),
        notes=(),
    )


# --- the tier table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vram", "ram", "tier"),
    [
        (0, 0, Tier.POTATO),
        (0, 128, Tier.POTATO),  # RAM alone never lifts a CPU-only box
        (7.9, 64, Tier.POTATO),
        (8, 16, Tier.SWEET),
        (8, 32, Tier.HYBRID),
        (12, 16, Tier.SWEET),
        (12, 32, Tier.HYBRID),
        (16, 16, Tier.POWER),
        (24, 32, Tier.POWER),
        (47.9, 64, Tier.POWER),
        (48, 64, Tier.BEAST),
        (80, 16, Tier.BEAST),
    ],
)
def test_classify_boundaries(vram: float, ram: float, tier: Tier) -> None:
    assert classify(vram, ram).tier is tier


@pytest.mark.parametrize(
    ("ram_gib", "vram_gb", "tier"),
    [(64, 48.0, Tier.BEAST), (32, 24.0, Tier.POWER), (16, 12.0, Tier.SWEET), (8, 6.0, Tier.POTATO)],
)
def test_apple_unified_memory_uses_three_quarters_of_ram(
    ram_gib: int, vram_gb: float, tier: Tier
) -> None:
    hw = info([ram_gib * GIB], ram_gib * GIB, unified=True)
    assert hw.vram_gb == pytest.approx(vram_gb)
    assert hw.tier is tier
    assert hw.tier is classify(vram_gb, ram_gib).tier


def test_measured_sizes_count_as_their_label() -> None:
    ram_32 = 33_600_000_000  # a "32 GB" PC reports about 31.3 GiB
    # RTX 4080 "16 GB" reports 15.99 GiB; T4 "16 GB" with ECC 15.0 GiB; RTX 4060 "8 GB" 7.99.
    assert info([17_171_480_576], ram_32).tier is Tier.POWER
    assert info([15 * GIB], 16 * GIB).tier is Tier.POWER
    assert info([8_585_216_000], ram_32).tier is Tier.HYBRID
    assert info([8_585_216_000], 16 * GIB).tier is Tier.SWEET
    # Slack is a few percent, not a free tier: 7 GiB stays under the 8 GB line.
    assert info([7 * GIB], ram_32).tier is Tier.POTATO
    assert info([], ram_32).tier is Tier.POTATO


def test_vram_is_the_largest_single_gpu() -> None:
    hw = info([12 * GIB, 24 * GIB, 8 * GIB], 64 * GIB)
    assert hw.vram_gb == 24.0
    assert hw.tier is Tier.POWER  # 44 GiB in total, but a model sits on one GPU


# --- detect() ----------------------------------------------------------------------------


def test_detect_nvml_rtx_3090() -> None:
    nvml = FakeNvml([FakeGpu("NVIDIA GeForce RTX 3090", RTX_3090_TOTAL, 1_000 * MIB, 7.0)])
    hw = detect(nvml=nvml, run_smi=fake_smi_never, platform_name="linux", machine="x86_64")
    assert hw.gpu_source == "nvml"
    assert hw.gpus == (
        GpuInfo(
            index=0,
            name="NVIDIA GeForce RTX 3090",
            vram_total=RTX_3090_TOTAL,
            vram_free=RTX_3090_TOTAL - 1_000 * MIB,
            vram_used=1_000 * MIB,
            utilization=7.0,
            source="nvml",
        ),
    )
    assert hw.vram_gb == 24.0
    assert hw.tier is Tier.POWER
    assert not hw.unified_memory
    assert hw.notes == ("NVML: 1 GPU(s)",)
    assert nvml.calls["init"] == 1 and nvml.calls["shutdown"] == 1


def test_detect_nvml_h100_bytes_name_and_unsupported_utilization() -> None:
    nvml = FakeNvml([FakeGpu(b"NVIDIA H100 80GB HBM3", H100_TOTAL, 0, None)])
    hw = detect(nvml=nvml, run_smi=fake_smi_never, platform_name="linux", machine="x86_64")
    (gpu,) = hw.gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.vram_total == H100_TOTAL and gpu.vram_free == H100_TOTAL
    assert gpu.utilization is None
    assert hw.vram_gb == pytest.approx(79.647, abs=1e-3)
    assert hw.tier is Tier.BEAST


def test_detect_nvml_two_gpus_keeps_order_and_uses_the_largest() -> None:
    nvml = FakeNvml(
        [
            FakeGpu("NVIDIA GeForce RTX 3090", RTX_3090_TOTAL, 0, 3.0),
            FakeGpu("NVIDIA H100 80GB HBM3", H100_TOTAL, GIB, 50.0),
        ]
    )
    hw = detect(nvml=nvml, run_smi=fake_smi_never, platform_name="linux", machine="x86_64")
    assert [(g.index, g.name, g.vram_total, g.vram_used, g.utilization) for g in hw.gpus] == [
        (0, "NVIDIA GeForce RTX 3090", RTX_3090_TOTAL, 0, 3.0),
        (1, "NVIDIA H100 80GB HBM3", H100_TOTAL, GIB, 50.0),
    ]
    assert hw.vram_gb == H100_TOTAL / GIB and hw.tier is Tier.BEAST
    assert hw.notes == ("NVML: 2 GPU(s)",)


def test_detect_nvml_without_gpus_is_cpu_only() -> None:
    hw = detect(nvml=FakeNvml([]), run_smi=fake_smi_never, platform_name="linux", machine="x86")
    assert hw.gpu_source == "none" and hw.gpus == ()
    assert hw.notes == ("NVML: 0 GPU(s)", "CPU-only")


SMI_CSV = """\
0, NVIDIA GeForce RTX 3090, 24576, 23552, 1024, 13
1, NVIDIA H100 80GB HBM3, 81559, [N/A], 559, [N/A]
"""


def test_detect_falls_back_to_nvidia_smi() -> None:
    nvml = broken_nvml()
    hw = detect(nvml=nvml, run_smi=lambda: SMI_CSV, platform_name="linux", machine="x86_64")
    assert hw.gpu_source == "nvidia-smi"
    assert [g.name for g in hw.gpus] == ["NVIDIA GeForce RTX 3090", "NVIDIA H100 80GB HBM3"]
    first, second = hw.gpus
    assert (first.vram_total, first.vram_free, first.vram_used) == (
        24576 * MIB,
        23552 * MIB,
        1024 * MIB,
    )
    assert first.utilization == 13.0 and first.source == "nvidia-smi"
    # "[N/A]" free memory is derived from total - used; "[N/A]" utilization stays unknown.
    assert second.vram_free == (81559 - 559) * MIB and second.utilization is None
    assert hw.tier is Tier.BEAST
    assert hw.notes == ("NVML: Driver Not Loaded", "nvidia-smi: 2 GPU(s)")


def test_parse_nvidia_smi_is_robust() -> None:
    text = (
        "garbage line\n"
        "\n"
        "0, Tesla T4, 15360, [N/A], [N/A], [Not Supported]\n"
        "1, Some GPU, with comma, 8192, 8000, 192, 50\n"
        "x, bad index, 1, 1, 1, 1\n"
    )
    t4, odd = parse_nvidia_smi(text)
    assert (t4.index, t4.name, t4.vram_total, t4.vram_free, t4.vram_used) == (
        0,
        "Tesla T4",
        15360 * MIB,
        0,
        0,
    )
    assert t4.utilization is None
    assert (odd.index, odd.name, odd.vram_used, odd.utilization) == (
        1,
        "Some GPU, with comma",
        192 * MIB,
        50.0,
    )
    assert parse_nvidia_smi("") == ()


def test_detect_both_failing_is_cpu_only_with_reasons() -> None:
    hw = detect(nvml=broken_nvml(), run_smi=lambda: None, platform_name="linux", machine="x86")
    assert hw.gpu_source == "none" and hw.gpus == () and not hw.unified_memory
    assert hw.notes == ("NVML: Driver Not Loaded", "nvidia-smi: no output", "CPU-only")
    assert hw.vram_gb == 0.0 and hw.tier is Tier.POTATO


def test_detect_survives_a_raising_smi_and_empty_csv() -> None:
    def boom() -> str | None:
        raise OSError("no such device")

    hw = detect(nvml=broken_nvml(), run_smi=boom, platform_name="linux", machine="x86")
    assert hw.gpu_source == "none"
    assert hw.notes[1] == "nvidia-smi: failed (no such device)"
    hw = detect(
        nvml=broken_nvml(), run_smi=lambda: "No devices were found\n", platform_name="linux"
    )
    assert hw.notes[1:] == ("nvidia-smi: no GPUs listed", "CPU-only")


def test_detect_apple_silicon_skips_nvidia() -> None:
    nvml = FakeNvml([FakeGpu("NVIDIA GeForce RTX 3090", RTX_3090_TOTAL, 0)])
    hw = detect(nvml=nvml, run_smi=fake_smi_never, platform_name="darwin", machine="arm64")
    assert hw.gpu_source == "apple" and hw.unified_memory
    (gpu,) = hw.gpus
    assert gpu.source == "apple" and gpu.vram_total == hw.ram_total
    assert hw.vram_gb == pytest.approx(hw.ram_total * 0.75 / GIB)
    assert nvml.calls == {}
    # Intel Macs are not unified memory.
    intel = detect(
        nvml=broken_nvml(), run_smi=lambda: None, platform_name="darwin", machine="x86_64"
    )
    assert not intel.unified_memory and intel.gpu_source == "none"


def test_to_dict_is_plain_json() -> None:
    nvml = FakeNvml([FakeGpu("NVIDIA GeForce RTX 3090", RTX_3090_TOTAL, 0, 1.0)])
    hw = detect(nvml=nvml, run_smi=fake_smi_never, platform_name="linux", machine="x86_64")
    data = json.loads(json.dumps(hw.to_dict()))
    assert data["tier"] == "power" and data["gpu_source"] == "nvml" and data["vram_gb"] == 24.0
    assert data["gpus"][0]["vram_total"] == RTX_3090_TOTAL
    assert data["cpu"]["logical_cores"] == hw.cpu.logical_cores
    assert data["notes"] == ["NVML: 1 GPU(s)"]


def _machine_has_nvidia() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()


def test_real_detect_does_not_raise() -> None:
    hw = detect()
    assert hw.ram_total == psutil.virtual_memory().total
    assert 0 < hw.ram_available <= hw.ram_total
    assert hw.cpu.logical_cores == (psutil.cpu_count() or os.cpu_count())
    assert 1 <= hw.cpu.physical_cores <= hw.cpu.logical_cores
    assert hw.cpu.model
    json.dumps(hw.to_dict())
    if not _machine_has_nvidia() and hw.gpu_source != "apple":
        assert hw.gpu_source == "none" and hw.gpus == ()
        assert hw.notes[-1] == "CPU-only"
        assert hw.notes[0].startswith("NVML: ") and hw.notes[1].startswith("nvidia-smi: ")
        assert hw.tier is Tier.POTATO


# --- the live sampler --------------------------------------------------------------------


def test_sampler_keeps_nvml_open_and_handles_cached() -> None:
    nvml = FakeNvml(
        [
            FakeGpu("NVIDIA GeForce RTX 3090", RTX_3090_TOTAL, 2 * GIB, 40.0),
            FakeGpu(b"NVIDIA H100 80GB HBM3", H100_TOTAL, 0, None),
        ]
    )
    sampler = HardwareSampler(nvml=nvml, run_smi=fake_smi_never)
    assert nvml.calls == {}  # lazy: nothing until the first sample
    first = sampler.sample()
    assert sampler.gpu_source == "nvml"
    assert first.gpus[0].vram_used == 2 * GIB and first.gpus[0].utilization == 40.0
    assert first.gpus[1].name == "NVIDIA H100 80GB HBM3" and first.gpus[1].utilization is None

    nvml.gpus[0].used, nvml.gpus[0].util = 5 * GIB, 99.0
    for _ in range(4):
        last = sampler.sample()
    assert (last.gpus[0].vram_used, last.gpus[0].vram_total) == (5 * GIB, RTX_3090_TOTAL)
    assert last.gpus[0].utilization == 99.0
    # One init, one handle and one name per GPU; an unsupported utilization is asked once.
    assert nvml.calls["init"] == 1 and nvml.calls["handle"] == 2 and nvml.calls["name"] == 2
    assert nvml.calls["memory"] == 10 and nvml.calls["util"] == 5 + 1
    assert "shutdown" not in nvml.calls

    nvml.lost.add(0)  # a GPU falling off the bus drops out of the meter
    assert [g.index for g in sampler.sample().gpus] == [1]
    sampler.close()
    assert nvml.calls["shutdown"] == 1
    sampler.close()
    assert nvml.calls["shutdown"] == 1


def test_sampler_nvidia_smi_is_throttled() -> None:
    now = [100.0]
    runs: list[int] = []

    def run_smi() -> str | None:
        runs.append(1)
        return f"0, NVIDIA GeForce RTX 3090, 24576, 20000, {1000 * len(runs)}, {10 * len(runs)}\n"

    with HardwareSampler(nvml=broken_nvml(), run_smi=run_smi, clock=lambda: now[0]) as sampler:
        samples = [sampler.sample() for _ in range(3)]
        assert sampler.gpu_source == "nvidia-smi"
        assert len(runs) == 1
        assert all(s.gpus[0].vram_used == 1000 * MIB for s in samples)
        now[0] += 4.9
        assert sampler.sample().gpus[0].utilization == 10.0 and len(runs) == 1
        now[0] += 0.1
        again = sampler.sample().gpus[0]
        assert len(runs) == 2 and again.vram_used == 2000 * MIB and again.utilization == 20.0
        assert again.vram_total == 24576 * MIB and again.name == "NVIDIA GeForce RTX 3090"


def test_sampler_without_gpus() -> None:
    with HardwareSampler(nvml=broken_nvml(), run_smi=None) as sampler:
        if shutil.which("nvidia-smi") is None:
            assert sampler.sample().gpus == ()
            assert sampler.gpu_source == "none"


def test_sampler_apple_reports_unified_memory() -> None:
    nvml = FakeNvml()
    with HardwareSampler(nvml=nvml, platform_name="darwin", machine="arm64") as sampler:
        s = sampler.sample()
    assert [(g.vram_used, g.vram_total) for g in s.gpus] == [(s.ram_used, s.ram_total)]
    assert nvml.calls == {}


def test_sampler_real_psutil_values_are_sane() -> None:
    with HardwareSampler() as sampler:
        before = time.time()
        sampler.sample()
        busy_until = time.perf_counter() + 0.05
        while time.perf_counter() < busy_until:  # some load, so the window is not empty
            pass
        s = sampler.sample()
    assert 0.0 <= s.cpu_percent <= 100.0
    assert len(s.per_cpu) == psutil.cpu_count()
    assert all(0.0 <= p <= 100.0 for p in s.per_cpu)
    assert s.cpu_percent == pytest.approx(sum(s.per_cpu) / len(s.per_cpu))
    assert s.ram_total == psutil.virtual_memory().total
    assert 0 < s.ram_used < s.ram_total
    assert before <= s.at <= time.time()
    assert isinstance(s.gpus, tuple)


def test_sampler_does_no_slow_work_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """What keeps a sample cheap: psutil's counters are read without waiting, a broken NVML
    is tried once rather than on every sample, and nvidia-smi runs once per interval.
    The cost in CPU time is benchmarks/sampler_cost's to measure."""
    waits: list[float | None] = []
    cpu_percent = psutil.cpu_percent

    def read_cpu(interval: float | None = None, percpu: bool = False) -> Any:
        waits.append(interval)
        return cpu_percent(interval=None, percpu=percpu)

    monkeypatch.setattr(psutil, "cpu_percent", read_cpu)
    nvml = broken_nvml()
    smi_runs: list[int] = []

    def run_smi() -> str | None:
        smi_runs.append(1)
        return None

    with HardwareSampler(nvml=nvml, run_smi=run_smi, clock=lambda: 100.0) as sampler:
        for _ in range(51):
            sampler.sample()
    assert len(waits) > 51 and set(waits) == {None}
    assert nvml.calls["init"] == 1
    assert len(smi_runs) == 1
