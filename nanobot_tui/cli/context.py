"""The context commands: ingest, volumes, grep, slice, search, ask.

Each prints plain text for people and, with --json, one JSON document for scripts.
Every volume or search error (a missing path, an unknown volume, a bad pattern, and a
volume or index that cannot be read too) is one line on stderr with exit 2, as grep does:
exit 1 is grep's "nothing matched". Other errors reach the CLI's one handler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from nanobot_tui.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, positive_int
from nanobot_tui.cli.common import fail as _fail
from nanobot_tui.text import display_name, printable
from nanobot_tui.units import human_bytes

if TYPE_CHECKING:
    from nanobot_tui.engine.context.ask import AskResult
    from nanobot_tui.engine.context.search import SearchResult
    from nanobot_tui.engine.llm.openai import LLMClient


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def cmd_ingest(args: argparse.Namespace) -> int:
    from nanobot_tui.cli.progress import TerminalProgress
    from nanobot_tui.engine.context.ingest import IngestProgress, ingest
    from nanobot_tui.engine.context.storage import VolumeError

    bar = TerminalProgress(enabled=None if not args.json else False)

    def show(p: IngestProgress) -> None:
        bar.update(p.phase, p.done, p.total, p.path[-40:])

    try:
        report = ingest(args.path, args.name, progress=show, index=not args.no_index)
    except VolumeError as exc:
        bar.finish()
        return _fail(str(exc), exc.exit_code)  # 2 for bad input, 1 for a full disk
    except KeyboardInterrupt:
        bar.finish()
        return _fail("ingest interrupted; the volume is as it was before", 130)
    bar.finish()
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK
    mb_s = report.bytes / 1e6 / report.seconds if report.seconds else 0.0
    print(
        f"volume {report.name}: {report.files} files, {report.lines:,} lines, "
        f"{human_bytes(report.bytes)}, ~{report.est_tokens:,} tokens "
        f"in {report.seconds:.1f} s ({mb_s:.0f} MB/s)"
    )
    changes = (
        f"{report.added} added, {report.changed} changed, {report.removed} removed, "
        f"{report.unchanged} unchanged"
    )
    print(f"  {changes}")
    skipped = []
    if report.skipped_binary:
        skipped.append(f"{report.skipped_binary} binary")
    if report.skipped_ignored:
        skipped.append(f"{report.skipped_ignored} ignored by .gitignore")
    if skipped:
        print(f"  skipped: {', '.join(skipped)}")
    if report.bad_bytes:
        print(f"  {report.bad_bytes} bytes were not valid UTF-8 and were replaced")
    for path, reason in report.unreadable[:10]:
        print(f"  unreadable: {path}: {reason}")
    if len(report.unreadable) > 10:
        print(f"  … and {len(report.unreadable) - 10} more unreadable files")
    if not report.indexed:
        print("  not indexed for search (--no-index)")
    return EXIT_OK


def cmd_volumes(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.context.storage import list_volumes

    volumes = list_volumes()
    if args.json:
        _print_json(volumes)
        return EXIT_OK
    if not volumes:
        print("no volumes yet: nanobot ingest PATH")
        return EXIT_OK
    print(f"{'name':<24} {'files':>7} {'lines':>11} {'size':>9} {'tokens':>11}  root")
    for v in volumes:
        print(
            f"{v['name']:<24} {v['files']:>7,} {v['lines']:>11,} {human_bytes(v['bytes']):>9} "
            f"{v['est_tokens']:>11,}  {v['root']}"
        )
    return EXIT_OK


def cmd_grep(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.context.storage import VolumeError
    from nanobot_tui.engine.context.volume import Volume

    try:
        with Volume.open(args.name) as volume:
            result = volume.grep(
                args.pattern,
                args.max,
                ignore_case=args.ignore_case,
                fixed=args.fixed,
                path_glob=args.glob,
            )
    except VolumeError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.json:
        _print_json(
            {
                "hits": [
                    {"file": h.file, "line": h.fline, "vline": h.vline, "text": h.text}
                    for h in result.hits
                ],
                "truncated": result.truncated,
                "seconds": round(result.seconds, 4),
            }
        )
    else:
        for hit in result.hits:
            print(printable(f"{display_name(hit.file)}:{hit.fline}:{hit.text}"))
        if result.truncated:
            print(f"… stopped at {args.max} hits (--max N for more)", file=sys.stderr)
    return EXIT_OK if result.hits else EXIT_FAIL  # grep's convention: 1 when nothing matched


def cmd_slice(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.context.storage import VolumeError
    from nanobot_tui.engine.context.volume import Volume

    if args.end < args.start:
        return _fail(f"slice: END ({args.end}) is before START ({args.start})", EXIT_USAGE)
    try:
        with Volume.open(args.name) as volume:
            n_lines = volume.n_lines
            lines = volume.lines(args.start, args.end)
    except VolumeError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.start > n_lines:  # an END past the end shows what there is; a START cannot
        return _fail(
            f"slice: START ({args.start}) is past the end of {args.name} "
            f"({n_lines} line{'' if n_lines == 1 else 's'})",
            EXIT_USAGE,
        )
    if args.json:
        _print_json(
            [{"vline": x.vline, "file": x.file, "line": x.fline, "text": x.text} for x in lines]
        )
        return EXIT_OK
    for line in lines:
        shown = (
            f"{line.vline}\t{display_name(line.file)}:{line.fline}\t{line.text}"
            if args.numbers
            else line.text
        )
        print(printable(shown))
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from nanobot_tui.config import load_context_config
    from nanobot_tui.engine.context.search import SearchError, search
    from nanobot_tui.engine.context.storage import VolumeError
    from nanobot_tui.engine.context.volume import Volume

    async def with_vectors(volume: Volume) -> SearchResult:
        from nanobot_tui.engine.context.search import search_with_vectors

        async with _embedder() as embedder:
            if embedder is not None:
                return await search_with_vectors(volume, args.query, args.top, embedder)
            return search(volume, args.query, args.top)

    try:
        with Volume.open(args.name) as volume:
            context = load_context_config()
            if context.embedding_url is None and context.embedding_model is None:
                result = search(volume, args.query, args.top)  # no event loop to start
            else:
                import asyncio

                result = asyncio.run(with_vectors(volume))
    except (VolumeError, SearchError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.json:
        _print_json(
            {
                "method": result.method,
                "seconds": round(result.seconds, 4),
                "hits": [
                    {
                        "chunk": h.chunk,
                        "file": h.file,
                        "firstLine": h.first_fline,
                        "lastLine": h.last_fline,
                        "bestVline": h.best_vline,
                        "score": round(h.score, 4),
                        "preview": h.preview,
                    }
                    for h in result.hits
                ],
            }
        )
        return EXIT_OK
    print(f"{len(result.hits)} hits by {result.method} in {result.seconds * 1000:.1f} ms")
    for h in result.hits:
        place = f"{display_name(h.file)}:{h.first_fline}-{h.last_fline}"
        print(printable(f"#{h.chunk:<5} {h.score:7.3f}  {place}"))
        print(printable(f"        {h.preview}"))
    return EXIT_OK


def cmd_ask(args: argparse.Namespace) -> int:
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.context.ask import ask
    from nanobot_tui.engine.context.search import SearchError
    from nanobot_tui.engine.context.storage import VolumeError
    from nanobot_tui.engine.context.volume import Volume
    from nanobot_tui.engine.serving.workbench import Workbench

    async def run() -> AskResult:
        with Volume.open(args.name) as volume:
            workbench = Workbench(load_config()[0], only_slots=(args.slot,))
            async with workbench, _embedder() as embedder:
                return await ask(
                    volume,
                    args.question,
                    workbench.client(args.slot),
                    top=args.top,
                    embedder=embedder,
                )

    import asyncio

    try:
        result = asyncio.run(run())
    except (VolumeError, SearchError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.json:
        _print_json(result.to_dict())
        return EXIT_OK
    print(printable(result.answer))
    print()
    for citation in result.citations:
        print(printable(f"  source: {citation}"))
    return EXIT_OK


@contextlib.asynccontextmanager
async def _embedder() -> AsyncIterator[LLMClient | None]:
    """An embeddings client when the config names an embedding model or endpoint, else None
    (and search says it used lexical + simhash). The HTTP client and the servers are
    imported only when there is one: a plain search starts quickly."""
    from nanobot_tui.config import load_config, load_context_config

    config = load_context_config()
    if config.embedding_url is not None:
        from nanobot_tui.engine.llm.openai import LLMClient

        async with LLMClient(config.embedding_url, api_key=config.embedding_api_key) as client:
            yield client
        return
    if config.embedding_model is None:
        yield None
        return
    from nanobot_tui.engine.serving.manager import ServerManager, resolve_runtime
    from nanobot_tui.engine.serving.slots import ServerSpec

    path = config.embedding_model.expanduser()
    spec = ServerSpec(
        model_path=path,
        model_id="custom",
        display_name=path.name,
        slots=("embeddings",),  # type: ignore[arg-type]
        context_size=2048,
        parallel=1,
        gpu_layers=-1,
        size_bytes=path.stat().st_size if path.is_file() else 0,
        embeddings=True,
        pooling=config.embedding_pooling,
    )
    async with ServerManager([spec], resolve_runtime(load_config()[0].runtime)) as manager:
        yield manager.client("embeddings")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ingest", help="ingest a file or folder into a volume for search")
    p.add_argument("path", help="a file or a folder (.gitignore is honoured)")
    p.add_argument("--name", help="volume name (default: the folder's name)")
    p.add_argument("--no-index", action="store_true", help="skip the search index")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("volumes", help="list the ingested volumes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_volumes)

    p = sub.add_parser("grep", help="regex search in a volume (exit 1 when nothing matches)")
    p.add_argument("name", help="volume name")
    p.add_argument(
        "pattern", help="a regex, Python syntax, linear time (no backreferences or lookaround)"
    )
    p.add_argument("--max", type=int, default=100, help="stop after N matching lines")
    p.add_argument("-i", "--ignore-case", action="store_true")
    p.add_argument("-F", "--fixed", action="store_true", help="the pattern is a plain string")
    p.add_argument("--glob", help="only files whose path matches this glob")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_grep)

    p = sub.add_parser("slice", help="print volume lines START..END (1-based, inclusive)")
    p.add_argument("name")
    p.add_argument("start", type=positive_int)
    p.add_argument("end", type=positive_int)
    p.add_argument("-n", "--numbers", action="store_true", help="show line numbers and files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_slice)

    p = sub.add_parser("search", help="rank a volume's chunks for a query")
    p.add_argument("name")
    p.add_argument("query")
    p.add_argument("--top", type=positive_int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", help="answer a question from a volume, citing source lines")
    p.add_argument("name")
    p.add_argument("question")
    p.add_argument("--slot", choices=("main", "rlm"), default="main", help="which model reads")
    p.add_argument("--top", type=positive_int, default=3, help="how many search hits to read")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ask)
