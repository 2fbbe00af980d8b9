"""Memory estimates and quant choice, against real GGUF files (the embedded model and tiny
files written here with gguf.GGUFWriter)."""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import pytest

from nanobot_tui.models import sizing
from nanobot_tui.models.catalog import EMBEDDED_ID, Quant, get, model_file
from nanobot_tui.models.sizing import (
    COMPUTE_BUFFER_BYTES,
    FIT_FRACTION,
    KV_CACHE_TYPE,
    KV_POOL_WINDOWS,
    GgufError,
    choose_quant,
    estimate,
    estimate_bytes,
    kv_cache_bytes,
    kv_pool_cells,
    read_gguf_facts,
)


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    block_count: int | None = 4,
    head_count: int = 8,
    head_count_kv: int | None = 2,
    embedding_length: int = 256,
    key_length: int | None = None,
    context_length: int = 2048,
    tensor_elements: int = 16,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> Path:
    """A tiny but valid GGUF with known metadata and one f32 tensor."""
    writer = gguf.GGUFWriter(path, arch, endianess=endianess)
    if block_count is not None:
        writer.add_block_count(block_count)
    writer.add_context_length(context_length)
    writer.add_embedding_length(embedding_length)
    writer.add_head_count(head_count)
    if head_count_kv is not None:
        writer.add_head_count_kv(head_count_kv)
    if key_length is not None:
        writer.add_key_length(key_length)
    # A tokenizer-sized string array, so the parser's skipping path is exercised too.
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_tensor("weight", np.arange(tensor_elements, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- reading GGUF metadata ------------------------------------------------------------------


def test_read_facts_of_the_embedded_model(
    embedded_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    kept: dict[str, object] = {}
    read_string, parse = sizing._Cursor.string, sizing._parse

    def string(cursor: sizing._Cursor, keep: bool) -> str | None:
        text = read_string(cursor, keep)
        if text is not None:
            decoded.append(text)
        return text

    def parse_and_keep(buf: bytes, file_size: int) -> tuple[dict[str, object], int]:
        meta, required = parse(buf, file_size)
        kept.update(meta)
        return meta, required

    monkeypatch.setattr(sizing._Cursor, "string", string)
    monkeypatch.setattr(sizing, "_parse", parse_and_keep)
    sizing._read_gguf_facts_cached.cache_clear()  # parse the file here, not recall it
    facts = read_gguf_facts(embedded_model)
    # SmolLM2-135M as the file itself says: llama, 30 blocks, 9 heads over 576 dims, 3 KV heads.
    assert facts.architecture == "llama"
    assert facts.n_layer == 30
    assert facts.n_head_kv == 3
    assert facts.head_dim == 64
    assert facts.context_length == 8192
    assert facts.file_size == embedded_model.stat().st_size == 98_362_432
    # The header parse decodes the keys and the few values it needs and skips the 49k-entry
    # tokenizer arrays, which gguf.GGUFReader decodes in full (benchmarks/gguf_facts times it).
    assert "tokenizer.ggml.tokens" in decoded and len(decoded) < 100
    arrays = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"}
    assert "llama.block_count" in kept and not arrays & kept.keys()


def test_embedded_facts_match_the_catalog(embedded_model: Path) -> None:
    facts = read_gguf_facts(embedded_model)
    arch = get(EMBEDDED_ID).arch
    assert (facts.n_layer, facts.n_head_kv, facts.head_dim, facts.context_length) == (
        arch.n_layer,
        arch.n_head_kv,
        arch.head_dim,
        arch.context_length,
    )


def test_read_facts_of_a_written_gguf(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    facts = read_gguf_facts(path)
    assert facts.architecture == "llama"
    assert facts.n_layer == 4
    assert facts.n_head_kv == 2
    assert facts.head_dim == 256 // 8
    assert facts.context_length == 2048
    assert facts.file_size == path.stat().st_size


def test_facts_agree_with_gguf_reader(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf", arch="qwen3", block_count=7, head_count_kv=4)
    facts = read_gguf_facts(path)
    fields = gguf.GGUFReader(path).fields
    assert facts.architecture == fields["general.architecture"].contents()
    assert facts.n_layer == fields["qwen3.block_count"].contents()
    assert facts.n_head_kv == fields["qwen3.attention.head_count_kv"].contents()
    assert facts.context_length == fields["qwen3.context_length"].contents()


def test_key_length_wins_over_embedding_per_head(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "k.gguf", embedding_length=1024, head_count=16, key_length=128)
    assert read_gguf_facts(path).head_dim == 128


def test_missing_head_count_kv_means_multi_head(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "mha.gguf", head_count=8, head_count_kv=None)
    assert read_gguf_facts(path).n_head_kv == 8


def test_big_endian_gguf(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG)
    facts = read_gguf_facts(path)
    assert (facts.n_layer, facts.n_head_kv, facts.head_dim) == (4, 2, 32)


def _assert_one_line_naming(error: pytest.ExceptionInfo[GgufError], path: Path) -> str:
    message = str(error.value)
    assert path.name in message
    assert "\n" not in message
    assert error.value.__cause__ is None  # no chained traceback from the internals
    return message


def test_truncated_header_is_a_clear_error(embedded_model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut-short.gguf"
    with embedded_model.open("rb") as fh:
        cut.write_bytes(fh.read(1000))
    with pytest.raises(GgufError) as info:
        read_gguf_facts(cut)
    assert "truncated" in _assert_one_line_naming(info, cut)


def test_truncated_tensor_data_is_a_clear_error(tmp_path: Path) -> None:
    # A download cut short after the header: the metadata reads fine, the tensors are missing.
    full = write_gguf(tmp_path / "full.gguf", tensor_elements=4096)
    cut = tmp_path / "partial.gguf"
    cut.write_bytes(full.read_bytes()[:-4000])
    assert read_gguf_facts(full).n_layer == 4
    with pytest.raises(GgufError) as info:
        read_gguf_facts(cut)
    assert "truncated" in _assert_one_line_naming(info, cut)


def test_text_file_is_not_gguf(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("these are not the weights you are looking for\n")
    with pytest.raises(GgufError) as info:
        read_gguf_facts(text)
    assert "not a GGUF" in _assert_one_line_naming(info, text)


@pytest.mark.parametrize("kind", ["empty", "missing", "directory", "tiny"])
def test_other_bad_paths(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.gguf"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "tiny":
        path.write_bytes(b"GGU")
    with pytest.raises(GgufError) as info:
        read_gguf_facts(path)
    _assert_one_line_naming(info, path)
    assert isinstance(info.value, ValueError)


def test_missing_required_key(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "noblocks.gguf", block_count=None)
    with pytest.raises(GgufError, match=r"llama\.block_count") as info:
        read_gguf_facts(path)
    _assert_one_line_naming(info, path)


# --- estimates ------------------------------------------------------------------------------


def test_kv_cache_bytes_by_hand() -> None:
    # SmolLM2-135M at 8192 tokens, f16: 2 × 30 × 3 × 64 × 8192 × 2.
    assert kv_cache_bytes(30, 3, 64, 8192) == 188_743_680
    # Qwen3-30B-A3B at 8192 tokens: 2 × 48 × 4 × 128 × 8192 × 2 = 768 MiB.
    assert kv_cache_bytes(48, 4, 128, 8192) == 805_306_368 == 768 * 1024 * 1024
    # A q8_0 cache (1 byte) halves it; no context, no cache.
    assert kv_cache_bytes(48, 4, 128, 8192, bytes_per_element=1) == 402_653_184
    assert kv_cache_bytes(48, 4, 128, 0) == 0


def test_kv_cache_bytes_of_the_planned_type_and_pool() -> None:
    """What the app's default server really keeps: q8_0 (34 bytes a block of 32) in one pool
    of two 8192-token windows for its six slots, not six f16 windows."""
    assert kv_cache_bytes(30, 3, 64, 8192, cache_type="f16") == 188_743_680
    assert kv_cache_bytes(30, 3, 64, 8192, cache_type="q8_0") == 188_743_680 * 34 // 64
    assert kv_cache_bytes(30, 3, 64, 8192, cache_type="q4_0") == 188_743_680 * 18 // 64
    assert KV_CACHE_TYPE == "q8_0"
    assert kv_pool_cells(8192, 6) == 8192 * KV_POOL_WINDOWS == 16384
    assert kv_pool_cells(8192, 1) == 8192 and kv_pool_cells(4096, 2) == 8192
    planned = kv_cache_bytes(30, 3, 64, kv_pool_cells(8192, 6), cache_type=KV_CACHE_TYPE)
    assert kv_cache_bytes(30, 3, 64, 8192 * 6) / planned > 5.6  # the old f16 x 6 windows


def test_estimate_from_the_catalog() -> None:
    model = get("qwen3-30b-a3b-2507")
    quant = model.quant("Q4_K_M")
    expected = quant.size_bytes + 805_306_368 + COMPUTE_BUFFER_BYTES
    assert estimate_bytes(model, quant, 8192, None) == expected
    # A path that does not exist falls back to the catalog too.
    assert estimate_bytes(model, quant, 8192, Path("/nonexistent/x.gguf")) == expected
    assert not estimate(model, quant, 8192, None).from_file


def test_estimate_reads_the_file_when_present(embedded_model: Path, tmp_path: Path) -> None:
    model = get(EMBEDDED_ID)
    quant = model.quants[0]
    est = estimate(model, quant, 4096, embedded_model)
    assert est.from_file
    assert est.weights_bytes == embedded_model.stat().st_size
    assert est.kv_bytes == kv_cache_bytes(30, 3, 64, 4096)
    assert est.total == estimate_bytes(model, quant, 4096, embedded_model)

    # A file that differs from the catalog: its own size and shape are what count.
    tiny = write_gguf(tmp_path / "tiny.gguf", block_count=2, head_count_kv=1, head_count=4)
    big = get("qwen3-30b-a3b-2507")
    from_file = estimate_bytes(big, big.quants[0], 1000, tiny)
    assert from_file == tiny.stat().st_size + kv_cache_bytes(2, 1, 64, 1000) + COMPUTE_BUFFER_BYTES


def _needed(model_id: str, quant_name: str, n_ctx: int) -> int:
    model = get(model_id)
    return estimate_bytes(model, model.quant(quant_name), n_ctx, None)


def test_choose_quant_large_budget_takes_q8() -> None:
    choice = choose_quant(get("qwen3-30b-a3b-2507"), 8192, 64 * 10**9)
    assert choice is not None
    assert choice.quant.name == "Q8_0"
    assert choice.budget_bytes == 64 * 10**9
    assert choice.estimate_bytes == _needed("qwen3-30b-a3b-2507", "Q8_0", 8192)
    assert choice.estimate_bytes <= FIT_FRACTION * choice.budget_bytes


def test_choose_quant_tighter_budget_takes_a_smaller_quant() -> None:
    model = get("qwen3-30b-a3b-2507")
    # Just enough for Q4_K_M at 80 % (a byte over, against float rounding), not for Q5_K_M.
    budget = math.ceil(_needed(model.id, "Q4_K_M", 8192) / FIT_FRACTION) + 1
    assert _needed(model.id, "Q5_K_M", 8192) > FIT_FRACTION * budget
    choice = choose_quant(model, 8192, budget)
    assert choice is not None
    assert choice.quant.name == "Q4_K_M"
    assert choice.reason.startswith("Q4_K_M: 18.6 GB weights + 805.3 MB KV for 8192 tokens")
    assert "fits in 80% of" in choice.reason
    # A few bytes less and Q4_K_M no longer fits: the next one down is taken.
    smaller = choose_quant(model, 8192, budget - 3)
    assert smaller is not None and smaller.quant.name == "Q3_K_M"


def test_choose_quant_context_matters() -> None:
    model = get("nanbeige4.1-3b")
    budget = 8 * 10**9
    short = choose_quant(model, 4096, budget)
    long = choose_quant(model, 131_072, budget)
    assert short is not None and short.quant.name == "Q8_0"
    # 128K tokens of KV is 16 GiB for this model: nothing fits in 8 GB.
    assert long is None


def test_choose_quant_tiny_budget_is_none() -> None:
    assert choose_quant(get("qwen3-0.6b"), 8192, 500 * 10**6) is None
    assert choose_quant(get(EMBEDDED_ID), 8192, 100 * 10**6) is None


def test_choose_quant_uses_files_on_disk(tmp_path: Path) -> None:
    model = get("qwen3-0.6b")
    q8 = model.quant("Q8_0")
    # A budget where the catalog's Q8_0 (805 MB) does not fit but Q4_K_M does.
    budget = math.ceil(_needed(model.id, "Q4_K_M", 2048) / FIT_FRACTION) + 1
    assert choose_quant(model, 2048, budget, tmp_path).quant.name == "Q4_K_M"

    # With a (tiny) Q8_0 file on disk its real size counts, and now Q8_0 fits.
    target = model_file(model, q8, tmp_path)
    target.parent.mkdir(parents=True)
    write_gguf(target, arch="qwen3", block_count=28, head_count=16, head_count_kv=8)
    choice = choose_quant(model, 2048, budget, tmp_path)
    assert choice is not None and choice.quant == q8
    assert choice.estimate_bytes == estimate_bytes(model, q8, 2048, target)


def test_choose_quant_survives_a_broken_local_file(tmp_path: Path) -> None:
    model = get("qwen3-0.6b")
    q8 = model.quant("Q8_0")
    target = model_file(model, q8, tmp_path)
    target.parent.mkdir(parents=True)
    target.write_text("<html>rate limited</html>")
    choice = choose_quant(model, 2048, 10 * 10**9, tmp_path)
    assert choice is not None and choice.quant == q8
    assert choice.estimate_bytes == _needed(model.id, "Q8_0", 2048)
    assert "unreadable" in choice.reason


def test_choose_quant_for_the_embedded_model_reads_its_file(embedded_model: Path) -> None:
    model = get(EMBEDDED_ID)
    choice = choose_quant(model, 8192, 2 * 10**9)
    assert choice is not None
    assert choice.quant.name == "Q4_1"
    assert choice.estimate_bytes == estimate_bytes(model, model.quants[0], 8192, embedded_model)
    assert choice.reason.startswith("Q4_1: 98.4 MB weights + 188.7 MB KV for 8192 tokens")


def test_quant_sizes_drive_the_estimate() -> None:
    # Guard against estimate_bytes ignoring the quant it is given.
    model = get("nanbeige4.1-3b")
    small = Quant("X", "x.gguf", 1_000)
    assert estimate_bytes(model, small, 0, None) == 1_000 + COMPUTE_BUFFER_BYTES
