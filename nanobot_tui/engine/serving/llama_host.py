"""A drop-in `llama-server` on the embedded runtime (the xllamacpp wheel).

Run as `python -m nanobot_tui.engine.serving.llama_host -m MODEL.gguf --port N ...`: it takes the
llama-server flags the server manager uses, starts `xllamacpp.Server` listening on HTTP
itself, and serves until SIGTERM or SIGINT. The manager treats it exactly like the real
binary: same argv tail, same environment variables for the API key and CORS
(`LLAMA_API_KEY`, `LLAMA_ARG_CORS_ORIGINS`, `LLAMA_ARG_CORS_CREDENTIALS`: the key stays
out of argv, where any local user could read it), same /health, same OpenAI-compatible API.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sys

# llama-server's names for the KV cache types and flash attention modes.
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
FLASH_ATTN = {"on": "ENABLED", "off": "DISABLED", "auto": "AUTO"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanobot_tui.engine.serving.llama_host",
        description="Serve a GGUF model over HTTP with the embedded llama.cpp runtime.",
    )
    parser.add_argument("-m", "--model", required=True, help="GGUF model file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-c", "--ctx-size", type=int, default=4096, help="total context")
    parser.add_argument("-np", "--parallel", type=int, default=1, help="parallel slots")
    parser.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    parser.add_argument("-t", "--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("-a", "--alias", default="")
    parser.add_argument("--metrics", action="store_true", help="enable /metrics")
    parser.add_argument("--slots", action="store_true", help="enable /slots")
    parser.add_argument("--embeddings", action="store_true", help="embedding-only server")
    parser.add_argument("--jinja", action="store_true", help="use the model's chat template")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLAMA_API_KEY", ""),
        help="the key every request but /health must carry (env LLAMA_API_KEY)",
    )
    parser.add_argument(
        "--cors-origins",
        default=os.environ.get("LLAMA_ARG_CORS_ORIGINS", "*"),
        help="allowed CORS origins, comma-separated (env LLAMA_ARG_CORS_ORIGINS)",
    )
    parser.add_argument(
        "--no-cors-credentials",
        dest="cors_credentials",
        action="store_false",
        default=_truthy(os.environ.get("LLAMA_ARG_CORS_CREDENTIALS", "true")),
        help="do not allow credentials in CORS requests (env LLAMA_ARG_CORS_CREDENTIALS)",
    )
    parser.add_argument(
        "-kvu",
        "--kv-unified",
        action="store_true",
        help="one KV buffer that every slot draws from, instead of one per slot",
    )
    parser.add_argument(
        "--kv-unified-per-slot",
        type=int,
        default=0,
        help="with --kv-unified: the most context one slot may take (0 = the whole buffer)",
    )
    parser.add_argument(
        "-ctk", "--cache-type-k", choices=CACHE_TYPES, default="f16", help="KV cache type for K"
    )
    parser.add_argument(
        "-ctv", "--cache-type-v", choices=CACHE_TYPES, default="f16", help="KV cache type for V"
    )
    parser.add_argument(
        "-fa",
        "--flash-attn",
        choices=tuple(FLASH_ATTN),
        default="auto",
        help="flash attention (a quantised V cache needs it)",
    )
    parser.add_argument(
        "--cache-ram",
        type=int,
        default=-1,
        help="MiB of host memory for the prompt cache (-1 = the runtime's default, 0 = none)",
    )
    parser.add_argument(
        "--pooling",
        choices=("none", "mean", "cls", "last", "rank"),
        help="embedding pooling; chat models carry none, and /v1/embeddings needs one",
    )
    # llama-server's adapter flags: ids are the order of the files across both flags.
    parser.add_argument(
        "--lora",
        action=_AddAdapters,
        dest="lora_adapters",
        default=[],
        metavar="FNAME",
        help="LoRA adapter GGUFs at scale 1 (comma-separated; repeatable)",
    )
    parser.add_argument(
        "--lora-scaled",
        action=_AddAdapters,
        dest="lora_adapters",
        metavar="FNAME:SCALE,...",
        help="LoRA adapter GGUFs, each at its own scale",
    )
    parser.add_argument(
        "--lora-init-without-apply",
        action="store_true",
        help="load the adapters at scale 0 (apply later via POST /lora-adapters)",
    )
    return parser


class _AddAdapters(argparse.Action):
    """Appends (path, scale) pairs to one list for both adapter flags, in argv order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        adapters = list(getattr(namespace, self.dest, None) or [])
        for item in next(csv.reader([str(values)])):  # llama.cpp's CSV: "..." quotes
            if option_string != "--lora-scaled":
                adapters.append((item, 1.0))
                continue
            path, _, scale = item.rpartition(":")
            try:
                adapters.append((path, float(scale)))
            except ValueError:
                parser.error(f"--lora-scaled {item!r}: want FNAME:SCALE")
            if not path:
                parser.error(f"--lora-scaled {item!r}: want FNAME:SCALE")
        setattr(namespace, self.dest, adapters)


