"""A learning job (job.py) from learned.db to the registry, and what runs do with the
adapter it promotes (run_memory.py).

Training is done by a FAKE trainer (`fake_trainer`): it has train.py's signature, reports
progress, honours the stop event with a checkpoint, and writes E's random adapter instead
of training one, because real training on the embedded model (its base checkpoint alone
takes about a minute to make here) does not fit a test. Everything else is real: the
training set, the job folder, the registry, the server with the adapters loaded and the
A/B test on it. The step type "shout" has no domain, so its prompts are short, its
answers are judged by their text and its A/B test runs on the held-out split; word case
has a domain that makes fresh steps, and is tested on those.

The runs that apply a promoted adapter sample from a FAKE client that answers every
step wrong (the embedded model gets most word-case steps right, and an adapter that
does badly is what demotion is about), but the adapter ids come from a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nanobot_tui.atomic import write_atomic
from nanobot_tui.config import Config, LocalConfig, SlotConfig, save_config
from nanobot_tui.engine.learning.distill import train as training
from nanobot_tui.engine.learning.distill.ab_test import MIN_LIVE
from nanobot_tui.engine.learning.distill.adapter_gguf import random_adapter, write_adapter
from nanobot_tui.engine.learning.distill.dataset import TrainingExample, domain_of, is_heldout
from nanobot_tui.engine.learning.distill.job import JobEvent, LearnJob
from nanobot_tui.engine.learning.examples import ExampleBank
from nanobot_tui.engine.learning.reuse import prompt_fingerprint
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import RetryPolicy, RunSpec
from nanobot_tui.engine.serving.adapter_registry import AdapterRegistry
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains.wordcase import VOCABULARY
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from nanobot_tui.errors import UsageError
from tests.fakes import FakeSamplerClient

STEP_TYPE = "shout"  # no domain of that name: prompts are the word alone
SLOT = SlotConfig(model="smollm2-135m-instruct", context_size=2048, parallel=1)
CONFIG = Config(local=LocalConfig(main=SLOT))
BETTER = {
    "p_base": 0.5, "base_ci": [0.3, 0.7], "p_adapter": 0.9, "adapter_ci": [0.7, 0.97],
    "diff": 0.4, "diff_ci": [0.2, 0.6], "n": 20, "verdict": "better",
}  # fmt: skip


def words(heldout: int, train: int) -> list[str]:
    held = [w for w in VOCABULARY if is_heldout(STEP_TYPE, w)][:heldout]
    trained = [w for w in VOCABULARY if not is_heldout(STEP_TYPE, w)][:train]
    return held + trained


def add_examples(items: Sequence[str], step_type: str = STEP_TYPE) -> None:
    with LearningStore() as store:
        bank = ExampleBank(store)
        for word in items:
            bank.add(step_type, word, word.upper(), verified_by="truth", model="m",
                     fingerprint="f")  # fmt: skip


def add_wordcase_examples(items: Sequence[str]) -> None:
    """Truth-verified word-case examples, filed under the prompt a run files them under."""
    domain = domain_of("wordcase")
    assert domain is not None
    template = prompt_fingerprint(domain.messages(next(iter(domain.steps())))[:-1])
    with LearningStore() as store:
        bank = ExampleBank(store)
        for word in items:
            bank.add("wordcase", word, f"answer = {word.upper()}", verified_by="truth",
                     model="m", fingerprint=template)  # fmt: skip


class FakeTrainer:
    """A FAKE trainer (see the module's docstring): 4 steps of made-up loss; with the
    stop event set it "saves a checkpoint" (a file of its own) and stops; at the end it
    writes a random adapter of `strength` where train.py writes the trained one."""

    def __init__(self, strength: float = 0.05, stop_after: int | None = None) -> None:
        self.strength = strength
        self.stop_after = stop_after
        self.calls: list[list[TrainingExample]] = []

    def __call__(
        self,
        config: training.TrainConfig,
        examples: Sequence[TrainingExample],
        *,
        progress: training.ProgressCallback | None = None,
        stop: threading.Event | None = None,
    ) -> training.TrainResult:
        self.calls.append(list(examples))
        checkpoint = config.job_dir / "checkpoint.pt"
        step = int(checkpoint.read_text()) if checkpoint.is_file() else 0
        resumed = step or None
        total = 4 * config.epochs
        while step < total:
            if stop is not None and stop.is_set():
                # Whole or not at all, as train.py saves one: a reader never sees it half made.
                write_atomic(checkpoint, str(step))
                return training.TrainResult(
                    config.job_dir, len(examples), step, total, True, resumed, 0.1
                )
            step += 1
            if progress is not None:
                progress(training.Progress(len(examples), (step - 1) // 4 + 1, config.epochs,
                                           step, total, 2.0 / step, 0.1, 0.1))  # fmt: skip
            if step == self.stop_after and stop is not None:
                stop.set()
        weights = random_adapter(config.base_gguf, seed=7, scale=self.strength)
        info = write_adapter(config.job_dir / "adapter.gguf", config.base_gguf, weights, alpha=8.0)
        checkpoint.unlink(missing_ok=True)
        losses = [2.0 / s for s in range(1, total + 1)]
        return training.TrainResult(
            config.job_dir, len(examples), total, total, False, resumed, 0.2, losses, info
        )


def test_step_types_without_enough_new_examples_are_skipped(
    nanobot_home: Path, embedded_model: Path
) -> None:
    trainer = FakeTrainer()
    summary = asyncio.run(LearnJob(CONFIG, trainer=trainer).run())
    assert summary.outcomes == [] and trainer.calls == []
    assert summary.line().startswith("nothing learned: no verified examples")

    add_examples(words(2, 5))
    add_examples(words(5, 20), step_type="other")
    with AdapterRegistry() as registry:  # an adapter trained on all of "other" already
        registry.add(model=str(embedded_model), slot="rlm", step_type="other",
                     path=nanobot_home / "x.gguf", size_bytes=1, train_examples=20, heldout=5,
                     trained_s=1.0)  # fmt: skip
    summary = asyncio.run(LearnJob(CONFIG, trainer=trainer).run())
    assert [(o.step_type, o.status) for o in summary.outcomes] == [
        ("other", "skipped"),
        (STEP_TYPE, "skipped"),
    ]
    assert "0 new verified examples since adapter 1" in summary.outcomes[0].reason
    assert "5 verified examples to train and 2 held out" in summary.outcomes[1].reason
    assert trainer.calls == []
    assert summary.to_dict()["trained"] == 0

    # Named, a type with too few examples is an error of one line.
    with pytest.raises(UsageError, match="'shout': 5 verified examples to train and 2 held"):
        asyncio.run(LearnJob(CONFIG, step_type=STEP_TYPE, trainer=trainer).run())
    with pytest.raises(UsageError, match="no stopped learning job to resume"):
        asyncio.run(LearnJob(CONFIG, resume=True, trainer=trainer).run())


@pytest.mark.model
@pytest.mark.timeout(300)
def test_a_job_trains_stops_resumes_tests_and_records_and_retests_the_promoted_one(
    nanobot_home: Path, embedded_model: Path
) -> None:
    add_examples(words(4, 16))
    # A strong random adapter promoted earlier for the same step type: tested again.
    weights = random_adapter(embedded_model, seed=3, scale=0.05)
    earlier_path = write_adapter(nanobot_home / "earlier.gguf", embedded_model, weights, 8.0).path
    with AdapterRegistry() as registry:
        earlier = registry.add(
            model=str(embedded_model), slot="rlm", step_type=STEP_TYPE, path=earlier_path,
            size_bytes=earlier_path.stat().st_size, train_examples=2, heldout=1, trained_s=1.0,
        )  # fmt: skip
        registry.update(earlier.id, status="promoted", ab=BETTER)

    events: list[JobEvent] = []
    stop = threading.Event()
    trainer = FakeTrainer(strength=0.05, stop_after=2)
    stopped = asyncio.run(
        LearnJob(CONFIG, epochs=2, trainer=trainer, progress=events.append, stop=stop).run()
    )
    [outcome] = stopped.outcomes
    assert (outcome.step_type, outcome.status, outcome.adapter_id) == (STEP_TYPE, "stopped", None)
    assert "checkpoint at step 2/8; `nanobot learn --resume` goes on" in stopped.line()
    steps = [e.train for e in events if e.train is not None]
    assert [(s.step, s.steps, s.epoch, s.examples) for s in steps] == [(1, 8, 1, 16), (2, 8, 1, 16)]
    job_dir = training.job_folder(STEP_TYPE)
    assert (job_dir / "checkpoint.pt").is_file() and (job_dir / "job.json").is_file()
    with AdapterRegistry() as registry:
        assert [r.id for r in registry.list()] == [earlier.id]

    # More examples arrive; the resumed job still trains on the set it started with.
    add_examples(words(8, 30))
    events.clear()
    resumed = LearnJob(CONFIG, resume=True, trainer=trainer, progress=events.append)
    summary = asyncio.run(resumed.run())
    pairs = [[(e.messages, e.answer) for e in call] for call in trainer.calls]
    assert pairs[1] == pairs[0]
    assert [e.train.step for e in events if e.train is not None] == [3, 4, 5, 6, 7, 8]
    phases = [e.phase for e in events]
    assert phases.index("serve") < phases.index("ab") < phases.index("done")
    assert not (job_dir / "checkpoint.pt").exists() and not (job_dir / "job.json").exists()

    [outcome] = summary.outcomes
    assert outcome.status == "candidate"  # a random adapter is not better
    ab = outcome.ab
    assert ab is not None and ab["n"] == 4 and ab["verdict"] != "better"
    # No domain makes fresh "shout" steps: tested on the held-out split, and said so.
    assert ab["on"] == "heldout"
    assert "A/B on 4 held-out steps" in [e.message for e in events]
    with AdapterRegistry() as registry:
        record = registry.get(outcome.adapter_id)  # type: ignore[arg-type]
        again = registry.get(earlier.id)
    assert (record.status, record.ab, record.step_type, record.slot) == (
        "candidate",
        ab,
        STEP_TYPE,
        "rlm",
    )
    assert (record.train_examples, record.heldout, record.model) == (16, 4, str(embedded_model))
    assert record.path.is_file() and record.path.parent.name == "adapters"
    assert record.bytes == record.path.stat().st_size
    # The earlier adapter, tested again on these held-out steps, did no better than the
    # base now: demoted when it fell below it, kept otherwise.
    assert outcome.retested is not None and outcome.retested["adapter_id"] == earlier.id
    below = outcome.retested["p_adapter"] < outcome.retested["p_base"]
    assert again.status == ("demoted" if below else "promoted")
    assert again.ab == {k: v for k, v in outcome.retested.items() if k != "adapter_id"}
    assert summary.line().startswith(f"{STEP_TYPE}: adapter {record.id} candidate (p ")


@pytest.mark.model
@pytest.mark.timeout(300)
def test_a_step_type_whose_domain_makes_fresh_steps_is_ab_tested_on_them(
    nanobot_home: Path, embedded_model: Path
) -> None:
    held = [w for w in VOCABULARY if is_heldout("wordcase", w)][:4]
    trained = [w for w in VOCABULARY if not is_heldout("wordcase", w)][:16]
    add_wordcase_examples(held + trained)
    events: list[JobEvent] = []
    job = LearnJob(CONFIG, step_type="wordcase", trainer=FakeTrainer(strength=0.05),
                   ab_steps=6, progress=events.append, threads=1)  # fmt: skip
    # (one llama.cpp thread: the fastest on a machine busier than its cores)
    summary = asyncio.run(job.run())
    [outcome] = summary.outcomes
    ab = outcome.ab
    assert ab is not None and (ab["on"], ab["n"]) == ("fresh", 6)
    assert "A/B on 6 fresh steps" in [e.message for e in events]
    assert [e.on for e in events if e.phase == "ab"] == ["fresh"] * 7  # announce + 6 done
    assert "on 6 fresh)" in summary.line()
    with AdapterRegistry() as registry:
        assert registry.get(outcome.adapter_id).ab == ab  # type: ignore[arg-type]


# --- what runs do with a promoted adapter --------------------------------------------------


class WrongModelClient(FakeSamplerClient):
    """A FAKE model client that answers every word-case step wrong and keeps what each
    request asked for beyond the messages; it names the real server at `base_url`
    (whose adapters a run asks for) but never sends it a chat request."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.base_url = base_url
        self.headers = headers
        self.extras: list[dict[str, Any]] = []

    def auth_headers(self) -> dict[str, str]:
        return self.headers

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.extras.append(dict(request.extra or {}))
        choice = Choice("answer = ZEBRAS", finish_reason="stop")
        return ChatResult([choice], Usage(completion_tokens=4), None, 0.0, "fake", {})


def lora_ids(client: WrongModelClient) -> set[int | None]:
    """The adapter id each request asked for at scale 1 (None: no adapter)."""
    out: set[int | None] = set()
    for extra in client.extras:
        lora = extra.get("lora") or [{"id": None, "scale": 1.0}]
        assert extra.get("cache_prompt", False) is False and len(lora) == 1
        out.add(lora[0]["id"])
    return out


@pytest.mark.model
@pytest.mark.timeout(300)
def test_a_run_applies_the_adapter_its_server_loaded_and_demotes_it_when_it_does_badly(
    nanobot_home: Path, embedded_model: Path
) -> None:
    """The id of the step type's promoted adapter is the one the running server gave it,
    though the registry changed after the server started (the app keeps one for hours);
    once the server is restarted with the registry's list, the new id."""
    save_config(CONFIG)
    with AdapterRegistry() as registry:
        ids = []
        for seed, step_type in ((1, "other"), (2, "wordcase")):
            weights = random_adapter(embedded_model, seed=seed, scale=0.01)
            path = write_adapter(nanobot_home / f"{seed}.gguf", embedded_model, weights, 8.0).path
            ids.append(registry.add(
                model=str(embedded_model), slot="rlm", step_type=step_type, path=path,
                size_bytes=path.stat().st_size, train_examples=16, heldout=4, trained_s=1.0,
            ).id)  # fmt: skip
            registry.update(ids[-1], status="promoted", ab=BETTER)
    other_id, wordcase_id = ids
    spec = RunSpec(
        domain="wordcase", params={"word_list": list(VOCABULARY[:MIN_LIVE])},
        sampler="local:rlm", vote=VoteConfig(k=1), concurrency=2, label="wordcase20",
        retry=RetryPolicy(retries=0, on_fail="skip"),
    )  # fmt: skip

    async def run(bench: Workbench, run_spec: RunSpec = spec) -> WrongModelClient:
        client = WrongModelClient(bench.manager.url("rlm"), bench.manager.auth_headers)
        rid = await start_run(run_spec)
        sampler = LLMSampler(client, run_spec.build_domain(), name="local rlm: m", batch=False)
        await execute(rid, sampler=sampler)
        return client

    async def scenario() -> None:
        async with Workbench(CONFIG, only_slots=("rlm",)) as bench:
            loaded = {a.path.name: a.id for a in await bench.manager.lora_adapters("rlm")}
            assert loaded == {"1.gguf": 0, "2.gguf": 1}
            # Turned off while the server runs: the registry now serves word case's
            # adapter alone, first (id 0 by its list), but the server still has it at 1.
            with AdapterRegistry() as registry:
                registry.update(other_id, status="off")
            [(slot, wanted)] = (await asyncio.to_thread(bench.stale_adapters)).items()
            assert [p.name for p in wanted] == ["2.gguf"]
            client = await run(bench)
            assert client.extras and lora_ids(client) == {1}
            with AdapterRegistry() as registry:  # 0 of 20 steps right: demoted
                assert registry.get(wordcase_id).status == "demoted"
                registry.update(wordcase_id, status="promoted")  # as `adapters on` does

            # Restarted with the registry's list (as the app does when idle): id 0 now.
            assert await bench.reload_adapters(slot, wanted)
            loaded = {a.path.name: a.id for a in await bench.manager.lora_adapters("rlm")}
            assert loaded == {"2.gguf": 0}
            assert await asyncio.to_thread(bench.stale_adapters) == {}
            client = await run(bench)
            assert lora_ids(client) == {0}
            # Demoted again by this run's steps: applied no more.
            client = await run(bench)
            assert client.extras and lora_ids(client) == {None}

    asyncio.run(scenario())
    with AdapterRegistry() as registry:
        applied, other = registry.get(wordcase_id), registry.get(other_id)
    assert (applied.live_right, applied.live_n) == (0, 2 * MIN_LIVE)
    assert applied.status == "demoted"
    assert "live runs: 0/" in applied.note
    assert (other.status, other.live_n) == ("off", 0)


def test_a_run_without_a_local_server_to_ask_applies_no_adapter(
    nanobot_home: Path, embedded_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_config(CONFIG)
    with AdapterRegistry() as registry:
        record = registry.add(
            model=str(embedded_model), slot="rlm", step_type="wordcase",
            path=nanobot_home / "a.gguf", size_bytes=4, train_examples=16, heldout=4,
            trained_s=1.0,
        )  # fmt: skip
        registry.update(record.id, status="promoted", ab=BETTER)
    spec = RunSpec(
        domain="wordcase", params={"word_list": list(VOCABULARY[:4])},
        sampler="local:rlm", vote=VoteConfig(k=1), label="wordcase4",
        retry=RetryPolicy(retries=0, on_fail="skip"),
    )  # fmt: skip
    # A client that is no local server's: there is no one to ask which id it has.
    client = WrongModelClient("http://fake", {})

    async def run(run_spec: RunSpec) -> None:
        rid = await start_run(run_spec)
        sampler = LLMSampler(client, run_spec.build_domain(), name="local rlm: m", batch=False)
        await execute(rid, sampler=sampler)

    asyncio.run(run(spec))
    assert client.extras and lora_ids(client) == {None}
    said = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("not applied: its client is no local model "
                                               "server's")  # fmt: skip
    # A run without learning gets no adapter either.
    client.extras.clear()
    asyncio.run(run(dataclasses.replace(spec, learn=False)))
    assert client.extras and all(extra == {} for extra in client.extras)
