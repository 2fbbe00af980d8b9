"""Hardware detection and the tier table.

The tier decides which models nanobot recommends. One table holds the thresholds.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Protocol


class Tier(StrEnum):
    POTATO = "potato"
    SWEET = "sweet"
    POWER = "power"
    BEAST = "beast"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class TierRule:
    tier: Tier
    min_vram_gb: float
    min_ram_gb: float
    description: str


# First rule that matches wins. VRAM is the largest single GPU's total (or the usable part
# of Apple unified memory); RAM is the machine's total.
TIER_TABLE: tuple[TierRule, ...] = (
    TierRule(Tier.BEAST, 48, 0, "48 GB+ of VRAM: every model on the GPU at high quants"),
    TierRule(Tier.POWER, 16, 0, "16–24 GB of VRAM: the 30B MoE at Q4 fully on the GPU"),
    TierRule(Tier.HYBRID, 8, 32, "a GPU plus enough RAM to offload the MoE experts"),
    TierRule(Tier.SWEET, 8, 0, "8–12 GB of VRAM: 3B-class models on the GPU"),
    TierRule(Tier.POTATO, 0, 0, "no usable GPU: small models on the CPU (8 GB RAM class)"),
)


def classify(vram_gb: float, ram_gb: float) -> TierRule:
    """The first tier rule whose thresholds the machine meets."""
    for rule in TIER_TABLE:
        if vram_gb >= rule.min_vram_gb and ram_gb >= rule.min_ram_gb:
            return rule
    return TIER_TABLE[-1]


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------

GIB = 1024**3
MIB = 1024**2

# Measured capacities run a few percent under the label (ECC, kernel and firmware
# reservations): a "16 GB" RTX 4080 reports 15.99 GiB, a 16 GB T4 15.0 GiB, a 48 GB A40
# 45.0 GiB and a 32 GB PC about 31.3 GiB of RAM. The tier thresholds are label sizes, so a
# measured figure counts as its label if it is at least this fraction of it.
LABEL_FRACTION = 0.93

# macOS lets the GPU wire roughly this share of unified memory (recommendedMaxWorkingSetSize).
APPLE_GPU_SHARE = 0.75

SMI_QUERY = "index,name,memory.total,memory.free,memory.used,utilization.gpu"
SMI_TIMEOUT_S = 5.0


class NvmlLike(Protocol):
    """The slice of the pynvml module that nanobot uses (a fake in tests)."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # .total .free .used, bytes
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...  # .gpu, percent


@dataclass(frozen=True)
class CpuInfo:
    model: str
    physical_cores: int
    logical_cores: int


@dataclass(frozen=True)
class GpuInfo:
    """One GPU. Sizes in bytes; utilization in percent, None where the driver won't say."""

    index: int
    name: str
    vram_total: int
    vram_free: int
    vram_used: int
    utilization: float | None
    source: str  # "nvml" | "nvidia-smi" | "apple"


