"""How much memory a model needs, and which quant fits.

Memory ≈ weights (the GGUF file size) + KV cache (2 · n_layer · n_head_kv · head_dim · n_ctx ·
bytes per element) + a fixed compute-buffer allowance. The total is kept under FIT_FRACTION
of the budget, leaving room for the OS, the other slots' spikes and estimate error.

GGUF metadata is read by a small header parser rather than gguf.GGUFReader: the reader
decodes every element of the tokenizer arrays into numpy views (1.5–2.5 s for the 98 MB
embedded model, several seconds for a 150k-vocabulary model), while the parser skips them and
stops before the tensor data. It uses the gguf package's own constants for the format.
"""

from __future__ import annotations

import functools
import math
import mmap
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from nanobot_tui.errors import NanobotError
from nanobot_tui.models.catalog import (
    Architecture,
    CatalogModel,
    Quant,
    embedded_model_path,
    model_file,
)
from nanobot_tui.units import human_bytes

__all__ = [
    "COMPUTE_BUFFER_BYTES",
    "FIT_FRACTION",
    "KV_CACHE_TYPE",
    "KV_POOL_WINDOWS",
    "Estimate",
    "GgufError",
    "GgufFacts",
    "QuantChoice",
    "choose_quant",
    "estimate",
    "estimate_bytes",
    "human_bytes",
    "kv_cache_bytes",
    "kv_pool_cells",
    "read_gguf_facts",
]

FIT_FRACTION = 0.8

# llama.cpp's compute buffers at the default 512-token micro-batch: the logits alone are
# n_vocab × 512 × 4 B (~310 MB for a 150k vocabulary), plus activation scratch. 512 MiB
# covers the 0.1B–30B models in the catalog with flash attention on; it is deliberately a
# flat figure so estimates stay predictable and easy to explain.
COMPUTE_BUFFER_BYTES = 512 * 1024 * 1024

# The KV cache the app's servers keep: q8_0 (34 bytes per block of 32, against f16's 64),
# and one pool of at most KV_POOL_WINDOWS request windows shared by a server's slots
# (engine.serving.slots plans it; the server's client admits requests into it).
KV_CACHE_TYPE = "q8_0"
KV_POOL_WINDOWS = 2
# Bytes per element of llama.cpp's KV cache types (quantised ones: block bytes / 32).
KV_BYTES_PER_ELEMENT = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32,
    "q4_1": 20 / 32, "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32,
}  # fmt: skip

# Sanity caps: a corrupt header must not make us loop for hours or allocate wildly.
_MAX_COUNT = 1 << 24
_MAX_DIMS = 8


class GgufError(NanobotError, ValueError):
    """A file that is not a readable GGUF model; the message is one line naming the file."""


@dataclass(frozen=True)
class GgufFacts:
    n_layer: int
    n_head_kv: int
    head_dim: int
    context_length: int  # 0 when the file does not say
    file_size: int
    architecture: str


