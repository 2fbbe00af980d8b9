"""`nanobot adapters [--json]` and `nanobot adapters off|on|rm ID [--json]`: the LoRA
adapters `nanobot learn` trained (engine/serving/adapter_registry.py).

The listing shows each adapter's step type, the data it was trained and tested on, its
A/B result and status. `off` stops applying one; `on` promotes it again only when its
last A/B test said it is better than the base; `rm` forgets it and deletes its file.
A server loads the promoted adapters when it starts; a running app notices a change
within a minute and restarts its server with the new list once no request is in flight
(ui/learning_job.py), and a run asks its server which adapters it has loaded.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from nanobot_tui.cli.common import EXIT_OK
from nanobot_tui.errors import UsageError

ACTIONS = ("off", "on", "rm")


def _adapter_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an adapter id: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not an adapter id: {text!r}")
    return value


def _ab_text(ab: dict[str, Any] | None) -> str:
    if not ab:
        return "not tested"
    low, high = ab["diff_ci"]
    # Tests before the fresh-step A/B were on the held-out split; they say no "on".
    on = "fresh" if ab.get("on") == "fresh" else "held out"
    return (
        f"p {ab['p_base']:.2f} -> {ab['p_adapter']:.2f} on {ab['n']} {on} "
        f"(diff [{low:+.2f}, {high:+.2f}]) {ab['verdict']}"
    )


def _print_listing(records: list[dict[str, Any]]) -> None:
    from nanobot_tui.text import display_name
    from nanobot_tui.units import human_bytes

    if not records:
        print("no adapters (nanobot learn trains them)")
        return
    rows = [("ID", "STATUS", "STEP TYPE", "DATA", "A/B", "SIZE")]
    for r in records:
        data = f"{r['train_examples']} + {r['heldout']} held out"
        rows.append(
            (str(r["id"]), r["status"], display_name(r["step_type"]), data, _ab_text(r["ab"]),
             human_bytes(r["bytes"]))
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
              + "  " + row[-1])  # fmt: skip
    for r in records:
        if r["note"]:
            print(f"  {r['id']}: {display_name(r['note'])}")


def cmd_adapters(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.serving.adapter_registry import AdapterRegistry, registry_path

    action = getattr(args, "adapters_command", None)
    if action is None:
        records = []
        if registry_path().is_file():
            with AdapterRegistry() as registry:
                records = [r.to_dict() for r in registry.list()]
        if args.json:
            print(json.dumps({"adapters": records}, indent=2))
        else:
            _print_listing(records)
        return EXIT_OK
    if not registry_path().is_file():
        raise UsageError(f"no adapter {args.id} (no adapters yet: nanobot learn trains them)")
    with AdapterRegistry() as registry:
        record = registry.get(args.id)
        if action == "rm":
            registry.remove(record.id)
            done = f"adapter {record.id} removed ({record.path} deleted)"
            result: dict[str, Any] = {"id": record.id, "removed": True, "path": str(record.path)}
        else:
            status = _switch(action, record.status, record.verdict, record.id)
            record = registry.update(record.id, status=status, note=f"turned {action} by the user")
            done = f"adapter {record.id} ({record.step_type}) is {record.status}"
            result = record.to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from nanobot_tui.text import printable

        print(printable(done))
    return EXIT_OK


def _switch(action: str, status: str, verdict: str | None, adapter_id: int) -> Any:
    """The status `off` or `on` leaves; UsageError for an `on` its A/B test does not back."""
    if action == "off":
        return "off"
    if status == "promoted":
        return "promoted"
    if verdict != "better":
        said = f"said {verdict!r}" if verdict else "was never run"
        raise UsageError(
            f"adapter {adapter_id}: its last A/B test {said}, so it is not promoted "
            "(nanobot learn trains and tests a new one)"
        )
    return "promoted"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "adapters",
        help="the LoRA adapters nanobot trained: type, data, A/B result, status",
        description="List the LoRA adapters `nanobot learn` trained; `adapters off|on|rm ID` "
        "turns one off, promotes it again (only if its last A/B test said better), or "
        "removes it and its file.",
    )
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=cmd_adapters)
    actions = p.add_subparsers(dest="adapters_command", metavar="{off,on,rm}")
    helps = {
        "off": "stop applying an adapter",
        "on": "promote an adapter again (only if its last A/B test said better)",
        "rm": "forget an adapter and delete its file",
    }
    for action in ACTIONS:
        q = actions.add_parser(action, help=helps[action], description=helps[action] + ".")
        q.add_argument("id", type=_adapter_id, metavar="ID", help="the adapter's id")
        q.add_argument("--json", action="store_true", help="print the result as JSON")
        q.set_defaults(func=cmd_adapters)
