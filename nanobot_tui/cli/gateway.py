"""`nanobot gateway`: reach nanobot from Telegram and email (nanobot_tui/channels/).

nanobot gateway [--detach] [--json]   run the enabled channels (foreground, or detached)
nanobot gateway status [--json]       each channel's state and the bus's counters
nanobot gateway stop                  stop the running gateway
nanobot gateway pair CODE             allow the sender who was given CODE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from nanobot_tui.cli.common import EXIT_FAIL, EXIT_OK
from nanobot_tui.errors import UsageError


def cmd_gateway(args: argparse.Namespace) -> int:
    from nanobot_tui import paths
    from nanobot_tui.channels import gateway as gw
    from nanobot_tui.config import load_config_file

    config = load_config_file()
    gateway_config = config.gateway if config is not None else None
    if gateway_config is None or not (
        gateway_config.telegram.enabled or gateway_config.email.enabled
    ):
        raise UsageError(
            f"gateway: no channel is enabled: set gateway.telegram.enabled or "
            f"gateway.email.enabled in {paths.config_path()}"
        )
    if args.detach:
        pid, log = gw.start_detached()
        if args.json:
            print(json.dumps({"pid": pid, "log": str(log)}))
        else:
            print(f"gateway running detached: pid {pid}; log: {log}")
            print("see it: nanobot gateway status · stop it: nanobot gateway stop")
        return EXIT_OK
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    def show(name: str, state: gw.ChannelState) -> None:
        if args.json:
            print(json.dumps({"channel": name, **state.__dict__}), flush=True)
        else:
            print(state.line(name), flush=True)

    gateway = gw.Gateway(gw.channels_from_config(gateway_config), gateway_config, on_state=show)
    asyncio.run(gw.serve(gateway))
    return EXIT_OK


def cmd_gateway_status(args: argparse.Namespace) -> int:
    from nanobot_tui.channels.gateway import ChannelState, read_state

    state = read_state()
    code = EXIT_OK if state["running"] else EXIT_FAIL
    if args.json:
        print(json.dumps(state))
        return code
    print(f"gateway: running (pid {state['pid']})" if state["running"] else "gateway: not running")
    channels: dict[str, Any] = state.get("channels") or {}
    for name, st in channels.items():
        fields = {k: st.get(k) for k in ("state", "reason", "restarts", "since")}
        print("  " + ChannelState(**fields).line(name))
    bus = state.get("bus")
    if bus:
        print("  bus: " + ", ".join(f"{k} {v:,}" for k, v in bus.items()))
    return code


def cmd_gateway_stop(args: argparse.Namespace) -> int:
    from nanobot_tui.channels.gateway import stop

    print(stop())
    return EXIT_OK


def cmd_gateway_pair(args: argparse.Namespace) -> int:
    from nanobot_tui.channels.pairing import Pairing
    from nanobot_tui.text import printable

    who = Pairing().confirm(args.code)
    print(printable(f"paired {who.channel} sender {who.sender}: its commands are now answered"))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gateway", help="reach nanobot from Telegram and email: run, status, stop, pair"
    )
    p.add_argument("--detach", action="store_true", help="run in the background (own session)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_gateway)
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    s = actions.add_parser("status", help="each channel's state and the bus's counters")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_gateway_status)
    s = actions.add_parser("stop", help="stop the running gateway")
    s.set_defaults(func=cmd_gateway_stop)
    s = actions.add_parser("pair", help="allow the sender who was given CODE")
    s.add_argument("code", metavar="CODE")
    s.set_defaults(func=cmd_gateway_pair)
