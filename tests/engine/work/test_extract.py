"""The extract recipe: chunks of one file each, strict parsing of a chunk's JSON list (red
flags), voting on the canonical set, merging with file:line citations, and a durable
simulated run over an ingested folder of real source files that finds planted facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import nanobot_tui
from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.work.extract import (
    MAX_ITEMS,
    Chunk,
    ExtractDomain,
    ExtractParamsError,
    Item,
    extract_report,
    merge,
    normalise,
)

INSTRUCTION = "List every access code and the project it opens."
SOURCES = ("atomic.py", "units.py", "text.py", "paths.py")


def plant(root: Path) -> list[dict[str, Any]]:
    """Real source files of this package with one planted comment each (two in text.py),
    and the planted truth: [{"text", "path", "line"}]."""
    package = Path(nanobot_tui.__file__).parent
    truth: list[dict[str, Any]] = []
    root.mkdir(parents=True)
    for n, name in enumerate(SOURCES):
        lines = (package / name).read_text().splitlines()
        spots = [7 + 11 * n] + ([len(lines) - 3] if name == "text.py" else [])
        for j, spot in enumerate(sorted(spots, reverse=True)):
            fact = f"the access code for project {name[:-3]}{j} is QX-{n}{j}7"
            lines.insert(spot, f"# {fact}")
            truth.append({"text": fact, "path": name, "line": spot + 1})
        (root / name).write_text("\n".join(lines) + "\n")
    # Lines moved down by the later insert of the same file: recompute from the text.
    for t in truth:
        got = (root / t["path"]).read_text().splitlines()
        t["line"] = got.index(f"# {t['text']}") + 1
    return truth


@pytest.fixture
def planted(tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    truth = plant(tmp_path / "src")
    ingest(tmp_path / "src", "planted")
    return "planted", truth


def domain(volume: str, truth: list[dict[str, Any]] | None = None, **kw: Any) -> ExtractDomain:
    return ExtractDomain({"volume": volume, "instruction": INSTRUCTION, "truth": truth, **kw})


# --- chunks -------------------------------------------------------------------------------


def test_chunks_cover_every_line_of_each_file_and_never_span_two(planted: Any) -> None:
    volume, _ = planted
    d = domain(volume, chunk_lines=40)
    seen: dict[str, list[int]] = {}
    for step in d.steps():
        c: Chunk = step.input
        assert 1 <= c.last - c.first + 1 <= 40
        seen.setdefault(c.path, []).extend(range(c.first, c.last + 1))
    for f in d.volume.files:
        assert seen[f.path] == list(range(1, f.n_lines + 1))
    assert d.groups() == [(p, sum(1 for s in d.steps() if s.input.path == p)) for p in seen]
    assert sum(n for _, n in d.groups()) == d.total_steps()


def test_a_prompt_holds_the_instruction_and_the_chunk_numbered_as_in_the_file(
    planted: Any,
) -> None:
    volume, truth = planted
    d = domain(volume, truth, chunk_lines=30)
    fact = truth[0]
    step = next(s for s in d.steps() if s.input.path == fact["path"]
                and s.input.first <= fact["line"] <= s.input.last)  # fmt: skip
    user = d.messages(step)[-1]["content"]
    assert INSTRUCTION in user
    assert f"{fact['line']}: # {fact['text']}" in user
    assert d.messages(step, paraphrase=1)[0] != d.messages(step)[0]
    # Steps store where the chunk is, never its text.
    assert fact["text"] not in json.dumps(d.dump_step(step))
    assert d.load_step(step.index, d.dump_step(step)) == step


def test_bad_params_are_one_line_usage_errors(planted: Any) -> None:
    with pytest.raises(ExtractParamsError, match="no volume"):
        domain("nosuchvolume")
    with pytest.raises(ExtractParamsError, match="instruction"):
        ExtractDomain({"volume": planted[0], "instruction": "  "})
    with pytest.raises(ExtractParamsError, match="chunk_lines"):
        domain(planted[0], chunk_lines=-3)


def test_a_run_pinned_to_a_volume_refuses_it_once_ingested_again(
    planted: Any, tmp_path: Path
) -> None:
    volume, _ = planted
    pinned = domain(volume).fingerprint
    assert domain(volume, volume_fingerprint=pinned).total_steps() > 0
    (tmp_path / "src" / "new.py").write_text("x = 1\n")
    ingest(tmp_path / "src", volume)
    with pytest.raises(ExtractParamsError, match="changed"):
        domain(volume, volume_fingerprint=pinned)


# --- strict parsing: red flags ----------------------------------------------------------------


@pytest.fixture
def chunk_step(planted: Any) -> tuple[ExtractDomain, Step]:
    d = domain(planted[0])
    return d, Step(0, Chunk(planted[0], "atomic.py", 11, 20))


@pytest.mark.parametrize(
    "reply",
    [
        '[{"item": "code A", "line": 12}, {"item": "code B", "line": 20}]',
        '```json\n[{"item": "code A", "line": 12}, {"item": "code B", "line": 20}]\n```',
        '```\n[{"item": "code B", "line": 20}, {"item": "code A", "line": 12}]\n```',
        '  [{"item":"Code  a.", "line": 12}, {"item": "code B", "line": 20}]  \n',
    ],
)
def test_strict_parse_takes_one_list_fenced_or_not(chunk_step: Any, reply: str) -> None:
    d, step = chunk_step
    answer = d.parse_strict(reply, step)
    assert d.key(answer) == frozenset({("code a", 12), ("code b", 20)})


def test_an_empty_list_is_an_answer(chunk_step: Any) -> None:
    d, step = chunk_step
    assert d.parse_strict("[]", step) == ()
    assert d.describe(d.key(())) == "[] nothing"


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ('[{"item": "code A", "line": 30}]', "outside the chunk"),
        ('[{"item": "code A", "line": 10}]', "outside the chunk"),
        ("the access code is QX-1", "not JSON"),
        ("", "empty"),
        ('[{"item": "a", "line": 12}] [{"item": "b", "line": 13}]', "more than one"),
        ('[{"item": "a", "line": 12}]\n```\n[]\n```', "more than one"),
        ("```json\n[]\n```\n```json\n[]\n```", "one fenced"),
        ('{"item": "a", "line": 12}', "expected a JSON list"),
        ('[{"item": "a", "line": "12"}]', "not an integer"),
        ('[{"item": "a", "line": true}]', "not an integer"),
        ('[{"item": "", "line": 12}]', "non-empty string"),
        ('[{"item": "a", "line": 12, "why": "x"}]', "keys must be"),
        ('["code A"]', "not an object"),
        (json.dumps([{"item": f"i{n}", "line": 12} for n in range(MAX_ITEMS + 1)]), "more than"),
        ('Here: [{"item": "a", "line": 12}]', "not JSON"),
    ],
)
def test_strict_parse_red_flags(chunk_step: Any, reply: str, why: str) -> None:
    d, step = chunk_step
    with pytest.raises(ParseError, match=why):
        d.parse_strict(reply, step)


def test_lenient_parse_finds_the_list_in_chatter(chunk_step: Any) -> None:
    d, step = chunk_step
    reply = 'Sure! [1, [{"item": "a", "line": "12"}, {"item": "b", "line": 99}] ok'
    assert d.parse_lenient('Here: [{"item": "a", "line": "12"}] done', step) == (("a", 12),)
    # The outer list never closes: the inner one is taken, its line outside the chunk dropped.
    assert d.parse_lenient(reply, step) == (("a", 12),)


# --- truth and the simulated sampler's wrong answers ------------------------------------------


def test_truth_is_the_planted_items_of_the_chunk_and_wrong_answers_differ(planted: Any) -> None:
    volume, truth = planted
    d = domain(volume, truth)
    found = [t for s in d.steps() for t in d.truth(s)]
    assert sorted(found) == sorted((t["text"], t["line"]) for t in truth)
    for step in d.steps():
        true_key = d.key(d.truth(step))
        wrong = d.wrong_answers(step, 3)
        keys = {d.key(w) for w in wrong}
        assert len(wrong) == 3 and len(keys) == 3 and true_key not in keys
        c = step.input
        assert all(c.first <= line <= c.last for w in wrong for _, line in w)
    with pytest.raises(ValueError, match="no truth"):
        domain(volume).truth(d.step_at(0))


# --- merging ------------------------------------------------------------------------------------


def test_merge_dedups_by_normalised_text_and_keeps_every_citation() -> None:
    a = [Item("Code QX-1", (("a.py", 3),)), Item("other", (("a.py", 9),))]
    b = [Item("code  qx-1.", (("b.py", 40),)), Item("code QX-1", (("a.py", 3),))]
    c = [Item("third", (("c.py", 1),)), Item("OTHER", (("c.py", 2), ("a.py", 9)))]
    out = merge([a, b, c])
    assert out == [
        Item("Code QX-1", (("a.py", 3), ("b.py", 40))),
        Item("other", (("a.py", 9), ("c.py", 2))),
        Item("third", (("c.py", 1),)),
    ]
    assert out[0].cited() == "Code QX-1 (a.py:3, b.py:40)"
    assert merge([]) == [] and normalise("  A  b. ") == "a b"


def test_report_merges_chunks_into_files_into_the_root(planted: Any) -> None:
    volume, truth = planted
    d = domain(volume, truth)
    answers = {s.index: d.truth(s) for s in d.steps()}
    # The same item found twice (in two chunks of two files) is one item, cited twice.
    last = next(s for s in reversed(list(d.steps())) if not d.truth(s))
    answers[last.index] = ((truth[0]["text"].upper(), last.input.first),)
    report = extract_report(d, answers)
    by_text = {normalise(i.text): i for i in report}
    assert len(report) == len(truth)
    first = by_text[normalise(truth[0]["text"])]
    assert first.citations == (
        (truth[0]["path"], truth[0]["line"]), (last.input.path, last.input.first)
    )  # fmt: skip
    assert extract_report(d, {}) == []


# --- a durable run ---------------------------------------------------------------------------


def test_the_registry_builds_extract_runs_started_by_process(planted: Any) -> None:
    from nanobot_tui.engine.voting.domains.registry import DOMAINS, RUN_NAMES, build_domain

    params = {"volume": planted[0], "instruction": INSTRUCTION}
    assert isinstance(build_domain("extract", params), ExtractDomain)
    kind = DOMAINS["extract"]
    assert kind.options == ("volume", "instruction") and kind.command == "process"
    assert kind.label(params) == "extract-planted" and "extract" not in RUN_NAMES


def extract_spec(volume: str, truth: Any, p: float, k: int = 3, **kw: Any) -> Any:
    from nanobot_tui.engine.runs.spec import RunSpec
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig

    params = {"volume": volume, "instruction": INSTRUCTION, "truth": truth, "simulated": True}
    return RunSpec(
        domain="extract", params={**params, **kw}, sampler=f"simulated:{p}",
        vote=VoteConfig(k=k), label=f"extract-{volume}", fanout=4,
    )  # fmt: skip


def scores(report: list[Item], truth: list[dict[str, Any]]) -> tuple[float, float, float]:
    """(recall, precision, cited right): items against the planted facts; an item is
    cited right when one of its citations is the fact's file:line."""
    planted = {normalise(t["text"]): (t["path"], t["line"]) for t in truth}
    hits = [i for i in report if normalise(i.text) in planted]
    cited = [i for i in hits if planted[normalise(i.text)] in i.citations]
    return len(hits) / len(planted), len(hits) / max(1, len(report)), len(cited) / len(planted)


