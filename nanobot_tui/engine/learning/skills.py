"""Skills the agent learns: a tool sequence that worked N times becomes a SKILL.md.

Every finished agent turn in a session file is read back (`session_turns`): the user's
task, the tool calls in order with their arguments, and its outcome. A turn is a
**success** when it ended with an answer (not empty, not cut or cancelled, not the round
limit's "no answer"), every tool call it made returned ok, and the loop never had to say
back an unreadable call or a repeated one. Only what the session file
shows is used, so a turn can be judged long after it ran; a user's verdict
(`mark_turn`) beats the inferred one. The rule is strict on purpose: a skill is a recipe
to follow, so only clean runs teach one.

A successful turn's **signature** is its tool names in order. After `min_successes`
successes with one signature (3 unless configured; at least `min_calls` calls, since a
single call is what the model does unaided) the sequence is crystallised into
`skills/<name>/SKILL.md`: front matter the agent's loader reads (`name`, `description`)
plus `learned: true`, the signature, the slots, the origin turns, `created`, `hits`,
`failures` and `status`; the body lists the tasks and the steps, with each argument whose
value varied between the turns turned into a slot like `{path}` (a varied string that is
another slot's value inside constant text becomes a template, like `wc -l {path}`).

Counters live in the SKILL.md front matter: the file is the whole truth about a skill, for
the user to read or edit, and every change to it is an atomic replace under a lock. A turn
that began after a skill was created counts for each learned skill the agent's own matcher
(`match_skills`) would have offered for its task: a **hit** when the turn succeeded with
the skill's signature, a **failure** when the turn failed (a success by another path
counts neither). A skill with `failures >= demote_failures` and more failures than hits is
**demoted**: moved to `skills/.learned/demoted/`, which the agent's loader skips (it skips
dot folders), so it is no longer offered; `restore` moves it back with its failures reset.

Pending observations (successful turns not yet crystallised, the turns already counted,
the user's verdicts) are kept in `skills/.learned/state.json`. `nanobot learned` lists and
forgets learned skills only: a hand-written skill is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.engine.agent.loop import CANCELLED, FAILED
from nanobot_tui.engine.agent.sessions import Session, now_ts
from nanobot_tui.engine.agent.skills import SKILL_FILE, load_skills, match_skills, terms
from nanobot_tui.errors import NanobotError, UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_MIN_SUCCESSES = 3
DEFAULT_MIN_CALLS = 2
DEFAULT_DEMOTE_FAILURES = 3
OFFER_LIMIT = 2  # what build.py gives match_skills: the skills the agent's prompt takes
STATE_DIR = ".learned"  # a dot folder: the agent's loader skips it
MAX_PENDING = 50  # successes kept per signature while it waits for N
MAX_SEEN = 20_000  # turns remembered as counted; the oldest are dropped first
MAX_TASKS_SHOWN = 5
MAX_VALUE_CHARS = 200  # a constant argument longer than this is clipped in the steps
# What loop.py writes into a session when a turn went wrong (it exports no constants for
# these; the tests drive the real loop to keep the two in step).
PROBLEM_PREFIX = "Tool call error: "
REPEAT_NOTE = "(The same call as before, the same result: answer now.)"
NO_ANSWER = "(No answer: after "
_MISSING = "\x00missing"  # an argument absent from one turn's call
_SLOT_RE = re.compile(r"[^A-Za-z0-9_]+")
_FOLDER_RE = re.compile(r"[^a-z0-9]+")


class LearnedSkillNotFound(UsageError):
    """No learned skill of that name (a hand-written skill is never one)."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))


