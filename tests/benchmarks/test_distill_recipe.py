"""benchmarks/distill_recipe.py without a model: the corpus it vendors, the split by file,
and the judge that reads a reply as the code domain does (flynt is the truth)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import distill_recipe as dr
from nanobot_tui.engine.learning.examples import last_user_text
from nanobot_tui.engine.voting.domains.registry import DOMAINS
from nanobot_tui.engine.work.domain import CodeDomain

SOURCE = """\
def greet(name):
    return "hello %s" % name


def shout(name):
    return "{}!".format(name.upper())


def plain(x):
    return x + 1
"""


def corpus(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "mod.py").write_text(SOURCE)
    (src / "nothing.py").write_text("def f(x):\n    return x\n")
    target = tmp_path / "corpus"
    assert dr.vendor_corpus(tmp_path / "src", target, 300) == 1
    return target


def test_the_corpus_keeps_files_flynt_changes_and_the_judge_reads_flynts_edit(
    tmp_path: Path,
) -> None:
    root = corpus(tmp_path)
    assert sorted(p.name for p in root.rglob("*.py")) == ["mod.py"]
    domain = DOMAINS["code"].build({"root": str(root), "recipe": "fstrings"})
    assert isinstance(domain, CodeDomain)
    steps = list(domain.steps())
    assert [s.input.name for s in steps] == ["greet", "shout"]  # plain has no formatting

    examples = [dr.example_of(domain, s, "reference") for s in steps]
    judge = dr.recipe_judge(domain, {last_user_text(domain.messages(s)): s for s in steps})
    for step, example in zip(steps, examples, strict=True):
        assert example.answer.startswith("```python\n") and 'f"' in example.answer
        assert judge(example.answer, example)  # flynt's own edit, as a reply
        unchanged = dr.answer_text(step.input.source)
        assert not judge(unchanged, example)  # red-flagged: changes nothing
        assert not judge("no code here", example)
    # The other function's edit is not this one's.
    assert not judge(examples[1].answer, examples[0])


def test_the_split_is_by_file_and_the_same_every_time(tmp_path: Path) -> None:
    root = corpus(tmp_path)
    domain = DOMAINS["code"].build({"root": str(root), "recipe": "fstrings"})
    assert isinstance(domain, CodeDomain)
    for fraction, fresh in ((0.0, 0), (1.0, 2)):
        args = argparse.Namespace(max_chars=300, fresh_fraction=fraction, seed=1, train=10,
                                  fresh=10)  # fmt: skip
        train, held, counts = dr.split(domain, args)
        assert len(held) == fresh and len(train) == 2 - fresh
        assert counts == {"functions": 2, "short": 2, "train_pool": 2 - fresh,
                          "fresh_pool": fresh}  # fmt: skip
    assert dr.is_fresh_file("a/b.py", 0.5) == dr.is_fresh_file("a/b.py", 0.5)
