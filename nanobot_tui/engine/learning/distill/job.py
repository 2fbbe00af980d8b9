"""A learning job: for each step type with enough new verified examples, build its
training set, train a LoRA adapter, serve it beside the base model, A/B test it on the
held-out steps, and promote it or not; every adapter goes into the registry
(serving/adapter_registry.py) with its A/B result.

    job = LearnJob(config, step_type=None, epochs=None, resume=False,
                   progress=on_event, stop=threading.Event())
    summary = await job.run()        # LearnSummary: one LearnOutcome per step type

The job is an engine object for the CLI (`nanobot learn`) and the app: training runs in
a worker thread (`asyncio.to_thread`), `progress` is called with `JobEvent`s (from that
thread while training: an app marshals them to its UI), and setting `stop` ends
training after its current step with a checkpoint saved (train.py); a job started with
`resume=True` goes on from the checkpoints of the step types it stopped.

Which step types: the one named, or with `resume` those with a stopped job, else every
step type in learned.db whose verified examples (deduplicated, dataset.py) reach the
minimums and grew by `MIN_NEW` since its model's newest adapter of that type. Each job
folder (train.py's `job_folder`) keeps the training set it trained on (train.jsonl,
heldout.jsonl) and job.json, so a resumed job trains on the same data.

The A/B test (ab_test.py) runs on a server of the slot's model started for it, with the
model's promoted adapters and the new one loaded at scale 0, on up to `ab_steps` FRESH
steps where the step type's domain can make them (domains.FreshSteps: word case, the
micro families; `ab_steps_of`), none of them an input of the training set or its
held-out split; else on the held-out split. The held-out split is only verified
winners, steps the base already got right, so an adapter can hardly beat the base there
(benchmarks/RESULTS.md, "Distillation"); fresh steps are an unbiased sample of the step
type. The outcome's `ab["on"]` says which ("fresh" or "heldout"). A promoted adapter of
the same step type is tested again on the same steps and demoted if it now does worse
than the base.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nanobot_tui import atomic, paths
from nanobot_tui.config import Config, SlotName
from nanobot_tui.engine.learning.distill import train as training
from nanobot_tui.engine.learning.distill.ab_test import (
    ABResult,
    ab_test,
    status_after_test,
    truth_judge,
)
from nanobot_tui.engine.learning.distill.dataset import (
    MIN_HELDOUT,
    MIN_TRAIN,
    TooFewExamples,
    TrainingExample,
    TrainingSet,
    build_dataset,
    domain_of,
    fresh_examples,
    read_jsonl,
    write_dataset,
)
from nanobot_tui.engine.learning.store import LearningStore, learned_path
from nanobot_tui.engine.serving.adapter_registry import (
    AdapterRecord,
    AdapterRegistry,
    registry_path,
)
from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.errors import NanobotError, UsageError

__all__ = [
    "AB_STEPS",
    "MIN_FRESH",
    "MIN_NEW",
    "JobEvent",
    "LearnJob",
    "LearnOutcome",
    "LearnSummary",
    "Trainer",
    "ab_steps_of",
    "adapters_dir",
]

MIN_NEW = MIN_TRAIN  # new verified examples of a type before it is trained again
_JOB_FILE = "job.json"
DEFAULT_EPOCHS = 3
AB_STEPS = 120  # fresh steps an A/B test runs on, at most
# Fewer fresh steps than this (a family with a short fixed list, mostly trained on): the
# held-out split instead.
MIN_FRESH = 20
FRESH_SEED = 0  # which fresh steps: the same ones for every job, less what it trained on
_CHECKPOINT = "checkpoint.pt"  # train.py's, present while a job is stopped


class Trainer(Protocol):
    """What trains an adapter: train.py's `train_lora`, or a stand-in with its signature."""

    def __call__(
        self,
        config: training.TrainConfig,
        examples: Sequence[TrainingExample],
        *,
        progress: training.ProgressCallback | None = None,
        stop: threading.Event | None = None,
    ) -> training.TrainResult: ...


