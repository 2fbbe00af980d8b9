"""`nanobot learn [--type STEP_TYPE] [--epochs N] [--ab-steps N] [--slot S] [--resume]
[--json]`: train LoRA adapters on nanobot's verified work, A/B test them and promote the
ones that help (engine/learning/distill/job.py). The A/B test runs on up to --ab-steps
fresh steps (never trained on) where the step type's domain can make them, else on the
held-out split; its progress line says which ("A/B on 120 fresh steps").

Progress goes to stderr, one line per epoch and every few seconds (examples, epoch,
loss, ETA); the summary is one line on stdout (or one JSON object). Ctrl-c stops training
after its current step with a checkpoint saved; `nanobot learn --resume` goes on from
there. Training needs the optional `learn` extra (torch, transformers, peft); without it
the command says in one line how to install it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from nanobot_tui.cli.common import EXIT_OK, positive_int

if TYPE_CHECKING:
    from nanobot_tui.engine.learning.distill.job import JobEvent, LearnJob, LearnSummary

PROGRESS_EVERY_S = 5.0


class _Lines:
    """JobEvents as lines on stderr: every phase change, every new epoch, the last step,
    and training steps no more often than every PROGRESS_EVERY_S."""

    def __init__(self) -> None:
        self._last = 0.0
        self._epoch: tuple[str, int] | None = None

    def __call__(self, event: JobEvent) -> None:
        from nanobot_tui.text import printable

        now = time.monotonic()
        if event.train is not None:
            step = event.train
            new_epoch = (event.step_type, step.epoch) != self._epoch
            self._epoch = (event.step_type, step.epoch)
            last = step.step == step.steps
            if not (new_epoch or last or now - self._last >= PROGRESS_EVERY_S):
                return
        elif 0 < event.done < event.total and now - self._last < PROGRESS_EVERY_S:
            return  # an A/B test's progress, between its first and last example
        self._last = now
        print(f"learn {printable(event.step_type)}: {printable(event.message)}", file=sys.stderr)


async def _run(job: LearnJob, stop: threading.Event) -> LearnSummary:
    """The job, with the first ctrl-c asking it to stop (the second one quits at once)."""
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        stop.set()
        print("learn: stopping after this training step (ctrl-c again quits now)",
              file=sys.stderr)  # fmt: skip
        loop.remove_signal_handler(signal.SIGINT)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        return await job.run()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


def cmd_learn(args: argparse.Namespace) -> int:
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.learning.distill.job import AB_STEPS, LearnJob
    from nanobot_tui.engine.learning.distill.train import require_learn_extra

    require_learn_extra()  # before anything else: one line on how to get it
    stop = threading.Event()
    job = LearnJob(
        load_config()[0], step_type=args.type, epochs=args.epochs, resume=args.resume,
        slot=args.slot, progress=_Lines(), stop=stop, ab_steps=args.ab_steps or AB_STEPS,
    )  # fmt: skip
    summary = asyncio.run(_run(job, stop))
    if args.json:
        data: dict[str, Any] = {"summary": summary.line(), **summary.to_dict()}
        print(json.dumps(data, indent=2))
    else:
        from nanobot_tui.text import printable

        print(printable(summary.line()))
    return EXIT_OK


def _type_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a step type cannot be empty")
    return text


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "learn",
        help="train LoRA adapters on verified work; promote those an A/B test backs",
        description="For each step type with enough new verified examples (or the one "
        "--type names): build its training set, train a LoRA adapter for the slot's model "
        "(the optional 'learn' extra), A/B test it against the base on fresh steps it was "
        "never trained on (held-out ones for a step type whose domain cannot make them) "
        "and promote it only when it is better with 95 % confidence. Ctrl-c stops after a "
        "checkpoint; --resume goes on.",
    )
    p.add_argument("--type", type=_type_name, metavar="STEP_TYPE", help="only this step type")
    p.add_argument("--epochs", type=positive_int, metavar="N", help="training epochs (3)")
    p.add_argument(
        "--ab-steps", type=positive_int, metavar="N",
        help="fresh steps the A/B test runs on, at most (120)",
    )  # fmt: skip
    p.add_argument(
        "--slot", choices=("main", "rlm", "memory"), default="rlm",
        help="the slot whose model the adapters are for (rlm: the voted steps')",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="go on with stopped training jobs")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_learn)
