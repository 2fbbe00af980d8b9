"""`nanobot web`: the app in a browser (nanobot_tui/channels/web.py).

nanobot web [--host 127.0.0.1] [--port N] [--control] [--json]

Prints the URL, with its token, once; read-only unless --control.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from nanobot_tui.cli.common import EXIT_OK, number_type

DEFAULT_PORT = 8765
port_number = number_type(int, "whole number", lambda v: 0 <= v <= 65535, "from 0 to 65535")


def cmd_web(args: argparse.Namespace) -> int:
    from nanobot_tui.channels import web

    if not web.is_loopback(args.host):
        print(
            f"nanobot: warning: web: {args.host} is reachable from other machines; "
            "anyone with the URL sees the app" + (" and controls it" if args.control else ""),
            file=sys.stderr,
        )

    def show(address: web.WebAddress) -> None:
        if args.json:
            fields = {"url": address.url, "host": address.host, "port": address.port}
            print(json.dumps({**fields, "control": address.control}), flush=True)
        else:
            mode = "keys and mouse pass" if address.control else "read-only"
            print(f"nanobot web ({mode}): {address.url}", flush=True)

    asyncio.run(web.serve(args.host, args.port, control=args.control, on_ready=show))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "web",
        help="serve the app to a browser (read-only unless --control); prints its URL",
        description="Serve the app to a browser with textual-serve. The URL it prints holds "
        "a random token; a request without it is refused. Read-only unless --control.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="pass the browser's keys and mouse to the app (default: it only watches)",
    )
    parser.add_argument("--json", action="store_true", help="print the URL as one JSON line")
    parser.set_defaults(func=cmd_web)
