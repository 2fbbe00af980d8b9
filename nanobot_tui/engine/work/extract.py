"""The extract recipe: read a volume chunk by chunk, list what an instruction asks for.

Maximal decomposition for reading: every chunk of a volume (at most `chunk_lines` lines
of ONE file) is one independent step. Its micro-agent sees the instruction and the
chunk's lines, numbered as in the file, and answers a JSON list of
``{"item": str, "line": int}``, or ``[]``. Answers are parsed strictly (one JSON list,
fenced or not, every line inside the chunk, at most MAX_ITEMS items; anything else is a
red flag, never repaired) and voted on their canonical set: the pairs (normalised item
text, line), so two answers that list the same items in another order or spelling of
spaces and case vote together.

Parents merge their children's lists (`merge`): a file's node the lists of its chunks,
the root the lists of its files. Items with the same normalised text become one item
that keeps every file:line citation, so the root's list answers the instruction for the
whole volume with a citation for each finding (`extract_report`, `run_report`).

The chunk text is read from the volume when a prompt is built, never stored in a step:
a step is (volume, path, first line, last line). Planted items (params["truth"]) give
the steps a truth, for the simulated sampler, tests and benchmarks; without them a step
has no known truth (ValueError, as the voting runner expects).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nanobot_tui.engine.context.volume import Volume
from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.errors import NanobotError, UsageError

__all__ = [
    "DEFAULT_CHUNK_LINES",
    "MAX_ITEMS",
    "Chunk",
    "ExtractDomain",
    "ExtractParamsError",
    "Item",
    "build",
    "extract_report",
    "label",
    "merge",
    "normalise",
    "run_report",
    "volume_fingerprint",
]

DEFAULT_CHUNK_LINES = 40
MAX_ITEMS = 20  # more items than this in one chunk's answer is a red flag
MAX_ITEM_CHARS = 300  # an item longer than this is a red flag (a pasted chunk, not an item)
MAX_LINE_CHARS = 400  # a longer source line is cut in the prompt (minified code, data)

Found = tuple[str, int]  # one entry of a chunk's answer: (item text, line in the file)
Answer = tuple[Found, ...]  # a chunk's answer, sorted by line then text
Citation = tuple[str, int]  # (file path, line), 1-based


class ExtractParamsError(UsageError, ValueError):
    """Params the extract recipe cannot use (no such volume, bad chunk size); one line."""


@dataclass(frozen=True)
class Chunk:
    """One step's input: lines first..last (1-based, inclusive) of one file of a volume."""

    volume: str
    path: str
    first: int
    last: int


@dataclass(frozen=True)
class Item:
    """One finding: its text (as first written) and every place it was cited."""

    text: str
    citations: tuple[Citation, ...]

    def cited(self) -> str:
        """'text (a.py:3, b.py:40)'."""
        where = ", ".join(f"{path}:{line}" for path, line in self.citations)
        return f"{self.text} ({where})"


def normalise(text: str) -> str:
    """The form items are compared by: case-folded, runs of whitespace made one space,
    surrounding spaces and trailing sentence punctuation dropped (no regex: model text)."""
    return " ".join(text.casefold().split()).rstrip(" .;,:")


# --- prompts ---------------------------------------------------------------------------

_SYSTEM = (
    "You read numbered lines of a file and list every item the instruction asks for. "
    'Reply with only a JSON list like [{"item": "the item", "line": 12}], where line is '
    "the number shown before the line that holds the item. Reply [] when the lines hold "
    "none.",
    "List the items that the instruction asks for, found in the numbered lines below. "
    'Your whole reply is one JSON list of objects {"item": text, "line": number}, the '
    "line number as shown; an empty list [] if there are none.",
    "Extract what the instruction asks for from the given lines. Answer with a single "
    'JSON array, each element {"item": "...", "line": N} with N the number printed at '
    "the start of the line. If nothing matches, answer [].",
)


