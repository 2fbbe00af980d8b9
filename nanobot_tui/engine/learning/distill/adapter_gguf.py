"""LoRA adapters as llama.cpp loads them: one GGUF file beside the base model's.

The format is llama.cpp's (src/llama-adapter.cpp reads it, convert_lora_to_gguf.py writes
it): metadata `general.type = "adapter"`, `general.architecture` equal to the base
model's, `adapter.type = "lora"` and `adapter.lora.alpha` (float32); for every adapted
weight two tensors named after the base tensor, `<name>.lora_a` and `<name>.lora_b`.
In numpy (row-major) terms, for a base weight of shape (out, in), A is (rank, in) and B is
(out, rank), peft's own shapes; llama.cpp adds `scale * alpha / rank * B @ A` to it.

    weights = {"model.layers.0.self_attn.q_proj": (a, b), ...}   # or "blk.0.attn_q.weight"
    info = write_adapter(path, base_gguf, weights, alpha=16.0)
    info = read_adapter_info(path)   # AdapterInfo: architecture, rank, alpha, tensors, bytes

Hugging Face module names are mapped to GGUF tensor names with the gguf package's table.
For the `llama` architecture the HF->GGUF converter reorders the rows of q_proj and k_proj
(rotary pairs (i, i + d/2) of each head become adjacent), so B of those two is reordered
the same way; weights named by their GGUF tensor name are taken as already in GGUF order.
Only numpy and gguf are needed (no torch), so tests write random adapters.
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nanobot_tui.errors import NanobotError

__all__ = [
    "AdapterError",
    "AdapterInfo",
    "BaseModel",
    "LoraWeights",
    "check_adapter",
    "gguf_row_order",
    "random_adapter",
    "read_adapter_info",
    "read_adapter_shapes",
    "read_adapter_tensors",
    "read_base_model",
    "write_adapter",
]

LoraWeights = Mapping[str, tuple[np.ndarray, np.ndarray]]

# HF module name suffixes -> the block they sit in, for `random_adapter`'s short targets.
_HF_BLOCKS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_PEFT_PREFIX = "base_model.model."
# Architectures whose converter reorders q/k rows for llama.cpp's rotary layout.
_PERMUTED_ARCHS = frozenset({"llama"})


class AdapterError(NanobotError):
    """An adapter file (or the weights for one) that llama.cpp could not use."""


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """What an adapter file says about itself."""

    path: Path
    architecture: str  # the base model's, e.g. "llama"
    rank: int
    alpha: float
    tensors: tuple[str, ...]  # the base tensors it adapts, e.g. "blk.0.attn_q.weight"
    size_bytes: int

    @property
    def scaling(self) -> float:
        """What llama.cpp multiplies B @ A by at scale 1 (alpha / rank; 1 when alpha is 0)."""
        return self.alpha / self.rank if self.alpha else 1.0


@dataclass(frozen=True, slots=True)
class BaseModel:
    """The facts of a base GGUF that an adapter must agree with."""

    path: Path
    architecture: str
    block_count: int
    head_count: int
    head_count_kv: int
    shapes: Mapping[str, tuple[int, int]]  # 2-D tensors: name -> (out, in), numpy order


def read_base_model(path: Path | str) -> BaseModel:
    """The architecture, head counts and 2-D tensor shapes of a base model GGUF."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"base model {path}: no such file")
    try:
        stat = path.stat()
        return _read_base_model_cached(path, stat.st_size, stat.st_mtime_ns)
    except (OSError, ValueError, struct.error) as exc:
        raise AdapterError(f"base model {path}: not a readable GGUF file ({exc})") from None


@functools.lru_cache(maxsize=8)
def _read_base_model_cached(path: Path, _size: int, _mtime_ns: int) -> BaseModel:
    meta, tensors = _read_header(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ValueError("no general.architecture")
    heads = _count(meta, f"{arch}.attention.head_count", 0)
    return BaseModel(
        path=path,
        architecture=arch,
        block_count=_count(meta, f"{arch}.block_count", 0),
        head_count=heads,
        # Per-layer head counts (an array) are not read: such models are not LLaMA.
        head_count_kv=_count(meta, f"{arch}.attention.head_count_kv", heads),
        shapes={name: (ne[1], ne[0]) for name, ne in tensors if len(ne) == 2},
    )


def _count(meta: Mapping[str, object], key: str, default: int) -> int:
    value = meta.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} is not an integer")
    return value


