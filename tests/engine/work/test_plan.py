"""A compound task split into passes by the main model (`nanobot process --plan`): the
answer's format and its canonical key, red flags, the vote, the grade on the probes, and
the grade kept per model.

The planning model here is a FAKE chat client: a stand-in for a main model strong enough
to plan; none is available offline here (the embedded 135M model is graded not able, see
tests/cli/test_process_plan_cli.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.errors import ServerUnavailable
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage
from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from nanobot_tui.engine.voting.samples import RED_PARSE
from nanobot_tui.engine.work import plan
from nanobot_tui.engine.work.plan import (
    GRADES,
    PROBES,
    Grade,
    Pass,
    PlannerError,
    Probe,
    TaskPlan,
    cached_grade,
    decide,
    grade,
    keep_grade,
    normalise,
    plan_task,
    probes_version,
)

# What a planner able to plan answers to each probe (and to the task of the CLI test).
GOOD_PLANS = {
    PROBES[0].task: "fstrings: convert old string formatting to f-strings\n"
    "docstrings: add docstrings to public functions",
    PROBES[1].task: "docstrings: add a docstring to every function",
    PROBES[2].task: "instruction: add type hints to every function\ndocstrings: add docstrings",
    PROBES[3].task: "fstrings: replace the % formatting with f-strings",
    PROBES[4].task: "1. error-handling: add error handling around the file operations\n"
    "2. instruction: rename local variables to snake_case",
    PROBES[5].task: "- docstrings: add docstrings\n- fstrings: use f-strings instead of "
    "str.format\n- error-handling: add error handling for bad input",
}


def _task_of(request: ChatRequest) -> str:
    found = re.match(r"Task: (.*)\n", request.messages[-1]["content"])
    assert found, request.messages
    return found[1]


class FakePlannerClient:
    """A FAKE chat client: a stand-in for a main model strong enough to plan (none is
    available offline here). It answers each task from `plans` (else `fallback`) and
    counts the requests."""

    def __init__(self, plans: dict[str, str], fallback: str = "no idea") -> None:
        self.plans = plans
        self.fallback = fallback
        self.requests = 0

    @property
    def model(self) -> str | None:
        return "fake-planner"

    @property
    def base_url(self) -> str:
        return "http://fake"

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        text = self.plans.get(_task_of(request), self.fallback)
        usage = Usage(10, 20, 30)
        return ChatResult([Choice(text, finish_reason="stop")], usage, None, 0.01, "fake", {})

    def stream_chat(self, request: ChatRequest) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class FakePlanner:
    """A FAKE PlannerModel over a FakePlannerClient (counts how often it is opened)."""

    def __init__(self, client: FakePlannerClient, model_key: str = "fake:strong") -> None:
        self.client = client
        self.name = "fake main: a stand-in planner"
        self.model_key = model_key
        self.opened = 0

    def open(self) -> AbstractAsyncContextManager[ChatClient]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[ChatClient]:
            self.opened += 1
            yield self.client  # type: ignore[misc]

        return opened()


def test_a_plan_is_one_pass_a_line_and_list_markers_are_allowed() -> None:
    domain = TaskPlan("t")
    text = (
        "1. fstrings: use f-strings\n\n2) Docstrings: add docstrings.\n"
        "- instruction: add type hints"
    )
    assert domain.parse_strict(text) == (
        Pass("fstrings", "use f-strings"),
        Pass("docstrings", "add docstrings."),
        Pass("instruction", "add type hints"),
    )
    assert domain.parse_strict("error-handling: wrap calls") == (
        Pass("error-handling", "wrap calls"),
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no passes"),
        ("fstrings then docstrings", "not 'recipe: clause'"),
        ("fstrings: x\nrefactor: split the module", "'refactor' is not a recipe"),
        ("extract: list the todos", "'extract' is not a recipe"),
        ("instruction:   .", "has no clause"),
        ("docstrings: add them\ndocstrings: add more", "the same pass twice"),
        ("\n".join(f"instruction: step {i}" for i in range(6)), "more than 5 passes"),
    ],
)
def test_anything_else_is_a_red_flag(text: str, why: str) -> None:
    with pytest.raises(ParseError, match=re.escape(why)):
        TaskPlan("t").parse_strict(text)


def test_the_key_keeps_only_an_instruction_passs_clause_normalised() -> None:
    domain = TaskPlan("t")
    a = domain.parse_strict("fstrings: use f-strings\ninstruction: Please add  type hints.")
    b = domain.parse_strict("fstrings: convert % to f-strings\ninstruction: add type hints")
    c = domain.parse_strict("instruction: add type hints\nfstrings: use f-strings")
    assert domain.key(a) == domain.key(b) == (("fstrings", ""), ("instruction", "add type hints"))
    assert domain.key(c) != domain.key(a)  # the order is part of the plan
    assert domain.describe(domain.key(a)) == "fstrings + instruction(add type hints)"
    assert normalise(' "Add type hints!" ') == "add type hints"
    assert domain.load_answer(json.loads(json.dumps(domain.dump_answer(a)))) == a


async def test_the_model_sampler_red_flags_an_unparsable_plan() -> None:
    domain = TaskPlan(PROBES[0].task)
    client = FakePlannerClient({}, fallback="Sure! First convert strings, then docstrings.")
    sampler = LLMSampler(client, domain, name="fake: planner", batch=False)  # type: ignore[arg-type]
    samples = await sampler.sample(Step(0, domain.task), [0.0, 0.7])
    assert [s.red_flag for s in samples] == [RED_PARSE, RED_PARSE]


async def test_a_plan_is_voted_and_an_unparsable_model_leaves_it_undecided() -> None:
    voted = await plan_task(PROBES[0].task, FakePlannerClient(GOOD_PLANS), "fake: planner")  # type: ignore[arg-type]
    assert voted.decided
    assert [p.recipe for p in voted.passes] == ["fstrings", "docstrings"]
    assert voted.passes[1].instruction == "add docstrings to public functions"
    assert "2 pass(es)" in voted.line()
    nothing = await plan_task("anything", FakePlannerClient({}), "fake: planner")  # type: ignore[arg-type]
    assert not nothing.decided and nothing.passes == ()
    assert nothing.line().startswith("plan: undecided")


def test_a_probe_matches_the_recipes_in_order_and_an_instruction_passs_words() -> None:
    probe = PROBES[2]
    assert probe.matches((Pass("instruction", "Add Type Hints to all"), Pass("docstrings", "x")))
    assert not probe.matches((Pass("instruction", "annotate"), Pass("docstrings", "x")))
    assert not probe.matches((Pass("docstrings", "x"), Pass("instruction", "add type hints")))
    assert not probe.matches((Pass("instruction", "add type hints"),))


def test_able_means_at_least_five_of_six_probes() -> None:
    assert Grade("m", 6, 6, "v").line() == "planner: able (6/6 probes)"
    assert Grade("m", 5, 6, "v").able
    four = Grade("m", 4, 6, "v")
    assert not four.able
    assert four.line() == "planner: not able (4/6 probes); decomposing by structure only"


async def test_a_planner_is_graded_on_the_probes() -> None:
    strong = await grade(FakePlannerClient(GOOD_PLANS), "fake", "fake:strong")  # type: ignore[arg-type]
    assert (strong.matched, strong.total, strong.able) == (6, 6, True)
    # Always the same one-recipe answer: wrong on probe 1, right on 2, wrong on 3; then 5
    # of 6 is out of reach and the last three are not asked.
    weak = await grade(FakePlannerClient({}, "docstrings: add docstrings"), "fake", "fake:weak")  # type: ignore[arg-type]
    assert (weak.matched, weak.tried, weak.able) == (1, 3, False)
    assert weak.line() == (
        "planner: not able (1/6 probes, stopped after 3: 5 out of reach); decomposing by "
        "structure only"
    )


def test_a_grade_is_kept_per_model_and_probe_set(nanobot_home: Path) -> None:
    assert cached_grade("m1") is None
    keep_grade(Grade("m1", 6, 6, probes_version()))
    keep_grade(Grade("m2", 1, 6, probes_version(), tried=3))
    assert cached_grade("m1") == Grade("m1", 6, 6, probes_version())
    assert cached_grade("m2") == Grade("m2", 1, 6, probes_version(), tried=3)
    other = (*PROBES[:5], Probe("add logging", (("instruction", ("log",)),)))
    assert probes_version(other) != probes_version()
    assert cached_grade("m1", other) is None  # other probes: graded again
    (nanobot_home / GRADES).write_text("{not json")
    assert cached_grade("m1") is None
    keep_grade(Grade("m3", 5, 6, probes_version()))  # a damaged file is started afresh
    assert cached_grade("m3") is not None


async def test_the_probes_run_once_per_model_and_a_known_weak_one_is_not_started() -> None:
    said: list[str] = []
    client = FakePlannerClient(GOOD_PLANS)
    planner = FakePlanner(client)
    first = await decide(PROBES[0].task, planner, said.append)
    graded_with = client.requests
    assert first.grade.able and [p.recipe for p in first.passes] == ["fstrings", "docstrings"]
    again = await decide(PROBES[3].task, planner, said.append)
    assert [p.recipe for p in again.passes] == ["fstrings"]
    assert client.requests - graded_with < graded_with  # only the plan: no probes again
    assert said == ["planner: able (6/6 probes)"] * 2

    weak = FakePlanner(FakePlannerClient({}), model_key="fake:weak")
    assert (await decide("anything", weak, said.append)).vote is None
    assert (await decide("anything", weak, said.append)).vote is None
    assert weak.opened == 1  # graded once; then known not able, so never started again
    assert said[-1] == (
        "planner: not able (0/6 probes, stopped after 2: 5 out of reach); decomposing by "
        "structure only"
    )
    assert plan.cached_grade("fake:weak") is not None


class DownClient(FakePlannerClient):
    """A FAKE client whose server is down: every request fails."""

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests += 1
        raise ServerUnavailable("connection refused (fake)")


async def test_a_model_that_does_not_answer_is_not_graded_and_nothing_is_kept() -> None:
    planner = FakePlanner(DownClient({}), model_key="fake:down")
    with pytest.raises(PlannerError, match="did not answer the probes"):
        await decide("anything", planner, lambda text: None)
    assert cached_grade("fake:down") is None  # asked again next time
