"""The `nanobot` command. With no subcommand it opens the app.

Errors a user can cause (a broken config, a model that will not start) print one line on
stderr and exit non-zero: 2 for bad input, 1 for everything else. Heavy imports wait until
a subcommand needs them, so `nanobot --help` and the app's first frame stay quick.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Sequence

from nanobot_tui import __version__
from nanobot_tui.cli.common import EXIT_FAIL, EXIT_OK
from nanobot_tui.cli.common import fail as _fail
from nanobot_tui.errors import NanobotError


def cmd_app(args: argparse.Namespace) -> int:
    from nanobot_tui.config import load_config_file

    # No config file: the app detects the hardware tier for its defaults after the first
    # frame, which needs none of it.
    config = load_config_file()
    from nanobot_tui.ui.app import NanobotApp

    NanobotApp(config).run()
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from nanobot_tui.setup.doctor import build_report, format_report
    from nanobot_tui.text import printable

    report = build_report()
    # A model path from the config may hold control sequences: shown without them.
    print(report.to_json() if args.json else printable(format_report(report)))
    return EXIT_OK if report.ok else EXIT_FAIL


# Which module under nanobot_tui/cli/ adds each command: `nanobot search` imports only
# cli/context.py, not every command's module (tests/test_import_weight.py checks the table
# against the full parser). A name not here builds the whole parser, so a command added
# without an entry still works, only a little slower to start.
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(("agent", "sessions"), "agent"),
    **dict.fromkeys(("ingest", "volumes", "grep", "slice", "search", "ask"), "context"),
    **dict.fromkeys(("run", "calibrate"), "run"),
    **dict.fromkeys(("process", "recipes"), "process"),
    **dict.fromkeys(
        ("runs", "status", "resume", "pause", "cancel", "traces", "attach", "export"), "runs"
    ),
    **dict.fromkeys(("setup", "models"), "setup"),
    "learned": "learned",
    "learn": "learn",
    "adapters": "adapters",
    "gateway": "gateway",
    "web": "web",
    "cluster": "cluster",
}
# Every module that adds commands, in the order `nanobot --help` lists them.
ALL_MODULES = (
    "agent", "context", "run", "process", "runs", "learned", "learn", "adapters", "gateway",
    "web", "cluster", "setup",
)  # fmt: skip


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `nanobot` parser; given the `command` about to run, only that command's module
    is imported (its help and errors read the same: a subcommand's parser is its own)."""
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

    if command == "doctor":
        return parser
    known = COMMAND_MODULES.get(command or "")
    for name in (known,) if known else ALL_MODULES:
        module = importlib.import_module(f"nanobot_tui.cli.{name}")
        module.add_commands(sub)
    if known and command not in sub.choices:
        return build_parser()  # a stale entry in the table: the whole parser decides
    return parser


def _print_anything() -> None:
    """Let stdout and stderr print any text: a file name with an undecodable byte (kept as
    a lone surrogate) or a "\\ud800" from a JSON file is shown escaped, never a crash."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    _print_anything()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return args.func(args)
    except NanobotError as exc:
        # The one place a user's error becomes a line on stderr and an exit code.
        return _fail(str(exc), exc.exit_code)
    except BrokenPipeError:
        # `nanobot status ID | head`: the reader left; say nothing more, no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