def gguf_row_order(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of an HF q_proj/k_proj output (B of a LoRA pair) in llama.cpp's order.

    HF rotates the pairs (i, i + d/2) of each head's d outputs; the GGUF holds each pair
    next to the other, so row i + d/2 of a head follows row i.
    """
    out = rows.shape[0]
    if n_head <= 0 or out % (2 * n_head):
        raise AdapterError(f"cannot reorder {out} rows for {n_head} rotary heads")
    half = out // n_head // 2
    return rows.reshape(n_head, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def write_adapter(
    path: Path | str,
    base: BaseModel | Path | str,
    weights: LoraWeights,
    alpha: float,
    dtype: str = "f32",
) -> AdapterInfo:
    """Write `weights` ({module or tensor name: (A, B)}) as a llama.cpp LoRA adapter for
    `base`; the file appears whole or not at all. Raises AdapterError naming the tensor
    when a name or shape does not fit the base model."""
    path = Path(path)
    model = base if isinstance(base, BaseModel) else read_base_model(base)
    if dtype not in ("f32", "f16"):
        raise AdapterError(f"adapter {path}: dtype must be f32 or f16, not {dtype!r}")
    if not weights:
        raise AdapterError(f"adapter {path}: no weights to write")
    np_dtype = np.float32 if dtype == "f32" else np.float16
    tensors = _gguf_tensors(model, weights)
    ranks = {a.shape[0] for a, _ in tensors.values()}
    if len(ranks) != 1:
        raise AdapterError(f"adapter {path}: weights of different ranks {sorted(ranks)}")

    import gguf  # imported where adapters are read or written, not with this module

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp_name, model.architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        for name, (a, b) in sorted(tensors.items()):
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np_dtype))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np_dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return read_adapter_info(path)


def read_adapter_info(path: Path | str) -> AdapterInfo:
    """An adapter file's metadata; AdapterError (naming the file) if llama.cpp would
    refuse it for what the file itself holds (the base model is checked at load)."""
    path = Path(path)
    reader = _open_gguf(path, "adapter")
    try:
        if (kind := _field_str(reader, "general.type")) != "adapter":
            raise AdapterError(f"adapter {path}: general.type is {kind!r}, not 'adapter'")
        if (adapter_type := _field_str(reader, "adapter.type")) != "lora":
            raise AdapterError(f"adapter {path}: adapter.type is {adapter_type!r}, not 'lora'")
        arch = _field_str(reader, "general.architecture")
        if not arch:
            raise AdapterError(f"adapter {path}: no general.architecture")
        pairs = _pairs(path, ((t.name, tuple(int(n) for n in t.shape)) for t in reader.tensors))
        ranks = {a_ne[1] for a_ne, _ in pairs.values()}
        alpha = float(_field_scalar(reader, "adapter.lora.alpha") or 0.0)
        return AdapterInfo(
            path=path,
            architecture=arch,
            rank=max(ranks),
            alpha=alpha,
            tensors=tuple(sorted(pairs)),
            size_bytes=path.stat().st_size,
        )
    except (ValueError, IndexError, KeyError, TypeError, OSError) as exc:
        raise AdapterError(f"adapter {path}: unreadable ({exc})") from None


def check_adapter(path: Path | str, base: BaseModel | Path | str) -> AdapterInfo:
    """The adapter's metadata once it is known to fit `base` the way llama.cpp checks it at
    load; a server given one that does not fit fails to start, so check before a restart."""
    info = read_adapter_info(path)
    model = base if isinstance(base, BaseModel) else read_base_model(base)
    if info.architecture != model.architecture:
        raise AdapterError(
            f"adapter {info.path}: made for a {info.architecture} model, "
            f"{model.path.name} is {model.architecture}"
        )
    shapes = read_adapter_shapes(info.path)
    for name in info.tensors:
        if name not in model.shapes:
            raise AdapterError(f"adapter {info.path}: {model.path.name} has no tensor {name}")
        (_, inp), (out, _) = shapes[name]
        if (out, inp) != model.shapes[name]:
            raise AdapterError(
                f"adapter {info.path}: {name} is {out}x{inp} in the adapter, "
                f"{model.shapes[name][0]}x{model.shapes[name][1]} in {model.path.name}"
            )
    return info


def read_adapter_shapes(path: Path | str) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """The numpy shapes ((rank, in), (out, rank)) of each pair, by base tensor name."""
    path = Path(path)
    reader = _open_gguf(path, "adapter")
    pairs = _pairs(path, ((t.name, tuple(int(n) for n in t.shape)) for t in reader.tensors))
    return {name: ((a[1], a[0]), (b[1], b[0])) for name, (a, b) in pairs.items()}


def read_adapter_tensors(path: Path | str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (A, B) pairs of an adapter file as float32 numpy arrays, by base tensor name,
    in the GGUF's row order."""
    path = Path(path)
    read_adapter_info(path)
    reader = _open_gguf(path, "adapter")
    arrays = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}
    names = {name.removesuffix(".lora_a") for name in arrays if name.endswith(".lora_a")}
    return {name: (arrays[f"{name}.lora_a"], arrays[f"{name}.lora_b"]) for name in names}


