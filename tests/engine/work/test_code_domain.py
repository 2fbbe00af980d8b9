"""The code domain: a recipe over a real folder of files, one step per wanted function,
answers parsed and red-flagged against their own function, and a durable run of it end
to end through engine/runs with the simulated sampler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import RunSpec
from nanobot_tui.engine.runs.store import RunStore
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains import ParseError
from nanobot_tui.engine.voting.domains.registry import DOMAINS, build_domain
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from nanobot_tui.engine.voting.samples import RED_PARSE
from nanobot_tui.engine.work.codebase import FunctionSite
from nanobot_tui.engine.work.domain import CodeDomain
from nanobot_tui.errors import UsageError
from tests.fakes import ScriptedClient

FILES = {
    "app/__init__.py": "",
    "app/core.py": (
        "import logging\n\n\n"
        "def add(a, b):\n    return a + b\n\n\n"
        'def greet(name):\n    """Say hello."""\n    return "Hello, %s" % name\n\n\n'
        "class Counter:\n"
        "    def __init__(self):\n        self.n = 0\n\n"
        "    def bump(self, by=1):\n        self.n += by\n        return self.n\n\n"
        "    def _reset(self):\n        self.n = 0\n"
    ),
    "app/text.py": (
        "def shout(word):\n    return '{}!'.format(word.upper())\n\n\n"
        "async def whisper(word):\n    return word.lower()\n"
    ),
    "app/broken.py": "def oops(:\n    pass\n",
    "scripts/tool.py": "def main():\n    print('%d files' % 3)\n",
    ".venv/lib/skip.py": "def hidden():\n    return 1\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def params(root: Path, recipe: str, **kw: Any) -> dict[str, Any]:
    return {"root": str(root), "recipe": recipe, "instruction": "", "simulated": True, **kw}


def test_steps_are_the_wanted_functions_file_by_file(repo: Path) -> None:
    domain = build_domain("code", params(repo, "docstrings"))
    assert isinstance(domain, CodeDomain) and domain.independent_steps
    names = [(s.input.path, s.input.qualname) for s in domain.steps()]
    assert names == [
        ("app/core.py", "add"),
        ("app/core.py", "Counter.__init__"),
        ("app/core.py", "Counter.bump"),
        ("app/text.py", "shout"),
        ("app/text.py", "whisper"),
        ("scripts/tool.py", "main"),
    ]
    assert domain.groups() == [("app/core.py", 3), ("app/text.py", 2), ("scripts/tool.py", 1)]
    assert [(p.path, p.reason) for p in domain.problems] == [("app/broken.py", "does not parse")]
    subset = CodeDomain(params(repo, "fstrings", files=["app/text.py", "scripts/tool.py"]))
    assert [s.input.qualname for s in subset.steps()] == ["shout"]  # %d: flynt declines
    with pytest.raises(UsageError, match=r"not a Python file of the codebase: \.\./x\.py"):
        CodeDomain(params(repo, "docstrings", files=["../x.py"]))
    with pytest.raises(UsageError, match="unknown recipe"):
        CodeDomain(params(repo, "tidy"))
    with pytest.raises(UsageError, match="needs an instruction"):
        CodeDomain(params(repo, "instruction"))
    assert DOMAINS["code"].label(params(repo, "docstrings")) == "code-docstrings"
    assert domain.token_cap() == 750  # small functions: the voting default
    (repo / "app" / "big.py").write_text("def big():\n" + "    x = 1\n" * 400)
    assert CodeDomain(params(repo, "docstrings")).token_cap() == (3 * 4011 + 400) // 3 + 1


def test_steps_answers_and_truths_round_trip_through_json(repo: Path) -> None:
    domain = CodeDomain(params(repo, "error-handling"))
    for step in domain.steps():
        data = json.loads(json.dumps(domain.dump_step(step)))
        assert domain.load_step(step.index, data) == step
        truth = domain.truth(step)
        assert domain.load_answer(json.loads(json.dumps(domain.dump_answer(truth)))) == truth
        shown = domain.describe(domain.key(truth))  # the first changed line, and a hash
        assert shown.startswith("L") and ": try: #" in shown
    with pytest.raises(ParseError):
        domain.load_step(0, {"path": "x"})
    real = CodeDomain(params(repo, "docstrings", simulated=False))
    with pytest.raises(ValueError, match="no reference"):
        real.truth(real.step_at(0))  # no truth: the runner counts such steps unknown


def test_strict_parsing_red_flags_against_the_steps_own_function(repo: Path) -> None:
    domain = CodeDomain(params(repo, "docstrings"))
    step = domain.step_at(2)  # Counter.bump
    site: FunctionSite = step.input
    good = (
        '```python\ndef bump(self, by=1):\n    """Add to the count."""\n'
        "    self.n += by\n    return self.n\n```"
    )
    answer = domain.parse_strict(good, step)
    assert answer.startswith('    def bump(self, by=1):\n        """Add')
    assert domain.describe(domain.key(answer)).startswith(f'L{site.start + 1}: """Add')
    with pytest.raises(ParseError, match="changes code"):
        domain.parse_strict(good.replace("+= by", "+= by * 2"), step)
    with pytest.raises(ParseError, match="signature"):
        domain.parse_strict(good.replace("by=1", "by=2"), step)
    with pytest.raises(ParseError, match="not 'add'"):
        domain.parse_strict(good, domain.step_at(0))  # the answer of another step
    with pytest.raises(ParseError, match="own function"):
        domain.parse_strict(good)
    # Lenient (calibration): any fence, no red flags.
    assert domain.parse_lenient(good.replace("```python", "```"), step) == answer


