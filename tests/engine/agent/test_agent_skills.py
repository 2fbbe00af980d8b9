"""Skills: SKILL.md files, matched against the user's message."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobot_tui import paths
from nanobot_tui.engine.agent.skills import load_skills, match_skills, parse_skill, skills_prompt

GIT_SKILL = """---
name: git-commit
description: "Write a good git commit message from the staged diff"
---
# Commit messages

1. Run `git diff --staged` and read it.
2. Summary line under 72 characters, imperative mood.
"""

PDF_SKILL = """# PDF reports

Turn a CSV table into a PDF report with a chart per column.
Use matplotlib for the charts and weasyprint for the layout.
"""

RELEASE_SKILL = """---
name: release
description: Cut a release: bump the version, tag it, publish the wheel to PyPI.
---
Steps for a release.
"""


@pytest.fixture
def skills_home(nanobot_home: Path) -> Path:
    root = paths.skills_dir()
    for folder, text in (("git", GIT_SKILL), ("pdf-report", PDF_SKILL), ("rel", RELEASE_SKILL)):
        (root / folder).mkdir(parents=True)
        (root / folder / "SKILL.md").write_text(text)
    (root / "empty-folder").mkdir()  # no SKILL.md: not a skill
    return root


def test_load_skills_reads_front_matter_and_defaults(skills_home: Path) -> None:
    skills = {s.name: s for s in load_skills()}
    assert set(skills) == {"git-commit", "pdf-report", "release"}
    git = skills["git-commit"]
    assert git.description == "Write a good git commit message from the staged diff"
    assert git.body.startswith("# Commit messages") and "---" not in git.body
    assert git.path == skills_home / "git" / "SKILL.md"
    pdf = skills["pdf-report"]  # no front matter: folder name, first line of text
    assert pdf.description == "Turn a CSV table into a PDF report with a chart per column."
    # a value with a colon in it stays whole
    assert skills["release"].description.startswith("Cut a release: bump")


def test_with_learning_off_the_learned_skills_are_not_loaded(skills_home: Path) -> None:
    (skills_home / "learned-one").mkdir()
    (skills_home / "learned-one" / "SKILL.md").write_text(
        "---\nname: learned-one\ndescription: Read a file and count its lines\n"
        "learned: true\n---\n1. read_file {path}\n"
    )
    assert "learned-one" in {s.name for s in load_skills()}
    assert {s.name for s in load_skills(learned=False)} == {"git-commit", "pdf-report", "release"}


def test_no_skills_folder_means_no_skills(nanobot_home: Path) -> None:
    assert load_skills() == []
    assert match_skills([], "commit my changes") == []
    assert skills_prompt([]) is None


@pytest.mark.parametrize("text", ["hello", "Hi there! Thanks.", "ok", "what is the time?", ""])
def test_small_talk_matches_nothing(skills_home: Path, text: str) -> None:
    assert match_skills(load_skills(), text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Please write the commit message for my staged changes", "git-commit"),
        ("make a PDF report with charts from sales.csv", "pdf-report"),
        ("let's publish version 2.0 to PyPI", "release"),
        ("commit this", "git-commit"),  # one word of the skill's name is enough
    ],
)
def test_a_message_on_a_skills_topic_matches_that_skill(
    skills_home: Path, text: str, expected: str
) -> None:
    matched = match_skills(load_skills(), text)
    assert matched and matched[0].name == expected


def test_one_shared_word_outside_the_name_is_not_enough(skills_home: Path) -> None:
    # "chart" appears in the PDF skill's text, but one ordinary word is no match.
    assert match_skills(load_skills(), "draw me a chart") == []


def test_limit_and_prompt_budget(skills_home: Path) -> None:
    skills = load_skills()
    text = "commit the release: tag the version, write the git commit message, pdf report"
    assert len(match_skills(skills, text, limit=2)) == 2
    assert len(match_skills(skills, text, limit=1)) == 1
    prompt = skills_prompt(match_skills(skills, text, limit=2), max_chars=2000)
    assert prompt is not None and prompt.startswith("Skills that may help")
    assert "## git-commit" in prompt and "git diff --staged" in prompt

    long = parse_skill("---\nname: big\n---\n" + "a line of instructions\n" * 500, "big")
    skills_dir = skills_home / "big"
    skills_dir.mkdir()
    (skills_dir / "SKILL.md").write_text("---\nname: big\n---\n" + long[2])
    big = next(s for s in load_skills() if s.name == "big")
    clipped = skills_prompt([big], max_chars=600)
    assert clipped is not None and len(clipped) <= 600
    assert f"the whole skill is in {big.path}" in clipped
