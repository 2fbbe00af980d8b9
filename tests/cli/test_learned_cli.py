"""`nanobot learned` and `nanobot learned forget`, run as the real command over a real
learned.db that the engine filled: the listing (text and --json), budgets only after 20
tasks, anomalies, removal of what is named, stored names shown without their control
sequences, and one-line errors for bad input or a damaged file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.engine.learning.examples import ExampleBank
from nanobot_tui.engine.learning.history import MIN_RECORDS, TaskHistory
from nanobot_tui.engine.learning.reuse import ResultCache
from nanobot_tui.engine.learning.store import LearningStore

HOSTILE = "evil\x1b]0;pwned\x07\x1b[31m\nforged line"


def nanobot(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanobot_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def learned_json(*args: str) -> dict[str, Any]:
    out = nanobot("learned", *args, "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def seed() -> None:
    """Two cached wordcase results (one reused twice), one fstrings result; 20 wordcase
    tasks and a costly 21st (an anomaly); 3 fstrings tasks (no budget yet)."""
    with LearningStore() as store:
        cache = ResultCache(store)
        for word in ("cat", "dog"):
            cache.put("wordcase", word, word.upper(), fingerprint="fp", model="m",
                      verified_by="truth")  # fmt: skip
        cache.put("code:fstrings", {"f": "x"}, {"f": "y"}, fingerprint="fp", model="m",
                  verified_by="voted+checked")  # fmt: skip
        cache.get("wordcase", "cat", fingerprint="fp", model="m")
        cache.get("wordcase", "cat", fingerprint="fp", model="m")
        history = TaskHistory(store)
        for i in range(MIN_RECORDS):
            history.record("domain:wordcase", kind="domain", steps=10 + i % 3, tokens=900 + i,
                           seconds=1.0, samples_per_step=3.0, p=0.8, success=True)  # fmt: skip
        history.record("domain:wordcase", kind="domain", steps=11, tokens=90_000, seconds=1.0,
                       samples_per_step=3.0, p=0.8, success=False)  # fmt: skip
        for _ in range(3):
            history.record("recipe:fstrings", kind="recipe", steps=5, tokens=500, seconds=2.0,
                           samples_per_step=4.0, p=None, success=True)  # fmt: skip


def test_an_empty_home_lists_nothing_and_creates_nothing(nanobot_home: Path) -> None:
    data = learned_json()
    assert data["path"] == str(nanobot_home / "learned.db")
    assert (data["learning"], data["min_records"]) == (True, MIN_RECORDS)
    assert (data["results"], data["history"], data["anomalies"]) == ([], [], [])
    assert data["skills"] is None or data["skills"] == []
    out = nanobot("learned")
    assert out.returncode == 0, out.stderr
    assert "Cached results (L0):\n  none" in out.stdout
    assert not (nanobot_home / "learned.db").exists()


def test_the_listing_shows_results_history_budgets_and_anomalies() -> None:
    seed()
    data = learned_json()
    by_step = {r["step_type"]: r for r in data["results"]}
    assert set(by_step) == {"wordcase", "code:fstrings"}
    assert (by_step["wordcase"]["results"], by_step["wordcase"]["hits"]) == (2, 2)
    assert by_step["wordcase"]["hit_rate"] == 1.0
    assert set(by_step["wordcase"]) >= {"lookups", "last_hit", "models"}

    by_type = {h["task_type"]: h for h in data["history"]}
    wordcase, fstrings = by_type["domain:wordcase"], by_type["recipe:fstrings"]
    assert (wordcase["kind"], wordcase["records"], wordcase["successes"]) == ("domain", 21, 20)
    assert wordcase["anomalies"] == 1
    budget = wordcase["budget"]
    assert set(budget) >= {"steps", "tokens", "seconds", "p", "k", "records"}
    assert budget["records"] == 21 and budget["p"] == pytest.approx(0.8) and budget["k"] >= 1
    assert (fstrings["records"], fstrings["budget"]) == (3, None)  # under 20: defaults

    [anomaly] = data["anomalies"]
    assert anomaly["task_type"] == "domain:wordcase"
    [exceeded] = anomaly["exceeded"]
    assert (exceeded["metric"], exceeded["value"]) == ("tokens", 90_000)

    text = nanobot("learned")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(
        line.startswith("  wordcase: 2 result(s), 2 hit(s) in 2 lookup(s)") for line in lines
    )
    assert any(
        line.startswith("  domain:wordcase (domain): 21 task(s)")
        and f"budget {budget['steps']:,} steps" in line
        and f"k {budget['k']}" in line
        for line in lines
    )
    assert any("recipe:fstrings (recipe): 3 task(s)" in line and "after 20" in line
               for line in lines)  # fmt: skip
    assert any("domain:wordcase: tokens 90,000 >" in line for line in lines)


def test_forget_removes_what_it_names_and_says_how_many() -> None:
    seed()
    out = nanobot("learned", "forget", "results", "--type", "wordcase")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "forgot 2 cached result(s) of type wordcase"
    assert [r["step_type"] for r in learned_json()["results"]] == ["code:fstrings"]

    out = nanobot("learned", "forget", "history", "--type", "recipe:fstrings", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"forgot": {"history": 3}, "type": "recipe:fstrings"}
    data = learned_json()
    assert [h["task_type"] for h in data["history"]] == ["domain:wordcase"]
    assert len(data["anomalies"]) == 1

    out = nanobot("learned", "forget", "anomalies")
    assert out.stdout.strip() == "forgot 1 anomaly(ies)"
    assert learned_json()["anomalies"] == []

    out = nanobot("learned", "forget", "all", "--json")
    assert out.returncode == 0, out.stderr
    forgot = json.loads(out.stdout)["forgot"]
    assert {k: forgot[k] for k in ("results", "history", "anomalies")} == {
        "results": 1, "history": 21, "anomalies": 0,
    }  # fmt: skip
    data = learned_json()
    assert (data["results"], data["history"], data["anomalies"]) == ([], [], [])


def test_stored_names_are_shown_as_data_not_acted_on() -> None:
    with LearningStore() as store:
        ResultCache(store).put(HOSTILE, "x", "X", fingerprint="fp", model="m",
                               verified_by="truth")  # fmt: skip
        TaskHistory(store).record(HOSTILE, kind="skill", steps=1, tokens=1, seconds=1.0,
                                  samples_per_step=1.0, p=None, success=True)  # fmt: skip
    out = nanobot("learned")
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert not any(line.startswith("forged line") for line in out.stdout.splitlines())
    assert "evil\\x1b]0;pwned\\x07\\x1b[31m\\nforged line" in out.stdout
    # JSON keeps the name exactly (escaped by JSON itself).
    assert learned_json()["results"][0]["step_type"] == HOSTILE
    forgot = nanobot("learned", "forget", "all", "--type", HOSTILE)
    assert (
        "\x1b" not in forgot.stdout
        and "1 cached result(s), 0 example(s), 1 history record(s)" in forgot.stdout
    )


def test_the_config_switch_is_shown(nanobot_home: Path) -> None:
    nanobot_home.mkdir(parents=True)
    (nanobot_home / "config.json").write_text(json.dumps({"learning": {"enabled": False}}))
    assert learned_json()["learning"] is False
    assert "(learning off)" in nanobot("learned").stdout.splitlines()[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("forget", "everything"), "invalid choice: 'everything'"),
        (("forget",), "the following arguments are required: WHAT"),
        (("forget", "results", "--type", " "), "argument --type: must name"),
        (("--frobnicate",), "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_input_is_one_clear_error_line(args: tuple[str, ...], says: str) -> None:
    out = nanobot("learned", *args)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0]
    assert out.stdout == ""


def test_a_damaged_store_is_one_line_and_left_as_it_was(nanobot_home: Path) -> None:
    nanobot_home.mkdir(parents=True)
    path = nanobot_home / "learned.db"
    path.write_bytes(b"not sqlite" * 500)
    for args in (("learned",), ("learned", "forget", "all")):
        out = nanobot(*args)
        assert out.returncode == 1
        [line] = out.stderr.splitlines()
        assert line.startswith(f"nanobot: {path}: not a readable SQLite database")
    assert path.read_bytes() == b"not sqlite" * 500


def test_learned_skills_are_listed_and_forgotten() -> None:
    """Skills come from engine/learning/skills.py (its public API): a tool sequence that
    succeeded often enough becomes a skill, listed and then removed by name."""
    skills = pytest.importorskip("nanobot_tui.engine.learning.skills")
    learner = skills.SkillLearner()
    for i in range(skills.DEFAULT_MIN_SUCCESSES):
        steps = (
            skills.ToolStep("read_file", {"path": f"notes{i}.txt"}),
            skills.ToolStep("ctx_length", {"volume": f"notes{i}"}),
        )
        learner.observe_turn(skills.AgentTurn(
            session=f"s{i}", index=0, task=f"count the lines of notes{i}.txt", steps=steps,
            success=True, reason="answered", ts="2026-12-05T05:00:00",
        ))  # fmt: skip
    [skill] = learned_json()["skills"]
    assert skill["status"] == "active" and skill["signature"] == ["read_file", "ctx_length"]
    listing = nanobot("learned").stdout
    assert f"Skills:\n  {skill['name']} (active): 0 hit(s), 0 failure(s)" in listing

    missing = nanobot("learned", "forget", "skills", "--type", "no-such-skill")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    out = nanobot("learned", "forget", "skills", "--type", skill["name"], "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["forgot"] == {"skills": 1}
    assert learned_json()["skills"] == []


def test_few_shot_examples_are_listed_and_forgotten() -> None:
    with LearningStore() as store:
        bank = ExampleBank(store)
        for word in ("cat", "dog", "emu"):
            bank.add("wordcase", word, word.upper(), verified_by="truth", model="m")
        bank.add("code:fstrings", "f(x)", "g(x)", verified_by="voted+checked", model="m")
    listed = {e["step_type"]: e for e in learned_json()["examples"]}
    assert (listed["wordcase"]["active"], listed["code:fstrings"]["active"]) == (3, 1)
    text = nanobot("learned").stdout
    assert "wordcase: 3 in use, 0 retired; helped 0 step(s), hurt 0" in text
    out = nanobot("learned", "forget", "examples", "--type", "wordcase")
    assert out.stdout.strip() == "forgot 3 example(s) of type wordcase"
    assert [e["step_type"] for e in learned_json()["examples"]] == ["code:fstrings"]
    forgot = json.loads(nanobot("learned", "forget", "all", "--json").stdout)["forgot"]
    assert forgot["examples"] == 1 and learned_json()["examples"] == []
