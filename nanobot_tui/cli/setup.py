"""The setup commands: `nanobot setup`, `nanobot models`, `nanobot models pull ID`.

`setup` opens the wizard in a terminal; `setup --yes` walks the same steps without questions
(for scripts), printing a line per step, and `--json` prints one summary object instead.
Downloads above 10 GB are confirmed unless --yes. Errors a user can cause are one line on
stderr: exit 2 for bad input (an unknown model or quant), 1 for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nanobot_tui.cli.common import EXIT_OK, EXIT_USAGE
from nanobot_tui.cli.common import fail as _fail

if TYPE_CHECKING:
    from pathlib import Path

    from nanobot_tui.cli.progress import TerminalProgress
    from nanobot_tui.hardware import Tier
    from nanobot_tui.models.catalog import CatalogModel, Quant
    from nanobot_tui.models.download import DownloadProgress
    from nanobot_tui.setup.plan import SetupPlan

TIERS = "potato, sweet, hybrid, power or beast"


def _tier(text: str) -> Tier:
    from nanobot_tui.hardware import Tier

    try:
        return Tier(text.lower())
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown tier {text!r}; known: {TIERS}") from None


def _progress_sink(bar: TerminalProgress, label: str) -> Callable[[DownloadProgress], None]:
    from nanobot_tui.units import human_bytes

    def show(p: DownloadProgress) -> None:
        # `pull MB ████░░ 45/98 ETA 4s · 12.3 MB/s`
        total = p.total or p.done
        speed = f"· {human_bytes(p.bytes_per_s)}/s"
        bar.update(f"{label} MB", p.done // 10**6, total // 10**6, speed)

    return show


async def _fetch(model: CatalogModel, quant: Quant, bar: TerminalProgress) -> Path:
    from nanobot_tui.models.download import fetch_model

    try:
        return await fetch_model(model, quant, on_progress=_progress_sink(bar, "pull"))
    finally:
        bar.finish()


# --- models -------------------------------------------------------------------------------


def _plan() -> SetupPlan:
    from nanobot_tui.hardware import detect
    from nanobot_tui.setup import plan as setup_plan

    return setup_plan.build_plan(detect())


def cmd_models(args: argparse.Namespace) -> int:
    from nanobot_tui import paths
    from nanobot_tui.models import catalog
    from nanobot_tui.units import human_bytes

    plan = _plan()
    recommended = catalog.recommended_models(plan.tier)
    rows: list[dict[str, Any]] = []
    for model in catalog.CATALOG.values():
        default = plan.quant_for(model.id)
        quants = []
        for quant in model.quants:
            path = catalog.model_file(model, quant, paths.models_dir())
            present = path.is_file()
            quants.append(
                {
                    "name": quant.name,
                    "file": quant.file,
                    "sizeBytes": path.stat().st_size if present else quant.size_bytes,
                    "sizeExact": present or quant.sha256 is not None,
                    "present": present,
                    "path": str(path),
                }
            )
        rows.append(
            {
                "id": model.id,
                "name": model.name,
                "roles": list(model.roles),
                "recommendedFor": [slot for slot, mid in recommended.items() if mid == model.id],
                "defaultQuant": default,
                "embedded": model.embedded,
                "quants": quants,
            }
        )
    if args.json:
        out = {"tier": plan.tier.value, "modelsDir": str(paths.models_dir()), "models": rows}
        print(json.dumps(out, indent=2))
        return EXIT_OK

    print(f"tier {plan.tier}; models in {paths.models_dir()}")
    header = ("ID", "ROLES", "FOR TIER", "QUANT", "SIZE", "PRESENT", "PATH")
    table = [header]
    for row in rows:
        shown = [q for q in row["quants"] if q["present"]]
        shown = shown or [q for q in row["quants"] if q["name"] == row["defaultQuant"]]
        for quant in shown:
            size = human_bytes(quant["sizeBytes"]) + ("" if quant["sizeExact"] else "~")
            table.append(
                (
                    row["id"],
                    ",".join(row["roles"]),
                    ",".join(row["recommendedFor"]) or "-",
                    quant["name"],
                    size,
                    "yes" if quant["present"] else "no",
                    quant["path"],
                )
            )
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[-1]]))
    print("~ catalog estimate; `nanobot models pull ID` fetches the QUANT shown")
    return EXIT_OK


def _confirm_large(what: str, size: int, yes: bool) -> int | None:
    """None to go on; an exit code when a big download is refused or declined."""
    from nanobot_tui.models.download import LARGE_DOWNLOAD_BYTES
    from nanobot_tui.units import human_bytes

    if size <= LARGE_DOWNLOAD_BYTES or yes:
        return None
    if not sys.stdin.isatty():
        return _fail(
            f"{what} is a {human_bytes(size)} download; pass --yes to download it without asking",
            EXIT_USAGE,
        )
    answer = input(f"{what} is a {human_bytes(size)} download. Go on? [y/N] ")
    if answer.strip().lower() not in {"y", "yes"}:
        return _fail("download cancelled")
    return None


def cmd_models_pull(args: argparse.Namespace) -> int:
    from nanobot_tui import paths
    from nanobot_tui.cli.progress import TerminalProgress
    from nanobot_tui.models import catalog
    from nanobot_tui.units import human_bytes

    model = catalog.get(args.id)
    quant = model.quant(args.quant or _plan().quant_for(model.id))
    dest = catalog.model_file(model, quant, paths.models_dir())
    what = f"{model.id} {quant.name}"
    if dest.is_file():
        print(f"{what} is already present: {dest} ({human_bytes(dest.stat().st_size)})")
        return EXIT_OK
    refused = _confirm_large(what, quant.size_bytes, args.yes)
    if refused is not None:
        return refused
    try:
        path = asyncio.run(_fetch(model, quant, TerminalProgress()))
    except KeyboardInterrupt:
        return _fail("download interrupted; run the same command again to resume", 130)
    print(f"downloaded {what}: {path} ({human_bytes(path.stat().st_size)})")
    return EXIT_OK


# --- setup --------------------------------------------------------------------------------


def cmd_setup(args: argparse.Namespace) -> int:
    if not args.yes:
        if args.json:
            return _fail("setup --json asks no questions: add --yes", EXIT_USAGE)
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return _fail("setup asks questions and needs a terminal; pass --yes", EXIT_USAGE)
        from nanobot_tui.ui.screens.setup import SetupApp, SetupScreen

        written = SetupApp(SetupScreen(tier=args.tier)).run()
        if written is None:
            return _fail("setup cancelled; nothing was written")
        print(f"config written: {written}")
        return EXIT_OK
    try:
        return asyncio.run(_setup_without_questions(args.tier, args.json))
    except KeyboardInterrupt:
        return _fail("setup interrupted; nothing was written (downloads resume next time)", 130)


def _say_plan(plan: SetupPlan, say: Callable[[str], None]) -> None:
    from nanobot_tui.setup.plan import hardware_lines
    from nanobot_tui.units import human_bytes

    for line in hardware_lines(plan.hardware, plan.tier):
        say(line)
    for name, slot in plan.slots.items():
        if slot.keeps_path:
            say(f"{name:<6} {slot.why} (setup fills only slots without a file of their own)")
            continue
        option = slot.choice
        state = "present" if option.present else "to download"
        say(
            f"{name:<6} {option.name} {option.quant}, {human_bytes(option.size_bytes)} "
            f"({state}): {slot.why}"
        )
    for warning in plan.warnings():
        say(f"warning: {warning}")


async def _download_planned(
    plan: SetupPlan, say: Callable[[str], None], bar: TerminalProgress
) -> list[dict[str, Any]]:
    """Fetch what the plan needs; a model that cannot be fetched leaves its slots on the
    embedded one. Once the hub is unreachable, the rest are not tried."""
    from nanobot_tui.models import catalog
    from nanobot_tui.models.download import LARGE_DOWNLOAD_BYTES, DownloadError, OfflineError
    from nanobot_tui.units import human_bytes

    records: list[dict[str, Any]] = []
    offline: str | None = None
    for option in plan.downloads():
        model = catalog.get(option.model_id)
        record: dict[str, Any] = {"model": option.model_id, "quant": option.quant}
        records.append(record)
        large = ", large" if option.size_bytes > LARGE_DOWNLOAD_BYTES else ""
        say(f"download {option.name} {option.quant} ({human_bytes(option.size_bytes)}{large})")
        reason = offline
        if reason is None:
            try:
                path = await _fetch(model, model.quant(option.quant), bar)
            except OfflineError as exc:
                reason = offline = str(exc)
            except DownloadError as exc:
                reason = str(exc)
            else:
                plan.mark_present(option.model_id, option.quant)
                record.update(ok=True, path=str(path))
                say(f"  done: {path}")
                continue
        record.update(ok=False, error=reason)
        moved = plan.fall_back(option.model_id, f"not downloaded ({reason})")
        say(f"  not downloaded: {reason}")
        say(f"  {', '.join(moved)}: the embedded model instead")
    return records


async def _setup_without_questions(tier: Tier | None, as_json: bool) -> int:
    from nanobot_tui.cli.progress import TerminalProgress
    from nanobot_tui.hardware import detect
    from nanobot_tui.setup import plan as setup_plan

    def say(line: str) -> None:
        if not as_json:
            print(line, flush=True)

    def said(check: setup_plan.ServerCheck) -> None:
        say(f"test   {check.line}")

    existing = setup_plan.read_existing()
    if existing.error:
        say(f"config  {existing.error}; setup replaces it")
    plan = setup_plan.build_plan(detect(), tier, existing=existing.config)
    _say_plan(plan, say)
    downloads = await _download_planned(
        plan, say, TerminalProgress(enabled=False if as_json else None)
    )

    config = setup_plan.planned_config(plan, existing)
    checks = await setup_plan.check_servers(config, on_check=said)
    if not all(c.ok for c in checks):
        moved = plan.fall_back_failed(checks)
        if moved:
            say(f"{', '.join(moved)}: the embedded model instead; testing again")
            config = setup_plan.planned_config(plan, existing)
            checks = await setup_plan.check_servers(config, on_check=said)
    failed = [c for c in checks if not c.ok]
    if failed:
        return _fail(f"the model server failed its test: {failed[0].detail}; config not written")

    diff = setup_plan.config_diff(existing, config)
    if diff:
        say(f"replacing {existing.path}:")
        say(diff.rstrip("\n"))
    path = setup_plan.write_config(config, existing)
    say(f"config written: {path}")
    on_embedded = [name for name, slot in plan.slots.items() if slot.note]
    if on_embedded:
        say(f"note: {', '.join(on_embedded)} run on the embedded model; run setup again later")
    if as_json:
        summary = {
            "ok": True,
            **plan.to_dict(),
            "downloads": downloads,
            "serverTests": [c.to_dict() for c in checks],
            "config": {"path": str(path), "replaced": existing.exists, "diff": diff},
        }
        print(json.dumps(summary, indent=2))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("setup", help="detect hardware, pick and fetch models, write the config")
    p.add_argument("--yes", action="store_true", help="no questions: take every recommendation")
    p.add_argument("--tier", type=_tier, help=f"{TIERS} (default: detected)")
    p.add_argument("--json", action="store_true", help="with --yes: print one summary object")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("models", help="the catalog's models: which are present, sizes, paths")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    pull = actions.add_parser("pull", help="download one model into NANOBOT_HOME/models")
    pull.add_argument("id", help="a catalog id (see `nanobot models`)")
    pull.add_argument("--quant", help="which quant (default: the best that fits this machine)")
    pull.add_argument("--yes", action="store_true", help="no question above 10 GB")
    pull.set_defaults(func=cmd_models_pull)
