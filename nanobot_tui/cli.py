"""The `nanobot` command. With no subcommand it opens the app.

Errors a user can cause (a broken config, a model that will not start) print one line on
stderr and exit non-zero: 2 for bad input, 1 for everything else. Heavy imports wait until
a subcommand needs them, so `nanobot --help` and the app's first frame stay quick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nanobot_tui import __version__
from nanobot_tui.cli_common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, positive_int
from nanobot_tui.cli_common import fail as _fail

if TYPE_CHECKING:
    from nanobot_tui.config import Config


def _load_config() -> Config:
    """The user's config, or the detected tier's defaults; raises ConfigError."""
    from nanobot_tui.config import load_config

    return load_config()[0]


def cmd_app(args: argparse.Namespace) -> int:
    from nanobot_tui.config import ConfigError

    try:
        config = _load_config()
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    from nanobot_tui.ui.app import NanobotApp

    NanobotApp(config).run()
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from nanobot_tui.doctor import build_report, format_report

    report = build_report()
    print(report.to_json() if args.json else format_report(report))
    return EXIT_OK if report.ok else EXIT_FAIL


async def _agent(message: str, slot: str, max_tokens: int, as_json: bool) -> int:
    from nanobot_tui.config import ConfigError
    from nanobot_tui.engine.chat import ChatSession
    from nanobot_tui.engine.llm import LLMError, StreamDone, TextDelta
    from nanobot_tui.engine.servers import ServerError
    from nanobot_tui.engine.workbench import Workbench

    try:
        workbench = Workbench(_load_config(), only_slots=(slot,))  # type: ignore[arg-type]
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ServerError as exc:
        return _fail(str(exc))
    try:
        await workbench.start()
    except ServerError as exc:
        detail = f"\n{exc.log_tail}" if exc.log_tail else ""
        return _fail(f"{exc}{detail}")
    try:
        session = ChatSession(
            workbench.client(slot),  # type: ignore[arg-type]
            temperature=workbench.temperature(slot),  # type: ignore[arg-type]
            max_tokens=max_tokens,
        )
        result = None
        async for event in session.stream(message):
            if isinstance(event, TextDelta) and not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, StreamDone):
                result = event.result
        if as_json and result is not None:
            print(
                json.dumps(
                    {
                        "answer": result.content,
                        "model": workbench.slots[slot].display_name,  # type: ignore[index]
                        "finishReason": result.finish_reason,
                        "usage": {
                            "promptTokens": result.usage.prompt_tokens,
                            "completionTokens": result.usage.completion_tokens,
                        },
                        "latencySeconds": round(result.latency_s, 3),
                    }
                )
            )
        elif not as_json:
            print()
    except LLMError as exc:
        return _fail(str(exc))
    finally:
        await workbench.stop()
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    message = args.message if args.message != "-" else sys.stdin.read()
    if not message.strip():
        return _fail("agent: the message is empty", EXIT_USAGE)
    try:
        return asyncio.run(_agent(message, args.slot, args.max_tokens, args.json))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanobot",
        description="A local-first AI workbench in the terminal. With no command, opens the app.",
    )
    parser.add_argument("--version", action="version", version=f"nanobot {__version__}")
    parser.set_defaults(func=cmd_app)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    doctor = sub.add_parser(
        "doctor", help="show hardware, tier, models, runtime and config; exit 1 on problems"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)

    agent = sub.add_parser("agent", help="answer one message on stdout (for scripts and SSH)")
    agent.add_argument("-m", "--message", required=True, help="the message; '-' reads stdin")
    agent.add_argument(
        "--slot", choices=("main", "rlm", "memory"), default="main", help="which model answers"
    )
    agent.add_argument(
        "--max-tokens", type=positive_int, default=1024, help="answer length cap (at least 1)"
    )
    agent.add_argument("--json", action="store_true", help="print one JSON object at the end")
    agent.set_defaults(func=cmd_agent)

    from nanobot_tui import cli_context, cli_process, cli_run

    cli_context.add_commands(sub)
    cli_run.add_commands(sub)
    cli_process.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # `nanobot status ID | head`: the reader left; say nothing more, no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
