"""A durable run's memory: L0 reuse of verified step results and the task history, behind
the runs layer's `StepMemory` seam (engine/runs/learning_seam.py imports this module by
name; runs never import learning).

What a run keeps and where:
- L0 (reuse.py) for a real model's run only: a simulated sampler's answers are not a
  model's work, so they are never stored nor looked up. A step's key is its step type
  (`step_type_of`), its canonical input (`domain.reuse_key` where the domain has one,
  else `domain.dump_step`: a code step's key leaves out its line numbers), the
  fingerprint of the domain's own messages for it (`domain.messages(step)`: any change
  of the prompt, the recipe's instruction or the domain's prompt params changes it) and
  the model. Only answers verified by the truth are stored by the run; a code recipe
  without a reference edit has no truth, and its winners are kept as "voted+checked"
  only once the user's check passed them, after the run (`remember_checked`, called by
  `nanobot process` after a `--verify` check that passed).
- L1 (examples.py) for a real model's run: the sampler is given up to `SHOTS` verified
  examples of the step type per step (`attach`), every truth-verified answer becomes an
  example (the winning reply's text), and each voted step's verdict is credited to the
  examples it was given (`judged`).
- The task history (history.py), once per run: when a session ends completed, failed or
  stopped by a budget, with the whole run's steps, tokens, seconds and samples per step,
  the p it measured and whether it solved its task. A stop, pause or cancel that a user
  asked for records nothing (an interrupted task says nothing of what the task costs);
  the run is recorded when a later session ends it. Simulated runs are recorded too,
  under a task type of their own ("wordcase300 (simulated)"), so they never set a real
  model's budgets.

Each of the three is switched by the spec's `learn_loops` ("reuse", "examples",
"history"): a loop left out is neither used nor fed by the run.

Distillation: a real model's run with a step loop on also gets its step type's promoted
LoRA adapter (engine/learning/distill/, serving/adapter_registry.py) at scale 1 in every
request (`attach`), and its voted steps' verdicts count as that adapter's live success
(`judged`, written at `close`), which demotes one that does clearly worse than the base.

The store is opened on first use, so a simulated run touches learned.db once, at its end.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobot_tui import paths
from nanobot_tui.engine.learning.history import HistoryBudget, Kind, TaskHistory
from nanobot_tui.engine.learning.reuse import ResultCache, VerifiedBy, prompt_fingerprint
from nanobot_tui.engine.learning.store import LearningStore
from nanobot_tui.engine.runs.learning_seam import Outcome, RunOutcome
from nanobot_tui.errors import NanobotError

if TYPE_CHECKING:
    from nanobot_tui.config import SlotName
    from nanobot_tui.engine.learning.examples import ExampleBank, StepShots
    from nanobot_tui.engine.runs.spec import RunSpec
    from nanobot_tui.engine.voting.domains import Domain, Step
    from nanobot_tui.engine.voting.samples import Sampler

__all__ = [
    "RunMemory",
    "history_budget",
    "kind_of",
    "open_run_memory",
    "remember_checked",
    "reuse_input",
    "step_type_of",
    "task_type_of",
]

log = logging.getLogger(__name__)

SIMULATED_SUFFIX = " (simulated)"
SHOTS = 3  # few-shot examples per step (L1)
# Session endings that say what the task cost (a user's stop says nothing of it).
_RECORDED = ("completed", "failed")


def step_type_of(domain: str, params: dict[str, Any]) -> str:
    """What a step asks, for L0 and L1: the domain, for a code run its recipe
    ("code:fstrings"), for a domain of families its family ("micro:dates"); the prompt
    itself is in the key's fingerprint."""
    if domain == "code":
        return f"code:{params.get('recipe') or 'instruction'}"
    if params.get("family"):
        return f"{domain}:{params['family']}"
    return domain


