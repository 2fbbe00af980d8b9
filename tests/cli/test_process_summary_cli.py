"""A process's summaries through the real commands: written at the end of a foreground
`nanobot process` (from the facts for a SIMULATED run, by the embedded memory model for
a local one), stored in the run's store, and printed by `nanobot status ID` and
`nanobot process show ID`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui import paths
from tests.cli.test_process_cli import nanobot
from tests.engine.work.test_summaries import make_repo


def stored(run_id: str) -> tuple[dict[int, str | None], dict[str, Any], list[int]]:
    """(node id -> summary, the meta summary, the file blocks' node ids)."""
    with sqlite3.connect(paths.runs_dir() / run_id / "run.db") as db:
        nodes = dict(db.execute("SELECT id, summary FROM nodes"))
        files = [r[0] for r in db.execute("SELECT id FROM nodes WHERE level = 1")]
        meta = json.loads(db.execute("SELECT value FROM meta WHERE key = 'summary'").fetchone()[0])
    return nodes, meta, files


def test_a_simulated_process_stores_its_summaries_and_status_and_show_print_them(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    out = nanobot(
        "process", "f-strings", "--on", str(repo), "--recipe", "fstrings",
        "--sampler", "simulated:1.0", "--k", "1", timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "a simulated run uses no memory model" in out.stderr
    run_id = out.stdout.strip().splitlines()[-1]
    nodes, meta, files = stored(run_id)
    root = meta["text"]
    assert meta["model"] is None and root.endswith("(no memory model)")
    assert f"summary: {root}" in out.stdout
    assert nodes[1] == root and len(files) == 2
    assert [nodes[i].split(":")[0] for i in files] == ["pkg/a.py", "pkg/b.py"]  # type: ignore[union-attr]

    status = nanobot("status", run_id)
    assert status.returncode == 0 and f"  summary: {root}" in status.stdout.splitlines()
    assert json.loads(nanobot("status", run_id, "--json").stdout)["summary"] == root
    show = nanobot("process", "show", run_id)
    assert f"summary: {root}" in show.stdout.splitlines()
    assert json.loads(nanobot("process", "show", run_id, "--json").stdout)["summary"] == root


def test_a_run_without_summaries_prints_none() -> None:
    """A run that is not a process (Hanoi) has no summary line or key."""
    out = nanobot("run", "hanoi", "--disks", "3", "--sampler", "simulated:1.0", "--json")
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
    assert "summary:" not in nanobot("status", run_id).stdout
    assert "summary" not in json.loads(nanobot("status", run_id, "--json").stdout)


@pytest.mark.model
@pytest.mark.timeout(600)  # a server start and three model calls on shared cores
def test_the_memory_model_writes_a_summary_for_each_file_and_the_root(tmp_path: Path) -> None:
    """The embedded model as the memory slot summarises a (simulated) run's files and the
    run: each file block and the root get a stored, printable, one-line sentence written
    by the model (whatever its wording), and `nanobot status` prints the root's."""
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.engine.work.summaries import RootSummary, summarize_run

    repo = make_repo(tmp_path / "repo")
    out = nanobot(
        "process", "f-strings", "--on", str(repo), "--recipe", "fstrings",
        "--sampler", "simulated:1.0", "--k", "1", timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().splitlines()[-1]
    home = paths.home()
    (home / "config.json").write_text(
        json.dumps({"local": {"memory": {"model": "smollm2-135m-instruct", "contextSize": 2048}}})
    )

    async def summarise() -> RootSummary:
        workbench = Workbench(load_config()[0], only_slots=("memory",))
        async with workbench:
            return await summarize_run(run_id, workbench.client("memory"), model="memory")

    got = asyncio.run(summarise())
    nodes, meta, files = stored(run_id)
    assert got.model == meta["model"] == "memory"  # the root's sentence is the model's
    assert len(files) == 2 and sum(f.by_model for f in got.files) == 2
    for node_id in [1, *files]:
        text = nodes[node_id]
        assert text and text.isprintable() and "\n" not in text, (node_id, text)
    status = nanobot("status", run_id)
    assert f"  summary: {meta['text']}" in status.stdout.splitlines()
