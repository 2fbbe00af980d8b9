"""`nanobot doctor`'s report: tier, slots, budgets, problems vs warnings, text and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from nanobot_tui import paths
from nanobot_tui.config import ConfigError, load_config
from nanobot_tui.hardware import GIB, MIB, HardwareInfo, Tier, detect
from nanobot_tui.models import catalog
from nanobot_tui.setup.doctor import DoctorReport, build_report, format_report
from tests.conftest import fake_download

SMOL = "SmolLM2-135M-Instruct"
JSON_KEYS = {"hardware", "tier", "config", "runtime", "slots", "servers", "ports"}
JSON_KEYS |= {"ok", "problems", "warnings", "version", "home", "dataUsage", "channels"}


@dataclass
class FakeNvml:
    """A fake of the pynvml module with one GPU; init_error makes nvmlInit fail."""

    name: str = "NVIDIA GeForce RTX 3090"
    total: int = 24 * GIB
    used: int = 1 * GIB
    init_error: Exception | None = None

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self.name

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        return SimpleNamespace(total=self.total, free=self.total - self.used, used=self.used)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        return SimpleNamespace(gpu=7)


RTX_3090 = FakeNvml()
H100 = FakeNvml(name="NVIDIA H100 80GB HBM3", total=81559 * MIB, used=600 * MIB)


def no_gpu() -> HardwareInfo:
    lost = FakeNvml(init_error=pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    return detect(nvml=lost, run_smi=lambda: None)


def write_config(data: object) -> Path:
    path = paths.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def fallback_warnings(report: DoctorReport) -> list[str]:
    return [w for w in report.warnings if w.startswith("slot ")]


# --- hardware and tier --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fake", "tier", "main_quant"),
    [(RTX_3090, Tier.POWER, "Q3_K_M"), (H100, Tier.BEAST, "Q8_0")],
    ids=["rtx3090", "h100"],
)
def test_gpu_machine_gets_its_tier_and_gpu_budgets(
    fake: FakeNvml, tier: Tier, main_quant: str, embedded_model: Path
) -> None:
    report = build_report(hardware=detect(nvml=fake))
    data = report.data
    assert data["tier"]["name"] == tier.value
    assert data["hardware"]["gpus"][0]["name"] == fake.name
    assert data["hardware"]["gpus"][0]["vram_total"] == fake.total
    assert data["hardware"]["gpu_source"] == "nvml"

    wanted = catalog.recommended_models(tier)
    free = fake.total - fake.used
    for name in ("main", "rlm", "memory"):
        slot = data["slots"][name]
        assert slot["wanted"] == wanted[name]
        # Nothing is downloaded, so the slot runs on the embedded model meanwhile.
        assert slot["path"] == str(embedded_model) and slot["present"] is True
        assert slot["budget"] == free
        assert slot["budgetKind"] == "GPU0 free VRAM"
        assert slot["fits"] is True
    # The 30B MoE's best quant that fits in 80 % of the free VRAM: on 23 GiB free, Q4_K_M
    # (18.6 GB + 0.8 GB KV + 0.5 GB compute) just misses 80 %, so Q3_K_M.
    assert data["slots"]["main"]["recommendedQuant"] == main_quant
    assert report.ok, report.problems

    text = format_report(report)
    assert f"Tier     {tier.value}: " in text
    assert f"GPU0     {fake.name}: " in text
    assert "of GPU0 free VRAM" in text


def test_cpu_only_machine_is_potato_with_ram_budgets() -> None:
    hardware = no_gpu()
    assert hardware.gpus == ()
    report = build_report(hardware=hardware)
    data = report.data
    assert data["tier"]["name"] == "potato"
    assert data["hardware"]["gpus"] == []
    assert data["hardware"]["gpu_source"] == "none"
    assert "CPU-only" in data["hardware"]["notes"]
    for slot in data["slots"].values():
        assert slot["budgetKind"] == "available RAM"
        assert slot["budget"] == hardware.ram_available
    assert data["slots"]["main"]["wanted"] == catalog.recommended_models("potato")["main"]
    text = format_report(report)
    assert "  GPU      none (" in text and "CPU-only" in text
    assert "Tier     potato: no usable GPU" in text


def test_cpu_layers_use_ram_even_with_a_gpu() -> None:
    write_config({"local": {"main": {"model": catalog.EMBEDDED_ID, "gpuLayers": 0}}})
    hardware = detect(nvml=RTX_3090)
    report = build_report(hardware=hardware)
    main = report.data["slots"]["main"]
    assert (main["budgetKind"], main["budget"]) == ("available RAM", hardware.ram_available)
    assert report.data["slots"]["rlm"]["budgetKind"] == "GPU0 free VRAM"


# --- config cases -------------------------------------------------------------------------


def test_no_config_is_ok_with_warnings_about_fallbacks(nanobot_home: Path) -> None:
    report = build_report(hardware=no_gpu())
    assert report.ok is True
    assert report.problems == []
    config_file = nanobot_home / "config.json"
    assert report.data["config"] == {"path": str(config_file), "exists": False, "valid": True}
    assert report.warnings[0] == f"no config at {config_file}: using the potato tier's defaults"
    assert fallback_warnings(report) == [
        f"slot main: nanbeige4.1-3b is not downloaded (nanobot setup fetches it); using {SMOL}",
        f"slot rlm: nanbeige4.1-3b is not downloaded (nanobot setup fetches it); using {SMOL}",
        f"slot memory: qwen3-0.6b is not downloaded (nanobot setup fetches it); using {SMOL}",
    ]
    assert report.data["servers"] == [
        {
            "slots": ["main", "rlm", "memory"],
            "model": SMOL,
            "contextSize": 8192 * 2,  # the six slots share a KV pool of two windows
            "parallel": 6,
        }
    ]
    assert format_report(report).endswith("\nAll is well.")
    assert not config_file.exists()  # doctor only looks


@pytest.mark.parametrize(
    "content",
    ['{"local": {"main": {"contextSize": "big"}}}', "{oops", "[]", '{"colour": 1}'],
)
def test_broken_config_is_a_problem_named_in_one_line(content: str) -> None:
    path = write_config(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = str(info.value)

    report = build_report(hardware=no_gpu())
    assert report.ok is False
    assert report.problems == [expected]
    assert report.data["config"] == {
        "path": str(path),
        "exists": True,
        "valid": False,
        "error": expected,
    }
    # The rest of the report is still there, planned from the tier's defaults.
    assert report.data["slots"]["main"]["wanted"] == "nanbeige4.1-3b"
    assert len(report.data["servers"]) == 1

    text = format_report(report)
    assert f"  {path} (exists, INVALID)" in text
    assert f"  - {expected}" in text
    assert text.endswith("\n1 problem(s).")


def test_configured_model_not_downloaded_is_a_problem() -> None:
    write_config({"local": {"main": {"model": "qwen3-0.6b"}}})
    report = build_report(hardware=no_gpu())
    assert report.problems == [
        f"slot main: qwen3-0.6b is not downloaded (nanobot setup fetches it); using {SMOL}"
    ]
    assert report.ok is False
    # rlm and memory share main's on purpose: no complaint about them.
    assert fallback_warnings(report) == []
    assert not any(w.startswith("no config") for w in report.warnings)
    assert report.data["config"]["exists"] is True


def test_configured_model_that_is_downloaded_is_used(embedded_model: Path) -> None:
    target = fake_download(paths.models_dir(), "qwen3-0.6b", "Q4_K_M", embedded_model)
    write_config({"local": {"main": {"model": "qwen3-0.6b"}}})
    report = build_report(hardware=detect(nvml=RTX_3090))
    assert report.ok, report.problems
    main = report.data["slots"]["main"]
    assert (main["model"], main["quant"], main["path"]) == ("qwen3-0.6b", "Q4_K_M", str(target))
    assert main["present"] is True and main["note"] == ""
    assert main["estimate"] > target.stat().st_size  # weights + KV + compute
    assert report.data["servers"][0]["model"] == "Qwen3-0.6B"


def test_configured_model_that_does_not_fit_is_a_problem(embedded_model: Path) -> None:
    # A 40 GB (sparse) "Q8_0" of the 30B on a 24 GB card.
    fake_download(paths.models_dir(), "qwen3-30b-a3b-2507", "Q8_0", embedded_model, size=40 * 10**9)
    write_config({"local": {"main": {"model": "qwen3-30b-a3b-2507"}}})
    report = build_report(hardware=detect(nvml=RTX_3090))
    assert report.data["slots"]["main"]["fits"] is False
    assert any("needs about" in p for p in report.problems), report.warnings
    assert report.ok is False


def test_runtime_that_does_not_exist_is_a_problem(tmp_path: Path) -> None:
    binary = tmp_path / "bin" / "llama-server"
    write_config({"runtime": str(binary)})
    report = build_report(hardware=no_gpu())
    message = f"runtime {str(binary)!r}: no executable llama-server found there"
    assert report.problems == [message]
    assert report.data["runtime"] == {"setting": str(binary), "error": message}
    assert f"  {binary}: {message}" in format_report(report)


def test_runtime_file_that_is_not_executable_is_a_problem(tmp_path: Path) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o644)
    write_config({"runtime": str(binary)})
    report = build_report(hardware=no_gpu())
    assert report.ok is False
    assert "no executable llama-server found there" in report.problems[0]


def test_embedded_runtime_is_reported() -> None:
    runtime = build_report(hardware=no_gpu()).data["runtime"]
    assert runtime["setting"] == "embedded"
    assert runtime["kind"] == "embedded"
    assert runtime["version"].startswith("xllamacpp ")
    assert runtime["command"][1:] == ["-m", "nanobot_tui.engine.serving.llama_host"]


# --- ports and output ---------------------------------------------------------------------


def test_running_servers_are_listed_and_junk_pid_files_skipped() -> None:
    run = paths.ensure(paths.run_dir())
    record = {"owner": {"pid": 1, "created": 0}, "servers": [{"pid": 4242, "port": 40123}]}
    (run / "servers-1.json").write_text(json.dumps(record))
    (run / "servers-2.json").write_text("{not json")
    ports = build_report(hardware=no_gpu()).data["ports"]
    assert ports == {
        "host": "127.0.0.1",
        "canBindFreePort": True,
        "running": [{"pid": 4242, "port": 40123}],
    }


def test_to_json_has_every_section() -> None:
    write_config({"runtime": "/nonexistent/llama-server"})
    report = build_report(hardware=no_gpu())
    data = json.loads(report.to_json())
    assert set(data) == JSON_KEYS
    assert data["ok"] is False
    assert data["problems"] == report.problems and len(data["problems"]) == 1
    assert data["warnings"] == report.warnings
    assert set(data["slots"]) == {"main", "rlm", "memory"}
    assert data["tier"]["name"] == "potato"
    assert data["hardware"]["tier"] == "potato"


# --- every model file is checked; a fresh install is not a failure -----------------------


def _bad_model(kind: str, embedded: Path, where: Path) -> Path:
    """A custom model file that is no model: empty, cut short, or random bytes."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{kind}.gguf"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(embedded.read_bytes()[: embedded.stat().st_size // 2])
    else:
        path.write_bytes(bytes(range(256)) * 64)
    return path


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_a_custom_model_file_that_is_no_gguf_is_a_problem(
    kind: str, embedded_model: Path, tmp_path: Path
) -> None:
    bad = _bad_model(kind, embedded_model, tmp_path / "models")
    write_config({"local": {"main": {"path": str(bad)}}})
    report = build_report(hardware=no_gpu())
    assert report.ok is False
    assert [p for p in report.problems if str(bad) in p], report.problems
    assert all("\n" not in p for p in report.problems)
    assert not format_report(report).endswith("All is well.")


def test_a_good_custom_model_file_passes(embedded_model: Path) -> None:
    write_config({"local": {"main": {"path": str(embedded_model)}}})
    report = build_report(hardware=no_gpu())
    assert report.ok, report.problems


def test_a_fresh_setup_whose_recommended_models_are_not_downloaded_is_ok() -> None:
    """The config names the tier's own recommendations (as `nanobot setup` writes them),
    none downloaded yet, and the embedded model stands in: a suggestion, exit 0."""
    recommended = catalog.recommended_models(Tier.POTATO)
    write_config({"local": {name: {"model": model} for name, model in recommended.items()}})
    report = build_report(hardware=no_gpu())
    assert report.ok, report.problems
    assert len(fallback_warnings(report)) == 3
    assert format_report(report).endswith("\nAll is well.")


def test_a_config_with_keys_that_others_can_read_is_warned_about() -> None:
    path = write_config({"providers": {"openai": {"apiKey": "sk-test-secret"}}})
    path.chmod(0o644)
    report = build_report(hardware=no_gpu())
    warned = [w for w in report.warnings if "API keys" in w]
    assert warned == [
        f"{path} holds API keys and is readable by others (mode 0644): chmod 600 {path}"
    ]
    assert "sk-test-secret" not in format_report(report)
    path.chmod(0o600)
    assert not [w for w in build_report(hardware=no_gpu()).warnings if "API keys" in w]


def test_a_config_without_keys_may_be_world_readable() -> None:
    write_config({"ui": {"theme": "nord"}}).chmod(0o644)
    assert not [w for w in build_report(hardware=no_gpu()).warnings if "API keys" in w]