@dataclass(frozen=True)
class HardwareInfo:
    cpu: CpuInfo
    ram_total: int
    ram_available: int
    gpus: tuple[GpuInfo, ...]
    unified_memory: bool
    gpu_source: str  # "nvml" | "nvidia-smi" | "apple" | "none"
    notes: tuple[str, ...]

    @property
    def vram_gb(self) -> float:
        """Largest single GPU's memory in GiB (a model is placed on one GPU); for unified
        memory, the share of RAM the GPU may use."""
        if self.unified_memory:
            return self.ram_total * APPLE_GPU_SHARE / GIB
        if not self.gpus:
            return 0.0
        return max(g.vram_total for g in self.gpus) / GIB

    @property
    def ram_gb(self) -> float:
        return self.ram_total / GIB

    @property
    def tier_rule(self) -> TierRule:
        # Discrete VRAM and RAM are measured under their labels; the unified-memory budget
        # is already a computed share, so it goes to the table as is.
        vram = self.vram_gb if self.unified_memory else self.vram_gb / LABEL_FRACTION
        return classify(vram, self.ram_gb / LABEL_FRACTION)

    @property
    def tier(self) -> Tier:
        return self.tier_rule.tier

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for `--json` output."""
        rule = self.tier_rule
        return {
            "cpu": asdict(self.cpu),
            "ram_total": self.ram_total,
            "ram_available": self.ram_available,
            "ram_gb": round(self.ram_gb, 2),
            "gpus": [asdict(g) for g in self.gpus],
            "unified_memory": self.unified_memory,
            "gpu_source": self.gpu_source,
            "vram_gb": round(self.vram_gb, 2),
            "tier": rule.tier.value,
            "tier_description": rule.description,
            "notes": list(self.notes),
        }


def _decode(name: str | bytes) -> str:
    # Older pynvml builds return bytes.
    if isinstance(name, bytes):
        return name.decode("utf-8", "replace")
    return str(name)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        brand = _sysctl("machdep.cpu.brand_string")
        if brand:
            return brand
    return platform.processor() or "unknown"


def _sysctl(key: str) -> str | None:
    try:
        out = subprocess.run(
            ["sysctl", "-n", key], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _cpu_info() -> CpuInfo:
    import psutil  # here, not at the top: loading the config needs only Tier

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return CpuInfo(model=_cpu_model(), physical_cores=physical, logical_cores=logical)


def _load_pynvml() -> NvmlLike:
    import pynvml  # nvidia-ml-py; imported late so a broken install cannot break startup

    return pynvml


def _nvml_gpus(nvml: NvmlLike) -> tuple[tuple[GpuInfo, ...], str]:
    """GPUs through NVML, and a note. Raises whatever NVML raises; the caller catches."""
    nvml.nvmlInit()
    try:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GpuInfo(
                    index=i,
                    name=_decode(nvml.nvmlDeviceGetName(handle)),
                    vram_total=int(mem.total),
                    vram_free=int(mem.free),
                    vram_used=int(mem.used),
                    utilization=_nvml_utilization(nvml, handle),
                    source="nvml",
                )
            )
        note = f"NVML: {len(gpus)} GPU(s)"
        driver = _nvml_driver(nvml)
        if driver:
            note += f", driver {driver}"
        return tuple(gpus), note
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _nvml_utilization(nvml: NvmlLike, handle: Any) -> float | None:
    # Not supported on some boards (and under MIG); that is not a detection failure.
    try:
        return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:
        return None


def _nvml_driver(nvml: NvmlLike) -> str | None:
    get = getattr(nvml, "nvmlSystemGetDriverVersion", None)
    if get is None:
        return None
    try:
        return _decode(get())
    except Exception:
        return None


def _smi_number(field: str) -> float | None:
    # nvidia-smi writes "[N/A]", "N/A" or "[Not Supported]" for missing values.
    try:
        return float(field.strip().strip("[]"))
    except ValueError:
        return None


def parse_nvidia_smi(text: str) -> tuple[GpuInfo, ...]:
    """Parse `nvidia-smi --query-gpu=<SMI_QUERY> --format=csv,noheader,nounits` output.

    Memory comes in MiB. Lines that do not parse are skipped.
    """
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 6:
            continue
        # A comma inside the name would shift the fields: index first, numbers last.
        index = _smi_number(fields[0])
        if index is None:
            continue
        name = ", ".join(fields[1:-4])
        total, free, used, util = (_smi_number(f) for f in fields[-4:])
        if free is None and total is not None and used is not None:
            free = total - used
        if used is None and total is not None and free is not None:
            used = total - free
        gpus.append(
            GpuInfo(
                index=int(index),
                name=name,
                vram_total=int((total or 0) * MIB),
                vram_free=int((free or 0) * MIB),
                vram_used=int((used or 0) * MIB),
                utilization=util,
                source="nvidia-smi",
            )
        )
    return tuple(gpus)


def _smi_command(binary: str) -> list[str]:
    return [binary, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"]


def run_nvidia_smi() -> tuple[str | None, str]:
    """Run the nvidia-smi query: (stdout or None, why it failed or "ok")."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None, "not on PATH"
    try:
        out = subprocess.run(
            _smi_command(binary),
            capture_output=True,
            text=True,
            timeout=SMI_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {SMI_TIMEOUT_S:g} s"
    except OSError as exc:
        return None, f"could not run ({exc.strerror or exc})"
    if out.returncode != 0:
        first = (out.stdout.strip() or out.stderr.strip()).splitlines()[:1]
        detail = f": {first[0]}" if first else ""
        return None, f"exit {out.returncode}{detail}"
    return out.stdout, "ok"


def _is_apple_silicon(platform_name: str | None, machine: str | None) -> bool:
    system = platform_name if platform_name is not None else sys.platform
    arch = machine if machine is not None else platform.machine()
    return system.lower().startswith("darwin") and arch.lower() in ("arm64", "aarch64")


def _ram() -> tuple[int, int]:
    import psutil

    try:
        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except Exception:
        return 0, 0


def detect(
    nvml: NvmlLike | None = None,
    run_smi: Callable[[], str | None] | None = None,
    platform_name: str | None = None,
    machine: str | None = None,
) -> HardwareInfo:
    """Detect CPU, RAM and GPUs. Never raises, never prints.

    Order: Apple Silicon (unified memory; no NVIDIA there), NVML, nvidia-smi, CPU-only.
    `nvml`, `run_smi`, `platform_name` (a sys.platform value) and `machine` (a
    platform.machine() value) replace the real ones in tests.
    """
    notes: list[str] = []
    try:
        cpu = _cpu_info()
    except Exception as exc:
        cpu = CpuInfo(model="unknown", physical_cores=1, logical_cores=1)
        notes.append(f"CPU: detection failed ({exc})")
    ram_total, ram_available = _ram()

    def done(gpus: tuple[GpuInfo, ...], source: str, unified: bool = False) -> HardwareInfo:
        return HardwareInfo(
            cpu=cpu,
            ram_total=ram_total,
            ram_available=ram_available,
            gpus=gpus,
            unified_memory=unified,
            gpu_source=source,
            notes=tuple(notes),
        )

    if _is_apple_silicon(platform_name, machine):
        name = f"{cpu.model} GPU" if cpu.model.startswith("Apple") else "Apple GPU"
        gpu = GpuInfo(
            index=0,
            name=name,
            vram_total=ram_total,
            vram_free=ram_available,
            vram_used=ram_total - ram_available,
            utilization=None,
            source="apple",
        )
        notes.append(f"Apple Silicon: unified memory, GPU budget ~{APPLE_GPU_SHARE:.0%} of RAM")
        return done((gpu,), "apple", unified=True)

    # NVML first: one library call per value, no subprocess.
    try:
        lib = nvml if nvml is not None else _load_pynvml()
        gpus, note = _nvml_gpus(lib)
    except ImportError:
        notes.append("NVML: pynvml (nvidia-ml-py) not installed")
    except Exception as exc:
        notes.append(f"NVML: {_nvml_reason(exc)}")
    else:
        notes.append(note)
        if gpus:
            return done(gpus, "nvml")
        # The driver answered and saw no GPU; nvidia-smi would say the same.
        notes.append("CPU-only")
        return done((), "none")

    try:
        if run_smi is None:
            text, why = run_nvidia_smi()
        else:
            text = run_smi()
            why = "no output"
        gpus = parse_nvidia_smi(text) if text else ()
    except Exception as exc:
        text, gpus, why = None, (), f"failed ({exc})"
    if gpus:
        notes.append(f"nvidia-smi: {len(gpus)} GPU(s)")
        return done(gpus, "nvidia-smi")
    notes.append(f"nvidia-smi: {why if text is None else 'no GPUs listed'}")
    notes.append("CPU-only")
    return done((), "none")


def _nvml_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if text == "NVML Shared Library Not Found":
        return "library not found"  # the usual case on a machine without the driver
    return text


# ---------------------------------------------------------------------------------------------
# Live sampling for the hardware meter
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    vram_used: int
    vram_total: int
    utilization: float | None


@dataclass(frozen=True)
class HardwareSample:
    cpu_percent: float
    per_cpu: tuple[float, ...]
    ram_used: int  # total - available: what the machine can no longer hand out
    ram_total: int
    gpus: tuple[GpuSample, ...]
    at: float  # time.time()


class HardwareSampler:
    """Cheap repeated readings of CPU, RAM and GPU load.

    NVML is initialised once, lazily, and its device handles are kept; CPU load comes from
    psutil's non-blocking counters. If only nvidia-smi is there, it runs at most every
    `smi_interval` seconds and the last values are reused in between (a subprocess costs
    tens of ms). Thread-safe; call `close()` (or use as a context manager) to shut NVML.
    """

    def __init__(
        self,
        nvml: NvmlLike | None = None,
        run_smi: Callable[[], str | None] | None = None,
        *,
        platform_name: str | None = None,
        machine: str | None = None,
        smi_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml_given = nvml
        self._run_smi = run_smi
        self._apple = _is_apple_silicon(platform_name, machine)
        self._smi_interval = smi_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._started = False
        self._nvml: NvmlLike | None = None
        self._handles: list[tuple[int, str, Any]] = []
        self._util_supported: dict[int, bool] = {}
        self._smi_ok = False
        self._smi_last: tuple[GpuSample, ...] = ()
        self._smi_at: float | None = None
        self.gpu_source = "none"
        import psutil

        # The first non-blocking reading only sets psutil's baseline.
        psutil.cpu_percent(interval=None, percpu=True)

    def __enter__(self) -> HardwareSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self._started = True
        if self._apple:
            self.gpu_source = "apple"
            return
        try:
            lib = self._nvml_given if self._nvml_given is not None else _load_pynvml()
            lib.nvmlInit()
        except Exception:
            lib = None
        if lib is not None:
            try:
                for i in range(lib.nvmlDeviceGetCount()):
                    handle = lib.nvmlDeviceGetHandleByIndex(i)
                    self._handles.append((i, _decode(lib.nvmlDeviceGetName(handle)), handle))
            except Exception:
                self._handles = []
            if self._handles:
                self._nvml = lib
                self.gpu_source = "nvml"
                return
            with contextlib.suppress(Exception):
                lib.nvmlShutdown()
        if self._run_smi is not None or shutil.which("nvidia-smi"):
            self._smi_ok = True
            self.gpu_source = "nvidia-smi"

    def _nvml_samples(self) -> tuple[GpuSample, ...]:
        assert self._nvml is not None
        out = []
        for index, name, handle in self._handles:
            try:
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:
                continue  # a lost GPU drops out of the meter instead of breaking it
            util = None
            if self._util_supported.get(index, True):
                util = _nvml_utilization(self._nvml, handle)
                if util is None:
                    self._util_supported[index] = False
            out.append(GpuSample(index, name, int(mem.used), int(mem.total), util))
        return tuple(out)

    def _smi_samples(self) -> tuple[GpuSample, ...]:
        now = self._clock()
        if self._smi_at is not None and now - self._smi_at < self._smi_interval:
            return self._smi_last
        self._smi_at = now
        try:
            text = self._run_smi() if self._run_smi is not None else run_nvidia_smi()[0]
        except Exception:
            text = None
        if text:
            self._smi_last = tuple(
                GpuSample(g.index, g.name, g.vram_used, g.vram_total, g.utilization)
                for g in parse_nvidia_smi(text)
            )
        return self._smi_last

    def sample(self) -> HardwareSample:
        with self._lock:
            if not self._started:
                self._start()
            import psutil

            per_cpu = tuple(float(p) for p in psutil.cpu_percent(interval=None, percpu=True))
            # The mean of the per-CPU figures is the total: one /proc/stat read, not two.
            cpu = sum(per_cpu) / len(per_cpu) if per_cpu else 0.0
            vm = psutil.virtual_memory()
            ram_total = int(vm.total)
            ram_used = ram_total - int(vm.available)
            if self._nvml is not None:
                gpus = self._nvml_samples()
            elif self._smi_ok:
                gpus = self._smi_samples()
            elif self._apple:
                gpus = (GpuSample(0, "Apple GPU", ram_used, ram_total, None),)
            else:
                gpus = ()
            return HardwareSample(cpu, per_cpu, ram_used, ram_total, gpus, time.time())

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                with contextlib.suppress(Exception):
                    self._nvml.nvmlShutdown()
            self._nvml = None
            self._handles = []
            self._started = False
            self.gpu_source = "none"