def random_adapter(
    base: BaseModel | Path | str,
    rank: int = 8,
    targets: Iterable[str] = ("q_proj", "v_proj"),
    seed: int = 0,
    scale: float = 0.02,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random LoRA weights for every block's `targets` (HF short names such as "q_proj"),
    by HF module name; B @ A has entries of standard deviation about `scale` (write them
    with alpha = rank for that effect at scale 1). For tests: no training involved."""
    model = base if isinstance(base, BaseModel) else read_base_model(base)
    rng = np.random.default_rng(seed)
    std = float(np.sqrt(scale / np.sqrt(rank)))  # var(B @ A) = rank * std**4 = scale**2
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for block in range(model.block_count):
        for target in targets:
            if target not in _HF_BLOCKS:
                raise AdapterError(f"unknown LoRA target {target!r} (one of {sorted(_HF_BLOCKS)})")
            module = f"model.layers.{block}.{_HF_BLOCKS[target]}.{target}"
            out, inp = model.shapes[_tensor_name(model, module)]
            a = rng.normal(0.0, std, size=(rank, inp)).astype(np.float32)
            b = rng.normal(0.0, std, size=(out, rank)).astype(np.float32)
            weights[module] = (a, b)
    return weights


# --- helpers --------------------------------------------------------------------------


def _gguf_tensors(
    model: BaseModel, weights: LoraWeights
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The weights by base tensor name, shapes checked, q/k rows in GGUF order."""
    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, (a, b) in weights.items():
        name = _tensor_name(model, key)
        if name.startswith("token_embd"):
            raise AdapterError(f"LoRA on {name}: embedding adapters are not supported")
        a, b = np.asarray(a), np.asarray(b)
        out, inp = model.shapes[name]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != inp or b.shape[0] != out:
            raise AdapterError(
                f"LoRA for {key}: A {a.shape} and B {b.shape} do not fit {name} "
                f"(out {out}, in {inp})"
            )
        if a.shape[0] != b.shape[1]:
            raise AdapterError(f"LoRA for {key}: A has rank {a.shape[0]}, B {b.shape[1]}")
        if name in tensors:
            raise AdapterError(f"LoRA for {key}: {name} is given twice")
        if model.architecture in _PERMUTED_ARCHS and not _is_gguf_name(key):
            if name.endswith("attn_q.weight"):
                b = gguf_row_order(b, model.head_count)
            elif name.endswith("attn_k.weight"):
                b = gguf_row_order(b, model.head_count_kv)
        tensors[name] = (a, b)
    return tensors


def _is_gguf_name(key: str) -> bool:
    return key.startswith(("blk.", "output", "token_embd"))


def _tensor_name(model: BaseModel, key: str) -> str:
    """The base tensor a weight key names: a GGUF tensor name (".weight" optional) or an
    HF module name (peft's "base_model.model." prefix and ".weight" optional)."""
    if _is_gguf_name(key):
        name = key if key.endswith(".weight") else f"{key}.weight"
    else:
        module = key.removeprefix(_PEFT_PREFIX).removesuffix(".weight")
        mapped = _name_map(model.architecture, model.block_count).get_name(module)
        if mapped is None:
            raise AdapterError(f"LoRA for {key}: no {model.architecture} tensor of that name")
        name = f"{mapped}.weight"
    if name not in model.shapes:
        raise AdapterError(f"LoRA for {key}: {name} is not a 2-D tensor of {model.path.name}")
    return name


@functools.lru_cache(maxsize=4)
def _name_map(architecture: str, block_count: int) -> Any:
    """The gguf package's HF -> GGUF tensor name table (building one takes ~40 ms)."""
    import gguf

    arch = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}.get(architecture)
    if arch is None:
        raise AdapterError(f"LoRA for a {architecture} model: an architecture gguf does not know")
    return gguf.get_tensor_name_map(arch, block_count)