@dataclass(frozen=True)
class Estimate:
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    n_ctx: int
    from_file: bool  # True when the weights and shape came from the GGUF on disk

    @property
    def total(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes


@dataclass(frozen=True)
class QuantChoice:
    quant: Quant
    estimate_bytes: int
    budget_bytes: int
    reason: str


# --- GGUF header parsing --------------------------------------------------------------------


class _VT(IntEnum):
    """GGUF metadata value types, fixed by the GGUF spec. Kept here rather than taken from
    the gguf package, whose import (numpy, yaml) costs ~60 ms on every nanobot start."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_GGUF_MAGIC = 0x46554747  # b"GGUF" read little-endian
_GGUF_DEFAULT_ALIGNMENT = 32
_SCALAR_FORMATS: dict[int, str] = {
    _VT.UINT8: "B",
    _VT.INT8: "b",
    _VT.UINT16: "H",
    _VT.INT16: "h",
    _VT.UINT32: "I",
    _VT.INT32: "i",
    _VT.FLOAT32: "f",
    _VT.BOOL: "?",
    _VT.UINT64: "Q",
    _VT.INT64: "q",
    _VT.FLOAT64: "d",
}


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


class _Cursor:
    """Reads little- or big-endian values out of a buffer, with bounds checks."""

    def __init__(self, buf: mmap.mmap | bytes, order: str = "<") -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.order = order

    def unpack(self, fmt: str) -> int | float | bool:
        fmt = self.order + fmt
        width = struct.calcsize(fmt)
        if self.pos + width > self.size:
            raise _Truncated
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += width
        return value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        self.pos += n

    def string(self, keep: bool) -> str | None:
        length = int(self.unpack("Q"))
        start = self.pos
        self.skip(length)
        if not keep:
            return None
        return bytes(self.buf[start : start + length]).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool) -> object:
        """One metadata value; arrays and unwanted strings are skipped, not decoded."""
        if vtype in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[vtype])
        if vtype == _VT.STRING:
            return self.string(keep)
        if vtype == _VT.ARRAY:
            etype = int(self.unpack("I"))
            count = int(self.unpack("Q"))
            if count > self.size:  # each element takes at least one byte
                raise _Truncated
            if etype in _SCALAR_FORMATS:
                width = struct.calcsize(_SCALAR_FORMATS[etype])
                if not keep:
                    self.skip(width * count)
                    return None
                fmt = f"{self.order}{count}{_SCALAR_FORMATS[etype]}"
                if self.pos + width * count > self.size:
                    raise _Truncated
                values = struct.unpack_from(fmt, self.buf, self.pos)
                self.pos += width * count
                return values
            if etype == _VT.STRING:
                for _ in range(count):
                    self.string(keep=False)
                return None
            if etype == _VT.ARRAY:
                for _ in range(count):
                    self.value(_VT.ARRAY, keep=False)
                return None
            raise _Corrupt(f"unknown array element type {etype}")
        raise _Corrupt(f"unknown value type {vtype}")


def _wanted(key: str) -> bool:
    # Model-shape keys are "<arch>.<name>"; the tokenizer's big arrays are never wanted.
    return not key.startswith("tokenizer.")


def _parse(buf: mmap.mmap | bytes, file_size: int) -> tuple[dict[str, object], int]:
    """The wanted metadata, and the byte count the tensor table says the file must have."""
    if len(buf) < 8:
        raise _Truncated
    (magic,) = struct.unpack_from("<I", buf, 0)
    if magic != _GGUF_MAGIC:
        raise _Corrupt(f"not a GGUF file (starts with {bytes(buf[:4])!r})")
    (version,) = struct.unpack_from("<I", buf, 4)
    order = "<"
    if version & 0xFFFF == 0:  # written big-endian: the version reads byte-swapped
        order = ">"
        (version,) = struct.unpack_from(">I", buf, 4)
    if version not in (2, 3):
        raise _Corrupt(f"unsupported GGUF version {version}")
    cur = _Cursor(buf, order)
    cur.pos = 8
    n_tensors = int(cur.unpack("Q"))
    n_kv = int(cur.unpack("Q"))
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise _Corrupt("implausible tensor or key count")

    meta: dict[str, object] = {}
    for _ in range(n_kv):
        key = cur.string(keep=True) or ""
        vtype = int(cur.unpack("I"))
        value = cur.value(vtype, keep=_wanted(key))
        if value is not None:
            meta[key] = value

    # The tensor table is small (names, shapes, offsets); reading it lets us tell a complete
    # file from one cut short mid-download, without touching the tensor data itself.
    data_end = 0
    if n_tensors:
        import gguf  # only here: the quant block sizes table; see _VT for why

    for _ in range(n_tensors):
        cur.string(keep=False)
        n_dims = int(cur.unpack("I"))
        if n_dims > _MAX_DIMS:
            raise _Corrupt(f"tensor with {n_dims} dimensions")
        n_elements = math.prod(int(cur.unpack("Q")) for _ in range(n_dims))
        ggml_type = int(cur.unpack("I"))
        offset = int(cur.unpack("Q"))
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
        except (ValueError, KeyError):
            continue  # a type newer than our gguf package: cannot size it, do not fail
        data_end = max(data_end, offset + n_elements // block * type_size)

    alignment = meta.get("general.alignment", _GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = _GGUF_DEFAULT_ALIGNMENT
    data_start = -(-cur.pos // alignment) * alignment
    required = data_start + data_end if n_tensors else cur.pos
    return meta, required


def _first_int(value: object, what: str) -> int:
    """A scalar, or the largest entry of a per-layer array (conservative for memory)."""
    if isinstance(value, tuple):
        if not value:
            raise _Corrupt(f"empty {what}")
        value = max(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Corrupt(f"{what} is not a number")
    return int(value)


def read_gguf_facts(path: Path | str) -> GgufFacts:
    """Shape and size of a GGUF model from its header. Raises GgufError (one line) when the file
    is missing, unreadable, not GGUF, truncated or lacks the keys the estimate needs."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise GgufError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # Doctor and the server plan ask about the same files several times: parse each once.
    return _read_gguf_facts_cached(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_gguf_facts_cached(path: Path, _size: int, _mtime_ns: int) -> GgufFacts:
    try:
        with path.open("rb") as fh:
            file_size = path.stat().st_size
            if file_size == 0:
                raise GgufError(f"{path}: empty file, not a GGUF model")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                meta, required = _parse(mm, file_size)
    except GgufError:
        raise
    except _Truncated:
        raise GgufError(f"{path}: truncated GGUF file ({file_size} bytes)") from None
    except _Corrupt as exc:
        raise GgufError(f"{path}: {exc}") from None
    except OSError as exc:
        raise GgufError(f"{path}: cannot read ({exc.strerror or exc})") from None

    if file_size < required:
        raise GgufError(
            f"{path}: truncated GGUF file ({file_size} bytes, its tensors need {required})"
        )

    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GgufError(f"{path}: GGUF file without general.architecture")

    def need(name: str) -> object:
        key = f"{arch}.{name}"
        if key not in meta:
            raise GgufError(f"{path}: GGUF file lacks {key}")
        return meta[key]

    try:
        n_layer = _first_int(need("block_count"), "block_count")
        n_head = _first_int(need("attention.head_count"), "attention.head_count")
        # Absent head_count_kv means plain multi-head attention (llama.cpp's default too).
        kv_raw = meta.get(f"{arch}.attention.head_count_kv", n_head)
        n_head_kv = _first_int(kv_raw, "attention.head_count_kv")
        key_length = meta.get(f"{arch}.attention.key_length")
        if key_length is not None:
            head_dim = _first_int(key_length, "attention.key_length")
        else:
            n_embd = _first_int(need("embedding_length"), "embedding_length")
            if n_head <= 0:
                raise _Corrupt("attention.head_count is 0")
            head_dim = n_embd // n_head
        ctx_raw = meta.get(f"{arch}.context_length", 0)
        context_length = _first_int(ctx_raw, "context_length")
    except _Corrupt as exc:
        raise GgufError(f"{path}: {exc}") from None

    return GgufFacts(
        n_layer=n_layer,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        context_length=context_length,
        file_size=file_size,
        architecture=arch,
    )


# --- estimates ------------------------------------------------------------------------------


def kv_cache_bytes(
    n_layer: int,
    n_head_kv: int,
    head_dim: int,
    n_ctx: int,
    bytes_per_element: float = 2,
    *,
    cache_type: str | None = None,
) -> int:
    """K and V for every layer and position: 2 · n_layer · n_head_kv · head_dim · n_ctx · bytes.
    `cache_type` (llama.cpp's name: "q8_0", "f16", ...) sets the bytes per element."""
    if cache_type is not None:
        bytes_per_element = KV_BYTES_PER_ELEMENT[cache_type]
    return math.ceil(2 * n_layer * n_head_kv * head_dim * n_ctx * bytes_per_element)


def kv_pool_cells(window: int, parallel: int) -> int:
    """The KV cells a server with `parallel` slots of `window` tokens allocates: every
    slot's window up to KV_POOL_WINDOWS slots, then one pool of that many windows."""
    return window * min(max(parallel, 1), KV_POOL_WINDOWS)


def estimate(
    model: CatalogModel,
    quant: Quant,
    n_ctx: int,
    path: Path | None = None,
    *,
    cache_type: str = "f16",
) -> Estimate:
    """The parts of the memory estimate, for `n_ctx` KV cells of `cache_type`. The app's
    servers keep KV_CACHE_TYPE in a pool of `kv_pool_cells`; setup still sizes f16 buffers
    per slot (a margin its quant choices were tuned with). With `path` pointing at an
    existing file, its real size and GGUF shape are used; otherwise the catalog's figures."""
    shape: GgufFacts | Architecture
    if path is not None and path.is_file():
        shape = read_gguf_facts(path)
        weights, from_file = shape.file_size, True
    else:
        shape, weights, from_file = model.arch, quant.size_bytes, False
    return Estimate(
        weights_bytes=weights,
        kv_bytes=kv_cache_bytes(
            shape.n_layer, shape.n_head_kv, shape.head_dim, n_ctx, cache_type=cache_type
        ),
        compute_bytes=COMPUTE_BUFFER_BYTES,
        n_ctx=n_ctx,
        from_file=from_file,
    )


def estimate_bytes(model: CatalogModel, quant: Quant, n_ctx: int, path: Path | None) -> int:
    """Weights + KV cache + compute allowance, in bytes."""
    return estimate(model, quant, n_ctx, path).total


def _local_path(model: CatalogModel, quant: Quant, models_dir: Path | None) -> Path | None:
    if models_dir is not None:
        return model_file(model, quant, models_dir)
    if model.embedded:
        path = embedded_model_path()
        return path if path is not None and path.name == quant.file else None
    return None


def choose_quant(
    model: CatalogModel, n_ctx: int, budget_bytes: int, models_dir: Path | None = None
) -> QuantChoice | None:
    """The best quant (catalog order) whose estimate fits in FIT_FRACTION of the budget; None
    when none does. Files already on disk (under models_dir, or the embedded wheel) are sized
    from the file itself."""
    usable = budget_bytes * FIT_FRACTION
    for quant in model.quants:
        path = _local_path(model, quant, models_dir)
        note = ""
        try:
            est = estimate(model, quant, n_ctx, path)
        except GgufError:
            # A broken local file must not stop the choice; it gets re-fetched elsewhere.
            est = estimate(model, quant, n_ctx, None)
            note = " (local file unreadable; catalog size used)"
        if est.total <= usable:
            reason = (
                f"{quant.name}: {human_bytes(est.weights_bytes)} weights"
                f" + {human_bytes(est.kv_bytes)} KV for {n_ctx} tokens"
                f" + {human_bytes(est.compute_bytes)} compute = {human_bytes(est.total)},"
                f" fits in {FIT_FRACTION:.0%} of {human_bytes(budget_bytes)}{note}"
            )
            return QuantChoice(
                quant=quant, estimate_bytes=est.total, budget_bytes=budget_bytes, reason=reason
            )
    return None
