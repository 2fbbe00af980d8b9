"""Summaries of a process run (engine/work/summaries.py): the facts of every file from a
real run's store and outcome (a SIMULATED sampler, real files, real SQLite, a real
`--verify` check), the sentences made from them, and storing them under the run's lock.
The model clients here are FAKES (a scripted answer, a failing call); the real memory
model is exercised in tests/cli/test_process_summary_cli.py."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui import paths
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.runs.control import RunLock
from nanobot_tui.engine.work import summaries
from nanobot_tui.engine.work.summaries import (
    FileFacts,
    clean,
    file_facts,
    read_summary,
    summarize_run,
)
from nanobot_tui.errors import NanobotError
from tests.cli.test_process_cli import nanobot
from tests.cli.test_process_code_cli import FORMATTED as A


def make_repo(root: Path) -> Path:
    """pkg/a.py (greet's edit breaks the user's check), pkg/b.py (four functions),
    pkg/bad.py (does not parse)."""
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text(A)
    (root / "pkg" / "b.py").write_text(
        "".join(f'def f{i}(x):\n    return "v%s" % x\n\n\n' for i in range(4))
    )
    (root / "pkg" / "bad.py").write_text('def broken(:\n    return "%s" % 1\n')
    (root / "test_src.py").write_text(
        "import inspect\nfrom pkg.a import greet\n\n\ndef test_src():\n"
        "    assert '%' in inspect.getsource(greet)\n"
    )
    return root


def run(repo: Path, *extra: str) -> str:
    out = nanobot(
        "process", "f-strings", "--on", str(repo), "--recipe", "fstrings", "--json", *extra,
        timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run_id: str = json.loads(out.stdout.strip().splitlines()[-1])["run"]["run_id"]
    return run_id


def db(run_id: str) -> sqlite3.Connection:
    return sqlite3.connect(paths.runs_dir() / run_id / "run.db")


def test_the_facts_of_a_run_with_a_reverted_edit_and_a_file_that_does_not_parse(
    tmp_path: Path,
) -> None:
    check = f"{sys.executable} -m pytest -q -p no:cacheprovider test_src.py"
    run_id = run(
        make_repo(tmp_path / "repo"), "--sampler", "simulated:1.0", "--k", "1", "--verify", check
    )
    facts = {f.path: f for f in file_facts(run_id)}
    assert list(facts) == ["pkg/a.py", "pkg/b.py", "pkg/bad.py"]
    a, b, bad = facts["pkg/a.py"], facts["pkg/b.py"], facts["pkg/bad.py"]
    assert (a.functions, a.edited, a.unchanged, a.undecided) == (2, ("total",), (), ())
    assert [(r.function, r.by) for r in a.reverted] == [("greet", "check")]
    assert (b.functions, b.edited, b.reverted, b.pending) == (4, ("f0", "f1", "f2", "f3"), (), 0)
    assert (bad.node_id, bad.functions, bad.problem) == (None, 0, "does not parse")
    with db(run_id) as conn:
        labels = dict(conn.execute("SELECT ordinal, label FROM step_groups"))
    assert a.node_id is not None and b.node_id == a.node_id + 1 and len(labels) == 2
    # The sentences made from the facts say what happened, and that no model wrote them.
    assert "greet broke the check" in a.sentence() and "1 of 2" in a.sentence()
    assert bad.sentence() == "pkg/bad.py: skipped, does not parse."


def test_undecided_functions_are_facts_with_their_reason(tmp_path: Path) -> None:
    """A weak simulated model that often never gets k ahead: every function lands in
    exactly one list, and the undecided ones are the steps the run skipped."""
    run_id = run(
        make_repo(tmp_path / "repo"),
        "--sampler", "simulated:0.5", "--k", "2", "--max-samples", "3", "--retries", "0",
    )  # fmt: skip
    facts = [f for f in file_facts(run_id) if f.problem is None]
    with db(run_id) as conn:
        skipped = conn.execute("SELECT count(*) FROM steps WHERE status <> 'completed'")
        n_skipped = skipped.fetchone()[0]
    assert n_skipped > 0  # the seed makes this run have some (it does, deterministically)
    for f in facts:
        assert (
            len(f.edited) + len(f.unchanged) + len(f.undecided) + len(f.reverted) + (f.pending)
            == f.functions
        )
    undecided = [u for f in facts for u in f.undecided]
    assert len(undecided) == n_skipped
    assert all(u.reason.startswith("undecided after ") for u in undecided)
    assert all("rounds" in u.reason for u in undecided)


def test_deterministic_summaries_are_stored_on_the_file_blocks_and_the_root(
    tmp_path: Path,
) -> None:
    run_id = run(make_repo(tmp_path / "repo"), "--sampler", "simulated:1.0", "--k", "1")
    got = asyncio.run(summarize_run(run_id, None))
    assert got.stored and got.model is None
    assert got.text.endswith(summaries.NO_MODEL)
    assert "6 of 6 function(s) edited in 2 file(s)" in got.text and "pkg/bad.py" in got.text
    with db(run_id) as conn:
        nodes = dict(conn.execute("SELECT id, summary FROM nodes"))
        meta = json.loads(
            conn.execute("SELECT value FROM meta WHERE key = 'summary'").fetchone()[0]
        )
    assert nodes[1] == got.text and meta["text"] == got.text and meta["steps_done"] == 6
    for f in got.files:
        if f.node_id is not None:
            assert nodes[f.node_id] == f.text and f.text.startswith(f.path)
    assert read_summary(run_id) == got.text


class FakeClient:
    """A FAKE chat client: answers every request with `text` (or raises `error`)."""

    def __init__(self, text: str = "", error: Exception | None = None) -> None:
        self.text, self.error = text, error
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest) -> Any:
        self.requests.append(request)
        if self.error is not None:
            raise self.error

        class Result:
            content = self.text

        return Result()


def test_a_models_sentence_is_data_and_a_failed_call_falls_back(tmp_path: Path) -> None:
    run_id = run(make_repo(tmp_path / "repo"), "--sampler", "simulated:1.0", "--k", "1")
    hostile = "  Edited\x1b[2J two\nfunctions.\r\n" + "x" * 500
    fake = FakeClient(hostile)
    got = asyncio.run(summarize_run(run_id, fake, model="fake", store=False))  # type: ignore[arg-type]
    texts = [got.text] + [f.text for f in got.files if f.node_id is not None]
    for text in texts:
        assert text.startswith("Edited two functions.") and "\x1b" not in text
        assert "\n" not in text and len(text) <= summaries.MAX_CHARS
    assert got.model == "fake" and not got.stored
    # The model reads the facts as structured data, never the code.
    for request in fake.requests:
        assert request.max_tokens == summaries.MAX_TOKENS
        user = request.messages[-1]["content"]
        assert isinstance(json.loads(user), dict) and "return" not in user
    failing = FakeClient(error=ConnectionError("down"))
    got = asyncio.run(summarize_run(run_id, failing, model="fake"))  # type: ignore[arg-type]
    assert got.model is None and "(the memory model failed: ConnectionError)" in got.text


def test_summaries_are_not_written_while_a_runner_holds_the_run(tmp_path: Path) -> None:
    run_id = run(make_repo(tmp_path / "repo"), "--sampler", "simulated:1.0", "--k", "1")
    lock = RunLock(run_id)
    lock.acquire()
    try:
        with pytest.raises(NanobotError, match="being run by"):
            asyncio.run(summarize_run(run_id, None))
    finally:
        lock.release()
    assert read_summary(run_id) is not None  # the one the command wrote is still there


def test_clean_keeps_one_printable_line() -> None:
    assert clean("a\x07b\n c\t d") == "ab c d"
    assert clean("\x1b[31m\n  ") == "" and clean("...") == ""
    assert len(clean("word " * 200)) == summaries.MAX_CHARS
    assert clean("Two edits. Then it ran on and on") == "Two edits."  # one sentence


def test_facts_for_a_prompt_are_capped() -> None:
    f = FileFacts("m.py", 5, 30, edited=tuple(f"f{i}" for i in range(30)))
    assert f.data()["edited"][-1] == "... 22 more" and len(f.data()["edited"]) == 9


def test_red_flags_are_counted_by_reason_per_file(tmp_path: Path) -> None:
    """Rejected samples (a step's last attempt and its earlier ones) add up per file; set
    here in the run's real store, since a simulated sampler draws none."""
    run_id = run(make_repo(tmp_path / "repo"), "--sampler", "simulated:1.0", "--k", "1")
    with db(run_id) as conn:  # steps 0-1: pkg/a.py; 2-5: pkg/b.py
        conn.execute("""UPDATE steps SET red_flags = '{"does_not_parse": 2}' WHERE step = 0""")
        conn.execute("""UPDATE steps SET red_flags = '{"changes_signature": 1}' WHERE step = 3""")
        conn.execute(
            "INSERT INTO attempts(step, attempt, status, red_flags) "
            """VALUES (1, 1, 'skipped', '{"does_not_parse": 3, "too_long": 1}')"""
        )
    facts = {f.path: f for f in file_facts(run_id)}
    assert facts["pkg/a.py"].red_flags == {"does_not_parse": 5, "too_long": 1}
    assert facts["pkg/b.py"].red_flags == {"changes_signature": 1}
    assert "red-flagged samples: does_not_parse 5, too_long 1" in facts["pkg/a.py"].sentence()
