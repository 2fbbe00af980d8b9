"""Running a domain with voting: simulated runs to the end, real-sampler semantics (go on
from the winner, stop on an invalid state), the monitor's snapshot and the summary."""

from __future__ import annotations

import asyncio
import json
from dataclasses import fields

from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.voting.domains import Step
from nanobot_tui.engine.voting.domains.hanoi import Hanoi, HanoiAnswer
from nanobot_tui.engine.voting.maths import k_min, p_vote
from nanobot_tui.engine.voting.runner import VoteMonitor, VoteSnapshot, run_domain
from nanobot_tui.engine.voting.samplers.simulated import SimulatedSampler
from nanobot_tui.engine.voting.samples import RED_TOO_LONG, Sample


async def test_simulated_13_disks_at_p_099_solves_with_zero_errors() -> None:
    h = Hanoi(13)
    steps = h.total_steps()
    k = k_min(0.99, steps, 0.95)
    assert k == 3
    monitor = VoteMonitor()
    summary = await run_domain(
        h, SimulatedSampler(h, 0.99, seed=2026), VoteConfig(k=k), monitor=monitor
    )
    assert summary.steps == steps == 8191
    assert summary.errors == 0 and summary.solved and summary.stopped is None
    assert summary.k == 3 and summary.simulated and summary.sampler == "simulated p=0.99"
    assert sum(summary.votes_per_step.values()) == steps
    assert min(summary.votes_per_step) >= 3  # never fewer than k votes
    assert abs(summary.p_estimate - 0.99) < 0.005
    snap = monitor.snapshot()
    assert snap.finished and snap.solved and snap.steps_done == steps
    assert snap.eta_s == 0.0 and snap.rate > 0


async def test_simulated_14_disks_with_red_flags() -> None:
    h = Hanoi(14)
    sampler = SimulatedSampler(h, 0.99, seed=7, red_flag_rate=0.05, red_flag_reason=RED_TOO_LONG)
    summary = await run_domain(h, sampler, VoteConfig(k=k_min(0.99, h.total_steps(), 0.95)))
    assert summary.errors == 0 and summary.solved
    assert set(summary.red_flags) == {RED_TOO_LONG}
    flagged = summary.red_flags[RED_TOO_LONG]
    assert abs(flagged / summary.samples - 0.05) < 0.01
    assert sum(n * c for n, c in summary.red_flags_per_step.items()) == flagged
    d = summary.to_dict()
    assert abs(d["mean_red_flags_per_step"][RED_TOO_LONG] - flagged / summary.steps) < 1e-12


async def test_simulated_errors_are_counted_per_step_and_the_run_goes_on() -> None:
    h = Hanoi(10)
    p, k = 0.7, 1
    summary = await run_domain(h, SimulatedSampler(h, p, seed=3), VoteConfig(k=k))
    assert summary.steps == h.total_steps()  # went on from the truth after each error
    rate = summary.errors / summary.steps
    assert abs(rate - (1 - p_vote(p, k))) < 0.06
    assert not summary.solved  # the truth had to step in: not solved by the run itself


class ScriptedModel:
    """A FAKE non-simulated sampler: answers each Hanoi step with its truth, except at
    chosen steps where it gives a chosen answer (as if a model had said it)."""

    simulated = False
    name = "fake scripted model"

    def __init__(self, h: Hanoi, overrides: dict[int, HanoiAnswer]) -> None:
        self.h = h
        self.overrides = overrides
        self.steps_seen: list[Step] = []

    async def sample(
        self, step: Step, temperatures: list[float], paraphrase: int = 0
    ) -> list[Sample]:
        self.steps_seen.append(step)
        answer = self.overrides.get(step.index) or self.h.truth(step)
        return [Sample(answer, self.h.key(answer), completion_tokens=20) for _ in temperatures]


async def test_real_sampler_goes_on_from_the_winners_answer() -> None:
    h = Hanoi(3)
    wrong = HanoiAnswer((1, 0, 1), ((3, 2), (1,), ()))  # valid state, wrong move
    model = ScriptedModel(h, {0: wrong})
    summary = await run_domain(h, model, VoteConfig(k=2))
    assert summary.errors >= 1
    assert not summary.simulated and summary.sampler == "fake scripted model"
    # step 1 was built from the wrong answer's state, not the true one
    assert model.steps_seen[1].input == (wrong.next_state, wrong.move)  # one round a step
    assert summary.steps == h.total_steps() and not summary.solved
    assert summary.completion_tokens == 20 * summary.samples


async def test_real_sampler_stops_on_an_invalid_state() -> None:
    h = Hanoi(4)
    broken = HanoiAnswer((1, 0, 1), ((4, 3, 2), (), ()))  # disk 1 vanished
    summary = await run_domain(h, ScriptedModel(h, {2: broken}), VoteConfig(k=1))
    assert summary.steps == 3 and summary.errors == 1 and not summary.solved
    assert summary.stopped is not None and "invalid state" in summary.stopped


async def test_real_sampler_stops_on_an_undecided_step() -> None:
    h = Hanoi(3)

    class Split(ScriptedModel):
        async def sample(
            self, step: Step, temperatures: list[float], paraphrase: int = 0
        ) -> list[Sample]:
            out = await super().sample(step, temperatures, paraphrase)
            if step.index == 1:  # two answers in turn: a perpetual tie
                other = self.h.wrong_answers(step, 1)[0]
                out = [
                    s if (i + len(self.steps_seen)) % 2 else Sample(other, self.h.key(other))
                    for i, s in enumerate(out)
                ]
            return out

    summary = await run_domain(h, Split(h, {}), VoteConfig(k=2, max_rounds=6))
    assert summary.steps == 2 and summary.undecided == 1 and summary.errors == 1
    assert summary.stopped == "step 1 undecided after 6 rounds"
    assert summary.undecided_after_round[-1] == 1


