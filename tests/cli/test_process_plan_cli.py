"""`nanobot process TASK --on PATH --plan` through the real command: a two-pass plan run
as two chained runs whose last one stands for the whole plan (its diff shows both passes
against the user's files, apply writes them and is refused when a user file moved since
pass 1 began, undo puts them back); a planner that is not able leaves the process as it
was without --plan; a multi-pass plan refuses --detach.

The planner in the able path is a FAKE (tests/engine/work/test_plan.py's FakePlanner): a
stand-in for a main model strong enough to plan; none is available offline here. It goes
where the command gets its planner (`cli.process._main_planner`). The passes themselves
use the SIMULATED sampler (the recipe's right edit): what is tested is the chaining. The
one `model` test grades the real embedded model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.cli import main as cli
from nanobot_tui.cli import process as process_cli
from nanobot_tui.engine.runs.store.reader import RunStore
from nanobot_tui.engine.work.plan import GRADES
from tests.cli.test_process_cli import nanobot
from tests.cli.test_process_code_cli import FORMATTED, make_repo
from tests.engine.work.test_plan import GOOD_PLANS, PROBES, FakePlanner, FakePlannerClient

TASK = PROBES[0].task  # f-strings, then docstrings
PASSES = ["--sampler", "simulated:1.0", "--k", "1"]


@pytest.fixture
def fake_planner(monkeypatch: pytest.MonkeyPatch) -> FakePlanner:
    planner = FakePlanner(FakePlannerClient(GOOD_PLANS))
    monkeypatch.setattr(process_cli, "_main_planner", lambda: planner)
    return planner


def run_plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    """`nanobot process ... --plan --json` in this process: (exit code, the JSON, stderr)."""
    code = cli.main(["process", *args, "--plan", "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err


def test_a_two_pass_plan_diffs_applies_and_undoes_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_planner: FakePlanner
) -> None:
    repo = make_repo(tmp_path / "repo")
    code, data, err = run_plan(capsys, TASK, "--on", str(repo), *PASSES)
    assert code == 0, err
    assert "planner: able (6/6 probes)" in err
    passes = data["passes"]
    assert [(p["pass"].split(":")[0], p["status"]) for p in passes] == [
        ("fstrings", "completed"),
        ("docstrings", "completed"),
    ]
    first, last = passes[0]["run_id"], passes[1]["run_id"]
    assert data["run"]["run_id"] == last and first != last
    # pass 1 changed pkg/a.py; pass 2 (docstrings) both files
    assert data["outcome"]["changed_files"] == ["pkg/a.py", "test_a.py"]
    assert data["outcome"]["source"] == str(repo.resolve())
    assert (repo / "pkg" / "a.py").read_text() == FORMATTED  # nothing touched yet

    # The last run's patch is the whole plan's, against the user's own file.
    patch = nanobot("process", "diff", last).stdout
    assert '-    return "hello %s" % name' in patch  # the original line
    assert '+    return f"hello {name}"' in patch  # pass 1
    assert '+    """' in patch and "b/test_a.py" in patch  # pass 2: docstrings
    first_patch = nanobot("process", "diff", first).stdout
    assert '+    return f"hello {name}"' in first_patch and '"""' not in first_patch

    applied = nanobot("process", "apply", last, "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["files"] == ["pkg/a.py", "test_a.py"]
    now = (repo / "pkg" / "a.py").read_text()
    assert 'return f"hello {name}"' in now and '"""' in now
    compile(now, "a.py", "exec")

    undone = nanobot("process", "undo", last)
    assert undone.returncode == 0, undone.stderr
    assert (repo / "pkg" / "a.py").read_text() == FORMATTED
    assert '"""' not in (repo / "test_a.py").read_text()

    # A file the user changes after pass 1 began: the plan's apply is refused, naming it.
    (repo / "pkg" / "a.py").write_text(FORMATTED + "\n# mine\n")
    refused = nanobot("process", "apply", last)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "pkg/a.py" in refused.stderr
    assert "changed since the snapshot" in refused.stderr
    assert (repo / "pkg" / "a.py").read_text() == FORMATTED + "\n# mine\n"


def test_a_chained_run_records_its_origin_and_previous_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_planner: FakePlanner
) -> None:
    repo = make_repo(tmp_path / "repo")
    code, data, err = run_plan(capsys, TASK, "--on", str(repo), *PASSES)
    assert code == 0, err
    first, last = (p["run_id"] for p in data["passes"])
    first_out = json.loads(nanobot("process", "show", first, "--json").stdout)
    last_out = json.loads(nanobot("process", "show", last, "--json").stdout)
    assert first_out["origin"] == "" and last_out["origin"] == first_out["work"]
    # Pass 2 ran on pass 1's result (its own counts), not on the user's folder.
    assert last_out["recipe"] == "docstrings" and last_out["functions"] == 4
    with RunStore.open(last) as store:
        params = store.spec.params
    assert params["previous"] == first and params["origin"] == first_out["work"]