async def test_a_simulated_durable_run_finds_every_planted_fact(
    planted: Any,
) -> None:
    from nanobot_tui.engine.runs.durable import execute, start_run
    from nanobot_tui.engine.runs.store import RunStore
    from nanobot_tui.engine.work.extract import run_report

    volume, truth = planted
    rid = await start_run(extract_spec(volume, truth, p=0.9, k=3))
    status = await execute(rid)
    assert status.status == "completed"
    d = domain(volume, truth)
    assert status.steps_done == d.total_steps()
    report = run_report(rid)
    assert scores(report, truth) == (1.0, 1.0, 1.0)
    assert all(len(i.citations) == 1 for i in report)
    with RunStore.open(rid) as store:
        # The store keeps each chunk as where it is (volume, path, lines), not its text.
        row = store.step(0)
        assert row.input == d.dump_step(d.step_at(0))


async def test_at_a_low_p_the_run_votes_wrong_sets_and_the_report_shows_them(
    planted: Any,
) -> None:
    """The control: with p = 0.3 and k = 1 wrong answers win often, so the scoring (and
    the assertion of the test above) can tell a bad run from a good one."""
    from nanobot_tui.engine.runs.durable import execute, start_run
    from nanobot_tui.engine.work.extract import run_report

    volume, truth = planted
    rid = await start_run(extract_spec(volume, truth, p=0.3, k=1, chunk_lines=10))
    await execute(rid)
    recall, precision, _ = scores(run_report(rid), truth)
    assert recall < 1.0 or precision < 1.0


