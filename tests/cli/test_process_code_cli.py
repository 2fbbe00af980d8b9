"""`nanobot process` on a real folder of Python files, through the real command: a run on a
snapshot, its patch, apply (refused when the user's files moved), undo, a check that
bisects the edit that breaks it, resume after the runner is killed mid-file, and the
recipes listing. The sampler is the SIMULATED one (the right edit with probability p):
what is tested here is the process around the model, not the model.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from nanobot_tui import paths
from nanobot_tui.engine.runs.store import RunStore
from tests.cli.test_process_cli import nanobot, runner_pid, start
from tests.engine.runs.runner_hold import HANG_GUARD_S, held_runner, let_go, step_until

FORMATTED = """\
def greet(name):
    return "hello %s" % name


def total(a, b):
    return "{} + {} = {}".format(a, b, a + b)


def plain():
    return 1
"""


def make_repo(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text(FORMATTED)
    (root / "test_a.py").write_text(
        "from pkg.a import greet, total\n\n\ndef test_it():\n"
        "    assert greet('x') == 'hello x'\n    assert total(1, 2) == '1 + 2 = 3'\n"
    )
    return root


def start_json(*args: str) -> dict[str, Any]:
    out = nanobot("process", *args, "--json", timeout=240)
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def test_a_process_edits_a_snapshot_and_apply_and_undo_round_trip(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    original = (repo / "pkg" / "a.py").read_bytes()
    data = start_json(
        "f-strings please", "--on", str(repo), "--recipe", "fstrings",
        "--sampler", "simulated:1.0", "--k", "1",
    )  # fmt: skip
    run_id, result = data["run"]["run_id"], data["outcome"]
    assert data["run"]["status"] == "completed"
    assert (result["functions"], result["decided"], result["accepted"]) == (2, 2, 2)
    assert result["changed_files"] == ["pkg/a.py"] and result["compiled"] == 1
    assert (repo / "pkg" / "a.py").read_bytes() == original  # nothing touched yet

    patch = nanobot("process", "diff", run_id).stdout
    assert '+    return f"hello {name}"' in patch and '+    return f"{a} + {b}' in patch

    applied = nanobot("process", "apply", run_id, "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["files"] == ["pkg/a.py"]
    assert 'f"hello {name}"' in (repo / "pkg" / "a.py").read_text()
    again = nanobot("process", "apply", run_id)
    assert again.returncode == 2 and "already applied" in again.stderr

    undone = nanobot("process", "undo", run_id)
    assert undone.returncode == 0, undone.stderr
    assert (repo / "pkg" / "a.py").read_bytes() == original


def test_apply_refuses_when_the_users_file_changed_since_the_run_began(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    data = start_json(
        "f-strings", "--on", str(repo), "--recipe", "fstrings",
        "--sampler", "simulated:1.0", "--k", "1", "--no-learn",
    )  # fmt: skip
    with RunStore.open(data["run"]["run_id"]) as store:
        assert store.spec.learn is False  # --no-learn reaches the run
    edited = FORMATTED + "\n\ndef mine():\n    return 3\n"
    (repo / "pkg" / "a.py").write_text(edited)
    refused = nanobot("process", "apply", data["run"]["run_id"])
    assert refused.returncode == 2
    assert "pkg/a.py" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert (repo / "pkg" / "a.py").read_text() == edited  # the user's work is kept


def test_a_failing_check_is_bisected_to_the_edit_that_breaks_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    # The user's test pins greet's source text: its f-string edit breaks the check,
    # total's does not.
    (repo / "test_src.py").write_text(
        "import inspect\nfrom pkg.a import greet\n\n\ndef test_src():\n"
        "    assert '%' in inspect.getsource(greet)\n"
    )
    check = f"{sys.executable} -m pytest -q -p no:cacheprovider"
    data = start_json(
        "f-strings", "--on", str(repo), "--recipe", "fstrings",
        "--sampler", "simulated:1.0", "--k", "1", "--verify", check,
    )  # fmt: skip
    result = data["outcome"]
    assert result["verify"]["passed"] and not result["verify"]["baseline_failed"]
    assert [r["function"] for r in result["reverted"]] == ["greet"]
    assert result["accepted"] == 1
    patch = nanobot("process", "diff", data["run"]["run_id"]).stdout
    assert 'f"{a} + {b}' in patch and "hello {name}" not in patch


def test_a_process_resumes_after_its_runner_is_killed_mid_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for f in range(6):  # 6 files of 150 functions each
        body = "".join(f'def f{f}_{i}(x):\n    return "v%s" % x\n\n\n' for i in range(150))
        (repo / f"m{f}.py").write_text(body)
    cli = start(
        "process", "f-strings", "--on", str(repo), "--recipe", "fstrings",
        "--sampler", "simulated:1.0", "--k", "1", "--concurrency", "1", "--detach",
    )  # fmt: skip
    worker = held_runner(cli.pid)  # the runner, held before it has imported anything
    try:
        run_id = psutil.Process(worker).cmdline()[-1]  # `python -m WORKER RUN_ID`
        seen = step_until(worker, run_id, lambda st: 0 < st.steps_done < 600)
        assert seen.pid == worker
        stdout, stderr = cli.communicate(timeout=HANG_GUARD_S)  # it saw the runner start
        assert cli.returncode == 0, stderr
        assert runner_pid(stdout) == worker and stdout.strip().splitlines()[-1] == run_id
        os.kill(worker, signal.SIGKILL)  # mid-run: 0 < done < 600 of 6 x 150
    finally:
        let_go(worker)
    resumed = nanobot("resume", run_id, "--json", timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    shown = nanobot("process", "show", run_id, "--json")
    result = json.loads(shown.stdout)
    assert result["status"] == "completed"
    assert (result["functions"], result["decided"], result["accepted"]) == (900, 900, 900)
    with sqlite3.connect(paths.runs_dir() / run_id / "run.db") as db:
        rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT step) FROM steps").fetchone()
    assert rows == (900, 900)  # every function recorded once
    assert result["summary"]  # a detached run's summaries, made from the facts when shown


def test_recipes_are_listed_and_bad_input_is_one_line(tmp_path: Path) -> None:
    listed = json.loads(nanobot("recipes", "--json").stdout)
    names = {r["name"]: r["reference"] for r in listed}
    assert names == {"fstrings": True, "docstrings": False, "error-handling": False,
                     "instruction": False, "extract": False}  # fmt: skip
    for args, needle in (
        (["process", "x"], "--on PATH"),
        (["process", "x", "--on", str(tmp_path / "none"), "--recipe", "fstrings"], "not a folder"),
        (["process", "x", "--on", str(tmp_path), "--recipe", "nope"], "unknown recipe"),
        (["process", "show", "no-such-run"], "no run"),
    ):
        out = nanobot(*args)
        assert out.returncode == 2 and needle in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1


def test_calibrate_a_recipe_with_a_reference_on_real_code(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    out = subprocess.run(
        [sys.executable, "-m", "nanobot_tui", "calibrate", "--recipe", "fstrings", "--on",
         str(repo), "--p", "0.9", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["feasible"] and plan["steps"] == 2


@pytest.mark.model
@pytest.mark.timeout(300)  # ingest, a server start and a few model calls on shared cores
def test_extract_over_a_volume_with_the_real_model(tmp_path: Path) -> None:
    """The extract recipe through the command on the embedded model: a one-file volume,
    one chunk, its items (whatever the small model finds) cited inside that file; an
    extract run has no patch."""
    repo = tmp_path / "notes"
    repo.mkdir()
    (repo / "notes.txt").write_text("deploy on friday\nthe access code for atlas is QX-7\n")
    home = paths.home()
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.json").write_text(
        json.dumps({"local": {"rlm": {"model": "smollm2-135m-instruct", "contextSize": 2048}}})
    )
    assert nanobot("ingest", str(repo)).returncode == 0
    data = start_json(
        "list every access code", "--volume", "notes", "--k", "1", "--max-samples", "3"
    )
    assert data["run"]["total_steps"] == 1 and data["run"]["status"] == "completed"
    for item in data["outcome"]["items"]:
        assert all(c in ("notes.txt:1", "notes.txt:2") for c in item["citations"])
    refused = nanobot("process", "diff", data["run"]["run_id"])
    assert refused.returncode == 2 and "no patch" in refused.stderr
    simulated = nanobot("process", "x", "--volume", "notes", "--sampler", "simulated:0.9")
    assert simulated.returncode == 2 and "planted truth" in simulated.stderr


def test_a_hopeless_projection_stops_a_real_model_before_it_starts(tmp_path: Path) -> None:
    """With the model's calibration on the recipe at p <= 0.5 the run would never end:
    said in one line before any server starts; --force is the way past it."""
    import asyncio

    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.workbench import Workbench
    from nanobot_tui.engine.voting.calibration import Calibration
    from nanobot_tui.engine.voting.calibration_store import record_calibration

    repo = make_repo(tmp_path / "repo")
    model = Workbench(load_config()[0], only_slots=("rlm",)).slots["rlm"].display_name
    weak = Calibration(model, "code-fstrings", "2026-12-05T00:00:00Z", 40, 8, 0.2, 0.1, 0.35)
    asyncio.run(record_calibration(weak))
    out = nanobot("process", "f-strings", "--on", str(repo), "--recipe", "fstrings")
    assert out.returncode == 2, out.stderr
    assert "hopeless" in out.stderr and "p = 0.20" in out.stderr and "--force" in out.stderr
    assert json.loads(nanobot("runs", "--json").stdout) == []  # nothing was started