def test_a_multi_pass_plan_refuses_detach_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_planner: FakePlanner
) -> None:
    repo = make_repo(tmp_path / "repo")
    code = cli.main(["process", TASK, "--on", str(repo), "--plan", "--detach", *PASSES])
    err = capsys.readouterr().err
    assert code == 2
    assert "runs in the foreground only" in err and err.strip().count("\n") == 1  # + grade


def test_a_planner_not_able_leaves_the_process_as_without_plan(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    nanobot_home: Path,
) -> None:
    weak = FakePlanner(FakePlannerClient({}, "docstrings: add docstrings"), "fake:weak")
    monkeypatch.setattr(process_cli, "_main_planner", lambda: weak)
    repo = make_repo(tmp_path / "repo")
    code, data, err = run_plan(capsys, TASK, "--on", str(repo), "--recipe", "fstrings", *PASSES)
    assert code == 0, err
    assert (
        "planner: not able (1/6 probes, stopped after 3: 5 out of reach); decomposing by "
        "structure only"
    ) in err.splitlines()
    assert "passes" not in data  # one run, as without --plan
    assert data["outcome"]["recipe"] == "fstrings" and data["outcome"]["origin"] == ""
    assert json.loads((nanobot_home / GRADES).read_text())["grades"]["fake:weak"]["matched"] == 1


@pytest.mark.model
@pytest.mark.timeout(300)
def test_the_embedded_model_is_graded_and_the_command_falls_back(
    tmp_path: Path, nanobot_home: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    out = nanobot(
        "process", TASK, "--on", str(repo), "--plan", "--recipe", "fstrings", *PASSES,
        "--json", timeout=280,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [x for x in out.stderr.splitlines() if x.startswith("planner: ")]
    assert len(lines) == 1 and lines[0].startswith("planner: not able ("), out.stderr
    assert lines[0].endswith("out of reach); decomposing by structure only")
    assert json.loads(out.stdout.strip().splitlines()[-1])["outcome"]["recipe"] == "fstrings"
    grades = json.loads((nanobot_home / GRADES).read_text())["grades"]
    assert len(grades) == 1 and next(iter(grades)).startswith("local:")


def test_a_crlf_file_comes_through_the_chain_with_its_line_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_planner: FakePlanner
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    crlf = FORMATTED.replace("\n", "\r\n").encode()
    (repo / "crlf.py").write_bytes(crlf)
    code, data, err = run_plan(capsys, TASK, "--on", str(repo), *PASSES)
    assert code == 0, err
    last = data["passes"][1]["run_id"]
    assert nanobot("process", "apply", last).returncode == 0
    new = (repo / "crlf.py").read_bytes()
    assert b'return f"hello {name}"\r\n' in new and b'"""' in new
    assert new.count(b"\n") == new.count(b"\r\n")  # every line still CRLF
    assert nanobot("process", "undo", last).returncode == 0
    assert (repo / "crlf.py").read_bytes() == crlf


def test_a_pass_with_nothing_to_do_is_skipped_and_the_plan_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_planner: FakePlanner
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "b.py").write_text("def plain():\n    return 1\n")  # nothing to f-string
    code, data, err = run_plan(capsys, TASK, "--on", str(repo), *PASSES)
    assert code == 0, err
    assert [p["status"] for p in data["passes"]] == ["skipped", "completed"]
    assert data["passes"][0]["run_id"] is None
    assert data["outcome"]["origin"] == ""  # the docstrings pass ran on the user's folder
    assert data["outcome"]["changed_files"] == ["b.py"]
