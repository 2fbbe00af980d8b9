"""From config to model files and server specs, with fake downloads made of the real GGUF."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from nanobot_tui.config import Config, default_config
from nanobot_tui.engine.serving.manager import server_args
from nanobot_tui.engine.serving.slots import (
    KV_CACHE_TYPE,
    SLOT_NAMES,
    ResolvedSlot,
    plan_servers,
    resolve_slots,
)
from nanobot_tui.hardware import Tier
from nanobot_tui.models import catalog
from tests.conftest import fake_download

SMOL = "SmolLM2-135M-Instruct"
TRAINED_CTX = 8192  # SmolLM2-135M's trained context, read from the file


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def config_of(local: dict[str, object], **rest: object) -> Config:
    return Config.model_validate({"local": local, **rest})


def assert_all_on(resolved: dict[str, ResolvedSlot], path: Path) -> None:
    assert {name: slot.path for name, slot in resolved.items()} == dict.fromkeys(SLOT_NAMES, path)


# --- nothing downloaded -------------------------------------------------------------------


def test_defaults_with_nothing_downloaded_run_on_the_embedded_model(
    models_dir: Path, embedded_model: Path
) -> None:
    resolved = resolve_slots(default_config(Tier.POTATO), models_dir)
    assert list(resolved) == list(SLOT_NAMES)
    assert_all_on(resolved, embedded_model)
    for slot in resolved.values():
        assert slot.model_id == catalog.EMBEDDED_ID
        assert slot.display_name == SMOL
        assert slot.quant == "Q4_1"
        assert slot.is_fallback
    # Each note says what is missing and what is used instead.
    assert resolved["main"].note == (
        "nanbeige4.1-3b is not downloaded (nanobot setup fetches it); using " + SMOL
    )
    assert resolved["rlm"].note.startswith("nanbeige4.1-3b is not downloaded")
    assert resolved["memory"].note.startswith("qwen3-0.6b is not downloaded")
    assert resolved["main"].wanted == "nanbeige4.1-3b"
    # The slot's own settings survive the fallback.
    assert (resolved["rlm"].parallel, resolved["rlm"].temperature) == (4, 0.3)
    assert resolved["memory"].context_size == 4096


def test_one_shared_server_with_summed_parallel(models_dir: Path, embedded_model: Path) -> None:
    specs = plan_servers(resolve_slots(default_config(Tier.POTATO), models_dir))
    assert len(specs) == 1
    spec = specs[0]
    assert spec.slots == ("main", "rlm", "memory")
    assert spec.label == "main+rlm+memory"
    assert spec.model_path == embedded_model
    assert spec.model_id == catalog.EMBEDDED_ID
    assert spec.parallel == 1 + 4 + 1
    # Per-request context is the largest slot's (main and rlm: 8192); the six slots share
    # one KV pool of two such windows.
    assert (spec.window, spec.context_size, spec.kv_unified) == (8192, 8192 * 2, True)
    assert spec.size_bytes == embedded_model.stat().st_size
    assert spec.gpu_layers == -1


def test_default_server_shares_a_q8_0_pool_of_two_windows(
    models_dir: Path, embedded_model: Path
) -> None:
    """The shared default server: six slots of up to 8192 tokens each drawing from one
    unified KV pool of two windows, in q8_0 (half of f16's memory) with the flash attention
    a quantised V cache needs. Its client admits requests into the pool (test_servers)."""
    (spec,) = plan_servers(resolve_slots(default_config(Tier.POTATO), models_dir))
    assert spec.kv_cache_type == KV_CACHE_TYPE == "q8_0"
    args = server_args(spec, port=1234, threads=2)
    flag = {name: args[args.index(name) + 1] for name in args if name.startswith("--")}
    assert (flag["--ctx-size"], flag["--parallel"]) == (str(8192 * 2), "6")
    assert flag["--cache-type-k"] == flag["--cache-type-v"] == "q8_0"
    assert flag["--flash-attn"] == "on"
    assert "--kv-unified" in args and flag["--kv-unified-per-slot"] == "8192"


def test_a_server_of_two_slots_keeps_a_buffer_each(models_dir: Path) -> None:
    """Up to two slots, a pool would save nothing: every slot keeps its own window."""
    config = config_of({"main": {"model": catalog.EMBEDDED_ID, "contextSize": 2048, "parallel": 1}})
    resolved = resolve_slots(config, models_dir)
    rlm = replace(resolved["rlm"], parallel=1, context_size=2048)
    two = {"main": resolved["main"], "rlm": rlm}
    (spec,) = plan_servers(two)  # type: ignore[arg-type]
    assert (spec.parallel, spec.context_size, spec.kv_unified) == (2, 2048 * 2, False)
    assert "--kv-unified" not in server_args(spec, port=1234, threads=2)


def test_context_is_capped_at_the_models_trained_context(models_dir: Path) -> None:
    config = config_of(
        {"main": {"model": catalog.EMBEDDED_ID, "contextSize": 32768, "parallel": 2}}
    )
    resolved = resolve_slots(config, models_dir)
    assert resolved["main"].context_size == 32768  # asked for, kept on the slot
    (spec,) = plan_servers(resolved)
    assert spec.parallel == 2 + 1 + 1
    assert (spec.window, spec.context_size) == (TRAINED_CTX, TRAINED_CTX * 2)


def test_context_below_the_cap_is_kept(models_dir: Path) -> None:
    config = config_of(
        {
            "main": {"model": catalog.EMBEDDED_ID, "contextSize": 1024},
            "rlm": {"contextSize": 2048, "parallel": 3},
            "memory": {"contextSize": 512},
        }
    )
    (spec,) = plan_servers(resolve_slots(config, models_dir))
    assert (spec.parallel, spec.window, spec.context_size) == (5, 2048, 2048 * 2)


def test_slot_without_a_model_shares_mains_without_a_note(
    models_dir: Path, embedded_model: Path
) -> None:
    config = config_of({"main": {"model": catalog.EMBEDDED_ID}})
    resolved = resolve_slots(config, models_dir)
    assert_all_on(resolved, embedded_model)
    for slot in resolved.values():
        assert slot.note == ""
        assert not slot.is_fallback
    assert resolved["rlm"].wanted == "main's model"


def test_an_empty_config_runs_everything_on_the_embedded_model_quietly(
    models_dir: Path, embedded_model: Path
) -> None:
    resolved = resolve_slots(Config(), models_dir)
    assert_all_on(resolved, embedded_model)
    assert [s.note for s in resolved.values()] == ["", "", ""]


# --- with downloads -----------------------------------------------------------------------


def test_downloaded_model_is_used_and_gets_its_own_server(
    models_dir: Path, embedded_model: Path
) -> None:
    big = embedded_model.stat().st_size * 3
    rlm_file = fake_download(models_dir, "nanbeige4.1-3b", "Q4_K_M", embedded_model, size=big)
    config = config_of(
        {
            "main": {"model": catalog.EMBEDDED_ID},
            "rlm": {"model": "nanbeige4.1-3b", "parallel": 4},
            "memory": {},
        }
    )
    resolved = resolve_slots(config, models_dir)
    rlm = resolved["rlm"]
    assert rlm.path == rlm_file == models_dir / "nanbeige4.1-3b" / "Nanbeige4.1-3B.Q4_K_M.gguf"
    assert (rlm.model_id, rlm.display_name, rlm.quant, rlm.note) == (
        "nanbeige4.1-3b",
        "Nanbeige4.1-3B",
        "Q4_K_M",
        "",
    )
    assert resolved["memory"].path == embedded_model  # main's

    specs = plan_servers(resolved)
    # The largest file first, though main (first in config order) is on the small one.
    assert [s.slots for s in specs] == [("rlm",), ("main", "memory")]
    assert [s.model_path for s in specs] == [rlm_file, embedded_model]
    assert specs[0].size_bytes == big
    assert specs[0].size_bytes > specs[1].size_bytes
    assert (specs[0].parallel, specs[0].context_size) == (4, 8192 * 2)  # a pool of two
    assert (specs[1].parallel, specs[1].context_size) == (2, 8192 * 2)  # a buffer each


def test_best_present_quant_wins_unless_one_is_named(
    models_dir: Path, embedded_model: Path
) -> None:
    for quant in ("Q4_K_M", "Q6_K"):
        fake_download(models_dir, "qwen3-0.6b", quant, embedded_model)
    resolved = resolve_slots(config_of({"memory": {"model": "qwen3-0.6b"}}), models_dir)
    assert resolved["memory"].quant == "Q6_K"  # catalog order: best first
    assert resolved["memory"].path == models_dir / "qwen3-0.6b" / "Qwen3-0.6B-Q6_K.gguf"

    named = config_of({"memory": {"model": "qwen3-0.6b", "quant": "Q4_K_M"}})
    assert resolve_slots(named, models_dir)["memory"].quant == "Q4_K_M"


def test_named_quant_that_is_not_present_falls_back(models_dir: Path, embedded_model: Path) -> None:
    fake_download(models_dir, "qwen3-0.6b", "Q4_K_M", embedded_model)
    config = config_of({"memory": {"model": "qwen3-0.6b", "quant": "Q8_0"}})
    memory = resolve_slots(config, models_dir)["memory"]
    assert memory.path == embedded_model
    assert memory.model_id == catalog.EMBEDDED_ID
    assert memory.note == (
        "qwen3-0.6b Q8_0 is not downloaded (nanobot setup fetches it); using " + SMOL
    )


def test_explicit_path_that_is_missing_falls_back_and_says_so(
    models_dir: Path, embedded_model: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "my-model.gguf"
    config = config_of({"main": {"path": str(missing)}})
    resolved = resolve_slots(config, models_dir)
    main = resolved["main"]
    assert main.path == embedded_model
    assert main.note == f"file {missing} not found; using {SMOL}"
    assert main.wanted == str(missing)
    # rlm and memory follow main to the same place, quietly.
    assert resolved["rlm"].path == embedded_model and resolved["rlm"].note == ""


def test_explicit_path_that_exists_is_a_custom_model(
    models_dir: Path, embedded_model: Path, tmp_path: Path
) -> None:
    own = tmp_path / "mine.gguf"
    own.symlink_to(embedded_model)
    resolved = resolve_slots(config_of({"main": {"path": str(own)}}), models_dir)
    main = resolved["main"]
    assert (main.model_id, main.display_name, main.path, main.quant, main.note) == (
        "custom",
        "mine.gguf",
        own,
        None,
        "",
    )
    (spec,) = plan_servers(resolved)
    assert spec.model_id == "custom" and spec.model_path == own


def test_only_one_model_anywhere_serves_every_slot(models_dir: Path, embedded_model: Path) -> None:
    # Beast wants three different models; only rlm's is on disk.
    rlm_file = fake_download(models_dir, "nanbeige4.1-3b", "Q8_0", embedded_model)
    resolved = resolve_slots(default_config(Tier.BEAST), models_dir)
    assert_all_on(resolved, rlm_file)
    assert resolved["rlm"].note == ""
    assert resolved["main"].note == (
        "qwen3-30b-a3b-2507 is not downloaded (nanobot setup fetches it); using Nanbeige4.1-3B"
    )
    assert resolved["memory"].note.endswith("; using Nanbeige4.1-3B")

    (spec,) = plan_servers(resolved)
    assert spec.slots == ("main", "rlm", "memory")
    assert spec.model_path == rlm_file
    assert spec.parallel == 6


def test_mains_model_is_preferred_over_others_as_fallback(
    models_dir: Path, embedded_model: Path
) -> None:
    main_file = fake_download(models_dir, "qwen3-30b-a3b-2507", "Q3_K_M", embedded_model)
    fake_download(models_dir, "qwen3-0.6b", "Q8_0", embedded_model)
    # rlm wants nanbeige, which is missing: it goes to main's, not memory's.
    resolved = resolve_slots(default_config(Tier.POWER), models_dir)
    assert resolved["rlm"].path == main_file
    assert resolved["rlm"].note.endswith("; using Qwen3-30B-A3B-Instruct-2507")
    assert len(plan_servers(resolved)) == 2


def test_no_model_anywhere_leaves_the_slot_empty(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the embedded wheel there is nothing to fall back to: no path, no server.
    monkeypatch.setattr(catalog, "embedded_model_path", lambda: None)
    resolved = resolve_slots(default_config(Tier.POTATO), models_dir)
    for slot in resolved.values():
        assert slot.path is None
        assert slot.display_name == "none"
        assert "is not downloaded" in slot.note
    assert plan_servers(resolved) == []

    bare = resolve_slots(Config(), models_dir)
    assert bare["rlm"].path is None
    assert bare["rlm"].note == "no model available"


def test_shared_server_keeps_all_layers_on_the_gpu(models_dir: Path) -> None:
    config = config_of(
        {"main": {"model": catalog.EMBEDDED_ID, "gpuLayers": -1}, "rlm": {"gpuLayers": 10}}
    )
    (spec,) = plan_servers(resolve_slots(config, models_dir))
    assert spec.gpu_layers == -1
