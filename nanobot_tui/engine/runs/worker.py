"""The detached runner: `python -m nanobot_tui.engine.runs.worker RUN_ID`.

Started by `nanobot run --detach` / `nanobot resume --detach` in a session of its own,
its output appended to runs/<id>/runner.log. It takes the run's lock, runs it to its end
(or until paused, cancelled, stopped or out of budget) and exits: 0 when the run ended
cleanly in any of those ways, 1 when it failed, 2 when it could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nanobot_tui.engine.runs.spec import Budgets


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


async def _main(run_id: str, budgets: Budgets | None = None) -> int:
    from nanobot_tui.engine.runs.control import RunError
    from nanobot_tui.engine.runs.durable import execute
    from nanobot_tui.engine.runs.store import StoreError

    try:
        status = await execute(run_id, install_signals=True, budgets=budgets)
    except (RunError, StoreError) as exc:
        _log(f"cannot run: {exc}")
        return 2
    _log(
        f"run {status.run_id}: {status.status}"
        + (f" ({status.reason})" if status.reason else "")
        + f"; {status.steps_done:,}/{status.steps_total:,} steps, {status.errors:,} errors"
    )
    return 1 if status.status == "failed" else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanobot_tui.engine.runs.worker")
    parser.add_argument("run")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--max-seconds", type=float)
    args = parser.parse_args(argv)
    budgets = None
    if args.max_steps or args.max_tokens or args.max_seconds:
        from nanobot_tui.engine.runs.spec import Budgets

        budgets = Budgets(args.max_steps, args.max_tokens, args.max_seconds)
    _log(f"runner for {args.run} starting (pid {os.getpid()})")
    try:
        return asyncio.run(_main(args.run, budgets))
    except Exception as exc:  # one line in the log, never a silent death
        _log(f"runner failed: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
