"""Run a domain step by step with voting, in memory (runs/durable.py is the durable
runner, with the same rules).

Each step is voted on, the winner is verified against the domain's truth, and the state
is handed on with `next_step`. A simulated sampler's wrong step is counted and the run
goes on from the true step, so errors are counted per step; a real sampler's run goes on
from the winner's answer (that is the experiment) and stops when there is nothing to
hand on: an undecided step or an invalid state.

`VoteMonitor` takes each StepRecord in O(1) and answers `snapshot()` cheaply, for the vote
counter pane polling a few times a second; the run summary is built from the same counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Any

from nanobot_tui.engine.voting.ahead_by_k import StepRecord, VoteConfig, vote
from nanobot_tui.engine.voting.domains import Domain, Step
from nanobot_tui.engine.voting.maths import p_vote
from nanobot_tui.engine.voting.samples import Sampler

# Yield to the event loop this often: a simulated sampler never awaits anything real,
# and a UI sharing the loop must keep drawing during a million-step run.
YIELD_EVERY = 256


@dataclass(frozen=True, slots=True)
class VoteSnapshot:
    """The vote counter pane's view of a run. Field names are a contract with the UI."""

    domain: str
    sampler: str
    simulated: bool
    k: int
    steps_done: int
    steps_total: int
    errors: int
    current_step: int  # index of the step being voted on now (= steps_done while running)
    candidates: list[tuple[str, int, bool]]  # the LAST voted step: (display, votes, winner)
    candidates_step: int | None  # that step's index
    margin: int  # leader minus runner-up on the last step
    red_flags: dict[str, int]  # totals by reason
    votes_histogram: dict[int, int]  # valid votes in a step -> steps
    undecided_after_round: list[int]  # [r-1]: steps still undecided after round r
    p_estimate: float | None  # running per-sample success of valid samples
    p_vote_estimate: float | None  # p_vote(p_estimate, k): the step success it implies
    rate: float  # steps per second
    eta_s: float | None
    elapsed_s: float
    finished: bool
    solved: bool | None  # None until finished
    undecided: int = 0  # steps that ended without a winner
    samples: int = 0
    stopped: str | None = None  # why a run ended early, if it did