def adapters_dir() -> Path:
    """Where the registry's adapter files live: NANOBOT_HOME/distill/adapters/."""
    return paths.home() / "distill" / "adapters"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One thing a job did: `phase` is dataset, base, train, serve, ab or done."""

    step_type: str
    phase: str
    message: str
    train: training.Progress | None = None  # the training step, in phase "train"
    done: int = 0  # A/B steps tested so far, in phase "ab"
    total: int = 0
    on: str = ""  # what the A/B test runs on, in phase "ab": "fresh" or "heldout"


@dataclass(frozen=True, slots=True)
class LearnOutcome:
    """What became of one step type: promoted, candidate (trained, not better), stopped
    (a checkpoint to resume) or skipped (`reason` says why)."""

    step_type: str
    status: str
    reason: str = ""
    adapter_id: int | None = None
    counts: dict[str, int] | None = None
    ab: dict[str, Any] | None = None
    trained_s: float = 0.0
    size_bytes: int = 0
    final_loss: float | None = None
    retested: dict[str, Any] | None = None  # the promoted adapter tested again, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_type": self.step_type,
            "status": self.status,
            "reason": self.reason,
            "adapter_id": self.adapter_id,
            "counts": self.counts,
            "ab": self.ab,
            "trained_s": self.trained_s,
            "bytes": self.size_bytes,
            "final_loss": self.final_loss,
            "retested": self.retested,
        }


@dataclass(frozen=True, slots=True)
class LearnSummary:
    outcomes: list[LearnOutcome] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return any(o.status == "stopped" for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        trained = [o for o in self.outcomes if o.adapter_id is not None]
        return {
            "trained": len(trained),
            "promoted": sum(1 for o in trained if o.status == "promoted"),
            "stopped": self.stopped,
            "step_types": [o.to_dict() for o in self.outcomes],
        }

    def line(self) -> str:
        """The whole job in one line."""
        parts = []
        for o in self.outcomes:
            if o.adapter_id is not None:
                ab = o.ab or {}
                on = "fresh" if ab.get("on") == "fresh" else "held out"
                test = (
                    f" (p {ab['p_base']:.2f} -> {ab['p_adapter']:.2f} on {ab['n']} {on})"
                    if ab
                    else ""
                )
                parts.append(f"{o.step_type}: adapter {o.adapter_id} {o.status}{test}")
            elif o.status == "stopped":
                parts.append(f"{o.step_type}: stopped, {o.reason}")
        skipped = [o for o in self.outcomes if o.status == "skipped"]
        if skipped and not parts:
            if len(skipped) == 1:
                return f"nothing learned: {skipped[0].step_type}: {skipped[0].reason}"
            return (
                f"nothing learned: none of {len(skipped)} step types has enough new verified "
                f"examples (at least {MIN_TRAIN} to train and {MIN_HELDOUT} held out, "
                f"{MIN_NEW} new since its last adapter)"
            )
        if not parts:
            return f"nothing learned: no verified examples in {learned_path()}"
        if skipped:
            parts.append(f"{len(skipped)} step type(s) skipped")
        return "; ".join(parts)


class LearnJob:
    """See the module's docstring. `trainer` replaces train.py's `train_lora` (a test's
    fake); without one the `learn` extra is required (LearnExtraMissing, one line)."""

    def __init__(
        self,
        config: Config,
        *,
        step_type: str | None = None,
        epochs: int | None = None,
        resume: bool = False,
        slot: SlotName = "rlm",
        progress: Callable[[JobEvent], None] | None = None,
        stop: threading.Event | None = None,
        trainer: Trainer | None = None,
        train_options: dict[str, Any] | None = None,
        ab_steps: int = AB_STEPS,
        threads: int | None = None,
    ) -> None:
        self.config = config
        self.step_type = step_type
        self.epochs = epochs
        self.resume = resume
        self.slot = slot
        self.progress = progress
        self.stop = stop or threading.Event()
        self.trainer = trainer
        self.train_options = dict(train_options or {})  # more TrainConfig fields
        if ab_steps < 1:
            raise UsageError(f"ab_steps must be at least 1, got {ab_steps}")
        self.ab_steps = ab_steps
        self.threads = threads  # the A/B test server's (default: its share of the cores)

    def _say(self, event: JobEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    async def run(self) -> LearnSummary:
        trainer: Trainer = self.trainer or training.train_lora
        if self.trainer is None:
            training.require_learn_extra()
        model_path = self._model_path()
        if self.resume:
            types = _stopped_types(self.slot, model_path)
            if self.step_type is not None:
                types = [t for t in types if t == self.step_type]
            if not types:
                which = f"of step type {self.step_type!r} " if self.step_type else ""
                raise UsageError(
                    f"no stopped learning job {which}to resume "
                    f"(in {paths.home() / 'distill' / 'jobs'})"
                )
        elif self.step_type is not None:
            types = [self.step_type]
        else:
            types = await asyncio.to_thread(_store_types)
        outcomes: list[LearnOutcome] = []
        for step_type in types:
            if self.stop.is_set():
                break
            outcome = await self._one(step_type, model_path, trainer)
            outcomes.append(outcome)
            if outcome.status == "stopped":
                break
        return LearnSummary(outcomes)

    def _model_path(self) -> Path:
        bench = Workbench(self.config, only_slots=(self.slot,))
        resolved = bench.slots[self.slot]
        if resolved.provider != "local" or resolved.path is None:
            raise UsageError(
                f"slot {self.slot} runs on {resolved.provider}: adapters need a local model"
            )
        return resolved.path

    # --- one step type ----------------------------------------------------------------------

    async def _one(self, step_type: str, model_path: Path, trainer: Trainer) -> LearnOutcome:
        job_dir = training.job_folder(step_type)
        domain = domain_of(step_type)
        if self.resume:
            training_set, meta = _saved_set(job_dir, step_type)
        else:
            try:
                training_set = await asyncio.to_thread(_build, step_type, domain)
            except TooFewExamples as exc:
                if self.step_type is not None:
                    raise
                return LearnOutcome(step_type, "skipped", _short(exc))
            if self.step_type is None and (why := _not_new(model_path, training_set)):
                return LearnOutcome(step_type, "skipped", why)
            (job_dir / _CHECKPOINT).unlink(missing_ok=True)  # a new job starts over
            write_dataset(training_set, job_dir)
            meta = {"step_type": step_type, "slot": self.slot, "model": str(model_path),
                    "trained_s": 0.0}  # fmt: skip
        counts = training_set.counts.to_dict()
        self._say(JobEvent(step_type, "dataset", training_set.counts.describe()))

        epochs = self.epochs or int(meta.get("epochs") or DEFAULT_EPOCHS)
        meta["epochs"] = epochs
        _write_meta(job_dir, meta)
        options = dict(self.train_options)
        if self.trainer is None and options.get("base_dir") is None:
            # Made once per model (a minute or more): say so rather than seem stuck.
            self._say(JobEvent(step_type, "base", "preparing the base model for training"))
            options["base_dir"] = await asyncio.to_thread(training.base_checkpoint, model_path)
        config = training.TrainConfig(
            job_dir=job_dir, base_gguf=model_path, epochs=epochs, **options
        )

        def on_step(progress: training.Progress) -> None:
            self._say(JobEvent(step_type, "train", progress.describe(), train=progress))

        result = await asyncio.to_thread(
            trainer, config, training_set.train, progress=on_step, stop=self.stop
        )
        meta["trained_s"] = float(meta.get("trained_s") or 0.0) + result.seconds
        _write_meta(job_dir, meta)
        if result.stopped or result.adapter is None:
            reason = (
                f"checkpoint at step {result.steps}/{result.total_steps}; "
                "`nanobot learn --resume` goes on"
            )
            return LearnOutcome(
                step_type, "stopped", reason, counts=counts, trained_s=meta["trained_s"],
                final_loss=result.final_loss,
            )  # fmt: skip

        adapter_path = _keep_file(result.adapter.path, job_dir)
        with AdapterRegistry() as registry:
            record = registry.add(
                model=str(model_path), slot=self.slot, step_type=step_type, path=adapter_path,
                size_bytes=adapter_path.stat().st_size, train_examples=len(training_set.train),
                heldout=len(training_set.heldout), trained_s=meta["trained_s"],
                note=f"{_epochs(epochs)}, final loss {result.final_loss:.3f}"
                if result.final_loss is not None else _epochs(epochs),
            )  # fmt: skip
            earlier = registry.promoted(str(model_path), step_type)
        (job_dir / _JOB_FILE).unlink(missing_ok=True)  # done: nothing to resume

        steps, on = await asyncio.to_thread(ab_steps_of, training_set, domain, self.ab_steps)
        ab_result, retest_result = await self._test(record, earlier, steps, on, domain)
        ab = {**ab_result.to_dict(), "on": on}
        retest = None if retest_result is None else {**retest_result.to_dict(), "on": on}
        with AdapterRegistry() as registry:
            if earlier is not None and retest is not None:
                status = status_after_test("promoted", retest)
                note = "below the base in a later A/B test" if status == "demoted" else None
                registry.update(earlier.id, status=status, ab=retest, note=note)
            record = registry.update(record.id, status=status_after_test("candidate", ab), ab=ab)
        self._say(JobEvent(step_type, "done", f"adapter {record.id} {record.status}"))
        return LearnOutcome(
            step_type, record.status, f"{ab_result.describe()} ({_on_text(on)})",
            adapter_id=record.id, counts=counts, ab=ab, trained_s=meta["trained_s"],
            size_bytes=record.bytes, final_loss=result.final_loss,
            retested=None if retest is None else {"adapter_id": earlier.id if earlier else None,
                                                  **retest},
        )  # fmt: skip

    async def _test(
        self,
        record: AdapterRecord,
        earlier: AdapterRecord | None,
        steps: Sequence[TrainingExample],
        on: str,
        domain: Any,
    ) -> tuple[ABResult, ABResult | None]:
        """A/B test the new adapter (and the step type's promoted one, again) on `steps`
        (`on`: "fresh" or "heldout"), on a server of the slot's model started with them
        loaded at scale 0."""
        step_type = record.step_type
        self._say(JobEvent(step_type, "serve", f"starting the {self.slot} server with the adapter"))
        judge = truth_judge(domain)
        total = len(steps)
        what = _on_text(on)

        def tested(done: int, total: int) -> None:
            self._say(JobEvent(step_type, "ab", f"A/B {done}/{total} {what}", done=done,
                               total=total, on=on))  # fmt: skip

        bench = Workbench(self.config, only_slots=(self.slot,), threads=self.threads,
                          extra_adapters={self.slot: [record.path]})  # fmt: skip
        async with bench:
            loaded = {_same(a.path): a.id for a in await bench.manager.lora_adapters(self.slot)}
            client = bench.client(self.slot)
            self._say(JobEvent(step_type, "ab", f"A/B on {total} {what}", total=total, on=on))
            ab = await ab_test(client, loaded[_same(record.path)], steps, judge,
                               progress=tested)  # fmt: skip
            retest = None
            if earlier is not None and _same(earlier.path) in loaded:
                retest = await ab_test(client, loaded[_same(earlier.path)], steps, judge)
        return ab, retest


# --- helpers --------------------------------------------------------------------------------


def ab_steps_of(
    training_set: TrainingSet, domain: Any, n: int = AB_STEPS
) -> tuple[list[TrainingExample], str]:
    """The steps an adapter trained on `training_set` is A/B tested on, and which they
    are: up to `n` fresh steps ("fresh", none an input of the set's training or held-out
    part) when the domain makes at least MIN_FRESH of them (or `n`, if fewer), else
    the held-out split ("heldout")."""
    seen = {e.input_text for e in [*training_set.train, *training_set.heldout]}
    fresh = fresh_examples(domain, seen, n, FRESH_SEED)
    if fresh and len(fresh) >= min(n, MIN_FRESH):
        return fresh, "fresh"
    return list(training_set.heldout), "heldout"


def _on_text(on: str) -> str:
    return "fresh steps" if on == "fresh" else "held-out steps"


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def nothing_learned() -> bool:
    """No learned.db and no job folder: nothing to train on or resume (a quick look, so
    that neither the model's GGUF nor the hardware tier is read for nothing)."""
    return not learned_path().exists() and not (paths.home() / "distill" / "jobs").is_dir()


def due_step_types(
    config: Config, slot: SlotName = "rlm"
) -> tuple[list[tuple[str, int]], list[str]]:
    """What a `LearnJob` on `slot` would do now: the step types it would train, each with
    its new verified examples since its model's last adapter of that type (all of them
    when it has none), and the step types with a stopped job to resume. Blocking: it
    reads learned.db, stats.db and the model's GGUF."""
    if nothing_learned():
        return [], []
    model_path = LearnJob(config, slot=slot)._model_path()
    stopped = _stopped_types(slot, model_path)
    due: list[tuple[str, int]] = []
    for step_type in _store_types():
        if step_type in stopped:
            continue
        try:
            training_set = _build(step_type, domain_of(step_type))
        except TooFewExamples:
            continue
        total = len(training_set.train) + len(training_set.heldout)
        if not registry_path().is_file():  # no adapter yet; reading must not create it
            due.append((step_type, total))
            continue
        if _not_new(model_path, training_set):
            continue
        with AdapterRegistry() as registry:
            made = registry.list(model=str(model_path), step_type=step_type)
        last = made[-1].train_examples + made[-1].heldout if made else 0
        due.append((step_type, total - last))
    return due, list(stopped)


def _short(exc: BaseException) -> str:
    return str(exc).split(" (learned.db")[0].split(": ", 1)[-1]


def _same(path: Path | str) -> str:
    return os.path.realpath(path)


def _build(step_type: str, domain: Any) -> TrainingSet:
    store = LearningStore.open_existing()
    if store is None:
        raise TooFewExamples(f"step type {step_type!r}: no verified examples ({learned_path()})")
    with store:
        return build_dataset(store, step_type, domain=domain)


def _store_types() -> list[str]:
    store = LearningStore.open_existing()
    if store is None:
        return []
    with store:
        rows = store.query(
            "SELECT step_type FROM examples UNION SELECT step_type FROM step_results ORDER BY 1"
        )
    return [str(row[0]) for row in rows]


def _not_new(model_path: Path, training_set: TrainingSet) -> str:
    """Why a step type is not trained again ("" when it is due)."""
    with AdapterRegistry() as registry:
        made = registry.list(model=str(model_path), step_type=training_set.step_type)
    if not made:
        return ""
    last = made[-1]
    new = len(training_set.train) + len(training_set.heldout) - last.train_examples - last.heldout
    if new >= MIN_NEW:
        return ""
    return f"{max(new, 0)} new verified examples since adapter {last.id} (trains at {MIN_NEW})"


def _write_meta(job_dir: Path, meta: dict[str, Any]) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_atomic(job_dir / _JOB_FILE, json.dumps(meta, sort_keys=True), mode=0o644)


def _stopped_types(slot: str, model_path: Path) -> list[str]:
    """The step types whose job was stopped with a checkpoint, for this slot's model."""
    jobs = paths.home() / "distill" / "jobs"
    found = []
    for meta_file in sorted(jobs.glob(f"*/{_JOB_FILE}")) if jobs.is_dir() else []:
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            isinstance(meta, dict)
            and (meta_file.parent / _CHECKPOINT).is_file()
            and meta.get("slot") == slot
            and meta.get("model") == str(model_path)
        ):
            found.append(str(meta["step_type"]))
    return found


def _saved_set(job_dir: Path, step_type: str) -> tuple[TrainingSet, dict[str, Any]]:
    """The training set and job.json a stopped job saved."""
    try:
        meta = json.loads((job_dir / _JOB_FILE).read_text(encoding="utf-8"))
        train = read_jsonl(job_dir / "train.jsonl")
        heldout = read_jsonl(job_dir / "heldout.jsonl")
    except (OSError, ValueError) as exc:
        raise UsageError(f"learning job {job_dir}: cannot be resumed ({exc})") from None
    from nanobot_tui.engine.learning.distill.dataset import DatasetCounts

    counts = DatasetCounts(len(train) + len(heldout), 0, 0, 0, len(train), len(heldout))
    return TrainingSet(step_type, train, heldout, counts), meta


def _keep_file(adapter: Path, job_dir: Path) -> Path:
    """The trained adapter moved to the registry's folder under a name of its own."""
    folder = paths.ensure(adapters_dir())
    target = folder / f"{job_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}.gguf"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{job_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.gguf"
    try:
        os.replace(adapter, target)
    except OSError as exc:
        raise NanobotError(f"adapter {adapter}: cannot move it to {folder}: {exc}") from None
    return target
