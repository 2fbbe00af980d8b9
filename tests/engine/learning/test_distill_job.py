"""A learning job (job.py) from learned.db to the registry, and what runs do with the
adapter it promotes (run_memory.py).

Training is done by a FAKE trainer (`fake_trainer`): it has train.py's signature, reports
progress, honours the stop event with a checkpoint, and writes E's random adapter instead
of training one, because real training on the embedded model (its base checkpoint alone
takes about a minute to make here) does not fit a test. Everything else is real: the
training set, the job folder, the registry, the server with the adapters loaded and the
A/B test on it. The step type has no domain, so its prompts are short and its answers
are judged by their text."""

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
from nanobot_tui.engine.learning.distill.dataset import TrainingExample, is_heldout
from nanobot_tui.engine.learning.distill.job import JobEvent, LearnJob
from nanobot_tui.engine.learning.examples import ExampleBank
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, Usage
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import RetryPolicy, RunSpec
from nanobot_tui.engine.serving.adapter_registry import AdapterRegistry
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


# --- what runs do with a promoted adapter --------------------------------------------------


class WrongModelClient(FakeSamplerClient):
    """A FAKE model client that answers every word-case step wrong and keeps what each
    request asked for beyond the messages."""

    base_url = "fake://model"

    def __init__(self) -> None:
        self.extras: list[dict[str, Any]] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.extras.append(dict(request.extra or {}))
        choice = Choice("answer = ZEBRAS", finish_reason="stop")
        return ChatResult([choice], Usage(completion_tokens=4), None, 0.0, "fake", {})


def test_a_run_applies_its_step_types_promoted_adapter_and_demotes_it_when_it_does_badly(
    nanobot_home: Path, embedded_model: Path
) -> None:
    save_config(CONFIG)
    with AdapterRegistry() as registry:
        ids = []
        for name, step_type in (("a", "wordcase"), ("b", "other"), ("c", "wordcase")):
            path = nanobot_home / f"{name}.gguf"
            path.write_bytes(b"GGUF")
            ids.append(registry.add(
                model=str(embedded_model), slot="rlm", step_type=step_type, path=path,
                size_bytes=4, train_examples=16, heldout=4, trained_s=1.0,
            ).id)  # fmt: skip
        for adapter_id in ids[:2]:
            registry.update(adapter_id, status="promoted", ab=BETTER)
    # Served: a (id 0 on the server) and b (id 1); c is a candidate, not loaded.
    spec = RunSpec(
        domain="wordcase", params={"word_list": list(VOCABULARY[:MIN_LIVE])},
        sampler="local:rlm", vote=VoteConfig(k=1), concurrency=2, label="wordcase20",
        retry=RetryPolicy(retries=0, on_fail="skip"),
    )  # fmt: skip
    client = WrongModelClient()

    async def run() -> None:
        rid = await start_run(spec)
        sampler = LLMSampler(client, spec.build_domain(), name="local rlm: m", batch=False)
        await execute(rid, sampler=sampler)

    asyncio.run(run())
    assert client.extras and all(
        extra == {"lora": [{"id": 0, "scale": 1.0}], "cache_prompt": False}
        for extra in client.extras
    )
    with AdapterRegistry() as registry:
        applied, other = registry.get(ids[0]), registry.get(ids[1])
    assert (applied.live_right, applied.live_n) == (0, MIN_LIVE)
    assert applied.status == "demoted"
    assert "live runs: 0/20 steps right" in applied.note
    assert (other.status, other.live_n) == ("promoted", 0)

    # Demoted, it is applied no more.
    client.extras.clear()
    asyncio.run(run())
    assert client.extras and all("lora" not in extra for extra in client.extras)
    # A run without learning gets no adapter either.
    client.extras.clear()
    spec = dataclasses.replace(spec, learn=False)
    asyncio.run(run())
    assert client.extras and all(extra == {} for extra in client.extras)
