"""Summaries of a process run: for each file, what became of its functions; for the run,
what became of the files.

`file_facts` gathers the structured facts of every file from the run's store and the
process's outcome (edited, unchanged, undecided or skipped and why, red flags by reason,
reverted by the compile check or by the user's check). `summarize_run` turns them into
one sentence per file, written by the memory model from the facts (never the code), and
one for the run from the files' facts; without a model client, or when a call fails, the
sentence is made from the facts and says so. `store_summaries` writes them into the run's
store as the file blocks' and the root's `summary` (what the tree, the Process pane and
`nanobot status` show), under the run's lock: a run a runner holds is refused.

A model's text is data: printable, one line, at most MAX_CHARS characters.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.runs.prune import holding_idle
from nanobot_tui.engine.runs.store import RunStore, connect, db_path, meta_set, resolve_run_id
from nanobot_tui.engine.runs.tree import ROOT_ID
from nanobot_tui.engine.work import process
from nanobot_tui.text import printable

MAX_TOKENS = 60  # one sentence
MAX_CHARS = 240  # what is kept of a model's sentence
NAMES = 8  # function names per list in the facts a model reads
META_KEY = "summary"  # the run's meta key: the root summary and how it was written
NO_MODEL = "(no memory model)"


@dataclass(frozen=True)
class Unsettled:
    """A function whose step ended without an edit: undecided, red-flagged or skipped."""

    function: str
    reason: str  # "undecided", "red_flagged", ... (the error's first word)
    detail: str


@dataclass(frozen=True)
class Undone:
    """A decided edit taken back out of the working copy."""

    function: str
    by: str  # "compile" (the file did not compile with it) or "check" (--verify failed)
    detail: str

    def why(self) -> str:
        return "did not compile" if self.by == "compile" else "broke the check"


@dataclass(frozen=True)
class FileFacts:
    """What happened to one file's functions (a file the run could not read has no node
    and a `problem`)."""

    path: str
    node_id: int | None
    functions: int
    edited: tuple[str, ...] = ()  # edits in the final working copy
    unchanged: tuple[str, ...] = ()  # decided: nothing to change
    undecided: tuple[Unsettled, ...] = ()
    reverted: tuple[Undone, ...] = ()
    red_flags: dict[str, int] = field(default_factory=dict)  # rejected samples by reason
    pending: int = 0  # not voted yet (a run stopped early)
    problem: str | None = None  # the file was skipped before the run

    @property
    def problems(self) -> int:
        return len(self.undecided) + len(self.reverted) + (self.problem is not None)

    def data(self) -> dict[str, Any]:
        """The facts as JSON-safe data for a prompt (names capped at NAMES a list)."""
        out: dict[str, Any] = {"file": self.path, "functions": self.functions}
        if self.problem:
            out["skipped_file"] = self.problem
            return out
        out["edited"] = _capped(list(self.edited))
        out["unchanged"] = len(self.unchanged)
        if self.undecided:
            out["not_edited"] = _capped([f"{u.function}: {u.reason}" for u in self.undecided])
        if self.reverted:
            out["reverted"] = _capped([f"{r.function}: {r.why()}" for r in self.reverted])
        if self.red_flags:
            out["rejected_samples"] = dict(self.red_flags)
        if self.pending:
            out["not_done_yet"] = self.pending
        return out

    def sentence(self) -> str:
        """The summary made from the facts alone."""
        if self.problem:
            return f"{self.path}: skipped, {self.problem}."
        parts = [f"{len(self.edited)} of {self.functions} function(s) edited"]
        if self.edited:
            parts[0] += f" ({_names(self.edited)})"
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} needed no change")
        if self.undecided:
            why = Counter(u.reason for u in self.undecided)
            parts.append(
                f"{len(self.undecided)} not edited ("
                + ", ".join(f"{n} {r}" for r, n in sorted(why.items()))
                + f": {_names([u.function for u in self.undecided])})"
            )
        if self.reverted:
            by = ", ".join(f"{r.function} {r.why()}" for r in self.reverted[:3])
            more = f" and {len(self.reverted) - 3} more" if len(self.reverted) > 3 else ""
            parts.append(f"{len(self.reverted)} reverted ({by}{more})")
        if self.red_flags:
            flags = ", ".join(f"{k} {v}" for k, v in sorted(self.red_flags.items()))
            parts.append(f"red-flagged samples: {flags}")
        if self.pending:
            parts.append(f"{self.pending} not done yet")
        return f"{self.path}: " + "; ".join(parts) + "."


def _capped(items: list[str]) -> list[str]:
    return items if len(items) <= NAMES else [*items[:NAMES], f"... {len(items) - NAMES} more"]


def _names(names: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# --- facts -------------------------------------------------------------------------------


def file_facts(run_id: str) -> list[FileFacts]:
    """Every file of a code run, in run order, then the files skipped before the run.
    The outcome (edits and reverts) is built first if need be (see process.outcome)."""
    result = process.outcome(run_id)
    reverted: dict[int, Undone] = {}
    check = (result.verify or {}).get("cmd")
    for r in result.reverted:
        by = "check" if check and str(r["reason"]).startswith(repr(check)) else "compile"
        reverted[int(r["step"])] = Undone(str(r["function"]), by, str(r["reason"]))
    with RunStore.open(run_id) as store:
        domain = store.domain
        assert isinstance(domain, process.CodeDomain)
        layout = store.layout
        decided = dict(store.answers())
        rows = {
            step: (status, error, flags)
            for step, status, error, flags in store.conn.execute(
                "SELECT step, status, error, red_flags FROM steps"
            )
        }
        earlier = store.conn.execute("SELECT step, red_flags FROM attempts").fetchall()
    flags_of: dict[int, Counter[str]] = {}
    for step, text in [(s, f) for s, (_, _, f) in rows.items()] + earlier:
        if text:
            flags_of.setdefault(step, Counter()).update(_flag_counts(text))
    out: list[FileFacts] = []
    first = 0
    for index, (path, count) in enumerate(domain.groups()):
        steps = range(first, first + count)
        first += count
        sites = [domain.sites[s] for s in steps]
        edited: list[str] = []
        unchanged: list[str] = []
        undecided: list[Unsettled] = []
        undone: list[Undone] = []
        pending = 0
        flags: Counter[str] = Counter()
        for step, site in zip(steps, sites, strict=True):
            flags.update(flags_of.get(step, {}))
            if step in reverted:
                undone.append(reverted[step])
            elif isinstance(decided.get(step), str):
                (edited if decided[step] != site.source else unchanged).append(site.qualname)
            elif step in rows:
                status, error = rows[step][0], rows[step][1] or ""
                reason = _reason(error) or status
                undecided.append(Unsettled(site.qualname, reason, error or status))
            else:
                pending += 1
        out.append(
            FileFacts(
                path, layout.node_id(1, index), count, tuple(edited), tuple(unchanged),
                tuple(undecided), tuple(undone), dict(sorted(flags.items())), pending,
            )
        )  # fmt: skip
    out += [FileFacts(p.path, None, 0, problem=p.reason) for p in domain.problems]
    return out


def _reason(error: str) -> str:
    """A step's error (the runner's own text) in a few words: its kind, and for an
    undecided vote the rounds it took ("undecided after 3 rounds")."""
    kind = error.split(":", 1)[0].strip()
    words = error.split()
    if kind == "undecided" and "rounds" in words:
        at = words.index("rounds")
        if at > 0 and words[at - 1].isdigit():
            return f"undecided after {words[at - 1]} rounds"
    return kind.replace("_", "-")


def _flag_counts(text: str) -> dict[str, int]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}


# --- summaries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSummary:
    path: str
    node_id: int | None
    text: str
    by_model: bool
    facts: FileFacts


@dataclass(frozen=True)
class RootSummary:
    """The run's summary, its files' summaries, and what wrote them (`model`: the memory
    model's name; None: made from the facts)."""

    run_id: str
    text: str
    files: list[FileSummary]
    totals: dict[str, Any]
    model: str | None
    stored: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "summary": self.text,
            "model": self.model,
            "totals": self.totals,
            "files": [
                {"path": f.path, "summary": f.text, "by_model": f.by_model} for f in self.files
            ],
        }