def reuse_input(domain: Domain, step: Step) -> Any:
    """A step's canonical input in its L0 key: the domain's `reuse_key` where it has one
    (what the answer depends on, e.g. not where a function sits in its file), else
    `dump_step`."""
    key_of = getattr(domain, "reuse_key", None)
    return key_of(step) if callable(key_of) else domain.dump_step(step)


def task_type_of(label: str, domain: str, simulated: bool) -> str:
    """A run's task type in the history: its label ("wordcase300", "hanoi10",
    "code-fstrings": the size is part of what a task costs), else the domain; a
    simulated run's own type says so."""
    base = label or domain
    return base + SIMULATED_SUFFIX if simulated else base


def kind_of(domain: str) -> Kind:
    """A run's kind of task in the history: a code run applies a recipe."""
    return "recipe" if domain == "code" else "domain"


def history_budget(task_type: str, steps: int | None = None) -> HistoryBudget | None:
    """The budgets and k a new run of `task_type` gets from its history (None before
    MIN_RECORDS runs, or with no learned.db); LearningStoreError for a damaged file."""
    store = LearningStore.open_existing()
    if store is None:
        return None
    with store:
        return TaskHistory(store).budget(task_type, steps=steps)


def _model_of_name(name: str) -> str:
    """'local rlm: SmolLM2-135M-Instruct' -> 'SmolLM2-135M-Instruct', as LLMSampler
    names its model by default."""
    _, sep, tail = name.partition(": ")
    return tail.strip() if sep and tail.strip() else name


def _model_of(sampler: Sampler) -> str:
    inner = getattr(sampler, "inner", sampler)  # runs.session.Watch wraps the real one
    return str(getattr(inner, "model", None) or inner.name)


