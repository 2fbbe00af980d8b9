"""A process and L0: after a process whose `--verify` check passed, its winners are kept
as "voted+checked" results (`cli.process._keep_checked` -> `run_memory.remember_checked`),
and a later process reuses them, also for a function that moved down its file (a code
step's L0 key leaves out its line numbers: `CodeDomain.reuse_key`). Real snapshots, real
durable runs, a real check command, real SQLite. The model is a FAKE client that adds a
docstring to the function it is shown (a real edit on demand is out of the embedded 135M
model's reach; what is tested is what the process keeps and reuses).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from nanobot_tui.cli.process import _keep_checked
from nanobot_tui.engine.learning.reuse import ResultCache
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import LEARN_LOOPS
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from nanobot_tui.engine.work import process
from tests.fakes import FakeSamplerClient

SOURCE = """\
def greet(name):
    return "hello " + name


def total(a, b):
    return a + b
"""
MOVED = (
    '''\
def added_above(x):
    """A new function: the two below move down the file."""
    return x


'''
    + SOURCE
)
CHECK = f"{sys.executable} -c \"from pkg.a import greet; assert greet('x') == 'hello x'\""


class DocstringFakeClient(FakeSamplerClient):
    """A FAKE model client: replies with the function it is shown, a docstring added
    under its (one-line) def; counts the requests."""

    base_url = "fake://model"
    model: str | None = None  # the server's own, as the real client without a name

    def __init__(self) -> None:
        self.requests = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        shown = re.search(r"```python\n(.*?)```", str(request.messages[-1]["content"]), re.S)
        assert shown is not None
        head, _, body = shown.group(1).partition("\n")
        reply = f'```python\n{head}\n    """Checked."""\n{body}```'
        choice = Choice(reply, finish_reason="stop")
        return ChatResult([choice], Usage(completion_tokens=20), None, 0.0, "fake", {})


def make_repo(root: Path, source: str) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text(source)
    return root


async def run_process(
    repo: Path, client: DocstringFakeClient, loops: tuple[str, ...] = LEARN_LOOPS
) -> str:
    plan = process.prepare(
        "add a docstring", repo, "instruction", sampler="local:rlm", k=1, verify=CHECK
    )
    rid = await start_run(dataclasses.replace(plan.spec, learn_loops=loops))
    domain = plan.spec.build_domain()
    sampler = LLMSampler(client, domain, name="local rlm: fake-model", batch=False)
    await execute(rid, sampler=sampler)
    return rid


def cached() -> list[tuple[str, str, str]]:
    with LearningStore() as store:
        return sorted(
            (r.input["qualname"], r.verified_by, r.step_type) for r in ResultCache(store).results()
        )


async def test_checked_winners_are_kept_and_reused_where_the_function_moved(
    tmp_path: Path,
) -> None:
    first = DocstringFakeClient()
    rid = await run_process(make_repo(tmp_path / "one", SOURCE), first)
    assert first.requests == 2
    assert cached() == []  # no truth for the instruction recipe: nothing kept by the run
    result = process.outcome(rid).to_dict()
    assert result["verify"]["passed"] and result["accepted"] == 2
    assert _keep_checked(argparse.Namespace(json=True), rid, result) == 2
    assert cached() == [
        ("greet", "voted+checked", "code:instruction"),
        ("total", "voted+checked", "code:instruction"),
    ]

    again = DocstringFakeClient()
    rid = await run_process(make_repo(tmp_path / "two", MOVED), again)
    assert again.requests == 1  # only the new function: greet and total were reused
    moved = process.outcome(rid)
    assert moved.accepted == 3 and moved.verify is not None and moved.verify["passed"]


async def test_a_failed_check_keeps_nothing(tmp_path: Path) -> None:
    rid = await run_process(make_repo(tmp_path / "one", SOURCE), DocstringFakeClient())
    result = process.outcome(rid).to_dict()
    result["verify"] = {**result["verify"], "passed": False}
    assert _keep_checked(argparse.Namespace(json=True), rid, result) == 0
    assert cached() == []


async def test_without_the_reuse_loop_checked_winners_are_not_kept(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "one", SOURCE)
    rid = await run_process(repo, DocstringFakeClient(), loops=("examples", "history"))
    result = process.outcome(rid).to_dict()
    assert result["verify"]["passed"]
    assert _keep_checked(argparse.Namespace(json=True), rid, result) == 0
    assert cached() == []
