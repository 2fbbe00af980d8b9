"""The distillation benchmark's harness (benchmarks/distill_gain.py) on a tiny store of
verified word-case examples, without a model: training is done by a FAKE trainer (it
writes E's random adapter for the embedded model's shapes instead of training one) and
the A/B test asks a FAKE client (the adapter arm right on every step, the base arm on
every other one) instead of a server, because a real run of either does not fit a test.
The dataset, the adapter file, the engine's A/B arithmetic and the report's maths are
real."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks.distill_gain import (
    RUN_STEPS,
    Distilled,
    distill,
    fresh_steps,
    measure,
    projection,
    table,
)
from nanobot_tui.engine.learning.distill import train as training
from nanobot_tui.engine.learning.distill.adapter_gguf import random_adapter, write_adapter
from nanobot_tui.engine.learning.distill.dataset import TrainingExample, domain_of, is_heldout
from nanobot_tui.engine.learning.examples import ExampleBank, last_user_text
from nanobot_tui.engine.learning.reuse import prompt_fingerprint
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult, Choice, StreamEvent, Usage
from nanobot_tui.engine.voting import maths
from nanobot_tui.engine.voting.domains.wordcase import VOCABULARY

STEP_TYPE = "wordcase"


def stored_words() -> list[str]:
    """20 training and 5 held-out words (the split is a hash of the input)."""
    held = [w for w in VOCABULARY if is_heldout(STEP_TYPE, w)][:5]
    trained = [w for w in VOCABULARY if not is_heldout(STEP_TYPE, w)][:20]
    return held + trained


def store_examples(words: Sequence[str]) -> None:
    """Truth-verified L1 examples filed as a word-case run files them."""
    domain = domain_of(STEP_TYPE)
    assert domain is not None
    template = prompt_fingerprint(domain.messages(next(iter(domain.steps())))[:-1])
    with LearningStore() as store:
        bank = ExampleBank(store)
        for word in words:
            bank.add(STEP_TYPE, word, f"answer = {word.upper()}", verified_by="truth",
                     model="m", fingerprint=template)  # fmt: skip


class FakeTrainer:
    """A FAKE trainer (module docstring): train.py's signature, two steps of made-up loss,
    then E's random adapter written where train.py writes the trained one."""

    def __init__(self) -> None:
        self.trained_on: list[TrainingExample] = []

    def __call__(
        self,
        config: training.TrainConfig,
        examples: Sequence[TrainingExample],
        *,
        progress: Callable[[Any], None] | None = None,
        stop: threading.Event | None = None,
    ) -> training.TrainResult:
        self.trained_on = list(examples)
        weights = random_adapter(config.base_gguf, seed=5, scale=0.01)
        info = write_adapter(config.job_dir / "adapter.gguf", config.base_gguf, weights, 8.0)
        return training.TrainResult(
            config.job_dir, len(examples), 2, 2, False, None, 1.5, [2.0, 1.0], info
        )


class FakeABClient:
    """A FAKE chat client (module docstring): at LoRA scale 1 it answers every word right;
    at scale 0 only the words whose index in `order` is even."""

    def __init__(self, order: Sequence[str]) -> None:
        self.base_right = {w for i, w in enumerate(order) if i % 2 == 0}
        self.scales: list[float] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        word = last_user_text(request.messages)
        assert request.extra is not None
        [lora] = request.extra["lora"]
        self.scales.append(lora["scale"])
        right = self.adapter_on(lora["scale"]) or word in self.base_right
        text = f"answer = {word.upper() if right else word.upper() + 'S'}"
        return ChatResult([Choice(text, finish_reason="stop")], Usage(), None, 0.0, "fake", {})

    def adapter_on(self, scale: float) -> bool:
        return scale == 1.0

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        raise AssertionError("the A/B test never streams")
        yield

    async def close(self) -> None:
        return None


def test_projection_is_the_engines_k_min_and_expected_samples() -> None:
    # By hand: at p = 0.75, t^(-1/s) - 1 = 4.89e-8 for s = 1,048,575 and t = 0.95;
    # ln(4.89e-8) / ln(1/3) = 15.3, so k_min = 16 and ~2k = 32 samples a step.
    proj = projection(0.75)
    assert proj["k_min"] == 16 == maths.k_min(0.75, RUN_STEPS, 0.95)
    assert proj["samples_per_step"] == pytest.approx(32.0, abs=1e-3)
    assert proj["total_samples"] == pytest.approx(32.0 * RUN_STEPS, rel=1e-4)
    assert projection(0.9)["k_min"] == 8
    assert projection(1.0) | {"note": ""} == {
        "p": 1.0, "k_min": 1, "samples_per_step": 1.0, "total_samples": float(RUN_STEPS),
        "note": "",
    }  # fmt: skip
    at_half = projection(0.5)
    assert at_half["k_min"] is None and at_half["total_samples"] is None
    assert "cannot amplify" in at_half["note"]