# Worked examples, as user/assistant turns before the chunk (the same for every step, so
# a server's prompt cache serves them): one with an item, one with none. Their own
# instruction, not the user's, so they show the format without suggesting an answer; a
# model that copies one cites a line outside its chunk, and that is a red flag.
_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    (
        "List every port number the code sets.",
        "File server.py, lines 1-4:\n1: import os\n2: PORT = 8080\n3: def main():\n"
        "4:     serve(PORT)",
        '[{"item": "port 8080", "line": 2}]',
    ),
    (
        "List every port number the code sets.",
        "File util.py, lines 1-3:\n1: def add(a, b):\n2:     return a + b\n3: ",
        "[]",
    ),
)


def _ask(instruction: str, where: str) -> str:
    return f"Instruction: {instruction}\n\n{where}\n\nReply with the JSON list only."


class ExtractDomain:
    """The extract recipe over volume `params["volume"]` as a voting domain.

    params: volume (name), instruction, chunk_lines (default 40; chunks never span two
    files), chunks (optional: indices into the full chunk plan, to run only those),
    truth (optional planted items [{"text", "path", "line"}]), simulated (recorded only),
    volume_fingerprint (optional: `fingerprint` when the run began; a volume whose files
    changed since then is refused, its chunks would have moved).
    """

    independent_steps = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.name = "extract"
        self.volume_name = str(params.get("volume") or "")
        self.instruction = " ".join(str(params.get("instruction") or "").split())
        if not self.volume_name:
            raise ExtractParamsError("extract needs a volume (ingest a folder first)")
        if not self.instruction:
            raise ExtractParamsError("extract needs an instruction: what to list")
        try:
            self.chunk_lines = int(params.get("chunk_lines") or DEFAULT_CHUNK_LINES)
        except (TypeError, ValueError):
            raise ExtractParamsError(f"chunk_lines must be a number: {params!r}") from None
        if self.chunk_lines < 1:
            raise ExtractParamsError(f"chunk_lines must be >= 1, got {self.chunk_lines}")
        try:
            self.volume = Volume.open(self.volume_name)
        except NanobotError as exc:
            raise ExtractParamsError(str(exc)) from None
        self.fingerprint = volume_fingerprint(self.volume)
        pinned = params.get("volume_fingerprint")
        if pinned is not None and pinned != self.fingerprint:
            # Chunks are where lines were: a volume ingested again with other files or
            # text would shift them (and what they say) under a run that resumes.
            raise ExtractParamsError(
                f"volume {self.volume_name!r} changed (ingested again) since this run "
                "began; start a new run"
            )
        plan = plan_chunks(self.volume, self.chunk_lines)
        chosen = params.get("chunks")
        if chosen is not None:
            try:
                plan = [plan[int(i)] for i in chosen]
            except (IndexError, TypeError, ValueError):
                raise ExtractParamsError(f"chunks must be indices in 0..{len(plan) - 1}") from None
        if not plan:
            raise ExtractParamsError(f"volume {self.volume_name!r} has no lines to read")
        self.chunks: list[Chunk] = plan
        self._truth = _planted(params.get("truth"))

    # --- steps -----------------------------------------------------------------------

    def total_steps(self) -> int:
        return len(self.chunks)

    def steps(self) -> Iterator[Step]:
        for i, chunk in enumerate(self.chunks):
            yield Step(i, chunk)

    def step_at(self, index: int) -> Step:
        if not 0 <= index < len(self.chunks):
            raise ValueError(f"step must be in 0..{len(self.chunks) - 1}, got {index}")
        return Step(index, self.chunks[index])

    def random_step(self, rng: Any) -> Step:
        n = len(self.chunks)
        i = rng.randrange(n) if hasattr(rng, "randrange") else int(rng.integers(n))
        return self.step_at(i)

    def groups(self) -> list[tuple[str, int]]:
        """(file path, chunks in it), in step order: the run tree's file level."""
        out: list[tuple[str, int]] = []
        for chunk in self.chunks:
            if out and out[-1][0] == chunk.path:
                out[-1] = (chunk.path, out[-1][1] + 1)
            else:
                out.append((chunk.path, 1))
        return out

    # --- prompts ---------------------------------------------------------------------

    def chunk_text(self, chunk: Chunk) -> str:
        """The chunk's lines as the model sees them: 'N: text', N the file's line."""
        lines = self.volume.file_lines(chunk.path, chunk.first, chunk.last)
        return "\n".join(f"{ln.fline}: {_cut(ln.text)}" for ln in lines)

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        chunk: Chunk = step.input
        variant = paraphrase % len(_SYSTEM)
        out = [{"role": "system", "content": _SYSTEM[variant]}]
        examples = _EXAMPLES[variant % 2 :] + _EXAMPLES[: variant % 2]  # paraphrases reorder
        for instruction, where, answer in examples:
            out.append({"role": "user", "content": _ask(instruction, where)})
            out.append({"role": "assistant", "content": answer})
        where = f"File {chunk.path}, lines {chunk.first}-{chunk.last}:\n{self.chunk_text(chunk)}"
        out.append({"role": "user", "content": _ask(self.instruction, where)})
        return out

    # --- parsing ---------------------------------------------------------------------

    def parse_strict(self, text: str, step: Step | None = None) -> Answer:
        """Exactly one JSON list (alone, or alone in one ``` fence) of objects with just
        an "item" string and an integer "line" inside the step's chunk (checked when the
        step is given), at most MAX_ITEMS; anything else is a ParseError."""
        body = _unfence(text.strip())
        value = _one_json_value(body)
        if not isinstance(value, list):
            raise ParseError(f"expected a JSON list, got {type(value).__name__}")
        chunk: Chunk | None = step.input if step is not None else None
        return _entries(value, chunk, strict=True)

    def parse_lenient(self, text: str, step: Step | None = None) -> Answer:
        """What the model meant: the first JSON list in the reply, keeping the entries
        that have an item and a line (inside the chunk when the step is given)."""
        start = text.find("[")
        while start >= 0:
            try:
                value, _ = json.JSONDecoder().raw_decode(text, start)
            except json.JSONDecodeError:
                start = text.find("[", start + 1)
                continue
            if isinstance(value, list):
                chunk: Chunk | None = step.input if step is not None else None
                return _entries(value, chunk, strict=False)
            start = text.find("[", start + 1)
        raise ParseError(f"no JSON list found: {text.strip()[:60]!r}")

    def key(self, answer: Answer) -> Hashable:
        return frozenset((normalise(item), line) for item, line in answer)

    def describe(self, key: Hashable) -> str:
        pairs = sorted(key, key=lambda p: (p[1], p[0])) if isinstance(key, frozenset) else []
        if not pairs:
            return "[] nothing"
        text = "; ".join(f"{line}: {item}" for item, line in pairs)
        return text if len(text) <= 80 else text[:79] + "…"

    # --- truth -----------------------------------------------------------------------

    def truth(self, step: Step) -> Answer:
        """The planted items whose line falls in the chunk; ValueError without planted
        items (a real volume's items are not known)."""
        if self._truth is None:
            raise ValueError("extract knows no truth without planted items")
        chunk: Chunk = step.input
        found = [
            (text, line)
            for text, path, line in self._truth
            if path == chunk.path and chunk.first <= line <= chunk.last
        ]
        return tuple(sorted(found, key=lambda f: (f[1], f[0])))

    def wrong_answers(self, step: Step, count: int) -> list[Answer]:
        """Distinct plausible wrong answers: an item missed, an item cited one line off,
        then an item invented (as many as needed)."""
        chunk: Chunk = step.input
        true = self.truth(step)
        seen = {self.key(true)}
        out: list[Answer] = []

        def add(answer: Sequence[Found]) -> bool:
            ordered = tuple(sorted(answer, key=lambda f: (f[1], f[0])))
            k = self.key(ordered)
            if k not in seen:
                seen.add(k)
                out.append(ordered)
            return len(out) >= count

        if count <= 0:
            return out
        for i in range(len(true)):  # missed
            if add(true[:i] + true[i + 1 :]):
                return out
        for i, (item, line) in enumerate(true):  # cited one line off
            other = line + 1 if line < chunk.last else line - 1
            if other >= chunk.first and add((*true[:i], (item, other), *true[i + 1 :])):
                return out
        n = 0
        while True:  # invented
            n += 1
            line = chunk.first + (n - 1) % (chunk.last - chunk.first + 1)
            if add((*true, (f"invented item {n}", line))):
                return out

    # --- handing on -----------------------------------------------------------------

    def next_step(self, step: Step, answer: Any) -> Step | None:
        i = step.index + 1
        return self.step_at(i) if i < len(self.chunks) else None

    def is_solved(self, step: Step | None, last_answer: Any) -> bool:
        return step is None and last_answer is not None

    # --- JSON, for the run store ----------------------------------------------------------

    def dump_step(self, step: Step) -> dict[str, Any]:
        c: Chunk = step.input
        return {"volume": c.volume, "path": c.path, "first": c.first, "last": c.last}

    def load_step(self, index: int, data: Any) -> Step:
        try:
            chunk = Chunk(
                str(data["volume"]), str(data["path"]), int(data["first"]), int(data["last"])
            )
        except (KeyError, TypeError, ValueError):
            raise ParseError(f"an extract step is a chunk, not {str(data)[:60]!r}") from None
        return Step(index, chunk)

    def dump_answer(self, answer: Answer) -> list[dict[str, Any]]:
        return [{"item": item, "line": line} for item, line in answer]

    def load_answer(self, data: Any) -> Answer:
        if not isinstance(data, list):
            raise ParseError(f"an extract answer is a list, not {str(data)[:60]!r}")
        return _entries(data, None, strict=True)


