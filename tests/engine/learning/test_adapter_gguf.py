"""LoRA adapter GGUFs written and read back against the embedded model's GGUF (numpy and
gguf only: no torch, no server; test_lora_serving loads them into llama.cpp)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from nanobot_tui.engine.learning.distill.adapter_gguf import (
    AdapterError,
    BaseModel,
    check_adapter,
    gguf_row_order,
    random_adapter,
    read_adapter_info,
    read_adapter_tensors,
    read_base_model,
    write_adapter,
)

V0 = "model.layers.0.self_attn.v_proj"


@pytest.fixture(scope="module")
def base(embedded_model: Path) -> BaseModel:
    return read_base_model(embedded_model)


def test_base_model_facts_of_smollm2(base: BaseModel) -> None:
    assert base.architecture == "llama"
    assert (base.block_count, base.head_count, base.head_count_kv) == (30, 9, 3)
    # (out, in) in numpy order: 3 KV heads of 64 out of a 576-wide hidden state.
    assert base.shapes["blk.0.attn_q.weight"] == (576, 576)
    assert base.shapes["blk.29.attn_k.weight"] == (192, 576)
    assert base.shapes["blk.3.ffn_down.weight"] == (576, 1536)
    assert "blk.0.attn_norm.weight" not in base.shapes  # 1-D: nothing a LoRA adapts


def test_metadata_is_what_llama_cpp_reads(base: BaseModel, tmp_path: Path) -> None:
    weights = random_adapter(base, rank=4, targets=("q_proj", "v_proj"), seed=1)
    path = tmp_path / "adapter.gguf"
    info = write_adapter(path, base, weights, alpha=8.0)

    # Read with the gguf package's own reader, not ours.
    reader = gguf.GGUFReader(path)
    fields = reader.fields
    assert fields["general.type"].contents() == "adapter"
    assert fields["general.architecture"].contents() == "llama"
    assert fields["adapter.type"].contents() == "lora"
    assert fields["adapter.lora.alpha"].types == [gguf.GGUFValueType.FLOAT32]
    assert fields["adapter.lora.alpha"].contents() == 8.0
    shapes = {tensor.name: list(tensor.shape) for tensor in reader.tensors}
    # ggml order (ne0 first): A is [in, rank], B is [rank, out]; llama.cpp checks
    # A.ne0 == W.ne0, B.ne1 == W.ne1 and A.ne1 == B.ne0.
    assert shapes["blk.7.attn_q.weight.lora_a"] == [576, 4]
    assert shapes["blk.7.attn_q.weight.lora_b"] == [4, 576]
    assert shapes["blk.7.attn_v.weight.lora_a"] == [576, 4]
    assert shapes["blk.7.attn_v.weight.lora_b"] == [4, 192]
    assert len(shapes) == 30 * 2 * 2

    assert info.path == path
    assert (info.architecture, info.rank, info.alpha, info.scaling) == ("llama", 4, 8.0, 2.0)
    assert len(info.tensors) == 60 and "blk.29.attn_v.weight" in info.tensors
    assert info.size_bytes == path.stat().st_size
    assert read_adapter_info(path) == info


def test_q_and_k_rows_are_reordered_like_the_converter(base: BaseModel, tmp_path: Path) -> None:
    weights = random_adapter(base, rank=2, targets=("q_proj", "k_proj", "v_proj"), seed=2)
    path = write_adapter(tmp_path / "a.gguf", base, weights, alpha=2.0).path
    stored = read_adapter_tensors(path)

    a_q, b_q = weights["model.layers.5.self_attn.q_proj"]
    _, b_k = weights["model.layers.5.self_attn.k_proj"]
    _, b_v = weights["model.layers.5.self_attn.v_proj"]
    # A is never touched; B of q uses the 9 query heads, B of k the 3 KV heads.
    np.testing.assert_array_equal(stored["blk.5.attn_q.weight"][0], a_q)
    np.testing.assert_array_equal(stored["blk.5.attn_q.weight"][1], gguf_row_order(b_q, 9))
    np.testing.assert_array_equal(stored["blk.5.attn_k.weight"][1], gguf_row_order(b_k, 3))
    np.testing.assert_array_equal(stored["blk.5.attn_v.weight"][1], b_v)
    assert not np.array_equal(stored["blk.5.attn_q.weight"][1], b_q)


def test_gguf_row_order_puts_rotary_pairs_side_by_side() -> None:
    # Two heads of 4 rows: HF rotates rows (0, 2) and (1, 3) of each head together;
    # llama.cpp wants each pair adjacent.
    rows = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert gguf_row_order(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    with pytest.raises(AdapterError, match="rotary heads"):
        gguf_row_order(np.zeros((6, 1)), 2)


def test_names_hf_peft_and_gguf(base: BaseModel, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 576)).astype(np.float32)
    b = rng.normal(size=(576, 3)).astype(np.float32)
    by_gguf = write_adapter(
        tmp_path / "g.gguf", base, {"blk.2.attn_q": (a, gguf_row_order(b, 9))}, alpha=3
    )
    by_peft = write_adapter(
        tmp_path / "p.gguf", base, {"base_model.model.model.layers.2.self_attn.q_proj": (a, b)}, 3
    )
    assert by_gguf.tensors == by_peft.tensors == ("blk.2.attn_q.weight",)
    # A GGUF name is taken as already in GGUF row order; the HF one is reordered to it.
    np.testing.assert_array_equal(
        read_adapter_tensors(by_gguf.path)["blk.2.attn_q.weight"][1],
        read_adapter_tensors(by_peft.path)["blk.2.attn_q.weight"][1],
    )


def test_weights_that_do_not_fit_the_base(base: BaseModel, tmp_path: Path) -> None:
    a = np.zeros((4, 576), np.float32)
    path = tmp_path / "bad.gguf"
    with pytest.raises(AdapterError, match=r"model\.layers\.0\.self_attn\.k_proj.*blk\.0\.attn_k"):
        write_adapter(path, base, {"model.layers.0.self_attn.k_proj": (a, np.zeros((576, 4)))}, 4)
    with pytest.raises(AdapterError, match="rank 4, B 5"):
        write_adapter(path, base, {"blk.0.attn_v": (a, np.zeros((192, 5)))}, 4)
    with pytest.raises(AdapterError, match=r"model\.layers\.99\.self_attn\.q_proj"):
        write_adapter(path, base, {"model.layers.99.self_attn.q_proj": (a, a.T)}, 4)
    with pytest.raises(AdapterError, match="embedding adapters"):
        write_adapter(path, base, {"token_embd.weight": (a, a.T)}, 4)
    with pytest.raises(AdapterError, match="unknown LoRA target"):
        random_adapter(base, targets=("qkv",))
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a readable GGUF"),
        (b"PK\x03\x04 a zip, not a GGUF", "not a readable GGUF"),
        ("truncated", "not a readable GGUF"),
        ("a model", "general.type is 'model'"),
    ],
)
def test_a_malformed_adapter_file_is_one_line_naming_it(
    base: BaseModel, tmp_path: Path, content: bytes | str, reason: str
) -> None:
    path = tmp_path / "odd\nname.gguf"
    if content == "truncated":
        good = write_adapter(tmp_path / "good.gguf", base, random_adapter(base, rank=2), 2)
        path.write_bytes(good.path.read_bytes()[:3000])
    elif content == "a model":
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_tensor("blk.0.attn_q.weight", np.zeros((2, 2), np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(AdapterError) as caught:
        read_adapter_info(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path).replace("\n", " ") in message
    assert reason in message


def test_a_missing_base_model(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=r"base model .*nowhere\.gguf: no such file"):
        read_base_model(tmp_path / "nowhere.gguf")


def test_check_adapter_against_the_base(base: BaseModel, tmp_path: Path) -> None:
    weights = random_adapter(base, rank=2, targets=("v_proj",))
    fits = write_adapter(tmp_path / "fits.gguf", base, weights, alpha=2.0)
    assert check_adapter(fits.path, base.path) == fits

    # Made for another architecture of the same shapes: llama.cpp refuses it at load.
    qwen = replace(base, architecture="qwen2")
    other = write_adapter(tmp_path / "qwen.gguf", qwen, {"blk.0.attn_v": weights[V0]}, 2.0)
    with pytest.raises(AdapterError, match=r"qwen\.gguf: made for a qwen2 model, .* is llama"):
        check_adapter(other.path, base)

    # A tensor the base does not have, and one of another shape.
    bigger = replace(base, shapes={**base.shapes, "blk.30.attn_v.weight": (192, 576)})
    extra = write_adapter(tmp_path / "extra.gguf", bigger, {"blk.30.attn_v": weights[V0]}, 2.0)
    with pytest.raises(AdapterError, match=r"extra\.gguf: .* has no tensor blk\.30\.attn_v"):
        check_adapter(extra.path, base)
    wider = replace(base, shapes={**base.shapes, "blk.0.attn_v.weight": (192, 1536)})
    a, b = np.zeros((2, 1536), np.float32), np.zeros((192, 2), np.float32)
    wide = write_adapter(tmp_path / "wide.gguf", wider, {"blk.0.attn_v": (a, b)}, 2.0)
    with pytest.raises(AdapterError, match=r"wide\.gguf: blk\.0\.attn_v\.weight is 192x1536"):
        check_adapter(wide.path, base)