def test_the_harness_reports_p_ci_k_min_cost_training_and_adapter_size(
    nanobot_home: Path, embedded_model: Path
) -> None:
    words = stored_words()
    store_examples(words)
    domain = domain_of(STEP_TYPE)
    assert domain is not None
    trainer = FakeTrainer()
    distilled = distill(STEP_TYPE, domain, trainer=trainer, base_gguf=embedded_model,
                        base_dir=None, epochs=1, threads=1)  # fmt: skip
    assert isinstance(distilled, Distilled)
    heldout = distilled.training_set.heldout
    assert [e.input_text for e in heldout] == sorted(words[:5])
    assert sorted(e.input_text for e in trainer.trained_on) == sorted(words[5:])

    fresh = fresh_steps(domain, set(words), 6, "wordcase", {"words": 25, "seed": 3})
    assert len(fresh) == 6 and not {e.input_text for e in fresh} & set(words)
    assert all(e.answer == f"answer = {e.input_text.upper()}" for e in fresh)

    client = FakeABClient([e.input_text for e in [*heldout, *fresh]])

    @asynccontextmanager
    async def serve(adapter: Path) -> AsyncIterator[tuple[Any, int]]:
        assert adapter.is_file()
        yield client, 0

    report = asyncio.run(measure(distilled, domain, fresh, serve))
    assert sorted(client.scales) == [0.0] * 11 + [1.0] * 11  # every step in both arms

    adapter = distilled.result.adapter
    assert adapter is not None
    assert report["adapter"]["bytes"] == adapter.path.stat().st_size > 0
    assert report["adapter"]["rank"] == adapter.rank
    assert report["dataset"]["train"] == 20 and report["dataset"]["heldout"] == 5
    assert report["training"]["examples"] == 20
    assert (report["training"]["first_loss"], report["training"]["final_loss"]) == (2.0, 1.0)

    held, new = report["ab"]["heldout"], report["ab"]["fresh"]
    # Held out: base right on words 0, 2, 4 of 5; fresh: on 1, 3, 5 (their indices 5..10).
    assert (held["n"], held["p_base"], held["p_adapter"]) == (5, 0.6, 1.0)
    assert (new["n"], new["p_base"], new["p_adapter"]) == (6, 0.5, 1.0)
    assert held["moved"] and held["base_ci"][0] < 0.6 < held["base_ci"][1]
    assert held["verdict"] == "not better"  # 5 steps: too few to be sure

    assert held["base"]["k_min"] == maths.k_min(0.6, RUN_STEPS, 0.95)
    expected = maths.expected_samples(0.6, held["base"]["k_min"])
    assert held["base"]["samples_per_step"] == pytest.approx(expected)
    assert held["base"]["total_samples"] == pytest.approx(expected * RUN_STEPS)
    assert held["adapter"]["k_min"] == 1 and held["adapter"]["total_samples"] == RUN_STEPS
    # At the lower end of 5/5's interval (0.57) the cautious k_min is far above 1.
    low = held["adapter_ci"][0]
    assert held["adapter_at_ci_low"]["k_min"] == maths.k_min(low, RUN_STEPS, 0.95) > 20
    assert held["cost_ratio"] == pytest.approx(RUN_STEPS / held["base"]["total_samples"])
    # p = 0.5 on the fresh steps: no k reaches the target, said rather than made up.
    assert new["base"]["k_min"] is None and new["cost_ratio"] is None

    report["training"]["epochs"] = 1
    text = table(report)
    assert "p moved by +0.400" in text and "not better" in text
    assert f"{adapter.size_bytes:,} bytes" in text


def test_the_table_says_when_p_does_not_move(nanobot_home: Path, embedded_model: Path) -> None:
    words = stored_words()
    store_examples(words)
    domain = domain_of(STEP_TYPE)
    assert domain is not None
    distilled = distill(STEP_TYPE, domain, trainer=FakeTrainer(), base_gguf=embedded_model,
                        base_dir=None, epochs=1, threads=1)  # fmt: skip

    class SameClient(FakeABClient):
        """A FAKE client whose adapter arm answers as the base arm does."""

        def adapter_on(self, scale: float) -> bool:
            return False

    client = SameClient([e.input_text for e in distilled.training_set.heldout])

    @asynccontextmanager
    async def serve(adapter: Path) -> AsyncIterator[tuple[Any, int]]:
        yield client, 0

    report = asyncio.run(measure(distilled, domain, [], serve))
    assert list(report["ab"]) == ["heldout"]  # no fresh steps: no fresh test
    held = report["ab"]["heldout"]
    assert not held["moved"] and held["p_base"] == held["p_adapter"] == 0.6
    assert held["cost_ratio"] == pytest.approx(1.0)
    report["training"]["epochs"] = 1
    assert "heldout  p did not move" in table(report)