_FILE_PROMPT = (
    "An automated tool edited a Python file function by function. Below are the facts of "
    "what happened to this file, as JSON. Write ONE short sentence (at most 25 words) "
    "summarising them for the user: what was edited, what was not and why. Use only the "
    "facts."
)
_ROOT_PROMPT = (
    "An automated tool edited a Python codebase file by file. Below are the facts of the "
    "whole run, as JSON. Write ONE short sentence (at most 30 words) summarising them for "
    "the user: how much was edited, and the files with the most edits and the most "
    "problems. Use only the facts."
)


def run_totals(facts: Sequence[FileFacts]) -> dict[str, Any]:
    """The run's counts, and the files with the most edits and the most problems."""
    worked = [f for f in facts if f.problem is None]
    most_edits = sorted((f for f in worked if f.edited), key=lambda f: -len(f.edited))[:3]
    most_problems = sorted((f for f in worked if f.problems), key=lambda f: -f.problems)[:3]
    return {
        "files": len(worked),
        "functions": sum(f.functions for f in worked),
        "edited": sum(len(f.edited) for f in worked),
        "unchanged": sum(len(f.unchanged) for f in worked),
        "not_edited": sum(len(f.undecided) for f in worked),
        "reverted": sum(len(f.reverted) for f in worked),
        "not_done_yet": sum(f.pending for f in worked),
        "files_skipped": {f.path: f.problem for f in facts if f.problem is not None},
        "most_edits": {f.path: len(f.edited) for f in most_edits},
        "most_problems": {f.path: f.problems for f in most_problems},
    }


