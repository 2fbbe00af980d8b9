"""The wizard's logic without a UI: recommendations per slot on a fixed (fake) machine, the
config it would write and its diff, falling back to the embedded model, and the quick server
test on the real embedded server."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nanobot_tui.config import Config, LocalConfig, SlotConfig
from nanobot_tui.hardware import Tier
from nanobot_tui.models import catalog
from nanobot_tui.setup.plan import (
    ExistingConfig,
    ServerCheck,
    build_plan,
    check_servers,
    config_diff,
    hardware_lines,
    planned_config,
    read_existing,
    write_config,
)
from tests.conftest import fake_download
from tests.setup_fakes import FAKE_HARDWARE, GIB

EMBEDDED = catalog.EMBEDDED_ID


def with_free_vram(gib: float):  # type: ignore[no-untyped-def]
    gpu = dataclasses.replace(FAKE_HARDWARE.gpus[0], vram_free=int(gib * GIB))
    return dataclasses.replace(FAKE_HARDWARE, gpus=(gpu,))


def test_recommendations_on_the_fake_machine(nanobot_home: Path) -> None:
    plan = build_plan(FAKE_HARDWARE)
    assert plan.tier == Tier.HYBRID and plan.tier_detected
    main = plan.slots["main"]
    # Hybrid recommends the 30B MoE; at 11 GiB of free VRAM it does not fit, so the 3B leads.
    assert main.recommended_id == "qwen3-30b-a3b-2507"
    assert main.choice.model_id == "nanbeige4.1-3b" and main.choice.fits
    assert main.why.startswith("the tier's pick, Qwen3-30B-A3B-Instruct-2507, does not fit here")
    assert "(GPU0 free VRAM)" in main.why
    assert [o.fits for o in main.options] == [True, True, False]  # fitting ones first
    big = main.options[-1]
    assert big.model_id == "qwen3-30b-a3b-2507" and big.quant == "Q3_K_M"
    assert "more than 80% of GPU0 free VRAM" in big.why
    for slot in plan.slots.values():
        assert EMBEDDED in [o.model_id for o in slot.options]  # always an alternative
        embedded = slot.options[slot.index_of(EMBEDDED)]
        assert embedded.present and embedded.embedded and embedded.size_bytes == 98_362_432
    assert plan.slots["memory"].choice.model_id == "qwen3-0.6b"
    assert plan.slots["memory"].why.startswith("the tier's pick: Q8_0: ")
    assert [(o.model_id, o.quant) for o in plan.downloads()] == [
        ("nanbeige4.1-3b", "Q8_0"),
        ("qwen3-0.6b", "Q8_0"),
    ]
    assert plan.download_bytes() == 4_180_000_000 + 805_000_000
    assert plan.warnings() == []


def test_tier_override_and_the_hardware_lines(nanobot_home: Path) -> None:
    plan = build_plan(FAKE_HARDWARE, "potato")
    assert plan.tier == Tier.POTATO and not plan.tier_detected
    assert plan.slots["main"].recommended_id == "nanbeige4.1-3b"
    lines = hardware_lines(FAKE_HARDWARE, plan.tier)
    assert lines[0] == "CPU   FakeCPU 8-core (test fake) · 8 cores, 16 threads (psutil)"
    assert "GPU0  FakeGPU 12GB (test fake) · 12.9 GB VRAM, 11.8 GB free (via nvml)" in lines
    assert "how   NVML: 1 GPU (a test fake)" in lines
    assert lines[-1] == "tier  potato (chosen; detected hybrid)"
    assert hardware_lines(FAKE_HARDWARE)[-1].startswith("tier  hybrid (detected): a GPU plus")


def test_a_quant_on_disk_that_fits_beats_a_better_download(
    nanobot_home: Path, embedded_model: Path
) -> None:
    fake_download(nanobot_home / "models", "qwen3-0.6b", "Q4_K_M", embedded_model)
    plan = build_plan(FAKE_HARDWARE)
    memory = plan.slots["memory"].choice
    assert (memory.model_id, memory.quant, memory.present) == ("qwen3-0.6b", "Q4_K_M", True)
    assert memory.size_bytes == embedded_model.stat().st_size  # the file's size, not the catalog's
    assert "qwen3-0.6b" not in [o.model_id for o in plan.downloads()]


def test_slots_on_one_model_share_one_quant(nanobot_home: Path) -> None:
    # 7.5 GiB: main (one 8K context) fits Q8_0, rlm (4 × 8K) only Q6_K; both get Q6_K.
    plan = build_plan(with_free_vram(7.5), "sweet")
    main, rlm = plan.slots["main"].choice, plan.slots["rlm"].choice
    assert main.model_id == rlm.model_id == "nanbeige4.1-3b"
    assert main.quant == rlm.quant == "Q6_K"
    assert "the same file as the other slots on it" in plan.slots["main"].why
    assert [o.model_id for o in plan.downloads()].count("nanbeige4.1-3b") == 1


def test_a_small_budget_warns_that_the_servers_do_not_fit_together(nanobot_home: Path) -> None:
    plan = build_plan(with_free_vram(7.5), "sweet")
    (warning,) = plan.warnings()
    assert warning.startswith("together the servers need about ")
    assert plan.memory_total() > 0.8 * 7.5 * GIB


def test_fall_back_moves_every_slot_on_a_model_to_the_embedded_one(nanobot_home: Path) -> None:
    plan = build_plan(FAKE_HARDWARE)
    moved = plan.fall_back("nanbeige4.1-3b", "not downloaded (offline)")
    assert moved == ["main", "rlm"]
    for name in moved:
        slot = plan.slots[name]
        assert slot.choice.model_id == EMBEDDED
        assert slot.why == "Nanbeige4.1-3B: not downloaded (offline); using the embedded model"
    assert [o.model_id for o in plan.downloads()] == ["qwen3-0.6b"]


def test_failed_server_checks_move_their_slots_to_the_embedded_model(nanobot_home: Path) -> None:
    plan = build_plan(FAKE_HARDWARE)
    checks = [
        ServerCheck(("main", "rlm"), "Nanbeige4.1-3B", False, "server exited", 1.0),
        ServerCheck(("memory",), "Qwen3-0.6B", True, "hello", 1.0),
    ]
    assert plan.fall_back_failed(checks) == ["main", "rlm"]
    assert plan.slots["main"].why == (
        "Nanbeige4.1-3B: its server failed the test; using the embedded model"
    )
    assert plan.slots["memory"].choice.model_id == "qwen3-0.6b"
    assert plan.fall_back_failed(checks) == []  # nothing left to move


def test_planned_config_keeps_the_users_settings_and_shows_a_diff(nanobot_home: Path) -> None:
    nanobot_home.mkdir()
    path = nanobot_home / "config.json"
    path.write_text('{"local": {"rlm": {"contextSize": 2048}}, "ui": {"theme": "nord"}}\n')
    existing = read_existing()
    assert existing.exists and existing.config is not None and existing.error is None
    plan = build_plan(FAKE_HARDWARE, existing=existing.config)
    assert plan.slots["rlm"].n_ctx == 2048 * 4  # the user's context, the role's parallel
    new = planned_config(plan, existing)
    assert new.ui.theme == "nord"
    assert new.local.rlm.context_size == 2048 and new.local.rlm.parallel == 4
    assert (new.local.main.model, new.local.main.quant) == ("nanbeige4.1-3b", "Q8_0")
    diff = config_diff(existing, new)
    assert diff.startswith(f"--- {path} (now)\n+++ {path} (new)\n")
    assert '+      "model": "nanbeige4.1-3b",' in diff
    assert path.read_text().startswith('{"local"')  # planning wrote nothing

    assert write_config(new, existing) == path
    again = read_existing()
    assert again.config == new
    assert config_diff(again, new) == ""  # nothing left to change


def test_a_slot_with_its_own_model_file_keeps_it(nanobot_home: Path) -> None:
    nanobot_home.mkdir()
    mine = nanobot_home / "mine.gguf"
    mine.write_bytes(b"GGUF" + bytes(1000))
    (nanobot_home / "config.json").write_text(json.dumps({"local": {"main": {"path": str(mine)}}}))
    existing = read_existing()
    plan = build_plan(FAKE_HARDWARE, existing=existing.config)
    main = plan.slots["main"]
    assert main.keeps_path and main.why == f"your own model file, kept: {mine}"
    # Nothing is fetched for main; rlm and memory (no file of their own) are filled.
    assert [o.model_id for o in plan.downloads()] == ["nanbeige4.1-3b", "qwen3-0.6b"]
    new = planned_config(plan, existing)
    assert (new.local.main.path, new.local.main.model) == (mine, None)
    assert new.local.rlm.model == "nanbeige4.1-3b" and new.local.rlm.path is None
    assert plan.to_dict()["slots"]["main"]["kept"] and plan.memory_total() > 1000
    # Another model picked by the user does replace the file.
    main.choose(main.index_of(EMBEDDED))
    assert planned_config(plan, existing).local.main.path is None
    # A file that fails its server test gives way to the embedded model, and says why.
    plan = build_plan(FAKE_HARDWARE, existing=existing.config)
    moved = plan.fall_back_failed([ServerCheck(("main",), "mine", False, "bad file", 1.0)])
    assert moved == ["main"] and plan.slots["main"].choice.model_id == EMBEDDED
    assert plan.slots["main"].why.startswith(f"your model file {mine} failed its server test")
    assert planned_config(plan, existing).local.main.path is None


def test_a_broken_config_is_replaced_and_no_config_has_no_diff(nanobot_home: Path) -> None:
    nanobot_home.mkdir()
    (nanobot_home / "config.json").write_text('{"local": {"main": {"colour": "red"}}}')
    broken = read_existing()
    assert broken.config is None and "local.main.colour: unknown setting" in (broken.error or "")
    new = planned_config(build_plan(FAKE_HARDWARE), broken)
    assert '-{"local": {"main": {"colour": "red"}}}' in config_diff(broken, new)
    missing = ExistingConfig(nanobot_home / "none.json", None, None)
    assert config_diff(missing, new) == ""


def test_plan_json_is_plain_data(nanobot_home: Path) -> None:
    data = json.loads(json.dumps(build_plan(FAKE_HARDWARE).to_dict()))
    assert data["tier"] == "hybrid" and data["slots"]["main"]["model"] == "nanbeige4.1-3b"
    assert data["slots"]["main"]["recommended"] == "qwen3-30b-a3b-2507"
    assert EMBEDDED in data["slots"]["memory"]["alternatives"]


@pytest.mark.model
async def test_server_check_on_the_embedded_model(nanobot_home: Path) -> None:
    slot = SlotConfig(model=EMBEDDED, context_size=1024)
    config = Config(local=LocalConfig(main=slot, rlm=slot, memory=slot))
    seen = []
    checks = await check_servers(config, on_check=seen.append)
    assert seen == checks
    (check,) = checks
    assert check.ok, check.detail
    assert check.slots == ("main", "rlm", "memory") and check.model == "SmolLM2-135M-Instruct"
    assert check.detail.strip() and check.seconds > 0
    assert check.line.startswith("main+rlm+memory: SmolLM2-135M-Instruct answered ")


async def test_server_check_failure_is_one_line(nanobot_home: Path) -> None:
    config = Config(runtime="/nonexistent/llama-server")
    (check,) = await check_servers(config)
    assert not check.ok
    assert "/nonexistent/llama-server" in check.detail and "\n" not in check.detail
    assert check.line.startswith("main+rlm+memory: failed: runtime ")