class RunMemory:
    """One runner session's `StepMemory` (see the module's docstring)."""

    def __init__(self, run_id: str, spec: RunSpec, domain: Domain, sampler: Sampler) -> None:
        self.run_id = run_id
        self.spec = spec
        self.domain = domain
        loops = spec.learn_loops
        self.reusing = "reuse" in loops and not sampler.simulated
        self.keeps_examples = "examples" in loops and not sampler.simulated
        self.records = "history" in loops
        # The runner asks recall/remember/judged only when one of the step loops is on.
        self.reuses = self.reusing or self.keeps_examples
        self.model = _model_of(sampler) if self.reuses else ""
        self.step_type = step_type_of(spec.domain, spec.params)
        self.task_type = task_type_of(spec.label, spec.domain, sampler.simulated)
        self._store: LearningStore | None = None
        self._lock = threading.Lock()
        self._broken = False
        self._prints: dict[int, tuple[Any, str]] = {}  # step -> (input, fingerprint)
        # L1, set by `attach` for a sampler that takes few-shot examples.
        self._bank: ExampleBank | None = None
        self._shots: StepShots | None = None
        self._user_text: Callable[[Step], str] | None = None
        self._template = ""
        # The step type's promoted LoRA adapter, set by `attach` when one is applied: its
        # registry id, and the voted steps judged ([right, judged]) not yet counted there.
        self._adapter: int | None = None
        self._live = [0, 0]
        # What `resolve_adapter` found: (id on the slot's server, registry id), or None.
        self._adapter_pick: tuple[int, int] | None = None
        self._adapter_resolved = False

    # --- the store, opened on first use ---------------------------------------------------

    def _open(self) -> LearningStore | None:
        with self._lock:
            if self._store is None and not self._broken:
                try:
                    self._store = LearningStore()
                except NanobotError as exc:
                    self._give_up(exc)
            return self._store

    def _give_up(self, exc: BaseException) -> None:
        if not self._broken:
            log.warning("run %s: learning is off for this session: %s", self.run_id, exc)
        self._broken = True

    def close(self) -> None:
        self._count_live()
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # --- L0 -----------------------------------------------------------------------------

    def _key_parts(self, step: Step) -> tuple[Any, str]:
        known = self._prints.get(step.index)
        if known is None:
            known = (reuse_input(self.domain, step), prompt_fingerprint(self.domain.messages(step)))
            self._prints[step.index] = known
        return known

    def recall(self, step: Step) -> Any | None:
        if not self.reusing:
            return None
        store = self._open()
        if store is None:
            return None
        step_input, fingerprint = self._key_parts(step)
        try:
            hit = ResultCache(store).get(
                self.step_type, step_input, fingerprint=fingerprint, model=self.model
            )
        except NanobotError as exc:
            self._give_up(exc)
            return None
        if hit is None:
            return None
        self._prints.pop(step.index, None)
        try:
            return self.domain.load_answer(hit.output)
        except ValueError:  # a stored answer this domain no longer reads: vote instead
            return None

    def remember(self, step: Step, answer: Any, verified_by: str, text: str | None) -> None:
        if not self.reuses or verified_by not in ("truth", "voted+checked"):
            self._prints.pop(step.index, None)
            return
        verified: VerifiedBy = "truth" if verified_by == "truth" else "voted+checked"
        if self.reusing:
            self._put(step, answer, verified)
        self._prints.pop(step.index, None)
        if not self._broken:
            self._keep_example(step, verified, text)

    def _put(self, step: Step, answer: Any, verified: VerifiedBy) -> None:
        store = self._open()
        step_input, fingerprint = self._key_parts(step)
        if store is None:
            return
        try:
            ResultCache(store).put(
                self.step_type, step_input, self.domain.dump_answer(answer),
                fingerprint=fingerprint, model=self.model, verified_by=verified,
            )  # fmt: skip
        except NanobotError as exc:
            self._give_up(exc)

    def judged(self, step: Step, outcome: Outcome | None) -> None:
        self._prints.pop(step.index, None)
        if self._shots is not None:
            self._shots.settle(step, outcome)
        if self._adapter is not None and outcome is not None:
            self._live[0] += outcome == "right"
            self._live[1] += 1

    # --- L1 -----------------------------------------------------------------------------

    def attach(self, sampler: Sampler) -> None:
        """Give a real model's sampler its few-shot examples (examples.py), when it takes
        them (`LLMSampler.shots`), and its step type's promoted LoRA adapter at scale 1
        (`_apply_adapter`)."""
        inner = getattr(sampler, "inner", sampler)
        extra = getattr(inner, "extra", None)
        if self.reuses and isinstance(extra, dict):
            if not self._adapter_resolved:
                self.resolve_adapter(sampler)
            self._apply_adapter(extra)
        if not self.keeps_examples or not hasattr(inner, "shots"):
            return
        first = next(iter(self.domain.steps()), None)
        store = self._open()
        if first is None or store is None:
            return
        # Imported here: a simulated run (history only) never loads the examples' matcher.
        from nanobot_tui.engine.learning.examples import ExampleBank, StepShots, user_text_of

        # What every step's prompt shares (all but its last user message, the step's own
        # input): examples are kept and found per prompt template, not per step.
        self._template = prompt_fingerprint(self.domain.messages(first)[:-1])
        self._bank = ExampleBank(store)
        self._user_text = user_text_of(self.domain)
        self._shots = StepShots(
            self._bank, self.step_type, input_text=self._user_text, n=SHOTS,
            fingerprint=self._template,
        )  # fmt: skip
        inner.shots = self._shots

    def resolve_adapter(self, sampler: Sampler) -> None:
        """Find the step type's promoted adapter of the slot's model and its id on the
        server the sampler's client talks to. The id comes from the server itself (GET
        /lora-adapters, matched by path), not from the registry's list of adapters to
        serve: a server keeps the list it was started with, and a promotion, `adapters
        off` or `rm` since then changes the registry's (an app's server runs for hours,
        until it is restarted with the new list when idle). An adapter that server has
        not loaded is not applied (logged). Blocking: `open_run_memory` calls it in the
        runner's worker thread."""
        from nanobot_tui.engine.serving.adapter_registry import AdapterRegistry, registry_path

        self._adapter_resolved = True
        if not self.reuses or not registry_path().is_file():  # no adapters: nothing to ask
            return
        try:
            model = _slot_model(self.spec.slot)
            if model is None:
                return
            with AdapterRegistry() as registry:
                record = registry.promoted(str(model), self.step_type)
            if record is None:
                return
            loaded = _server_adapters(sampler)
        except NanobotError as exc:
            log.warning("run %s: no LoRA adapter: %s", self.run_id, exc)
            return
        server_id = None if loaded is None else loaded.get(_real(record.path))
        if server_id is None:
            why = (
                "its client is no local model server's" if loaded is None
                else "the model server has not loaded it (it will once restarted)"
            )  # fmt: skip
            log.warning("run %s: LoRA adapter %s (%s) not applied: %s", self.run_id, record.id,
                        self.step_type, why)  # fmt: skip
            return
        self._adapter_pick = (server_id, record.id)

    def _apply_adapter(self, extra: dict[str, Any]) -> None:
        """Scale 1 for the adapter `resolve_adapter` found, in every request (`extra`)."""
        from nanobot_tui.engine.serving.lora import lora_fields

        if self._adapter_pick is None:
            return
        server_id, record_id = self._adapter_pick
        # A fresh prompt per request: the server's cached cells may come from other scales.
        extra.update(lora_fields({server_id: 1.0}))
        self._adapter = record_id
        log.info("run %s: LoRA adapter %s applied to %s", self.run_id, record_id, self.step_type)

    def _count_live(self) -> None:
        """Add the judged steps to the adapter's live tally; demote it when they say it
        does worse than the base (ab_test.live_demotes)."""
        right, judged = self._live
        if self._adapter is None or not judged:
            return
        self._live = [0, 0]
        from nanobot_tui.engine.learning.distill.ab_test import live_demotes
        from nanobot_tui.engine.serving.adapter_registry import AdapterRegistry

        try:
            with AdapterRegistry() as registry:
                record = registry.add_live(self._adapter, right, judged)
                if record.status == "promoted" and live_demotes(
                    record.ab, record.live_right, record.live_n
                ):
                    registry.update(
                        record.id, status="demoted",
                        note=f"live runs: {record.live_right}/{record.live_n} steps right, "
                        f"below the base's p {float((record.ab or {})['p_base']):.2f}",
                    )  # fmt: skip
                    log.warning("LoRA adapter %s demoted: worse than the base in live runs",
                                record.id)  # fmt: skip
        except NanobotError as exc:
            log.warning("run %s: LoRA adapter %s not counted: %s", self.run_id, self._adapter, exc)

    def _keep_example(self, step: Step, verified_by: VerifiedBy, text: str | None) -> None:
        if self._bank is None or self._user_text is None or not text or not text.strip():
            return
        user_text = self._user_text(step)
        if not user_text.strip():
            return
        try:
            self._bank.add(
                self.step_type, user_text, text, verified_by=verified_by, model=self.model,
                fingerprint=self._template,
            )  # fmt: skip
        except NanobotError as exc:
            self._give_up(exc)

    # --- the history ------------------------------------------------------------------------

    def finished(self, outcome: RunOutcome, meta: dict[str, Any]) -> dict[str, Any] | None:
        """Record the run in its type's history (once: see the module's docstring);
        returns the run's meta "learning" (what it reused, its task type, its record and
        anomaly), None when nothing changed."""
        before: dict[str, Any] = dict(meta.get("learning") or {})
        learning = {
            **before,
            "task_type": self.task_type,
            "reused": int(before.get("reused") or 0) + outcome.reused,
        }
        budget_stop = outcome.status == "stopped" and outcome.reason.startswith("budget")
        ended = outcome.status in _RECORDED or budget_stop
        if self.records and before.get("recorded") is None and ended:
            store = self._open()
            if store is not None:
                try:
                    done = TaskHistory(store).record(
                        self.task_type,
                        kind=kind_of(self.spec.domain),
                        steps=outcome.steps,
                        tokens=outcome.tokens,
                        seconds=max(outcome.seconds, 0.0),
                        samples_per_step=outcome.samples / outcome.steps if outcome.steps else 0.0,
                        p=outcome.p,
                        success=outcome.solved,
                    )
                except NanobotError as exc:
                    self._give_up(exc)
                else:
                    learning["recorded"] = done.record.id
                    if done.anomaly is not None:
                        learning["anomaly"] = done.anomaly.describe()
        if learning == before:
            return None
        return learning