def root_sentence(totals: dict[str, Any]) -> str:
    """The run's summary made from its totals alone."""
    t = totals
    text = (
        f"{t['edited']} of {t['functions']} function(s) edited in {t['files']} file(s); "
        f"{t['unchanged']} needed no change, {t['not_edited']} not edited, "
        f"{t['reverted']} reverted"
    )
    if t["not_done_yet"]:
        text += f", {t['not_done_yet']} not done yet"
    if t["files_skipped"]:
        text += f"; {len(t['files_skipped'])} file(s) skipped ({_names(list(t['files_skipped']))})"
    if t["most_edits"]:
        text += "; most edits: " + ", ".join(f"{p} ({n})" for p, n in t["most_edits"].items())
    if t["most_problems"]:
        text += "; most problems: " + ", ".join(f"{p} ({n})" for p, n in t["most_problems"].items())
    return text + "."


def clean(text: str) -> str:
    """A model's sentence as data: printable, one line, at most MAX_CHARS characters;
    "" when nothing readable is left."""
    line = " ".join(printable(text).split())
    line = line.strip("\"'` ")
    end = line.find(". ")
    if end > 0:  # one sentence: a small model tends to run on
        line = line[: end + 1]
    if len(line) > MAX_CHARS:
        line = line[: MAX_CHARS - 1].rstrip() + "…"
    return line if any(c.isalpha() for c in line) else ""


async def _ask(client: ChatClient, prompt: str, data: dict[str, Any]) -> str:
    request = ChatRequest(
        [
            {"role": "system", "content": prompt},
            {"role": "user", "content": json.dumps(data, ensure_ascii=False)},
        ],
        temperature=0.0,
        max_tokens=MAX_TOKENS,
    )
    result = await client.chat(request)
    return clean(result.content)


async def _written(
    client: ChatClient | None,
    prompt: str,
    data: dict[str, Any],
    fallback: str,
    no_model: str = NO_MODEL,
) -> tuple[str, bool]:
    """(the model's sentence, True), or (the fallback saying why, False)."""
    if client is None:
        return f"{fallback} {no_model}", False
    try:
        text = await _ask(client, prompt, data)
    except Exception as exc:  # a summary is never worth failing a process over
        return f"{fallback} (the memory model failed: {type(exc).__name__})", False
    if not text:
        return f"{fallback} (the memory model wrote nothing usable)", False
    return text, True