# --- helpers -----------------------------------------------------------------------------


def plan_chunks(volume: Volume, chunk_lines: int) -> list[Chunk]:
    """Every file's lines in chunks of at most `chunk_lines`, never across two files; a
    file's chunks are of even size (41 lines at 40: 21 + 20, not 40 + 1)."""
    out: list[Chunk] = []
    for f in volume.files:
        n = f.n_lines
        if n <= 0:
            continue
        parts = -(-n // chunk_lines)
        size = -(-n // parts)
        for first in range(1, n + 1, size):
            out.append(Chunk(volume.name, f.path, first, min(n, first + size - 1)))
    return out


def volume_fingerprint(volume: Volume) -> str:
    """Identifies a volume's files and text (path, SHA-1 and lines of each file)."""
    h = hashlib.blake2b(digest_size=16)
    for f in volume.files:
        h.update(f"{f.path}\0{f.sha1}\0{f.n_lines}\n".encode())
    return h.hexdigest()


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " …"


def _planted(data: Any) -> list[tuple[str, str, int]] | None:
    if data is None:
        return None
    try:
        return [(str(d["text"]), str(d["path"]), int(d["line"])) for d in data]
    except (KeyError, TypeError, ValueError):
        raise ExtractParamsError('truth must be a list of {"text", "path", "line"}') from None


def _unfence(body: str) -> str:
    """The inside of one ``` fence (```json allowed) that is the whole reply, else the
    reply itself; a reply with more than one fence is refused."""
    if not body.startswith("```"):
        return body
    if body.count("```") != 2 or not body.endswith("```"):
        raise ParseError("expected one fenced JSON list and nothing else")
    inner = body[3:-3]
    head, newline, rest = inner.partition("\n")
    if newline and head.strip().lower() in ("", "json"):
        return rest.strip()
    return inner.strip()


def _one_json_value(body: str) -> Any:
    if not body:
        raise ParseError("empty answer")
    try:
        value, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc.msg} at {exc.pos}: {body[:40]!r}") from None
    if body[end:].strip():
        raise ParseError(f"more than one JSON value (text after the list): {body[end:][:40]!r}")
    return value


def _entries(value: list[Any], chunk: Chunk | None, *, strict: bool) -> Answer:
    """The (item, line) pairs of a parsed list. strict: every entry must be exactly
    {"item": non-empty str, "line": int inside the chunk}; lenient: bad entries dropped."""
    if strict and len(value) > MAX_ITEMS:
        raise ParseError(f"{len(value)} items, more than {MAX_ITEMS}")
    out: list[Found] = []
    for i, entry in enumerate(value):
        try:
            out.append(_entry(entry, chunk, strict))
        except ParseError as exc:
            if strict:
                raise ParseError(f"entry {i + 1}: {exc}") from None
    return tuple(sorted(out, key=lambda f: (f[1], f[0])))


def _entry(entry: Any, chunk: Chunk | None, strict: bool) -> Found:
    if not isinstance(entry, dict):
        raise ParseError(f"not an object: {str(entry)[:40]!r}")
    if strict and set(entry) != {"item", "line"}:
        raise ParseError(f"keys must be item and line, got {sorted(map(str, entry))}")
    item, line = entry.get("item"), entry.get("line")
    if not isinstance(item, str) or not item.strip():
        raise ParseError("item is not a non-empty string")
    if len(item) > MAX_ITEM_CHARS:
        raise ParseError(f"item longer than {MAX_ITEM_CHARS} characters")
    if not strict and isinstance(line, str) and line.strip().isdigit():
        line = int(line)
    if isinstance(line, bool) or not isinstance(line, int):
        raise ParseError(f"line is not an integer: {str(line)[:20]!r}")
    if chunk is not None and not chunk.first <= line <= chunk.last:
        raise ParseError(f"line {line} is outside the chunk ({chunk.first}-{chunk.last})")
    if chunk is None and line < 1:
        raise ParseError(f"line {line} is not a line number")
    return item.strip(), line


# --- merging -------------------------------------------------------------------------------


def merge(children: Sequence[Sequence[Item]]) -> list[Item]:
    """Children's lists as one: items with the same normalised text become one, keeping
    the first one's text and every citation (each once, in the order met); items are
    ordered by their first citation as met (children in order, each list in order)."""
    merged: dict[str, tuple[str, list[Citation]]] = {}
    for child in children:
        for item in child:
            norm = normalise(item.text)
            if norm not in merged:
                merged[norm] = (item.text, [])
            cites = merged[norm][1]
            cites.extend(c for c in item.citations if c not in cites)
    return [Item(text, tuple(cites)) for text, cites in merged.values()]


def chunk_items(chunk: Chunk, answer: Answer) -> list[Item]:
    """A chunk's answer as items, each cited at its file and line, in line order."""
    return merge([[Item(item, ((chunk.path, line),)) for item, line in answer]])


def extract_report(domain: ExtractDomain, answers: Mapping[int, Answer | None]) -> list[Item]:
    """The root's merged list from the chunks' answers {step: answer} (a missing or None
    answer: the chunk is not done, or undecided): chunks merge into their file, files
    into the root, as the run tree does."""
    files: list[list[Item]] = []
    current: list[list[Item]] = []
    path: str | None = None
    for step in domain.steps():
        chunk: Chunk = step.input
        if chunk.path != path and current:
            files.append(merge(current))
            current = []
        path = chunk.path
        answer = answers.get(step.index)
        if answer is not None:
            current.append(chunk_items(chunk, answer))
    if current:
        files.append(merge(current))
    return merge(files)


def run_report(run_id: str) -> list[Item]:
    """`extract_report` of a durable extract run, read from its store (steps decided so
    far; a simulated run's right steps hold the truth)."""
    from nanobot_tui.engine.runs.store import RunStore

    with RunStore.open(run_id, readonly=True) as store:
        domain = store.domain
        if not isinstance(domain, ExtractDomain):
            raise ExtractParamsError(f"run {run_id} is not an extract run")
        return extract_report(domain, dict(store.answers()))


# --- the registry's entry ------------------------------------------------------------------


def build(params: Mapping[str, Any]) -> ExtractDomain:
    """The domain for a run's params (the registry's build)."""
    return ExtractDomain(params)


def label(params: Mapping[str, Any]) -> str:
    """The readable part of a run id: 'extract-<volume>'."""
    return f"extract-{params.get('volume') or 'volume'}"