def _slot_model(slot: SlotName) -> Path | None:
    """The model file a local run's slot uses (as the runner's workbench resolves it)."""
    from nanobot_tui.config import load_config
    from nanobot_tui.engine.serving.slots import resolve_slots

    return resolve_slots(load_config()[0], paths.models_dir())[slot].path


_LOOPBACK = ("127.0.0.1", "localhost", "::1")  # where the model servers listen


def _real(path: Path | str) -> str:
    return os.path.realpath(path)


def _server_adapters(sampler: Sampler) -> dict[str, int] | None:
    """{real path: id} of the adapters loaded on the server the sampler's client talks
    to (LoraServerError when it does not answer); None for a client that is not one of
    our local servers' (a cloud provider's is never sent its key for this)."""
    from urllib.parse import urlsplit

    from nanobot_tui.engine.serving.lora import list_adapters_blocking

    inner = getattr(sampler, "inner", sampler)
    client = getattr(inner, "client", None)
    base_url = str(getattr(client, "base_url", ""))
    auth_headers = getattr(client, "auth_headers", None)
    parts = urlsplit(base_url)
    if not callable(auth_headers) or parts.scheme != "http" or parts.hostname not in _LOOPBACK:
        return None
    root = str(base_url).rstrip("/").removesuffix("/v1")
    return {_real(a.path): a.id for a in list_adapters_blocking(root, auth_headers())}


