"""A process: a task applied to a user's codebase as a durable code run, and its result.

`prepare` takes a snapshot of the user's tree (the run reads only the snapshot, never the
user's files) and makes the spec of an ordinary durable run of the code domain, so resume,
pause, budgets, retries and traces are those of every run. `outcome` turns the run's
decided answers into edits and builds a working copy from them: every changed file must
compile (the edits that break one are reverted), and when the process has a check
(`--verify CMD`) it runs before and after the edits and the edits that break it are
bisected and reverted. The result is kept in the process's folder, keyed by what went into
it, so asking again costs nothing. `apply` writes the patch into the user's tree only if
the files it changes are still as the snapshot saw them; `undo` puts them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import shutil
import time
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.engine.runs.spec import Budgets, RetryPolicy, RunSpec
from nanobot_tui.engine.runs.store.reader import RunStore
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig
from nanobot_tui.engine.work.codebase import FunctionSite
from nanobot_tui.engine.work.domain import CodeDomain, Problem
from nanobot_tui.engine.work.workcopy import (
    Edit,
    Snapshot,
    WorkCopyError,
    WorkingCopy,
    apply,
    build,
    compile_error,
    diff,
    name_list,
    new_files,
    split_lines,
    undo,
)
from nanobot_tui.errors import UsageError

DOMAIN = "code"
EXTRACT = "extract"
RESULT = "outcome.json"
PATCH = "patch.diff"
DEFAULT_VERIFY_TIMEOUT = 900.0


class ProcessError(UsageError):
    """A process that cannot be started, read, applied or undone; one line."""


class NothingToDo(ProcessError):
    """The recipe wants no function of the tree."""


@dataclass(frozen=True)
class Plan:
    """A process about to start: its spec, its folder and what the recipe found."""

    spec: RunSpec
    work: Path
    python_files: int
    files: int  # files with at least one function the recipe wants
    functions: int
    problems: tuple[Problem, ...]

    def line(self) -> str:
        skipped = f", {len(self.problems)} file(s) skipped" if self.problems else ""
        return (
            f"{self.spec.params['recipe']}: {self.functions:,} function(s) in {self.files:,} "
            f"of {self.python_files:,} Python file(s){skipped}"
        )


def new_work_folder(label: str) -> Path:
    clean = "".join(c for c in label.lower() if c.isalnum())[:16] or "process"
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{clean}-{secrets.token_hex(2)}"
    return paths.work_dir() / name


def prepare(
    task: str,
    source: Path,
    recipe: str,
    *,
    sampler: str,
    k: int,
    budgets: Budgets | None = None,
    retry: RetryPolicy | None = None,
    verify: str | None = None,
    verify_timeout: float = DEFAULT_VERIFY_TIMEOUT,
    files: Sequence[str] | None = None,
    seed: int = 0,
    concurrency: int | None = None,
    fanout: int = 10,
    max_samples: int | None = 10,
    progress: Callable[[int], None] | None = None,
    origin: Path | None = None,
    previous: str | None = None,
    learn: bool = True,
    cluster: str | None = None,
) -> Plan:
    """Snapshot `source` and plan a code run of `recipe` with `task` as its instruction.
    ProcessError for a source that is not a folder, NothingToDo for a recipe that finds
    nothing. A pass of a plan after the first also names `origin` (the first pass's work
    folder, whose snapshot holds the user's files) and the `previous` pass's run: its
    outcome, patch and apply are then those of the whole plan so far (see `outcome`)."""
    if not source.is_dir():
        raise ProcessError(f"not a folder: {source}")
    work = new_work_folder(recipe)
    try:
        snapshot = Snapshot.take(source, work, progress)
    except WorkCopyError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise ProcessError(str(exc)) from None
    params: dict[str, Any] = {
        "root": str(snapshot.base),
        "recipe": recipe,
        "instruction": task,
        "files": list(files) if files else None,
        "simulated": sampler.startswith("simulated"),
        "source": str(snapshot.source),
        "work": str(work),
        "verify": verify,
        "verify_timeout": verify_timeout,
    }
    if origin is not None:
        params["origin"] = str(origin)
        params["previous"] = previous
    spec = _spec(DOMAIN, params, f"code-{recipe}", sampler, k, budgets, retry, seed,
                 concurrency, fanout, learn, cluster)  # fmt: skip
    try:
        domain = spec.build_domain()
    except ValueError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise ProcessError(str(exc)) from None
    assert isinstance(domain, CodeDomain)
    # Room for the longest function's edit; a weak model that never agrees stops at
    # `max_samples` per function instead of voting on.
    vote = replace(spec.vote, token_cap=domain.token_cap(), max_samples=max_samples)
    spec = replace(spec, vote=vote)
    plan = Plan(
        spec,
        work,
        python_files=domain.python_files,
        files=len(domain.groups()),
        functions=domain.total_steps(),
        problems=domain.problems,
    )
    if not plan.functions:
        shutil.rmtree(work, ignore_errors=True)
        raise NothingToDo(f"nothing to do in {source}: {plan.line()}")
    return plan


def prepare_extract(
    task: str,
    volume: str,
    *,
    sampler: str,
    k: int,
    budgets: Budgets | None = None,
    retry: RetryPolicy | None = None,
    seed: int = 0,
    concurrency: int | None = None,
    fanout: int = 10,
    learn: bool = True,
    cluster: str | None = None,
) -> RunSpec:
    """The spec of an extract run: `task` (what to list) over every chunk of `volume`,
    pinned to the volume as it is now (a run resumed after a re-ingest is refused)."""
    from nanobot_tui.engine.work.extract import ExtractDomain

    params: dict[str, Any] = {
        "volume": volume,
        "instruction": task,
        "simulated": sampler.startswith("simulated"),
    }
    try:
        params["volume_fingerprint"] = ExtractDomain(params).fingerprint
    except ValueError as exc:
        raise ProcessError(str(exc)) from None
    return _spec(EXTRACT, params, f"extract-{volume}", sampler, k, budgets, retry, seed,
                 concurrency, fanout, learn, cluster)  # fmt: skip


def _spec(
    domain: str,
    params: dict[str, Any],
    label: str,
    sampler: str,
    k: int,
    budgets: Budgets | None,
    retry: RetryPolicy | None,
    seed: int,
    concurrency: int | None,
    fanout: int,
    learn: bool,
    cluster: str | None = None,
) -> RunSpec:
    """A process's run spec: an undecided function or chunk is skipped after its retries
    (the others do not depend on it), never the whole run failed; `learn` as
    `nanobot run --no-learn` says (engine.runs.learning_seam); `cluster`, a Ray cluster's
    address, samples over its pool of model hosts instead of the local server."""
    return RunSpec(
        domain=domain,
        params=params,
        sampler=sampler,
        vote=VoteConfig(k=k),
        seed=seed,
        budgets=budgets or Budgets(),
        retry=retry or RetryPolicy(on_fail="skip"),
        fanout=fanout,
        concurrency=concurrency,
        label=label,
        learn=learn,
        cluster=cluster,
    )


def kind_of(run_id: str) -> str:
    """The domain of a run: "code", "extract" or another (not a process)."""
    with RunStore.open(run_id) as store:
        return store.spec.domain


# --- the result of a run ----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a process produced so far (a run still going has a partial outcome)."""

    run_id: str
    status: str
    recipe: str
    source: str
    work: str
    functions: int  # steps of the run
    decided: int  # steps with a voted answer
    proposed: int  # decided answers that change their function
    accepted: int  # edits in the final working copy
    reverted: list[dict[str, Any]] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    compiled: int = 0  # changed files that compile (checked again on the final copy)
    verify: dict[str, Any] | None = None
    patch: str = ""  # the patch file's path
    fingerprint: str = ""
    # A later pass of a plan: the first pass's work folder. changed_files, compiled and
    # the patch are then the whole plan's, against the user's files (source).
    origin: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        check = f"; {self.verify['summary']}" if self.verify else ""
        return (
            f"{self.accepted:,} edit(s) in {len(self.changed_files):,} file(s) "
            f"({self.proposed:,} proposed, {len(self.reverted):,} reverted) from "
            f"{self.decided:,}/{self.functions:,} function(s) decided; "
            f"{self.compiled:,}/{len(self.changed_files):,} changed file(s) compile{check}"
        )


def _open_process(run_id: str) -> tuple[RunStore, CodeDomain, dict[str, Any]]:
    store = RunStore.open(run_id)
    spec = store.spec
    if spec.domain != DOMAIN:
        store.close()
        raise ProcessError(f"run {store.run_id} is a {spec.domain} run, not a process")
    domain = store.domain
    assert isinstance(domain, CodeDomain)
    return store, domain, spec.params


def proposed_edits(store: RunStore, domain: CodeDomain) -> tuple[int, list[Edit]]:
    """(decided steps, the edits of those whose answer changes its function)."""
    decided = 0
    edits: list[Edit] = []
    for step, answer in store.answers():
        if not isinstance(answer, str):
            continue
        decided += 1
        site: FunctionSite = domain.sites[step]
        if answer != site.source:
            edits.append(Edit(site.path, site.start, site.end, answer, step))
    return decided, edits


def _fingerprint(edits: Sequence[Edit], params: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([params.get("verify"), params.get("verify_timeout")]).encode())
    for e in edits:
        h.update(json.dumps([e.path, e.start, e.end, e.step, e.new]).encode())
    return h.hexdigest()[:16]


def outcome(run_id: str, progress: Callable[[str], None] | None = None) -> Outcome:
    """The process's result now: built (and checked) once per set of answers."""
    store, domain, params = _open_process(run_id)
    with store:
        status = store.status().status
        decided, edits = proposed_edits(store, domain)
        rid = store.run_id
    work = Path(params["work"])
    fp = _fingerprint(edits, params)
    result_dir = work / f"result-{fp}"
    cached = _read_outcome(result_dir)
    if cached is not None:
        return Outcome(**{**cached, "status": status})
    for old in work.glob("result-*"):
        shutil.rmtree(old, ignore_errors=True)
    snapshot = Snapshot.open(work)
    origin = _origin(params)
    own = result_dir / ("pass" if origin else "final")
    working, check = _build(snapshot, edits, params, own, progress)
    reverted = [
        {
            "step": r.edit.step,
            "path": r.edit.path,
            "function": domain.sites[r.edit.step].qualname,
            "reason": r.reason,
        }
        for r in working.reverted
    ]
    base, shown, source = snapshot, working, str(params["source"])
    if origin is not None:  # the whole plan so far, against the user's files
        base, shown = origin, _combine(origin, snapshot, working, result_dir / "final")
        source = str(origin.source)
    compiled = sum(
        compile_error((shown.tree / p).read_text("utf-8"), p) is None
        for p in shown.changed
        if p.endswith(".py")
    )
    patch = result_dir / PATCH
    write_atomic(patch, diff(base, shown), mode=0o644)
    out = Outcome(
        run_id=rid,
        status=status,
        recipe=str(params["recipe"]),
        source=source,
        work=str(work),
        functions=domain.total_steps(),
        decided=decided,
        proposed=len(edits),
        accepted=len(working.applied),
        reverted=reverted,
        changed_files=list(shown.changed),
        compiled=compiled,
        verify=check,
        patch=str(patch),
        fingerprint=fp,
        origin=str(origin.dest) if origin else "",
    )
    write_atomic(result_dir / RESULT, json.dumps(out.to_dict(), indent=1) + "\n", mode=0o644)
    return out


def _build(
    snapshot: Snapshot,
    edits: list[Edit],
    params: dict[str, Any],
    final: Path,
    progress: Callable[[str], None] | None,
) -> tuple[WorkingCopy, dict[str, Any] | None]:
    """The final working copy in `final` (compiled, and checked when the process has a
    check), with the check's report as JSON-safe data."""
    cmd = params.get("verify")
    if not cmd:
        return build(snapshot, edits, final), None
    from nanobot_tui.engine.work.verify import verify_edits

    result_dir = final.parent
    timeout = float(params.get("verify_timeout") or DEFAULT_VERIFY_TIMEOUT)
    report = verify_edits(snapshot, edits, cmd, result_dir / "verify", timeout, progress)
    report.working.root.rename(final)
    working = WorkingCopy.open(final)
    check = {
        "cmd": cmd,
        "before": report.before.line(),
        "after": report.after.line(),
        "final": report.final.line(),
        "passed": report.passed,
        "baseline_failed": report.baseline_failed,
        "runs": report.runs,
        "summary": report.summary(),
    }
    shutil.rmtree(result_dir / "verify", ignore_errors=True)
    return working, check


def _read_outcome(result_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((result_dir / RESULT).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def patch_text(run_id: str) -> str:
    """The process's patch (built first if need be)."""
    return Path(outcome(run_id).patch).read_text("utf-8")


def apply_process(run_id: str) -> list[str]:
    """Write the process's changes into the user's tree (see workcopy.apply); the paths
    written. ProcessError naming the files the user changed since the run began."""
    result = outcome(run_id)
    work = Path(result.work)
    if not result.changed_files:
        raise ProcessError(f"run {result.run_id} changed nothing: nothing to apply")
    backup = work / "backup"
    if backup.exists():
        if not _undone(backup):
            raise ProcessError(
                f"run {result.run_id} is already applied (undo it with: nanobot process "
                f"undo {result.run_id})"
            )
        shutil.rmtree(backup)  # an earlier apply that was undone: its backup is spent
    snapshot = Snapshot.open(Path(result.origin) if result.origin else work)
    working = WorkingCopy.open(Path(result.patch).parent / "final")
    try:
        return apply(snapshot, working, Path(result.source), backup)
    except WorkCopyError:
        # A refused apply wrote nothing (or put back what it wrote): its backup is void.
        shutil.rmtree(backup, ignore_errors=True)
        raise


def _undone(backup: Path) -> bool:
    try:
        return bool(json.loads((backup / "backup.json").read_text("utf-8")).get("undone"))
    except (OSError, ValueError, AttributeError):
        return False


def undo_process(run_id: str) -> list[str]:
    """Put back the files `apply_process` replaced, if the user has not changed them."""
    store, _domain, params = _open_process(run_id)
    store.close()
    backup = Path(params["work"]) / "backup"
    if not backup.exists():
        raise ProcessError(f"run {store.run_id} was never applied: nothing to undo")
    origin = _origin(params)
    return undo(backup, origin.source if origin else Path(params["source"]))


# --- the passes of a plan ------------------------------------------------------------------


def _origin(params: dict[str, Any]) -> Snapshot | None:
    """The snapshot of the user's files a later pass of a plan refers to, or None."""
    origin = params.get("origin")
    return Snapshot.open(Path(origin)) if origin else None


def _text(path: str, data: bytes) -> str:
    """`data` decoded as build and diff read it: a .py file's declared encoding, else
    UTF-8."""
    encoding = "utf-8"
    if path.endswith(".py"):
        with contextlib.suppress(SyntaxError):
            encoding = tokenize.detect_encoding(io.BytesIO(data).readline)[0]
    return data.decode(encoding)


def _combine(origin: Snapshot, snapshot: Snapshot, working: WorkingCopy, dest: Path) -> WorkingCopy:
    """The plan so far as a working copy of the origin: each user file whose content after
    this pass (its own edit, else its base, the previous pass's result) differs from the
    origin's base, replaced whole."""
    mine = new_files(snapshot, working)
    edits: list[Edit] = []
    wanted: dict[str, bytes] = {}
    for step, (path, entry) in enumerate(sorted(origin.files.items())):
        if path not in mine and snapshot.files.get(path, entry).sha256 == entry.sha256:
            continue
        data = mine[path] if path in mine else (snapshot.base / path).read_bytes()
        before = (origin.base / path).read_bytes()
        if data == before:
            continue
        lines = len(split_lines(_text(path, before)))
        edits.append(Edit(path, 1, lines, _text(path, data), step))
        wanted[path] = data
    combined = build(origin, edits, dest)
    # A whole-file edit keeps the file's line ends as build does; mixed ones could move.
    off = sorted(p for p, data in new_files(origin, combined).items() if wanted.get(p) != data)
    off += sorted(set(wanted) - set(combined.changed))
    if off:
        raise ProcessError(f"the plan's passes cannot be combined exactly in {name_list(off)}")
    return combined


def chain_source(run_id: str) -> tuple[Path, Path]:
    """(the tree the next pass of a plan starts from, the plan's origin work folder) after
    run `run_id`: its result with no trace of a check (a check may write into the tree it
    runs in)."""
    result = outcome(run_id)
    result_dir = Path(result.patch).parent
    origin = Path(result.origin or result.work)
    if result.origin or result.verify is None:  # `build` made it: only the edits
        return result_dir / "final" / "tree", origin
    clean = result_dir / "clean"
    if not (clean / "tree").is_dir():
        shutil.rmtree(clean, ignore_errors=True)
        applied = WorkingCopy.open(result_dir / "final").applied
        build(Snapshot.open(Path(result.work)), applied, clean)
    return clean / "tree", origin