def lora_adapters(args: argparse.Namespace) -> list[tuple[str, float]]:
    """The adapters to load as (path, initial scale); a server's adapter ids are their
    positions here. --lora-init-without-apply loads them all at 0: llama-server only
    leaves them out of its first context and applies them with the next request."""
    if args.lora_init_without_apply:
        return [(path, 0.0) for path, _ in args.lora_adapters]
    return list(args.lora_adapters)


def _truthy(value: str) -> bool:
    """llama.cpp's reading of a boolean environment variable."""
    return value.strip().lower() not in ("false", "0", "off", "disabled", "no")


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this host when the process that started it dies.

    The pid file reaps leftovers on the next start; this stops them at once, even when the
    manager was SIGKILLed. (PR_SET_PDEATHSIG follows the spawning thread, and the manager
    spawns from its event loop thread, which lives as long as the manager.)
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    die_with_parent()
    if not os.path.isfile(args.model):
        print(f"llama_host: model file not found: {args.model}", file=sys.stderr)
        return 2
    adapters = lora_adapters(args)
    for path, _ in adapters:
        if not os.path.isfile(path):
            print(f"llama_host: LoRA adapter file not found: {path}", file=sys.stderr)
            return 2

    # Imported late so `--help` and argument errors stay instant.
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.n_gpu_layers = args.n_gpu_layers
    threads = args.threads or os.cpu_count() or 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.endpoint_metrics = args.metrics
    params.endpoint_slots = args.slots
    params.embedding = args.embeddings
    params.kv_unified = args.kv_unified
    params.kv_unified_per_slot = args.kv_unified_per_slot
    params.cache_type_k = xllamacpp.ggml_type[f"GGML_TYPE_{args.cache_type_k.upper()}"]
    params.cache_type_v = xllamacpp.ggml_type[f"GGML_TYPE_{args.cache_type_v.upper()}"]
    params.flash_attn_type = xllamacpp.llama_flash_attn_type[
        f"LLAMA_FLASH_ATTN_TYPE_{FLASH_ATTN[args.flash_attn]}"
    ]
    if args.cache_ram >= 0:
        params.cache_ram_mib = args.cache_ram
    params.use_jinja = args.jinja
    if args.pooling:
        params.pooling_type = xllamacpp.llama_pooling_type[
            f"LLAMA_POOLING_TYPE_{args.pooling.upper()}"
        ]
    if args.alias:
        params.model_alias = {args.alias}
    if args.api_key:
        params.api_keys = [key.strip() for key in args.api_key.split(",") if key.strip()]
    params.cors_origins = args.cors_origins
    params.cors_origins_explicit = args.cors_origins != "*"
    params.cors_credentials = args.cors_credentials
    if adapters:
        params.lora_adapters = [
            xllamacpp.CommonAdapterLoraInfo(path, scale) for path, scale in adapters
        ]

    # SIGTERM and SIGINT keep (or get back) their default action: the kernel ends the
    # process at once, also while the model is still loading inside Server(), which a
    # Python handler could not interrupt. Nothing here needs a clean shutdown.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        server = xllamacpp.Server(params)  # returns once the model is loaded and listening
    except Exception as exc:  # the runtime raises plain RuntimeError with its own message
        # llama.cpp logs why an adapter failed above this line; the runtime's message
        # does not name the file, so say which ones were asked for.
        loras = f" (LoRA adapters: {', '.join(path for path, _ in adapters)})" if adapters else ""
        print(f"llama_host: could not start the server: {exc}{loras}", file=sys.stderr)
        return 1
    print(f"llama_host: listening on {server.listening_address}", file=sys.stderr, flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    raise SystemExit(main())