async def test_the_model_sampler_red_flags_a_code_answer_against_its_step(repo: Path) -> None:
    domain = CodeDomain(params(repo, "docstrings"))
    step = domain.step_at(0)  # add
    right = '```python\ndef add(a, b):\n    """Add."""\n    return a + b\n```'
    touches = '```python\ndef add(a, b):\n    """Add."""\n    return a + b + 0\n```'
    replies = [right, touches, "no code at all"]
    client = ScriptedClient(replies)
    sampler = LLMSampler(client, domain, name="fake: scripted", batch=False)  # type: ignore[arg-type]
    samples = await sampler.sample(step, [0.0, 0.1, 0.1])
    assert [s.red_flag for s in samples] == [None, RED_PARSE, RED_PARSE]
    assert samples[0].key == domain.key(domain.truth(step))


async def test_each_function_gets_a_token_cap_of_its_own_size(repo: Path) -> None:
    """A reply is cut at its own function's cap (the recipe's 3x + 400 characters at ~3
    a token), not at the cap of the longest function in the codebase."""
    domain = CodeDomain(params(repo, "docstrings"))
    steps = [domain.step_at(i) for i in range(domain.total_steps())]
    sizes = [len(domain.sites[s.index].source) for s in steps]
    client = ScriptedClient(['```python\ndef add(a, b):\n    """Add."""\n    return a + b\n```'])
    sampler = LLMSampler(client, domain, name="fake: scripted", token_cap=domain.token_cap())  # type: ignore[arg-type]
    caps = [sampler.cap_for(s) for s in steps]
    assert caps == [(3 * n + 400) // 3 + 1 for n in sizes]
    assert max(caps) <= domain.token_cap() and len(set(caps)) > 1
    await sampler.sample(steps[0], [0.0])
    assert client.requests[0].max_tokens == caps[0] + 1


async def test_a_durable_code_run_records_every_step_and_wins_the_truths(repo: Path) -> None:
    spec = RunSpec(
        domain="code",
        params=params(repo, "docstrings"),
        sampler="simulated:0.85",
        vote=VoteConfig(k=3),
        seed=7,
        concurrency=2,
        label=DOMAINS["code"].label(params(repo, "docstrings")),
    )
    rid = await start_run(spec)
    status = await execute(rid)
    domain = CodeDomain(params(repo, "docstrings"))
    total = domain.total_steps()
    assert status.status == "completed" and status.steps_done == total == 6
    with RunStore.open(rid) as store:
        rows = [store.step(i) for i in range(total)]
    for i, row in enumerate(rows):
        step = domain.step_at(i)
        assert row.status == "completed" and row.correct is True
        assert domain.load_step(i, row.input) == step
        assert row.answer == domain.truth(step)
        assert row.winner and row.winner.startswith(f'L{step.input.start + 1}: """')
    assert sum(r.samples for r in rows) > sum(r.valid for r in rows) - 1 >= 3 * total - 1
