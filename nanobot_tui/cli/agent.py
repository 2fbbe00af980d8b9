"""`nanobot agent` (one message through the agent, for scripts and SSH) and `nanobot
sessions` (the saved conversations).

The answer goes to stdout as it streams; tool calls and other events go to stderr, so
`nanobot agent -m ... > answer.txt` keeps just the answer. `--json` prints one object at
the end instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from nanobot_tui.cli.common import EXIT_OK, EXIT_USAGE, fail, positive_int
from nanobot_tui.text import printable

if TYPE_CHECKING:
    from nanobot_tui.engine.agent.loop import AgentEvent, TurnDone
    from nanobot_tui.engine.agent.sessions import Session


NOTE_CHARS = 200  # a tool call's arguments on stderr, at most

log = logging.getLogger(__name__)


def _note(text: str) -> None:
    text = printable(text)  # model-supplied: no control sequences reach the terminal
    sys.stderr.write(f"\x1b[2m{text}\x1b[0m\n" if sys.stderr.isatty() else f"{text}\n")


async def _run_agent(args: argparse.Namespace, message: str) -> int:
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.agent.build import build_agent, open_session
    from nanobot_tui.engine.agent.sessions import SessionError, valid_name
    from nanobot_tui.engine.serving.manager import ServerStartError
    from nanobot_tui.engine.serving.workbench import Workbench

    config = load_config()[0]
    if args.max_rounds is not None:
        config.agent.max_rounds = args.max_rounds
    if args.no_learn:
        config.learning.enabled = False
    if args.session is not None:
        valid_name(args.session)
    workbench = Workbench(config)
    try:
        await workbench.start()
    except ServerStartError as exc:
        detail = f"\n{exc.log_tail}" if exc.log_tail else ""
        return fail(f"{exc}{detail}")
    kit = None
    try:
        # Opened once the servers run: a failed start leaves no empty session behind.
        session = open_session(args.session)
        kit = await build_agent(workbench, config, session=session, max_tokens=args.max_tokens)
        turn = _Turn(quiet=args.json)
        async for event in kit.agent.turn(message):
            turn.show(event)
        if config.learning.enabled:
            await asyncio.to_thread(_learn_from, session)
        if turn.done is None:
            return fail("agent: the turn ended without an answer")
        if args.json:
            model = workbench.slots["main"].display_name
            print(json.dumps(turn.to_json(session.name, model)))
        else:
            print()
            _note(f"session {session.name} · {turn.done.rounds} round(s)")
    except SessionError as exc:
        # Every session failure exits 2, a file that cannot be written too.
        return fail(str(exc), EXIT_USAGE)
    finally:
        if kit is not None:
            kit.close()
        await workbench.stop()
    return EXIT_OK


def _learn_from(session: Session) -> None:
    """Learned skills from the session's finished turns; one line on stderr for each
    skill learned or demoted. A failure here never fails the answer: one line logged."""
    from nanobot_tui.engine.learning.skills import SkillLearner

    try:
        learner = SkillLearner()
        lines = learner.announce(learner.observe_session(session))
    except Exception as exc:
        log.warning(
            "learning from session %s skipped: %s: %s",
            session.name,
            type(exc).__name__,
            " ".join(str(exc).split()),
        )
        return
    for line in lines:
        _note(line)


class _Turn:
    """One turn's events as they come: the answer to stdout, the rest as notes on stderr
    (nothing but the answer's JSON at the end when `quiet`)."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.tools: list[dict[str, Any]] = []
        self.done: TurnDone | None = None

    def show(self, event: AgentEvent) -> None:
        # Imported here: `nanobot --help` must not load the engine.
        from nanobot_tui.engine.agent.loop import (
            AnswerDelta,
            CallProblem,
            Compacted,
            MessageStored,
            ToolCalls,
            ToolDone,
            TurnDone,
        )
        from nanobot_tui.engine.llm.errors import clip, one_line

        if isinstance(event, AnswerDelta) and not self.quiet:
            sys.stdout.write(printable(event.text))
            sys.stdout.flush()
        elif isinstance(event, ToolCalls):
            for call in event.calls:
                if not self.quiet:
                    # The arguments can be a whole file (write_file): one clipped line.
                    _note(f"→ {call.name}({clip(one_line(call.arguments), NOTE_CHARS)})")
        elif isinstance(event, ToolDone):
            r = event.result
            self.tools.append({"name": r.name, "ok": r.ok, "elapsedSeconds": round(r.elapsed_s, 4)})
            if not self.quiet:
                first = r.content.splitlines()[0] if r.content else ""
                # A failed tool's content already says "error: " (for the model).
                first = first if r.ok else first.removeprefix("error: ")
                _note(f"  {'ok' if r.ok else 'error'}: {first[:100]}")
        elif isinstance(event, CallProblem) and not self.quiet:
            _note(f"  unreadable tool call: {event.problem}")
        elif isinstance(event, Compacted) and not self.quiet:
            _note(f"  compacted messages {event.first}-{event.last}")
        elif isinstance(event, MessageStored) and not self.quiet:
            _note(
                f"  the message (about {event.tokens:,} tokens) is too long for the model's "
                f"window: stored as volume {event.volume}, which it reads with the ctx_* tools"
            )
        elif isinstance(event, TurnDone):
            self.done = event

    def to_json(self, session: str, model: str) -> dict[str, Any]:
        done = self.done
        assert done is not None
        return {
            "answer": done.answer,
            "session": session,
            "model": model,
            "rounds": done.rounds,
            "stopped": done.stopped,
            "tools": self.tools,
            "usage": {
                "promptTokens": done.usage.prompt_tokens,
                "completionTokens": done.usage.completion_tokens,
                "lastPromptTokens": done.last_prompt_tokens,
            },
        }


def _message_text(arg: str) -> str:
    """The message as text: from argv or stdin's bytes, bytes that are not UTF-8 as U+FFFD
    (Python keeps them as lone surrogates, which nothing downstream can write)."""
    if arg == "-":
        raw = getattr(sys.stdin, "buffer", None)  # None: stdin replaced by a text stream
        if raw is not None:
            return raw.read().decode("utf-8", "replace")
        arg = sys.stdin.read()
    try:
        return arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no undecodable byte makes
        return arg.encode("utf-8", "replace").decode("utf-8")


def cmd_agent(args: argparse.Namespace) -> int:
    message = _message_text(args.message)
    if not message.strip():
        return fail("agent: the message is empty", EXIT_USAGE)
    try:
        return asyncio.run(_run_agent(args, message))
    except KeyboardInterrupt:
        return fail("interrupted (the session keeps what was said)", 130)


def cmd_sessions(args: argparse.Namespace) -> int:
    from nanobot_tui.engine.agent.sessions import SessionStore

    infos = SessionStore().list()
    if args.json:
        print(json.dumps([info.to_dict() for info in infos], indent=2))
        return EXIT_OK
    if not infos:
        print('no sessions yet: nanobot agent -m "..." or the chat pane starts one')
        return EXIT_OK
    for info in infos:
        print(f"{info.name:28} {info.updated[:16].replace('T', ' ')}  {info.title}")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser(
        "agent", help="answer one message through the agent (tools, memory) on stdout"
    )
    agent.add_argument("-m", "--message", required=True, help="the message; '-' reads stdin")
    agent.add_argument(
        "--session", metavar="NAME", help="resume this session (made if it does not exist)"
    )
    agent.add_argument(
        "--max-tokens", type=positive_int, default=1024, help="answer length cap per round"
    )
    agent.add_argument(
        "--max-rounds",
        type=positive_int,
        default=None,
        help="tool rounds cap (config: agent.maxRounds)",
    )
    agent.add_argument("--json", action="store_true", help="print one JSON object at the end")
    agent.add_argument(
        "--no-learn",
        action="store_true",
        help="leave the learned skills as they are: none learned, no hit or failure "
        "counted (config: learning.enabled)",
    )
    agent.set_defaults(func=cmd_agent)

    sessions = sub.add_parser("sessions", help="list the saved agent sessions")
    sessions.add_argument("--json", action="store_true", help="machine-readable output")
    sessions.set_defaults(func=cmd_sessions)