class VoteMonitor:
    """Running counts of a voted run. Created empty; `run_domain` calls `begin`, then
    `observe` per step and `finish` at the end. `snapshot()` is safe to call anytime."""

    def __init__(self) -> None:
        self.domain = ""
        self.sampler = ""
        self.simulated = False
        self.k = 0
        self.steps_total = 0
        self._describe: Callable[[Hashable], str] = str
        self.steps_done = 0
        self.errors = 0
        self.undecided = 0
        self.samples = 0
        self.valid = 0
        self.matched = 0  # valid samples that agreed with the truth (else the winner)
        self.completion_tokens = 0
        self.prompt_tokens = 0
        self.red_flags: dict[str, int] = {}
        self.red_flag_steps: dict[int, int] = {}  # red-flagged samples in a step -> steps
        self.votes_histogram: dict[int, int] = {}
        self.rounds_histogram: dict[int, int] = {}  # decided steps: rounds -> steps
        self.failed_rounds: dict[int, int] = {}  # undecided steps: rounds -> steps
        self.last: StepRecord | None = None
        self.last_correct: bool | None = None
        self.started = 0.0
        self.ended: float | None = None
        self.finished = False
        self.solved: bool | None = None
        self.stopped: str | None = None

    def begin(
        self,
        domain: str,
        sampler: str,
        simulated: bool,
        k: int,
        steps_total: int,
        describe: Callable[[Hashable], str] | None = None,
    ) -> None:
        self.domain, self.sampler, self.simulated = domain, sampler, simulated
        self.k, self.steps_total = k, steps_total
        self._describe = describe or str
        self.started = perf_counter()

    def observe(self, record: StepRecord, correct: bool | None, matched: int) -> None:
        """One voted step. `correct`: the winner matched the truth (None: truth unknown);
        `matched`: valid votes that agreed with the truth (or with the winner)."""
        self.steps_done += 1
        self.samples += record.samples
        valid = 0
        for n in record.votes.values():
            valid += n
        self.valid += valid
        self.matched += matched
        self.completion_tokens += record.completion_tokens
        self.prompt_tokens += record.prompt_tokens
        hist = self.votes_histogram
        hist[valid] = hist.get(valid, 0) + 1
        flagged = record.samples - valid
        fhist = self.red_flag_steps
        fhist[flagged] = fhist.get(flagged, 0) + 1
        if flagged:
            totals = self.red_flags
            for reason, n in record.red_flags.items():
                totals[reason] = totals.get(reason, 0) + n
        if record.decided:
            rh = self.rounds_histogram
            rh[record.rounds] = rh.get(record.rounds, 0) + 1
        else:
            self.undecided += 1
            fr = self.failed_rounds
            fr[record.rounds] = fr.get(record.rounds, 0) + 1
        if correct is False:
            self.errors += 1
        self.last = record
        self.last_correct = correct

    def finish(self, solved: bool, stopped: str | None = None) -> None:
        self.finished = True
        self.solved = solved
        self.stopped = stopped
        self.ended = perf_counter()

    # --- derived figures ---------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        if not self.started:
            return 0.0
        return (self.ended or perf_counter()) - self.started

    @property
    def p_estimate(self) -> float | None:
        return self.matched / self.valid if self.valid else None

    def undecided_after_round(self) -> list[int]:
        """[r-1] = steps still undecided after round r: decided later, or never (a step
        that failed after R rounds counts as undecided after every round up to R)."""
        top = max([*self.rounds_histogram, *self.failed_rounds], default=0)
        out: list[int] = []
        for r in range(1, top + 1):
            later = sum(n for rounds, n in self.rounds_histogram.items() if rounds > r)
            failed = sum(n for rounds, n in self.failed_rounds.items() if rounds >= r)
            out.append(later + failed)
        return out

    def snapshot(self) -> VoteSnapshot:
        elapsed = self.elapsed_s
        rate = self.steps_done / elapsed if elapsed > 0 else 0.0
        left = max(self.steps_total - self.steps_done, 0)
        eta = 0.0 if self.finished else (left / rate if rate > 0 else None)
        p = self.p_estimate
        last = self.last
        candidates: list[tuple[str, int, bool]] = []
        margin = 0
        if last is not None:
            ranked = sorted(last.votes.items(), key=lambda kv: -kv[1])
            candidates = [
                (self._describe(key), n, last.decided and key == last.winner_key)
                for key, n in ranked
            ]
            margin = last.margin
        return VoteSnapshot(
            domain=self.domain,
            sampler=self.sampler,
            simulated=self.simulated,
            k=self.k,
            steps_done=self.steps_done,
            steps_total=self.steps_total,
            errors=self.errors,
            current_step=self.steps_done,
            candidates=candidates,
            candidates_step=None if last is None else last.step,
            margin=margin,
            red_flags=dict(self.red_flags),
            votes_histogram=dict(sorted(self.votes_histogram.items())),
            undecided_after_round=self.undecided_after_round(),
            p_estimate=p,
            p_vote_estimate=p_vote(p, self.k) if p is not None and self.k else None,
            rate=rate,
            eta_s=eta,
            elapsed_s=elapsed,
            finished=self.finished,
            solved=self.solved,
            undecided=self.undecided,
            samples=self.samples,
            stopped=self.stopped,
        )