# --- the real sampler's path, with a FAKE chat client ------------------------------------------


class ScriptedClient:
    """A FAKE chat client (not a model): answers each request with the next scripted
    reply, then with the last one again."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    async def chat(self, request: Any) -> Any:
        from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage

        self.prompts.append(request.messages[-1]["content"])
        text = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return ChatResult([Choice(text, finish_reason="stop")], Usage(100, 20, 120), None,
                          0.01, "fake", {})  # fmt: skip


async def test_a_model_reply_citing_a_line_outside_its_chunk_is_red_flagged_not_voted(
    planted: Any,
) -> None:
    from nanobot_tui.engine.voting.ahead_by_k import VoteConfig, vote
    from nanobot_tui.engine.voting.samplers.model import LLMSampler

    volume, truth = planted
    d = domain(volume, truth, chunk_lines=20)
    fact = truth[0]
    step = next(s for s in d.steps() if d.truth(s))
    c = step.input
    right = json.dumps([{"item": t, "line": n} for t, n in d.truth(step)])
    outside = json.dumps([{"item": "port 8080", "line": c.last + 1}])  # an example copied
    client = ScriptedClient([outside, "Sure, here it is: " + right, right, "[]", right])
    sampler = LLMSampler(client, d, name="fake scripted client", batch=False)  # type: ignore[arg-type]
    record = await vote(sampler, step, VoteConfig(k=2))
    assert record.decided and record.winner_key == d.key(d.truth(step))
    assert record.red_flags == {"parse": 2}
    assert record.votes[d.key(())] == 1
    assert f"{fact['line']}: # {fact['text']}" in client.prompts[0]
