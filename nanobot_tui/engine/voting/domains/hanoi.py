"""Towers of Hanoi, MAKER's way: one agent per move, minimal context, state handed on.

State: three pegs (0, 1, 2), each a bottom-to-top tuple of disk numbers (1 = smallest);
all disks start on peg 0 and the goal is all of them on peg 2. A step's input is
(state, previous move or None); its answer is the move [disk, from, to] and the state
after it.

Direction and goal. MAKER's prompt (20 disks) says: if the previous move did not move
disk 1, move disk 1 one peg clockwise 0->1->2->0; otherwise make the only legal move not
involving disk 1. Followed from the start, that puts the tower on peg 2 only for an EVEN
number of disks; for an odd number it ends on peg 1. We keep the goal at peg 2 for every
n and pick disk 1's direction by parity, as the standard algorithm does: clockwise
(0->1->2->0) for even n, exactly MAKER's prompt, and counterclockwise (0->2->1->0) for odd
n. The prompt states the direction for the instance, so the agent never needs to know why.

Closed form (no list of 2^n moves in memory): in the optimal solution disk d moves first
at move 2^(d-1) (1-based) and then every 2^d moves, always one peg in its own fixed
direction: the same as disk 1's for odd d, the opposite for even d. So after m moves
disk d has moved floor((m + 2^(d-1)) / 2^d) times and sits on peg (dir_d * moves) mod 3,
and move j moves the disk numbered by j's lowest set bit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Iterator
from itertools import pairwise
from typing import Any, NamedTuple, cast

from nanobot_tui.engine.voting.domains import ParseError, Step

Peg = tuple[int, ...]
State = tuple[Peg, Peg, Peg]
Move = tuple[int, int, int]  # (disk, from peg, to peg)


class HanoiAnswer(NamedTuple):
    move: Move
    next_state: State


def state_text(state: State) -> str:
    return "[" + ", ".join("[" + ", ".join(map(str, peg)) + "]" for peg in state) + "]"


def _move_text(move: Move) -> str:
    return f"[{move[0]}, {move[1]}, {move[2]}]"


def format_answer(answer: HanoiAnswer) -> str:
    """The exact two lines the strict parser accepts."""
    return f"move = {_move_text(answer.move)}\nnext_state = {state_text(answer.next_state)}"


def apply_move(state: State, move: Move) -> State:
    """The state after moving `move`'s disk from its peg to another; ValueError if the
    move is illegal (wrong disk on top, empty peg, larger on smaller, same peg)."""
    disk, src, dst = move
    if not (0 <= src <= 2 and 0 <= dst <= 2) or src == dst:
        raise ValueError(f"move {_move_text(move)}: pegs must be two different pegs in 0..2")
    if not state[src] or state[src][-1] != disk:
        raise ValueError(f"move {_move_text(move)}: disk {disk} is not on top of peg {src}")
    if state[dst] and state[dst][-1] < disk:
        raise ValueError(f"move {_move_text(move)}: disk {disk} onto smaller disk")
    pegs = list(state)
    pegs[src] = state[src][:-1]
    pegs[dst] = (*state[dst], disk)
    return (pegs[0], pegs[1], pegs[2])


# --- prompts -------------------------------------------------------------------------

_SYSTEM = [
    (
        "You solve one step of a Towers of Hanoi puzzle. There are {n} disks numbered 1 "
        "(smallest) to {n} (largest) on three pegs numbered 0, 1 and 2. Each peg is a list "
        "of disks from bottom to top. Rules: move one disk at a time, only the top disk "
        "of a peg, and never put a larger disk on a smaller one. The goal is all disks on "
        "peg 2.\n"
        "Strategy, for every move: if the previous move did not move disk 1 (or there is "
        "no previous move), move disk 1 one peg {direction}. If the previous move did move "
        "disk 1, make the only legal move that does not involve disk 1.\n"
        "Answer with exactly two lines and nothing else:\n"
        "move = [disk, from, to]\n"
        "next_state = [[...], [...], [...]]\n"
        "Example ({ex_n} disks, previous move none, state {ex_state}):\n"
        "move = {ex_move}\n"
        "next_state = {ex_next}"
    ),
    (
        "Towers of Hanoi, a single move. Disks 1 (smallest) to {n} (largest) sit on pegs 0, "
        "1, 2; every peg is written bottom first. Only a peg's top disk may move, one at a "
        "time, and no disk may rest on a smaller one. Target: every disk on peg 2.\n"
        "How to choose the move: when the last move was not a move of disk 1, or there was "
        "no last move, disk 1 goes one peg {direction}. When the last move moved disk 1, "
        "make the single legal move that leaves disk 1 where it is.\n"
        "Reply with these two lines only:\n"
        "move = [disk, from, to]\n"
        "next_state = [[...], [...], [...]]\n"
        "For example, with {ex_n} disks, no last move and state {ex_state}:\n"
        "move = {ex_move}\n"
        "next_state = {ex_next}"
    ),
    (
        "One step of Towers of Hanoi with {n} disks (1 is the smallest) on pegs 0, 1 and 2, "
        "each peg listed from bottom to top. Legal moves take the top disk of one peg and "
        "put it on an empty peg or on a larger disk. The puzzle ends with all disks on "
        "peg 2.\n"
        "Procedure: unless the previous move moved disk 1, move disk 1 one peg "
        "{direction}; right after a move of disk 1, make the one legal move that does not "
        "touch disk 1.\n"
        "Output format, exactly two lines:\n"
        "move = [disk, from, to]\n"
        "next_state = [[...], [...], [...]]\n"
        "Example: {ex_n} disks, no previous move, state {ex_state} gives\n"
        "move = {ex_move}\n"
        "next_state = {ex_next}"
    ),
]

_USER = [
    "Previous move: {previous}\nCurrent state: {state}\nWhat is the next move and the state "
    "after it?",
    "Last move: {previous}\nPegs now: {state}\nGive the next move and the resulting state.",
    "The previous move was {previous}.\nThe current state is {state}.\nAnswer with the move "
    "and the next state.",
]

_CLOCKWISE = "clockwise (0 -> 1 -> 2 -> 0)"
_COUNTER = "counterclockwise (0 -> 2 -> 1 -> 0)"

# --- parsers -------------------------------------------------------------------------

_STRICT_MOVE = re.compile(r"move\s*=\s*(\[.*\])")
_STRICT_STATE = re.compile(r"next_state\s*=\s*(\[.*\])")
_INT = r"\s*(-?\d+)\s*"
_TRIPLE = rf"[\[\(]{_INT},{_INT},{_INT}[\]\)]"
_PEG = r"[\[\(]\s*(?:-?\d+\s*(?:,\s*-?\d+\s*)*,?\s*)?[\]\)]"
_NESTED = rf"[\[\(]\s*{_PEG}\s*,\s*{_PEG}\s*,\s*{_PEG}\s*,?\s*[\]\)]"
_LENIENT_MOVE = re.compile(rf"\bmove\b[^\[\(\n]{{0,20}}?{_TRIPLE}", re.IGNORECASE)
_LENIENT_STATE = re.compile(
    rf"next[\s_-]*state\b[^\[\(\n]{{0,20}}?({_NESTED})", re.IGNORECASE | re.DOTALL
)
_PROSE_MOVE = re.compile(
    r"\bdisk\s*(\d+)\s*from\s*(?:peg\s*)?(\d+)\s*to\s*(?:peg\s*)?(\d+)", re.IGNORECASE
)
_BARE_TRIPLE = re.compile(_TRIPLE)
_RESTATED = re.compile(r"(previous|last|prior)[\s_-]*$", re.IGNORECASE)
_BARE_NESTED = re.compile(_NESTED, re.DOTALL)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _strict_list(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ParseError(f"{what} is not a list of integers: {text.strip()[:60]!r}") from None


def _check_move(raw: Any) -> Move:
    if not isinstance(raw, list) or len(raw) != 3:
        raise ParseError(f"move must be [disk, from, to], got {json.dumps(raw)[:60]}")
    if not all(_is_int(x) for x in raw):
        raise ParseError(f"move holds a non-integer: {json.dumps(raw)[:60]}")
    if not (0 <= raw[1] <= 2 and 0 <= raw[2] <= 2):
        raise ParseError(f"move pegs must be 0, 1 or 2: {json.dumps(raw)}")
    return (raw[0], raw[1], raw[2])


def _check_state(raw: Any) -> State:
    if not isinstance(raw, list):
        raise ParseError("next_state must be a list of 3 pegs")
    if len(raw) != 3:
        raise ParseError(f"next_state has {len(raw)} pegs, expected 3")
    for peg in raw:
        if not isinstance(peg, list):
            raise ParseError(f"next_state peg is not a list: {json.dumps(peg)[:40]}")
        for x in peg:
            if not _is_int(x):
                raise ParseError(f"next_state holds a non-integer: {json.dumps(x)[:40]}")
    return (tuple(raw[0]), tuple(raw[1]), tuple(raw[2]))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"-?\d+", text))


def _nested_from_text(text: str) -> State:
    pegs = re.findall(_PEG, text[1:-1])
    if len(pegs) != 3:
        raise ParseError(f"next_state has {len(pegs)} pegs, expected 3")
    return (_ints(pegs[0]), _ints(pegs[1]), _ints(pegs[2]))


class Hanoi:
    """Towers of Hanoi with `disks` disks, from peg 0 to peg 2 (see the module note)."""

    independent_steps = False  # each step is handed the state the previous answer left

    def __init__(self, disks: int) -> None:
        if not 1 <= disks <= 64:
            raise ValueError(f"disks must be in 1..64, got {disks}")
        self.disks = disks
        self.name = f"hanoi-{disks}"
        # Disk 1 moves +1 (clockwise) for even n, -1 for odd n; disk d alternates.
        self.direction = 1 if disks % 2 == 0 else -1
        self._dirs = [0] + [self.direction if d % 2 else -self.direction for d in range(1, 65)]
        self._total = (1 << disks) - 1
        self.goal: State = ((), (), tuple(range(disks, 0, -1)))
        self.start: State = (tuple(range(disks, 0, -1)), (), ())
        self._disk_set = list(range(1, disks + 1))
        self._systems = self._system_prompts()
        # One-entry cache: the sampler and the runner both ask for the same step's truth.
        # One tuple, replaced whole, so a reader never pairs a step with another's truth.
        self._cache: tuple[Step | None, HanoiAnswer | None] = (None, None)

    # --- the true solution, in closed form ------------------------------------------

    def total_steps(self) -> int:
        return self._total

    def groups(self) -> list[tuple[str, int]] | None:
        return None  # moves have no groups: the tree is blocks of `fanout` moves

    def state_after(self, m: int) -> State:
        """The state after m moves of the optimal solution, O(disks)."""
        if not 0 <= m <= self._total:
            raise ValueError(f"m must be in 0..{self._total}, got {m}")
        pegs: list[list[int]] = [[], [], []]
        dirs = self._dirs
        for d in range(self.disks, 0, -1):  # largest first: bottom to top
            moves = (m + (1 << (d - 1))) >> d
            pegs[(dirs[d] * moves) % 3].append(d)
        return (tuple(pegs[0]), tuple(pegs[1]), tuple(pegs[2]))

    def move_number(self, j: int) -> Move:
        """The j-th move (1-based) of the optimal solution."""
        if not 1 <= j <= self._total:
            raise ValueError(f"j must be in 1..{self._total}, got {j}")
        d = (j & -j).bit_length()
        moves_before = (j - 1 + (1 << (d - 1))) >> d
        src = (self._dirs[d] * moves_before) % 3
        return (d, src, (src + self._dirs[d]) % 3)

    def step_at(self, m: int) -> Step:
        """Step m (0-based) of the true solution: the state after m moves and move m."""
        if not 0 <= m < self._total:
            raise ValueError(f"step must be in 0..{self._total - 1}, got {m}")
        return Step(m, (self.state_after(m), self.move_number(m) if m else None))

    def steps(self) -> Iterator[Step]:
        state: State = self.start
        previous: Move | None = None
        for m in range(self._total):
            yield Step(m, (state, previous))
            previous = self.move_number(m + 1)
            state = apply_move(state, previous)

    def random_step(self, rng: Any) -> Step:
        """A uniformly random step of the true solution; rng is a random.Random or a
        numpy Generator."""
        if hasattr(rng, "randrange"):
            m = rng.randrange(self._total)
        else:
            m = int(rng.integers(self._total))
        return self.step_at(m)

    # --- prompts and parsing -------------------------------------------------------

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        state, previous = step.input
        i = paraphrase % len(_SYSTEM)
        prev = "none" if previous is None else _move_text(previous)
        if previous is not None and i == 0:
            prev = f"{prev} (disk {previous[0]} from peg {previous[1]} to peg {previous[2]})"
        return [
            {"role": "system", "content": self._systems[i]},
            {"role": "user", "content": _USER[i].format(previous=prev, state=state_text(state))},
        ]

    def _system_prompts(self) -> list[str]:
        # The example's first move must turn the way this instance's disk 1 does, so it
        # comes from a small tower of the same parity (4 or 3 disks).
        ex_n = 4 if self.disks % 2 == 0 else 3
        ex_start: State = (tuple(range(ex_n, 0, -1)), (), ())
        ex_move: Move = (1, 0, 1 if self.direction == 1 else 2)
        fields = {
            "n": self.disks,
            "direction": _CLOCKWISE if self.direction == 1 else _COUNTER,
            "ex_n": ex_n,
            "ex_state": state_text(ex_start),
            "ex_move": _move_text(ex_move),
            "ex_next": state_text(apply_move(ex_start, ex_move)),
        }
        return [text.format(**fields) for text in _SYSTEM]

    def parse_strict(self, text: str, step: Step | None = None) -> HanoiAnswer:
        """Exactly `move = [disk, from, to]` then `next_state = [[...], [...], [...]]`,
        whitespace aside; anything else is a ParseError that says what was wrong."""
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if len(lines) != 2:
            raise ParseError(f"expected exactly 2 lines (move, next_state), got {len(lines)}")
        m = _STRICT_MOVE.fullmatch(lines[0])
        if m is None:
            raise ParseError(f"line 1 is not 'move = [disk, from, to]': {lines[0][:60]!r}")
        s = _STRICT_STATE.fullmatch(lines[1])
        if s is None:
            raise ParseError(f"line 2 is not 'next_state = [[...], [...], [...]]': "
                             f"{lines[1][:60]!r}")  # fmt: skip
        move = _check_move(_strict_list(m.group(1), "move"))
        state = _check_state(_strict_list(s.group(1), "next_state"))
        return HanoiAnswer(move, state)

    def parse_lenient(self, text: str, step: Step | None = None) -> HanoiAnswer:
        """The move and next state found anywhere in the text: labelled `move = [..]`,
        `move: (..)`, 'disk 1 from peg 0 to peg 2', code fences, prose around them. The
        last labelled occurrence wins (models restate the previous move first)."""
        states = list(_LENIENT_STATE.finditer(text))
        if states:
            state_match = states[-1]
            state = _nested_from_text(state_match.group(1))
        else:
            bare = list(_BARE_NESTED.finditer(text))
            if not bare:
                raise ParseError("no next_state [[...], [...], [...]] found")
            state_match = bare[-1]
            state = _nested_from_text(state_match.group(0))
        move: Move | None = None
        # "previous move = [..]" restates the input; it is not the answer.
        moves = [
            m
            for m in _LENIENT_MOVE.finditer(text)
            if not _RESTATED.search(text[max(0, m.start() - 12) : m.start()])
        ]
        if moves:
            g = moves[-1].groups()
            move = (int(g[0]), int(g[1]), int(g[2]))
        else:
            prose = list(_PROSE_MOVE.finditer(text))
            if prose:
                g = prose[-1].groups()
                move = (int(g[0]), int(g[1]), int(g[2]))
            else:
                # A bare [a, b, c] outside the state's brackets.
                s0, s1 = state_match.span()
                for t in _BARE_TRIPLE.finditer(text):
                    if t.end() <= s0 or t.start() >= s1:
                        move = (int(t.group(1)), int(t.group(2)), int(t.group(3)))
        if move is None:
            raise ParseError("no move [disk, from, to] found")
        return HanoiAnswer(move, state)

    def key(self, answer: HanoiAnswer) -> Hashable:
        return (answer[0], answer[1])

    def describe(self, key: Hashable) -> str:
        """A short display form of a voted key, for the vote counter pane."""
        move, state = cast(tuple[Move, State], key)
        return f"{_move_text(move)} -> {state_text(state)}"

    # --- truth and the simulation's wrong answers ----------------------------------

    def truth(self, step: Step) -> HanoiAnswer:
        """The correct answer by the procedure, from the step's own state and previous
        move (so it also judges a step reached from a wrong earlier answer). ValueError
        when the procedure has no legal move from that state."""
        cached_step, cached = self._cache
        if step is cached_step and cached is not None:
            return cached
        state, previous = step.input
        if previous is None or previous[0] != 1:
            move = (1, *self._disk1_step(state, self.direction))
        else:
            move = self._other_move(state)
        answer = HanoiAnswer(move, apply_move(state, move))
        self._cache = (step, answer)
        return answer

    def _other_move(self, state: State) -> Move:
        """The only legal move that does not involve disk 1."""
        pegs = [i for i in range(3) if not (state[i] and state[i][-1] == 1)]
        if len(pegs) != 2:
            raise ValueError("disk 1 is not on top of any peg")
        a, b = pegs
        ta = state[a][-1] if state[a] else None
        tb = state[b][-1] if state[b] else None
        if ta is not None and (tb is None or ta < tb):
            return (ta, a, b)
        if tb is not None:
            return (tb, b, a)
        raise ValueError("no legal move that does not involve disk 1")

    def wrong_answers(self, step: Step, count: int) -> list[HanoiAnswer]:
        """Distinct plausible wrong answers, most plausible first: disk 1 the wrong way,
        the other legal move, the right move with a wrong next state (unchanged, disk
        dropped on the wrong peg), the right state with a garbled move, then any other
        disk/peg combination with the true next state."""
        state, _ = step.input
        true = self.truth(step)
        disk, src, dst = true.move
        other = 3 - src - dst
        out: list[HanoiAnswer] = []
        seen = {self.key(true)}

        def add(answer: HanoiAnswer) -> bool:
            k = self.key(answer)
            if k not in seen:
                seen.add(k)
                out.append(answer)
            return len(out) >= count

        def legal(move: Move) -> HanoiAnswer | None:
            try:
                return HanoiAnswer(move, apply_move(state, move))
            except ValueError:
                return None

        if count <= 0:
            return out
        candidates: list[HanoiAnswer | None] = [legal((disk, src, other))]  # wrong peg
        if disk == 1:
            candidates.append(self._other_legal(state))  # the other kind of move
        else:  # disk 1 moved although the previous move was disk 1's
            candidates.append(legal((1, *self._disk1_step(state, self.direction))))
            candidates.append(legal((1, *self._disk1_step(state, -self.direction))))
        candidates += [
            HanoiAnswer(true.move, state),  # forgot to apply the move
            HanoiAnswer(true.move, self._misplaced(state, true.move, other)),
            HanoiAnswer((disk, dst, src), true.next_state),  # from/to swapped
        ]
        for c in candidates:
            if c is not None and add(c):
                return out
        for d in range(1, self.disks + 1):
            for a in range(3):
                for b in range(3):
                    if a != b and add(HanoiAnswer((d, a, b), true.next_state)):
                        return out
        # Only reached for tiny puzzles asked for many wrongs: wrong disk numbers.
        d = self.disks
        while True:
            d += 1
            if add(HanoiAnswer((d, src, dst), true.next_state)):
                return out

    @staticmethod
    def _disk1_step(state: State, direction: int) -> tuple[int, int]:
        """Disk 1's peg and the peg one step in `direction`."""
        for src in (0, 1, 2):
            peg = state[src]
            if peg and peg[-1] == 1:
                return src, (src + direction) % 3
        raise ValueError("disk 1 is not on top of any peg")

    def _other_legal(self, state: State) -> HanoiAnswer | None:
        try:
            move = self._other_move(state)
        except ValueError:
            return None
        return HanoiAnswer(move, apply_move(state, move))

    @staticmethod
    def _misplaced(state: State, move: Move, wrong_dst: int) -> State:
        """The right move written down, but the disk put on the third peg."""
        disk, src, _ = move
        pegs = list(state)
        pegs[src] = state[src][:-1]
        pegs[wrong_dst] = (*state[wrong_dst], disk)
        return (pegs[0], pegs[1], pegs[2])

    # --- handing on ------------------------------------------------------------------

    def check_state(self, state: State) -> None:
        """ValueError naming what is wrong unless `state` holds disks 1..n once each,
        larger under smaller on every peg."""
        if len(state) != 3:
            raise ValueError(f"state has {len(state)} pegs, expected 3")
        disks = sorted(d for peg in state for d in peg)
        if disks != self._disk_set:
            raise ValueError(f"state does not hold disks 1..{self.disks} once each")
        for i, peg in enumerate(state):
            for lower, upper in pairwise(peg):
                if upper >= lower:
                    raise ValueError(f"peg {i}: disk {upper} on top of disk {lower}")

    def next_step(self, step: Step, answer: HanoiAnswer) -> Step | None:
        """The step after `step`, built from the ANSWER's next state and move (the state
        is handed on, not recomputed); None after the last move. ValueError if the
        answer's state is not a valid Hanoi state."""
        if step.index + 1 >= self._total:
            return None
        if answer is not self._cache[1]:  # the cached truth is valid by construction
            self.check_state(answer.next_state)
        return Step(step.index + 1, (answer.next_state, answer.move))

    def is_solved(self, step: Step | None, last_answer: HanoiAnswer | None) -> bool:
        """All disks on peg 2 after the last step."""
        return step is None and last_answer is not None and last_answer.next_state == self.goal

    # --- JSON, for the run store ----------------------------------------------------------

    def dump_step(self, step: Step) -> dict[str, Any]:
        """A step's input as JSON-safe data: {"state": [[...], [...], [...]],
        "previous": [disk, from, to] or null}."""
        state, previous = step.input
        return {
            "state": [list(peg) for peg in state],
            "previous": None if previous is None else list(previous),
        }

    def load_step(self, index: int, data: Any) -> Step:
        """The step `dump_step` wrote; ParseError if the data is not a step's input."""
        if not isinstance(data, dict) or "state" not in data:
            raise ParseError("a Hanoi step is {'state': [[...], [...], [...]], 'previous': ...}")
        state = _check_state(data["state"])
        previous = data.get("previous")
        move = None if previous is None else _check_move(previous)
        return Step(index, (state, move))

    def dump_answer(self, answer: HanoiAnswer) -> dict[str, Any]:
        """{"move": [disk, from, to], "next_state": [[...], [...], [...]]}."""
        return {
            "move": list(answer.move),
            "next_state": [list(peg) for peg in answer.next_state],
        }

    def load_answer(self, data: Any) -> HanoiAnswer:
        if not isinstance(data, dict) or "move" not in data or "next_state" not in data:
            raise ParseError("a Hanoi answer is {'move': [...], 'next_state': [...]}")
        return HanoiAnswer(_check_move(data["move"]), _check_state(data["next_state"]))
