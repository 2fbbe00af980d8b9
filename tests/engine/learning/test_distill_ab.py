"""The A/B test of an adapter (ab_test.py): the verdict rule on hand-made answer lists
(no model), the promotion and demotion rules, the judge, and one real A/B test on the
embedded model, where a strong random adapter (E's `random_adapter`, no training) must not
come out better than the base."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobot_tui.config import Config, LocalConfig, SlotConfig
from nanobot_tui.engine.learning.distill.ab_test import (
    MIN_LIVE,
    ab_test,
    compare,
    live_demotes,
    paired_difference_interval,
    status_after_test,
    truth_judge,
)
from nanobot_tui.engine.learning.distill.adapter_gguf import (
    random_adapter,
    read_base_model,
    write_adapter,
)
from nanobot_tui.engine.learning.distill.dataset import TrainingExample
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.engine.voting.domains import Step
from nanobot_tui.engine.voting.domains.wordcase import VOCABULARY, WordCase


def answers(both: int, only_adapter: int, only_base: int, neither: int) -> tuple[list[bool], ...]:
    """Paired answers (base, adapter): right for both, for one only, for neither."""
    base = [True] * both + [False] * only_adapter + [True] * only_base + [False] * neither
    adapter = [True] * both + [True] * only_adapter + [False] * only_base + [False] * neither
    return base, adapter


def example(word: str, domain: WordCase) -> TrainingExample:
    return TrainingExample(
        domain.messages(Step(0, word)), f"answer = {word.upper()}", "truth", "example", 0.0
    )


def test_better_needs_the_adapters_lower_bound_above_the_base_and_a_positive_difference() -> None:
    # 0.25 -> 0.75 on 20 prompts: both conditions hold.
    result = compare(*answers(5, 10, 0, 5))
    assert (result.base.p, result.adapter.p, result.n) == (0.25, 0.75, 20)
    assert result.adapter.interval[0] > result.base.p and result.diff_interval[0] > 0
    assert result.verdict == "better"

    # The adapter's lower bound (0.39) is under the base's p (0.40), though the paired
    # difference is above 0: not better.
    near = compare(*answers(8, 4, 0, 8))
    assert near.diff_interval[0] > 0 and near.adapter.interval[0] < near.base.p
    assert near.verdict == "not better"

    # The adapter's lower bound (0.22) is above the base's p (0.10), but the prompts it
    # gained and lost leave the difference's interval across 0: not better.
    mixed = compare(*answers(0, 8, 2, 10))
    assert mixed.adapter.interval[0] > mixed.base.p and mixed.diff_interval[0] < 0
    assert mixed.verdict == "not better"

    assert compare(*answers(10, 0, 0, 10)).verdict == "not better"  # the same answers
    worse = compare(*answers(2, 0, 10, 8))
    assert (worse.base.p, worse.adapter.p, worse.verdict) == (0.6, 0.1, "worse")


def test_the_difference_interval_holds_the_difference_and_mirrors() -> None:
    base, adapter = answers(3, 9, 2, 6)
    low, high = paired_difference_interval(base, adapter)
    assert -1.0 <= low < 7 / 20 < high <= 1.0
    assert paired_difference_interval(adapter, base) == pytest.approx((-high, -low))
    # Concordant pairs narrow it: the same margins with the arms correlated.
    independent = paired_difference_interval(*answers(0, 7, 0, 13))
    correlated = paired_difference_interval(*answers(5, 7, 0, 8))
    assert correlated[1] - correlated[0] < independent[1] - independent[0]
    with pytest.raises(ValueError):
        paired_difference_interval([True], [True, False])


def test_the_result_as_the_registry_keeps_it() -> None:
    data = compare(*answers(5, 10, 0, 5)).to_dict()
    assert set(data) == {
        "p_base", "base_ci", "p_adapter", "adapter_ci", "diff", "diff_ci", "n", "verdict",
    }  # fmt: skip
    assert data["p_base"] == 0.25 and data["p_adapter"] == 0.75 and data["n"] == 20
    assert data["diff"] == pytest.approx(0.5)
    assert data["base_ci"][0] < 0.25 < data["base_ci"][1]


def test_promotion_and_demotion_rules() -> None:
    better = compare(*answers(5, 10, 0, 5)).to_dict()
    not_better = compare(*answers(10, 4, 0, 6)).to_dict()  # 0.50 -> 0.70
    below = compare(*answers(10, 0, 2, 8)).to_dict()  # 0.60 -> 0.50, not "worse" yet
    assert below["verdict"] == "not better"

    assert status_after_test("candidate", better) == "promoted"
    assert status_after_test("candidate", not_better) == "candidate"
    # A promoted adapter tested again: kept while it is not below the base.
    assert status_after_test("promoted", not_better) == "promoted"
    assert status_after_test("promoted", below) == "demoted"
    assert status_after_test("off", better) == "off"

    # Live runs: only with enough judged steps, and only when clearly below the base.
    assert not live_demotes(better, 0, MIN_LIVE - 1)
    assert live_demotes(better | {"p_base": 0.5}, 2, MIN_LIVE)
    assert not live_demotes(better | {"p_base": 0.5}, 8, MIN_LIVE)
    assert not live_demotes(None, 0, 100)


def test_the_judge_reads_replies_with_the_domains_strict_parser() -> None:
    domain = WordCase(count=3)
    judge = truth_judge(domain)
    cat = example("cat", domain)
    assert judge("answer = CAT", cat)
    assert judge("  answer = CAT\n", cat)
    assert not judge("answer = cat", cat)  # the strict parser wants capitals
    assert not judge("answer = DOG", cat)
    assert not judge("CAT", cat)
    plain = truth_judge(None)
    assert plain(" answer = CAT ", cat) and not plain("answer = DOG", cat)


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_a_strong_random_adapter_is_not_better_than_the_base(
    embedded_model: Path, tmp_path: Path
) -> None:
    base = read_base_model(embedded_model)
    weights = random_adapter(base, rank=8, targets=("q_proj", "v_proj"), seed=3, scale=0.05)
    adapter = write_adapter(tmp_path / "random.gguf", base, weights, alpha=8.0).path
    domain = WordCase(count=3)
    heldout = [example(word, domain) for word in VOCABULARY[:6]]
    slot = SlotConfig(model="smollm2-135m-instruct", context_size=2048, parallel=1)
    config = Config(local=LocalConfig(main=slot))

    seen: list[tuple[int, int]] = []
    async with Workbench(config, only_slots=("rlm",), extra_adapters={"rlm": [adapter]}) as bench:
        loaded = await bench.manager.lora_adapters("rlm")
        assert [a.path for a in loaded] == [adapter]
        client = bench.client("rlm")
        result = await ab_test(
            client, loaded[0].id, heldout, truth_judge(domain),
            progress=lambda done, total: seen.append((done, total)),
        )  # fmt: skip

    assert seen == [(i, 6) for i in range(1, 7)]
    assert result.n == 6
    assert result.base.right >= 1  # the base model gets some words right
    assert result.adapter.p <= result.base.p
    assert result.verdict != "better"
    assert status_after_test("candidate", result.to_dict()) == "candidate"