async def test_a_correct_real_run_solves() -> None:
    h = Hanoi(5)
    summary = await run_domain(h, ScriptedModel(h, {}), VoteConfig(k=2))
    assert summary.solved and summary.errors == 0 and summary.steps == 31
    assert summary.votes_per_step == {2: 31} and summary.p_estimate == 1.0


async def test_max_steps_and_stop() -> None:
    h = Hanoi(12)
    summary = await run_domain(h, SimulatedSampler(h, 0.9, seed=1), VoteConfig(k=3), max_steps=50)
    assert summary.steps == 50 and not summary.solved and "max_steps" in (summary.stopped or "")
    stop = asyncio.Event()
    stop.set()
    summary = await run_domain(h, SimulatedSampler(h, 0.9, seed=1), VoteConfig(k=3), stop=stop)
    assert summary.steps == 0 and summary.stopped == "stopped" and not summary.solved


async def test_a_simulated_run_lets_the_event_loop_breathe() -> None:
    h = Hanoi(12)
    ticks = 0
    done = asyncio.Event()

    async def ui() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ui())
    await run_domain(h, SimulatedSampler(h, 0.99, seed=1), VoteConfig(k=2))
    done.set()
    await task
    assert ticks >= h.total_steps() // 512  # the UI ran during the run, not only after


async def test_stop_from_another_task_ends_the_run_early() -> None:
    h = Hanoi(16)
    stop = asyncio.Event()
    monitor = VoteMonitor()

    async def stopper() -> None:
        while monitor.steps_done < 1000:
            await asyncio.sleep(0)
        stop.set()

    task = asyncio.create_task(stopper())
    summary = await run_domain(
        h, SimulatedSampler(h, 0.99, seed=1), VoteConfig(k=2), monitor=monitor, stop=stop
    )
    await task
    assert 1000 <= summary.steps < 1000 + 600 and summary.stopped == "stopped"


async def test_monitor_snapshot_contract() -> None:
    h = Hanoi(8)
    monitor = VoteMonitor()
    empty = monitor.snapshot()
    assert empty.steps_done == 0 and empty.candidates == [] and empty.p_estimate is None
    assert not empty.finished and empty.solved is None
    summary = await run_domain(
        h, SimulatedSampler(h, 0.8, seed=4), VoteConfig(k=3), monitor=monitor
    )
    snap = monitor.snapshot()
    assert isinstance(snap, VoteSnapshot)
    contract = {
        "domain", "sampler", "simulated", "k", "steps_done", "steps_total", "errors",
        "current_step", "candidates", "margin", "red_flags", "votes_histogram",
        "undecided_after_round", "p_estimate", "p_vote_estimate", "rate", "eta_s",
        "elapsed_s", "finished", "solved",
    }  # fmt: skip
    assert contract <= {f.name for f in fields(VoteSnapshot)}  # the vote pane reads these
    assert snap.domain == "hanoi-8" and snap.sampler == "simulated p=0.8" and snap.simulated
    assert snap.k == 3 and snap.steps_done == snap.steps_total == 255
    assert snap.errors == summary.errors
    assert sum(snap.votes_histogram.values()) == 255
    assert snap.votes_histogram == summary.votes_per_step
    # the last step's candidates, winner marked, sorted by votes
    assert snap.candidates_step == 254
    winners = [c for c in snap.candidates if c[2]]
    assert len(winners) == 1 and winners[0][1] == max(v for _, v, _ in snap.candidates)
    assert winners[0][0].startswith("[")  # the domain's display form
    assert snap.margin >= 3
    # MAKER's decay: undecided steps shrink round by round, to zero
    decay = snap.undecided_after_round
    assert decay == sorted(decay, reverse=True) and decay[-1] == 0 and decay[0] <= 255
    assert abs(snap.p_estimate - 0.8) < 0.05
    assert snap.p_vote_estimate == p_vote(snap.p_estimate, 3)
    assert snap.finished and snap.solved == summary.solved


def test_monitor_counts_undecided_after_round() -> None:
    from nanobot_tui.engine.voting.ahead_by_k import StepRecord

    m = VoteMonitor()
    m.begin("d", "s", True, 2, 10)
    for rounds in (1, 1, 2, 4):
        m.observe(StepRecord(0, True, "a", "a", {"a": 2}, rounds, 2), True, 2)
    m.observe(StepRecord(0, False, None, None, {"a": 3, "b": 3}, 3, 6), False, 3)
    # after round 1: three steps left (2, 4 and the failed 3); round 2: two; round 3: two
    assert m.undecided_after_round() == [3, 2, 2, 0]
    snap = m.snapshot()
    assert snap.undecided == 1 and snap.errors == 1 and snap.margin == 0
    assert snap.candidates == [("a", 3, False), ("b", 3, False)]


async def test_summary_to_dict_is_json_safe() -> None:
    h = Hanoi(6)
    summary = await run_domain(h, SimulatedSampler(h, 0.95, seed=1), VoteConfig(k=2))
    d = json.loads(json.dumps(summary.to_dict()))
    for key in ("steps", "errors", "solved", "k", "votes_per_step", "red_flags",
                "red_flags_per_step", "mean_votes_per_step", "mean_red_flags_per_step",
                "rounds_histogram", "undecided_after_round", "seconds", "steps_per_s",
                "sampler", "simulated"):  # fmt: skip
        assert key in d, key
    assert d["steps"] == 63 and d["k"] == 2 and d["sampler"] == "simulated p=0.95"
    assert sum(d["votes_per_step"].values()) == 63