async def summarize_run(
    run_id: str,
    client: ChatClient | None,
    *,
    model: str | None = None,
    concurrency: int = 4,
    store: bool = True,
    no_model: str = NO_MODEL,
) -> RootSummary:
    """One sentence per file and one for the run, by the memory model behind `client`
    (`model`: its name, kept with the summary) or, without one, from the facts; stored
    in the run's store unless `store` is False (RunBusy while a runner holds the run).
    `no_model`: what a sentence made from the facts says about why, without a client."""
    run_id = resolve_run_id(run_id)
    facts = await asyncio.to_thread(file_facts, run_id)
    gate = asyncio.Semaphore(max(concurrency, 1))

    async def one(f: FileFacts) -> FileSummary:
        if f.problem is not None:  # nothing was voted: the facts say it all
            return FileSummary(f.path, None, f.sentence(), False, f)
        async with gate:
            text, by_model = await _written(client, _FILE_PROMPT, f.data(), f.sentence(), no_model)
        return FileSummary(f.path, f.node_id, text, by_model, f)

    files = list(await asyncio.gather(*(one(f) for f in facts)))
    totals = run_totals(facts)
    text, by_model = await _written(client, _ROOT_PROMPT, totals, root_sentence(totals), no_model)
    summary = RootSummary(run_id, text, files, totals, model if by_model else None)
    if store:
        await asyncio.to_thread(store_summaries, run_id, summary)
        summary = replace(summary, stored=True)
    return summary


def store_summaries(run_id: str, summary: RootSummary) -> None:
    """Write the summaries into the run's store: the finished file blocks' and, when the
    run is finished, the root's `summary` (a block still to be voted on keeps none, so a
    resumed run shows no stale one), and the root summary in meta under META_KEY (what
    `nanobot status` prints, with the steps done when it was written). Under the run's
    lock, taken without waiting: RunBusy while a runner holds the run."""
    with RunStore.open(run_id) as store:
        rid = store.run_id
        done = store.status().steps_done
    with holding_idle(rid, "summaries are written once it stops"):
        conn = connect(db_path(rid))
        try:
            conn.execute("BEGIN IMMEDIATE")
            rows = [(f.text, f.node_id) for f in summary.files if f.node_id is not None]
            conn.executemany(
                "UPDATE nodes SET summary = ? WHERE id = ? AND status IN ('completed', 'failed')",
                rows,
            )
            conn.execute(
                "UPDATE nodes SET summary = ? WHERE id = ? AND status IN ('completed', 'failed')",
                (summary.text, ROOT_ID),
            )
            meta = {"text": summary.text, "model": summary.model, "steps_done": done,
                    "written": time.time()}  # fmt: skip
            meta_set(conn, {META_KEY: meta})
            conn.execute("COMMIT")
        finally:
            conn.close()


def read_summary(run_id: str) -> str | None:
    """The root summary stored for a run (see `stored_summary`); None: none yet."""
    with RunStore.open(run_id) as store:
        done = store.status().steps_done
        return stored_summary(store.meta(), done)


def stored_summary(meta: dict[str, Any], steps_done: int) -> str | None:
    """The root summary a run's meta holds, as one printable line (None: none), noting
    the steps done when it was written if the run has moved on since."""
    got = meta.get(META_KEY)
    if not isinstance(got, dict) or not isinstance(got.get("text"), str):
        return None
    line = " ".join(printable(got["text"]).split())
    then = got.get("steps_done")
    if isinstance(then, int) and then != steps_done:
        line += f" (as of {then:,} steps done)"
    return line


__all__ = [
    "FileFacts",
    "FileSummary",
    "RootSummary",
    "file_facts",
    "read_summary",
    "root_sentence",
    "run_totals",
    "store_summaries",
    "stored_summary",
    "summarize_run",
]