class LearnedSkillError(NanobotError):
    """A learned skill or the learning state that cannot be read or written; one line."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))


# --- turns ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolStep:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class AgentTurn:
    session: str
    index: int  # the user message's index among the session's message records
    task: str
    steps: tuple[ToolStep, ...]
    success: bool
    reason: str  # why it is (not) a success, one line
    ts: str  # when the user's message was written
    finished: bool = True  # False: the session's last turn, still without an answer

    @property
    def key(self) -> str:
        return f"{self.session}#{self.index}"

    @property
    def signature(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)


@dataclass
class _TurnText:
    session: str
    index: int
    task: str
    ts: str
    messages: list[dict[str, Any]] = field(default_factory=list)  # records after the task
    tools: list[dict[str, Any]] = field(default_factory=list)

    def turn(self, *, last: bool) -> AgentTurn:
        steps = tuple(
            ToolStep(str(r.get("name", "")), dict(r.get("arguments") or {})) for r in self.tools
        )
        final = self.messages[-1] if self.messages else None
        message = final["message"] if final else {}
        answered = message.get("role") == "assistant" and not message.get("tool_calls")
        success, reason = self._judge(final, message, answered)
        finished = answered or not last
        return AgentTurn(
            self.session, self.index, self.task, steps, success, reason, self.ts, finished
        )

    def _judge(
        self, final: dict[str, Any] | None, message: dict[str, Any], answered: bool
    ) -> tuple[bool, str]:
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        if final is None or not answered:
            return False, "no answer"
        if text in (CANCELLED, FAILED) or "partial" in final:
            return False, "the answer was cut"
        if not text.strip():
            return False, "an empty answer"
        if NO_ANSWER in text:
            return False, "stopped at the round limit"
        if failed := [r for r in self.tools if not r.get("ok")]:
            return False, f"tool {failed[0].get('name')} failed"
        for record in self.messages:
            said = record["message"].get("content")
            role = record["message"].get("role")
            if role == "user" and isinstance(said, str) and said.startswith(PROBLEM_PREFIX):
                return False, "an unreadable tool call"
            if role == "tool" and isinstance(said, str) and said.endswith(REPEAT_NOTE):
                return False, "a repeated tool call"
        return True, "answered, every tool call ok"


def session_turns(session: Session) -> list[AgentTurn]:
    """Every turn of `session`, in order, with its outcome (see the module's docstring).
    A turn starts at a user message that is not the loop's own note about a bad call."""
    found: list[_TurnText] = []
    index = -1
    for record in session.records():
        if record["type"] == "tool" and found:
            found[-1].tools.append(record)
        if record["type"] != "message":
            continue
        index += 1
        message = record["message"]
        content = message.get("content")
        if message.get("role") == "user" and not (
            isinstance(content, str) and content.startswith(PROBLEM_PREFIX)
        ):
            task = content if isinstance(content, str) else json.dumps(content)
            found.append(_TurnText(session.name, index, task, str(record.get("ts", ""))))
        elif found:
            found[-1].messages.append(record)
    return [text.turn(last=i == len(found) - 1) for i, text in enumerate(found)]


# --- learned skills ---------------------------------------------------------------------


@dataclass(frozen=True)
class LearnedSkill:
    name: str
    description: str
    path: Path  # its SKILL.md
    status: str  # "active" or "demoted"
    hits: int
    failures: int
    created: str
    origin: tuple[str, ...]  # "session#turn" of the turns it was learned from
    signature: tuple[str, ...]
    slots: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "path": str(self.path),
            "status": self.status,
            "hits": self.hits,
            "failures": self.failures,
            "created": self.created,
            "origin": list(self.origin),
            "signature": list(self.signature),
            "slots": list(self.slots),
        }


@dataclass
class LearnReport:
    """What one observation changed: skill names."""

    crystallised: list[str] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    demoted: list[str] = field(default_factory=list)

    def add(self, other: LearnReport) -> None:
        self.crystallised += other.crystallised
        self.hits += other.hits
        self.failures += other.failures
        self.demoted += other.demoted


def _split_front_matter(text: str) -> tuple[list[str], str] | None:
    """The front matter's lines and the rest, as the agent's loader splits them."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        return None
    return lines[1:end], "\n".join(lines[end + 1 :])


def _fields(front: list[str]) -> dict[str, str]:
    """`key: value` lines, read the way the agent's loader reads them."""
    fields: dict[str, str] = {}
    for line in front:
        key, sep, value = line.partition(":")
        if sep and key.strip() and not line.startswith((" ", "\t", "#")):
            fields[key.strip().lower()] = value.strip().strip("\"'")
    return fields


def _listed(value: str, sep: str = ",") -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(sep) if x.strip())


