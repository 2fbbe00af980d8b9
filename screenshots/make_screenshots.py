"""Regenerate the SVG screenshots of each screen, at 120x36 and 80x24, from the real app
driven headless (Textual's `App.run_test` and `save_screenshot`).

Run: python -m screenshots.make_screenshots   (or: python screenshots/make_screenshots.py)
     [--only main,inspect,volumes,help,setup] [--out screenshots]

Everything happens in a private NANOBOT_HOME (a temporary folder, never yours) with the
default config, so every slot runs on the embedded model, one real llama.cpp server:

- main: `nanobot run hanoi --disks 20 --sampler simulated:0.99 --detach` (a detached
  durable run, as a user starts one) watched by the Process pane, the palette's in-app
  simulated Hanoi run in the Votes pane, and (at 120x36) one question answered by the
  chat agent on the embedded model;
- inspect: the inspect screen on a step of that run;
- volumes: the Volumes pane on a volume ingested from this repository's nanobot_tui/ui;
- help: the help screen (F1);
- setup: the setup wizard's first step (hardware and tier), as the palette opens it.

The runs go on while the pictures are taken, so the numbers differ from one run of this
script to the next; the tests keep their own fixed snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the repository's packages come first
    sys.path.insert(0, str(REPO))

SIZES = ((120, 36), (80, 24))
SCREENS = ("main", "inspect", "volumes", "help", "setup")
QUESTION = "Name a colour."
START = ("run", "hanoi", "--disks", "20", "--sampler", "simulated:0.99", "--detach")


STARTED: list[str] = []  # the runs this script started, cancelled at the end


def nanobot(*args: str) -> str:
    """Run `nanobot ARGS` (this interpreter) and return its last line of output."""
    out = subprocess.run(
        [sys.executable, "-m", "nanobot_tui", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    return out.stdout.strip().splitlines()[-1]


async def until(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        await asyncio.sleep(0.05)


def save(app: object, out: Path, name: str, size: tuple[int, int]) -> Path:
    """The screen as SVG, with LF line endings whatever the platform."""
    path = out / f"{name}-{size[0]}x{size[1]}.svg"
    svg = app.export_screenshot(title="nanobot")  # type: ignore[attr-defined]
    path.write_text(svg, encoding="utf-8", newline="\n")
    return path


Shot = Callable[[object, object, tuple[int, int]], Awaitable[None]]


async def take(name: str, size: tuple[int, int], out: Path, run_id: str, shot: Shot) -> Path:
    """Launch the app, let `shot` bring it to the screen wanted, save it."""
    from nanobot_tui.config import load_config
    from nanobot_tui.ui.app import NanobotApp
    from nanobot_tui.ui.screens.main import MainScreen

    config, _ = load_config()
    app = NanobotApp(config, attach_run=run_id)
    async with app.run_test(size=size) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen) and app.engine_state.ready)
        await shot(app, pilot, size)
        await pilot.pause(0.3)
        return save(app, out, name, size)


async def main_screen(app, pilot, size) -> None:  # type: ignore[no-untyped-def]
    from nanobot_tui.ui.panes.chat import ChatPane
    from nanobot_tui.ui.panes.process_tree import ProcessTree
    from nanobot_tui.ui.widgets.prompt import PromptArea

    if not app.screen.narrow:
        # One real turn of the chat agent on the embedded model (a 135M model: expect
        # little wisdom).
        chat = app.screen.query_one(ChatPane)
        prompt = chat.query_one("#prompt", PromptArea)
        prompt.value = QUESTION
        prompt.focus()
        await pilot.press("enter")
        await until(lambda: chat.turn >= 1 and not chat.busy, 300)
    # A fresh detached run, caught while it goes on (it takes about 20 s).
    app.attached_run = await asyncio.to_thread(nanobot, *START)
    STARTED.append(app.attached_run)
    app.start_demo_run(20)  # the Votes pane watches this one, in the app
    pane = app.screen.query_one(ProcessTree)
    await until(lambda: pane.run_id == app.attached_run and pane.run_tree.display)
    pane.run_tree.focus()
    await pilot.press("space")  # open the first block of the run
    await pilot.pause(2.5)  # a few polls of the run and of the vote counter


async def inspect_screen(app, pilot, size) -> None:  # type: ignore[no-untyped-def]
    from nanobot_tui.engine.runs.store import RunStore
    from nanobot_tui.ui.screens.inspect_node import InspectScreen

    with RunStore.open(app.attached_run) as store:
        # The first step that had more than one candidate: a vote worth a look.
        done = store.status().steps_done
        step = next((i for i in range(min(done, 5000)) if len(store.step(i).votes) > 1), 0)
        node_id = store.layout.step_base + step
    await app.push_screen(InspectScreen(app.attached_run, node_id))
    await until(lambda: isinstance(app.screen, InspectScreen) and app.screen.loaded)


async def volumes_screen(app, pilot, size) -> None:  # type: ignore[no-untyped-def]
    from nanobot_tui.ui.panes.volumes import VolumeBrowser

    pane = app.screen.query_one(VolumeBrowser)
    app.screen.show_pane("volumes")
    await until(lambda: bool(pane.volumes))
    pane.open_volume(str(pane.volumes[0]["name"]))
    await until(lambda: pane.is_open)
    await pilot.press("space")  # open the first folder
    await pilot.press("down", "down")


async def help_screen(app, pilot, size) -> None:  # type: ignore[no-untyped-def]
    from nanobot_tui.ui.screens.help import HelpScreen

    app.screen.set_focus(None)
    await pilot.press("f1")
    await until(lambda: isinstance(app.screen, HelpScreen))


async def setup_screen(app, pilot, size) -> None:  # type: ignore[no-untyped-def]
    from nanobot_tui.ui.screens.setup import SetupScreen

    await app.push_screen(SetupScreen())
    await pilot.pause(1.0)


SHOTS: dict[str, Shot] = {
    "main": main_screen,
    "inspect": inspect_screen,
    "volumes": volumes_screen,
    "help": help_screen,
    "setup": setup_screen,
}


async def make(names: list[str], out: Path) -> list[Path]:
    run_id = nanobot(*START)
    STARTED.append(run_id)
    nanobot("ingest", str(REPO / "nanobot_tui" / "ui"), "--name", "nanobot-ui")
    made = []
    try:
        for name in names:
            for size in SIZES:
                path = await take(name, size, out, run_id, SHOTS[name])
                print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
                made.append(path)
    finally:
        for started in STARTED:
            subprocess.run(
                [sys.executable, "-m", "nanobot_tui", "cancel", started],
                cwd=REPO,
                capture_output=True,
                timeout=60,
                check=False,
            )
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated screens (default: {','.join(SCREENS)})")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCREENS)
    unknown = [n for n in names if n not in SHOTS]
    if unknown:
        print(f"unknown screen {unknown[0]!r} (known: {', '.join(SCREENS)})", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nanobot-screenshots-") as home:
        os.environ["NANOBOT_HOME"] = home
        asyncio.run(make(names, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