def _pairs(
    path: Path, tensors: Iterable[tuple[str, tuple[int, ...]]]
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Lora A/B shapes (ggml order: ne0 first) by base tensor name, checked the way
    llama.cpp checks them before it looks at the base model."""
    a_of: dict[str, tuple[int, ...]] = {}
    b_of: dict[str, tuple[int, ...]] = {}
    for name, ne in tensors:
        if name.endswith(".lora_a"):
            a_of[name.removesuffix(".lora_a")] = ne
        elif name.endswith(".lora_b"):
            b_of[name.removesuffix(".lora_b")] = ne
        elif not name.endswith("_norm.weight"):  # llama.cpp skips norm tensors
            raise AdapterError(f"adapter {path}: tensor {name} is neither .lora_a nor .lora_b")
    if not a_of and not b_of:
        raise AdapterError(f"adapter {path}: no LoRA tensors")
    for name in a_of.keys() ^ b_of.keys():
        raise AdapterError(f"adapter {path}: {name} has only one of lora_a and lora_b")
    for name, a_ne in a_of.items():
        b_ne = b_of[name]
        if len(a_ne) != 2 or len(b_ne) != 2 or a_ne[1] != b_ne[0]:
            raise AdapterError(f"adapter {path}: {name} A {a_ne} and B {b_ne} do not pair up")
    return {name: (a_of[name], b_of[name]) for name in a_of}


def _open_gguf(path: Path, what: str) -> Any:
    import gguf

    if not path.is_file():
        raise AdapterError(f"{what} {path}: no such file")
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, struct.error, IndexError, ...
        raise AdapterError(f"{what} {path}: not a readable GGUF file ({exc})") from None


def _field_str(reader: Any, key: str) -> str:
    field = reader.get_field(key)
    if field is None:
        return ""
    value = field.contents()
    return value if isinstance(value, str) else ""


def _field_scalar(reader: Any, key: str) -> float | int | None:
    field = reader.get_field(key)
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, int | float) else None


# GGUF value types (the GGUF spec) with a fixed width, by struct format.
_GGUF_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _read_header(path: Path) -> tuple[dict[str, object], list[tuple[str, tuple[int, ...]]]]:
    """A GGUF's scalar and string metadata and its tensor table (name, ggml shape).

    gguf.GGUFReader decodes every tokenizer array element into numpy views, several
    seconds for a base model's 49k-token vocabulary; this skips arrays unread."""
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _parse_header(data)


def _parse_header(data: mmap.mmap) -> tuple[dict[str, object], list[tuple[str, tuple[int, ...]]]]:
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal pos
        length = take("Q")
        if pos + length > len(data):
            raise ValueError("truncated header")
        pos += length
        return bytes(data[pos - length : pos]).decode("utf-8", errors="replace")

    def value(vtype: int) -> object:
        nonlocal pos
        if vtype in _GGUF_SCALARS:
            return take(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return text()
        if vtype != _GGUF_ARRAY:
            raise ValueError(f"unknown value type {vtype}")
        etype, count = take("I"), take("Q")
        if etype in _GGUF_SCALARS:
            pos += struct.calcsize(_GGUF_SCALARS[etype]) * count
        else:
            for _ in range(count):
                value(etype)
        return None

    if data[:4] != b"GGUF" or take("I") != 0x46554747 or take("I") not in (2, 3):
        raise ValueError("not a little-endian GGUF v2/v3 file")
    n_tensors, n_kv = take("Q"), take("Q")
    meta: dict[str, object] = {}
    for _ in range(n_kv):
        key = text()
        if (found := value(take("I"))) is not None:
            meta[key] = found
    tensors = []
    for _ in range(n_tensors):
        name = text()
        ne = tuple(int(take("Q")) for _ in range(take("I")))
        take("I")  # ggml type
        take("Q")  # data offset
        tensors.append((name, ne))
    return meta, tensors