def _count(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def _read_learned(path: Path) -> LearnedSkill | None:
    """The learned skill in `path`; None for a hand-written (or unreadable) one."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    split = _split_front_matter(text)
    if split is None:
        return None
    fields = _fields(split[0])
    if fields.get("learned", "").lower() != "true":
        return None
    return LearnedSkill(
        name=fields.get("name") or path.parent.name,
        description=fields.get("description", ""),
        path=path,
        status="demoted" if fields.get("status") == "demoted" else "active",
        hits=_count(fields.get("hits")),
        failures=_count(fields.get("failures")),
        created=fields.get("created", ""),
        origin=_listed(fields.get("origin", "")),
        signature=_listed(fields.get("signature", ""), ">"),
        slots=_listed(fields.get("slots", "")),
    )


def _one_line(value: object) -> str:
    """A front matter value: one line, no quotes at its ends (the loader strips them)."""
    return " ".join(str(value).split()).strip("\"'")


def _rewrite(path: Path, **changes: object) -> None:
    """Set front matter keys of the SKILL.md at `path`, keeping the rest as it is."""
    text = path.read_text(encoding="utf-8")
    split = _split_front_matter(text)
    if split is None:
        raise LearnedSkillError(f"{path} lost its front matter")
    front, body = split
    done: set[str] = set()
    lines = []
    for line in front:
        key = line.partition(":")[0].strip().lower()
        if key in changes and not line.startswith((" ", "\t", "#")):
            lines.append(f"{key}: {_one_line(changes[key])}")
            done.add(key)
        else:
            lines.append(line)
    lines += [f"{k}: {_one_line(v)}" for k, v in changes.items() if k not in done]
    write_atomic(path, "\n".join(["---", *lines, "---", body]).rstrip("\n") + "\n", mode=0o644)


# --- crystallising ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Occurrence:
    key: str
    task: str
    calls: list[dict[str, Any]]  # {"name", "arguments"}


def _canon(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@dataclass
class _Steps:
    """The steps of one signature over its occurrences, arguments as constants or slots."""

    lines: list[str]
    slots: dict[str, list[Any]]  # slot -> its value in each occurrence (_MISSING if absent)


def _slot_name(key: str, taken: dict[str, list[Any]]) -> str:
    base = _SLOT_RE.sub("_", key).strip("_") or "value"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def _as_template(values: list[Any], slots: dict[str, list[Any]]) -> str | None:
    """Text with `{slot}` in it when each value is the same text around a slot's value."""
    if not all(isinstance(v, str) for v in values):
        return None
    for slot, slot_values in slots.items():
        if not all(
            isinstance(s, str) and len(s) >= 2 and s in v
            for s, v in zip(slot_values, values, strict=True)
        ):
            continue
        shapes = {v.replace(s, "{" + slot + "}") for s, v in zip(slot_values, values, strict=True)}
        if len(shapes) == 1:
            return shapes.pop()
    return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _steps(occurrences: list[_Occurrence]) -> _Steps:
    slots: dict[str, list[Any]] = {}
    by_values: dict[tuple[str, ...], str] = {}  # identical varied values share one slot
    lines = []
    for position, first in enumerate(occurrences[0].calls):
        keys: dict[str, None] = {}
        for occurrence in occurrences:
            keys.update(dict.fromkeys(occurrence.calls[position]["arguments"]))
        shown = []
        for key in keys:
            values = [o.calls[position]["arguments"].get(key, _MISSING) for o in occurrences]
            canon = tuple(_canon(v) for v in values)
            if len(set(canon)) == 1:
                shown.append(f"{key}={_clip(_canon(values[0]))}")
            elif canon in by_values:
                shown.append(f"{key}={{{by_values[canon]}}}")
            elif _MISSING not in values and (template := _as_template(values, slots)):
                shown.append(f"{key}={_clip(_canon(template))}")
            else:
                slot = by_values[canon] = _slot_name(key, slots)
                slots[slot] = values
                shown.append(f"{key}={{{slot}}}")
        lines.append(f"{position + 1}. `{first['name']}` " + (", ".join(shown) or "(no arguments)"))
    return _Steps(lines, slots)


def _task_template(occurrence_index: int, task: str, slots: dict[str, list[Any]]) -> str:
    for slot, values in slots.items():
        value = values[occurrence_index]
        if isinstance(value, str) and len(value) >= 2 and value in task:
            task = task.replace(value, "{" + slot + "}")
    return task


def _skill_name(occurrences: list[_Occurrence], signature: tuple[str, ...]) -> str:
    """Words every task shares (what the matcher will meet again) that are not in the
    arguments (a file name says nothing of the task's kind), else the tool names."""
    common: list[str] | None = None
    specific: set[str] = set()
    for occurrence in occurrences:
        words = list(dict.fromkeys(terms(occurrence.task)))
        common = words if common is None else [w for w in common if w in words]
        for call in occurrence.calls:
            for value in call["arguments"].values():
                specific.update(terms(_canon(value)))
    kept = [w for w in (common or []) if len(w) > 2 and w not in specific]
    chosen = kept[:3] or list(signature)[:3]
    return _FOLDER_RE.sub("-", "-".join(chosen).lower()).strip("-")[:48] or "learned"


def _render(
    name: str,
    signature: tuple[str, ...],
    occurrences: list[_Occurrence],
    created: str,
) -> tuple[str, tuple[str, ...]]:
    """The SKILL.md text and its slots."""
    steps = _steps(occurrences)
    last = len(occurrences) - 1
    example = _one_line(_task_template(last, occurrences[last].task, steps.slots))[:160]
    tasks = [_one_line(o.task)[:160] for o in occurrences[-MAX_TASKS_SHOWN:]]
    slots = tuple(steps.slots)
    front = {
        "name": name,
        "description": f"Learned steps for: {example}",
        "learned": "true",
        "signature": " > ".join(signature),
        "slots": ", ".join(slots),
        "origin": ", ".join(o.key for o in occurrences),
        "created": created,
        "hits": 0,
        "failures": 0,
        "status": "active",
    }
    # Few words of its own: the description and the first lines are what the agent's
    # matcher reads, and words every learned skill shares would match them all.
    body = [
        f"# {name} (learned)",
        "",
        f"Worked {len(occurrences)} times for:",
        *[f"- {task}" for task in tasks],
        "",
        "Steps, each {slot} filled from the task:" if slots else "Steps:",
        *steps.lines,
    ]
    if slots:
        body += ["", "Slots (values seen):"]
        for slot, values in steps.slots.items():
            seen = [v for v in dict.fromkeys(_canon(v) for v in values if v != _MISSING)]
            optional = " (optional)" if _MISSING in values else ""
            body.append(f"- {{{slot}}}{optional}: " + _clip(", ".join(seen[:MAX_TASKS_SHOWN])))
    head = ["---", *[f"{k}: {_one_line(v)}" for k, v in front.items()], "---"]
    return "\n".join([*head, *body]) + "\n", slots


# --- the learner ------------------------------------------------------------------------


class SkillLearner:
    """Learned skills under one skills folder: observe turns, count, demote, forget."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        min_successes: int = DEFAULT_MIN_SUCCESSES,
        min_calls: int = DEFAULT_MIN_CALLS,
        demote_failures: int = DEFAULT_DEMOTE_FAILURES,
    ) -> None:
        if min_successes < 1 or min_calls < 1 or demote_failures < 1:
            raise ValueError("min_successes, min_calls and demote_failures must be at least 1")
        self.root = root if root is not None else paths.skills_dir()
        self.min_successes = min_successes
        self.min_calls = min_calls
        self.demote_failures = demote_failures

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def demoted_dir(self) -> Path:
        return self.state_dir / "demoted"

    # -- reading ---------------------------------------------------------------------

    def skills(self) -> list[LearnedSkill]:
        """Every learned skill, active then demoted, by name."""
        found = []
        for folder in (self.root, self.demoted_dir):
            if not folder.is_dir():
                continue
            for sub in sorted(folder.iterdir()):
                if sub.name.startswith(".") or not (sub / SKILL_FILE).is_file():
                    continue
                if (skill := _read_learned(sub / SKILL_FILE)) is not None:
                    found.append(skill)
        return sorted(found, key=lambda s: (s.status != "active", s.name))

    def announce(self, report: LearnReport) -> list[str]:
        """One line per skill that `report` learned or demoted, for the user."""

        def count(n: int, word: str) -> str:
            return f"{n:,} {word}{'s' if n != 1 else ''}"

        lines = []
        for name in report.crystallised:
            turns = count(len(self.get(name).origin), "successful turn")
            lines.append(f"learned a skill: {name} (from {turns})")
        for name in report.demoted:
            skill = self.get(name)
            lines.append(
                f"stopped offering the learned skill {name}: "
                f"{count(skill.failures, 'failure')}, {count(skill.hits, 'hit')}"
            )
        return lines

    def get(self, name: str) -> LearnedSkill:
        for skill in self.skills():
            if name in (skill.name, skill.path.parent.name):
                return skill
        for written in load_skills(self.root):
            if name in (written.name, written.path.parent.name):
                raise LearnedSkillNotFound(
                    f"skill {name!r} ({written.path}) was written by hand, not learned: "
                    "only learned skills are listed, demoted or forgotten here"
                )
        known = ", ".join(s.name for s in self.skills()[:5]) or "none yet"
        raise LearnedSkillNotFound(f"no learned skill named {name!r} (learned: {known})")

    def offered(self, task: str, limit: int = OFFER_LIMIT) -> list[LearnedSkill]:
        """The learned skills the agent would put in its prompt for `task`: its own
        matcher over every skill it loads (hand-written ones compete too)."""
        matched = match_skills(load_skills(self.root), task, limit=limit)
        learned = (_read_learned(skill.path) for skill in matched)
        return [s for s in learned if s is not None and s.status == "active"]

    # -- observing -------------------------------------------------------------------

    def observe_session(self, session: Session) -> LearnReport:
        """Observe every finished turn of `session` (a turn observed before is not
        counted twice): call it after each agent turn."""
        report = LearnReport()
        with self._locked() as state:
            for turn in session_turns(session):
                if turn.finished:
                    report.add(self._observe(state, turn))
        return report

    def observe_turn(self, turn: AgentTurn) -> LearnReport:
        with self._locked() as state:
            return self._observe(state, turn)

    def mark_turn(self, session: Session, index: int, success: bool) -> LearnReport:
        """The user's verdict on turn `index` (its user message's index) of `session`;
        it replaces the inferred outcome, and what the turn counted for is recounted."""
        turn = next((t for t in session_turns(session) if t.index == index), None)
        if turn is None:
            raise LearnedSkillNotFound(f"session {session.name} has no turn at message {index}")
        with self._locked() as state:
            state["verdicts"][turn.key] = success
            return self._observe(state, turn)

    def _observe(self, state: dict[str, Any], turn: AgentTurn) -> LearnReport:
        report = LearnReport()
        if not turn.finished:
            return report  # still running: judged once it has ended
        verdict = state["verdicts"].get(turn.key)
        success = turn.success if verdict is None else bool(verdict)
        seen = state["seen"].get(turn.key)
        if seen is not None:
            if seen.get("success") == success:
                return report
            self._undo(state, turn, seen)
        self._credit(turn, success, report)
        state["seen"][turn.key] = {
            "success": success,
            "hits": list(report.hits),
            "failures": list(report.failures),
        }
        key = ">".join(turn.signature)
        if success and len(turn.signature) >= self.min_calls and not self._known(turn.signature):
            pending = [o for o in state["pending"].get(key, []) if o["key"] != turn.key]
            calls = [{"name": s.name, "arguments": s.arguments} for s in turn.steps]
            pending.append({"key": turn.key, "task": turn.task, "calls": calls})
            state["pending"][key] = pending[-MAX_PENDING:]
            if len(pending) >= self.min_successes:
                report.crystallised.append(self._crystallise(turn.signature, pending))
                del state["pending"][key]
        return report

    def _credit(self, turn: AgentTurn, success: bool, report: LearnReport) -> None:
        """Count the turn for each learned skill the agent offered it; demote a skill
        that now fails by the rule."""
        for skill in self.offered(turn.task):
            if skill.created and turn.ts and turn.ts < skill.created:
                continue  # learned after this turn: it was not offered then
            if success and skill.signature == turn.signature:
                _rewrite(skill.path, hits=skill.hits + 1)
                report.hits.append(skill.name)
            elif not success:
                _rewrite(skill.path, failures=skill.failures + 1)
                report.failures.append(skill.name)
                if self._should_demote(skill.hits, skill.failures + 1):
                    self._demote(skill)
                    report.demoted.append(skill.name)

    def _undo(self, state: dict[str, Any], turn: AgentTurn, seen: dict[str, Any]) -> None:
        """Take back what a turn counted for before its outcome changed."""
        key = ">".join(turn.signature)
        if key in state["pending"]:
            state["pending"][key] = [o for o in state["pending"][key] if o["key"] != turn.key]
        for skill in self.skills():
            if skill.name in seen.get("hits", []):
                _rewrite(skill.path, hits=max(0, skill.hits - 1))
            if skill.name in seen.get("failures", []):
                _rewrite(skill.path, failures=max(0, skill.failures - 1))

    def _known(self, signature: tuple[str, ...]) -> bool:
        """Whether a learned skill (active or demoted) has this signature already."""
        return any(skill.signature == signature for skill in self.skills())

    def _crystallise(self, signature: tuple[str, ...], pending: list[dict[str, Any]]) -> str:
        occurrences = [_Occurrence(o["key"], o["task"], o["calls"]) for o in pending]
        base = _skill_name(occurrences, signature)
        taken = {s.name for s in load_skills(self.root)} | {s.name for s in self.skills()}
        name, n = base, 1
        while name in taken or (self.root / name).exists() or (self.demoted_dir / name).exists():
            n += 1
            name = f"{base}-{n}"
        text, _ = _render(name, signature, occurrences, now_ts())
        folder = paths.ensure(self.root / name)
        write_atomic(folder / SKILL_FILE, text, mode=0o644)
        log.info("learned skill %s from %s", name, ", ".join(o.key for o in occurrences))
        return name

    # -- demoting, restoring, forgetting ---------------------------------------------

    def _should_demote(self, hits: int, failures: int) -> bool:
        return failures >= self.demote_failures and failures > hits

    def _demote(self, skill: LearnedSkill) -> LearnedSkill:
        folder = skill.path.parent
        if skill.status != "demoted":
            target = paths.ensure(self.demoted_dir) / folder.name
            if target.exists():
                shutil.rmtree(target)
            folder.rename(target)
            folder = target
        _rewrite(folder / SKILL_FILE, status="demoted", demoted=now_ts())
        return _read_learned(folder / SKILL_FILE) or skill

    def demote(self, name: str) -> LearnedSkill:
        """Stop offering a learned skill (it is kept, and can be restored)."""
        with self._locked():
            return self._demote(self.get(name))

    def restore(self, name: str) -> LearnedSkill:
        """Offer a demoted skill again, its failures counted from zero."""
        with self._locked():
            skill = self.get(name)
            folder = skill.path.parent
            if skill.status == "demoted":
                target = self.root / folder.name
                if target.exists():
                    raise UsageError(
                        f"cannot restore {skill.name!r}: {target} is taken by another skill"
                    )
                folder.rename(target)
                folder = target
            _rewrite(folder / SKILL_FILE, status="active", failures=0)
            return _read_learned(folder / SKILL_FILE) or skill

    def forget(self, names: Sequence[str] | None = None) -> list[str]:
        """Remove the learned skills named (every one when `names` is None); returns
        the names removed. A name that is not a learned skill is an error, and then
        nothing is removed. New successes may teach a forgotten skill again."""
        with self._locked() as state:
            chosen = self.skills() if names is None else [self.get(n) for n in names]
            for skill in chosen:
                shutil.rmtree(skill.path.parent)
                state["pending"].pop(">".join(skill.signature), None)
            return [skill.name for skill in chosen]

    # -- state -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The learning state, read and written back under a lock held across processes."""
        folder = paths.ensure(self.state_dir)
        with open(folder / "lock", "a+b") as fh:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                state = self._load()
                yield state
                seen = state["seen"]
                if len(seen) > MAX_SEEN:
                    state["seen"] = dict(list(seen.items())[-MAX_SEEN:])
                text = json.dumps(state, ensure_ascii=False, default=str)
                write_atomic(folder / "state.json", text, mode=0o600)
            finally:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        empty: dict[str, Any] = {"version": 1, "pending": {}, "seen": {}, "verdicts": {}}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as exc:
            # What was pending is lost, not what was learned: the skills are their files.
            log.warning("learning state %s unreadable, starting afresh: %s", path, exc)
            return empty
        if not isinstance(state, dict):
            return empty
        for key in ("pending", "seen", "verdicts"):
            if not isinstance(state.get(key), dict):
                state[key] = {}
        return state


def list_learned_skills(root: Path | None = None) -> list[LearnedSkill]:
    """Every learned skill (active and demoted): for `nanobot learned`."""
    return SkillLearner(root).skills()


def forget_learned_skills(
    names: Sequence[str] | None = None, root: Path | None = None
) -> list[str]:
    """Remove the learned skills named (all when None): for `nanobot learned forget`."""
    return SkillLearner(root).forget(names)


__all__ = [
    "DEFAULT_MIN_SUCCESSES",
    "AgentTurn",
    "LearnReport",
    "LearnedSkill",
    "LearnedSkillError",
    "LearnedSkillNotFound",
    "SkillLearner",
    "ToolStep",
    "forget_learned_skills",
    "list_learned_skills",
    "session_turns",
]