def open_run_memory(run_id: str, spec: RunSpec, domain: Domain, sampler: Sampler) -> RunMemory:
    """The seam's factory (runs/learning_seam.py `open_memory`, in a worker thread): the
    memory, with its adapter resolved there (a request to the model server)."""
    memory = RunMemory(run_id, spec, domain, sampler)
    memory.resolve_adapter(sampler)
    return memory


def remember_checked(run_id: str, steps: Iterable[int]) -> int:
    """Keep the winners of a finished real-model run's `steps` as "voted+checked" results
    (L0): for a process whose edits passed the user's check after the run (a code recipe
    without a reference has no truth, so the run itself stores none). Steps without a
    completed winner (or out of range) are left out; returns how many were kept. Off
    when the run's spec (`learn`, or no "reuse" among its `learn_loops`) or the config
    turns learning off, and for a simulated run."""
    from nanobot_tui.engine.runs.learning_seam import learning_enabled
    from nanobot_tui.engine.runs.store import RunStore

    with RunStore.open(run_id) as run:
        spec = run.spec
        off = not spec.learn or "reuse" not in spec.learn_loops
        if off or spec.simulated or not learning_enabled():
            return 0
        model = _model_of_name(str(run.meta().get("sampler_name") or ""))
        domain = run.domain
        step_type = step_type_of(spec.domain, spec.params)
        kept = []
        total = domain.total_steps()
        for index in sorted(i for i in set(steps) if 0 <= i < total):
            row = run.step(index)
            if row.status != "completed" or row.answer is None:
                continue
            step = domain.load_step(index, row.input)
            kept.append((reuse_input(domain, step), prompt_fingerprint(domain.messages(step)),
                         row.answer))  # fmt: skip
    if not kept:
        return 0
    with LearningStore() as store:
        cache = ResultCache(store)
        for step_input, fingerprint, answer in kept:
            cache.put(
                step_type, step_input, answer, fingerprint=fingerprint, model=model,
                verified_by="voted+checked",
            )  # fmt: skip
    return len(kept)
