"""The agent on the embedded model: prompt size, tool-round overhead, tool use, endurance;
and how soon the shell tool stops a command that ran out of time.

Run: python -m benchmarks.agent_rounds [--questions 10] [--seconds 240] [--json]

1 to 4 run on the real embedded server (SmolLM2-135M), the agent built exactly as the app
and `nanobot agent` build it (every default tool, MEMORY.md and skills when present):

1. "hello": the prompt tokens the server counted, with every default tool enabled, against
   the same message with no tools at all (the reference).
2. Tool use: questions whose answer is in an ingested volume (a file of made-up facts), in
   each tool mode: how often the model calls a ctx tool, calls it well (it succeeds), and
   answers with the fact. SmolLM2-135M never writes a call in free text; with constrained
   replies (a JSON schema per tool, enforced by the server's grammar) it always writes a
   well-formed one, and the figures say how often that helps.
3. Overhead per tool round: the round's wall time less the server's own prompt and
   generation time (llama.cpp's timings) and less the tools' own time: what nanobot adds
   (prompt building, HTTP, parsing, running the registry, writing the session). The aim:
   under 50 ms per local round.
4. Endurance: one session driven round after round (constrained replies, so every round
   calls a tool; a new user turn whenever the loop ends one) for `--seconds`, compaction
   included: rounds sustained, and the first failure if any.
5. The shell tool's stop (no model): how long after its timeout `run_shell` returns with the
   command's process group gone, for a command that obeys SIGTERM and for one that ignores
   it (stopped by SIGKILL once the grace is over; the grace is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nanobot_tui.config import Config, LocalConfig, SlotConfig
from nanobot_tui.engine.agent.build import build_agent, open_session
from nanobot_tui.engine.agent.loop import (
    CallProblem,
    Compacted,
    RoundDone,
    ToolCalls,
    ToolDone,
    TurnDone,
)
from nanobot_tui.engine.agent.tools.shell import run_shell
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.serving.workbench import Workbench

FACTS = {
    "Which port does the staging server use?": (
        "The staging server bluefin listens on port 8443.",
        "8443",
    ),
    "What is the name of the staging server?": ("The staging server is called bluefin.", "bluefin"),
    "How often are deploy keys rotated?": ("Deploy keys are rotated every 90 days.", "90"),
    "Who owns the billing service?": ("The billing service is owned by Priya Raman.", "Priya"),
    "Which database does the ledger use?": (
        "The ledger stores its rows in PostgreSQL 16.",
        "PostgreSQL",
    ),
}


def config(mode: str, workspace: Path) -> Config:
    slot = {"model": "smollm2-135m-instruct", "contextSize": 4096}
    cfg = Config(
        local=LocalConfig(
            main=SlotConfig(**slot),
            rlm=SlotConfig(**slot, parallel=2),
            memory=SlotConfig(**slot),
        )
    )
    cfg.agent.tool_mode = mode  # type: ignore[assignment]
    cfg.agent.workspace = workspace
    return cfg


async def hello_tokens(workbench: Workbench, cfg: Config) -> dict[str, int]:
    kit = await build_agent(workbench, cfg, session=open_session(None), max_tokens=8)
    try:
        done = None
        async for event in kit.agent.turn("hello"):
            if isinstance(event, TurnDone):
                done = event
        bare = await workbench.client("main").chat(
            ChatRequest([{"role": "user", "content": "hello"}], max_tokens=1)
        )
        assert done is not None
        return {
            "with_default_tools": done.last_prompt_tokens,
            "no_tools_reference": bare.usage.prompt_tokens,
            "tools": len(kit.agent.tools.names()),
        }
    finally:
        kit.close()


async def tool_use(workbench: Workbench, cfg: Config, questions: int) -> dict[str, Any]:
    asked = called = succeeded = answered = 0
    rounds: list[int] = []
    items = list(FACTS.items())
    for i in range(questions):
        question, (_, needle) = items[i % len(items)]
        kit = await build_agent(workbench, cfg, session=open_session(None), max_tokens=96)
        kit.agent.max_rounds = 4
        try:
            used = ok = False
            answer = ""
            async for event in kit.agent.turn(f"{question} Look it up in volume facts."):
                if isinstance(event, ToolCalls):
                    used |= any(c.name.startswith("ctx_") for c in event.calls)
                elif isinstance(event, ToolDone):
                    ok |= event.result.ok and event.result.name.startswith("ctx_")
                elif isinstance(event, TurnDone):
                    answer, n = event.answer, event.rounds
            asked += 1
            called += used
            succeeded += ok
            answered += needle.lower() in answer.lower()
            rounds.append(n)
        finally:
            kit.close()
    return {
        "questions": asked,
        "called_a_ctx_tool": called,
        "ctx_tool_succeeded": succeeded,
        "answered_with_the_fact": answered,
        "rounds_median": statistics.median(rounds) if rounds else None,
    }


async def endurance(workbench: Workbench, cfg: Config, seconds: float) -> dict[str, Any]:
    kit = await build_agent(workbench, cfg, session=open_session("endurance"), max_tokens=96)
    rounds = turns = compactions = problems = 0
    overheads: list[float] = []
    walls: list[float] = []
    failure = None
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and failure is None:
            turns += 1
            question = list(FACTS)[turns % len(FACTS)]
            try:
                compacting = 0.0
                async for event in kit.agent.turn(f"{question} Use the tools on volume facts."):
                    if isinstance(event, RoundDone):
                        rounds += 1
                        walls.append(event.wall_s)
                        if event.server_s is not None:
                            spent = event.server_s + event.tools_s + compacting
                            overheads.append(event.wall_s - spent)
                        compacting = 0.0
                    elif isinstance(event, Compacted):
                        compactions += 1
                        compacting = event.elapsed_s  # the memory model's time, not overhead
                    elif isinstance(event, CallProblem):
                        problems += 1
            except Exception as exc:  # the point is to find the first failure, whatever it is
                failure = f"{type(exc).__name__}: {exc}"
    finally:
        kit.close()
    return {
        "seconds": seconds,
        "rounds": rounds,
        "turns": turns,
        "compactions": compactions,
        "unreadable_calls": problems,
        "failure": failure,
        "round_wall_median_ms": round(statistics.median(walls) * 1000, 1) if walls else None,
        "overhead_median_ms": round(statistics.median(overheads) * 1000, 2) if overheads else None,
        "overhead_p95_ms": (
            round(statistics.quantiles(overheads, n=20)[-1] * 1000, 2)
            if len(overheads) >= 20
            else None
        ),
    }


async def shell_stop(work: Path, runs: int = 5) -> dict[str, float]:
    """Median ms from the timeout (plus the grace, for SIGKILL) until run_shell returns."""
    timeout, grace = 0.5, 0.5
    figures = {}
    commands = {
        "sigtermOvershootMs": ("sleep 30 & sleep 30", timeout),
        "sigkillOvershootMs": ("trap '' TERM; sleep 30", timeout + grace),
    }
    for label, (command, floor) in commands.items():
        late = []
        for _ in range(runs):
            began = time.perf_counter()
            out = await run_shell(
                command, cwd=work, timeout=timeout, output_chars=500, kill_grace=grace
            )
            late.append(time.perf_counter() - began - floor)
            assert out.startswith("timed out"), out
        figures[label] = round(statistics.median(late) * 1000, 1)
    return figures


async def measure(questions: int, seconds: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="nanobot-bench-agent-"))
    os.environ["NANOBOT_HOME"] = str(home / "home")
    source = home / "facts"
    source.mkdir()
    (source / "facts.md").write_text("\n".join(fact for fact, _ in FACTS.values()) + "\n")
    ingest(source, "facts")
    result: dict[str, Any] = {"model": "SmolLM2-135M-Instruct (embedded)"}
    result["shell_stop"] = await shell_stop(home)
    async with Workbench(config("auto", home)) as workbench:
        result["hello_prompt_tokens"] = await hello_tokens(workbench, config("auto", home))
        result["tool_use"] = {}
        for mode in ("prompted", "constrained"):
            result["tool_use"][mode] = await tool_use(workbench, config(mode, home), questions)
        result["endurance_constrained"] = await endurance(
            workbench, config("constrained", home), seconds
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10, help="per tool mode")
    parser.add_argument("--seconds", type=float, default=240.0, help="endurance run length")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.questions, args.seconds))
    print(json.dumps(result, indent=2 if args.json else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