@dataclass(slots=True)
class RunSummary:
    domain: str
    sampler: str
    simulated: bool
    k: int
    steps: int  # steps voted
    total_steps: int  # steps the task has
    errors: int  # steps whose winner was not the truth (undecided steps included)
    undecided: int
    solved: bool
    samples: int
    valid_samples: int
    completion_tokens: int
    prompt_tokens: int
    votes_per_step: dict[int, int]  # valid votes in a step -> steps
    red_flags: dict[str, int]  # totals by reason
    red_flags_per_step: dict[int, int]  # red-flagged samples in a step -> steps
    rounds_histogram: dict[int, int]  # decided steps: rounds -> steps
    undecided_after_round: list[int]
    p_estimate: float | None
    seconds: float
    steps_per_s: float
    stopped: str | None = None  # why the run ended early, if it did

    @property
    def mean_votes_per_step(self) -> float:
        return self.valid_samples / self.steps if self.steps else 0.0

    @property
    def mean_samples_per_step(self) -> float:
        return self.samples / self.steps if self.steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, snake_case; histogram keys become strings (JSON object keys)."""
        out = asdict(self)
        for name in ("votes_per_step", "red_flags_per_step", "rounds_histogram"):
            out[name] = {str(k): v for k, v in sorted(out[name].items())}
        steps = self.steps or 1
        out["mean_votes_per_step"] = self.mean_votes_per_step
        out["mean_samples_per_step"] = self.mean_samples_per_step
        out["mean_red_flags_per_step"] = {r: n / steps for r, n in self.red_flags.items()}
        return out


def _first_step(domain: Domain) -> Step | None:
    return next(iter(domain.steps()), None)


def judge(domain: Domain, step: Step, record: StepRecord) -> tuple[Any, bool | None, int]:
    """(truth, correct, matched) of a voted step. `correct`: the winner is the truth
    (None: there is no truth to check against, from a state a real model handed on);
    `matched`: the valid votes for the truth, else for the winner."""
    try:
        truth = domain.truth(step)
    except ValueError:  # the procedure has no answer from a state we were handed
        truth = None
    if truth is None:
        if record.decided:
            return None, None, record.votes[record.winner_key]
        return None, False, 0
    key = domain.key(truth)
    return truth, record.decided and record.winner_key == key, record.votes.get(key, 0)


async def run_domain(
    domain: Domain,
    sampler: Sampler,
    cfg: VoteConfig,
    *,
    max_steps: int | None = None,
    monitor: VoteMonitor | None = None,
    stop: asyncio.Event | None = None,
) -> RunSummary:
    """Vote every step of `domain` with `sampler` and return the summary. `stop` ends the
    run after the current step; `max_steps` caps the steps voted."""
    mon = monitor if monitor is not None else VoteMonitor()
    total = domain.total_steps()
    simulated = sampler.simulated
    mon.begin(
        domain.name,
        sampler.name,
        simulated,
        cfg.k,
        total if max_steps is None else min(total, max_steps),
        domain.describe,
    )
    # Steps that do not hand state on (word case) go on past an undecided one.
    independent = domain.independent_steps
    next_of = domain.next_step
    observe = mon.observe
    step = _first_step(domain)
    last_answer: Any = None
    stopped: str | None = None
    done = 0
    while step is not None:
        if max_steps is not None and done >= max_steps:
            stopped = f"max_steps={max_steps} reached"
            break
        if stop is not None and stop.is_set():
            stopped = "stopped"
            break
        record = await vote(sampler, step, cfg)
        done += 1
        truth, correct, matched = judge(domain, step, record)
        observe(record, correct, matched)
        if simulated and truth is not None:
            # Count each wrong step and go on from the truth, so every step is judged.
            answer = truth
        elif record.decided:
            answer = record.winner_answer
        elif independent:
            answer = None  # counted as an error; the next step does not depend on it
        else:
            stopped = f"step {step.index} undecided after {record.rounds} rounds"
            break
        last_answer = answer
        try:
            following = next_of(step, answer)
        except ValueError as exc:
            stopped = f"step {step.index}: invalid state handed on: {exc}"
            break
        step = following
        if done % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    # A simulated run that needed the truth to go on did not solve the task itself.
    solved = stopped is None and step is None and domain.is_solved(None, last_answer)
    if simulated:
        solved = solved and mon.errors == 0
    mon.finish(solved, stopped)
    return summarize(mon, total)


def summarize(mon: VoteMonitor, total_steps: int) -> RunSummary:
    """The run's summary from its monitor's counts."""
    seconds = mon.elapsed_s
    return RunSummary(
        domain=mon.domain,
        sampler=mon.sampler,
        simulated=mon.simulated,
        k=mon.k,
        steps=mon.steps_done,
        total_steps=total_steps,
        errors=mon.errors,
        undecided=mon.undecided,
        solved=bool(mon.solved),
        samples=mon.samples,
        valid_samples=mon.valid,
        completion_tokens=mon.completion_tokens,
        prompt_tokens=mon.prompt_tokens,
        votes_per_step=dict(sorted(mon.votes_histogram.items())),
        red_flags=dict(mon.red_flags),
        red_flags_per_step=dict(sorted(mon.red_flag_steps.items())),
        rounds_histogram=dict(sorted(mon.rounds_histogram.items())),
        undecided_after_round=mon.undecided_after_round(),
        p_estimate=mon.p_estimate,
        seconds=seconds,
        steps_per_s=mon.steps_done / seconds if seconds > 0 else 0.0,
        stopped=mon.stopped,
    )
