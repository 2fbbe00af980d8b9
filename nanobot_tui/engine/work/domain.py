"""The code domain: a recipe applied to a codebase, one voted step per function.

Built from JSON-safe params (kept in a durable run's spec, so a resumed run rebuilds the
same steps): "root" (a snapshot folder the files are read from), "recipe", "instruction",
"files" (a subset of the codebase's Python files, or None for all) and "simulated" (the
simulated recipes' right edits count as the truth). The steps are every function the
recipe wants, file by file in path order and in file order within a file, and do not
depend on each other, like word case's. A step's input is its `FunctionSite`; its answer
the function's new span (source text at the original indentation). Answers are parsed
against their own function and red-flagged by the recipe (ParseError, which the voting
engine counts as a red flag) and voted on `recipes.canonical`.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import threading
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.voting.samples import DEFAULT_TOKEN_CAP
from nanobot_tui.engine.work.codebase import FunctionSite, function_sites, python_files
from nanobot_tui.engine.work.recipes import (
    Recipe,
    RecipeError,
    canonical,
    code_block,
    get_recipe,
    read_function,
)

__all__ = ["CodeDomain", "Problem", "build"]

_FIELDS = {f.name: f.type for f in dataclasses.fields(FunctionSite)}
_MEMO_MAX = 20_000


@dataclasses.dataclass(frozen=True)
class Problem:
    """A file the run cannot edit, and why (it does not parse, is not UTF-8, ...)."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class _Loaded:
    sites: tuple[FunctionSite, ...]
    groups: tuple[tuple[str, int], ...]
    problems: tuple[Problem, ...]


# A domain is built several times per run (the runner, the writer, the reader, each
# resume): the decomposition of an unchanged snapshot is kept per process.
_CACHE: dict[tuple[Any, ...], _Loaded] = {}
_CACHE_LOCK = threading.Lock()


def _subset(every: list[str], files: Any) -> list[str]:
    """`every` Python file of the codebase, or the requested subset of them (in path
    order)."""
    if files is None:
        return every
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise RecipeError("files must be a list of paths relative to the codebase")
    known = set(every)
    wanted = {f.replace(os.sep, "/").removeprefix("./") for f in files}
    unknown = sorted(wanted - known)
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise RecipeError(f"not a Python file of the codebase: {unknown[0]}{more}")
    return [f for f in every if f in wanted]


def _load(root: Path, recipe: Recipe, files: list[str]) -> _Loaded:
    stats = []
    for rel in files:
        st = (root / rel).stat()
        stats.append((rel, st.st_size, st.st_mtime_ns))
    key = (os.fspath(root.resolve()), recipe.name, tuple(stats))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    sites: list[FunctionSite] = []
    groups: list[tuple[str, int]] = []
    problems: list[Problem] = []
    for rel in files:
        try:
            text = (root / rel).read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            problems.append(Problem(rel, "not UTF-8"))
            continue
        except OSError as exc:
            problems.append(Problem(rel, exc.strerror or type(exc).__name__))
            continue
        found = function_sites(rel, text)
        if not found and _unparsable(text):
            problems.append(Problem(rel, "does not parse"))
            continue
        wanted = [site for site in found if recipe.wants(site)]
        if wanted:
            sites += wanted
            groups.append((rel, len(wanted)))
    loaded = _Loaded(tuple(sites), tuple(groups), tuple(problems))
    with _CACHE_LOCK:
        if len(_CACHE) >= 8:
            _CACHE.clear()
        _CACHE[key] = loaded
    return loaded


def _unparsable(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return True
    return False


class CodeDomain:
    """A recipe over a codebase (see the module note); ValueError (RecipeError, a
    UsageError) for params it cannot use."""

    name = "code"
    # Each function is edited on its own: steps may be voted concurrently, and an
    # undecided one does not stop the run.
    independent_steps = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        root = params.get("root")
        if not isinstance(root, str) or not root:
            raise RecipeError("a code run needs the codebase's folder (root)")
        self.root = Path(root)
        if not self.root.is_dir():
            raise RecipeError(f"not a folder: {root}")
        self.recipe = get_recipe(str(params.get("recipe") or "instruction"))
        self.instruction = str(params.get("instruction") or self.recipe.default_instruction)
        if not self.instruction.strip():
            raise RecipeError(f"the {self.recipe.name} recipe needs an instruction")
        self.simulated = bool(params.get("simulated", False))
        every = python_files(self.root)
        self.python_files = len(every)  # the whole codebase's, whatever the subset
        loaded = _load(self.root, self.recipe, _subset(every, params.get("files")))
        self.sites = loaded.sites
        self.problems = loaded.problems
        self._groups = list(loaded.groups)
        self._lines: dict[str, str] = {}  # canonical key -> its first changed line
        self._truths: dict[FunctionSite, str] = {}

    # --- steps ---------------------------------------------------------------------------

    def total_steps(self) -> int:
        return len(self.sites)

    def groups(self) -> list[tuple[str, int]]:
        """(file path, number of its steps), in step order: the run tree's file nodes."""
        return list(self._groups)

    def token_cap(self) -> int:
        """A sampler token cap that fits an edit of the longest function, never under the
        voting default; each step's own cap is `step_token_cap`."""
        longest = max((len(site.source) for site in self.sites), default=0)
        return max(DEFAULT_TOKEN_CAP, _cap(longest))

    def step_token_cap(self, step: Step) -> int:
        """The token cap of one function's edit: a reply longer than its function can
        grow under the recipe is cut there, not at the longest function's cap."""
        return _cap(len(self._site(step).source))

    def steps(self) -> Iterator[Step]:
        for i, site in enumerate(self.sites):
            yield Step(i, site)

    def step_at(self, index: int) -> Step:
        if not 0 <= index < len(self.sites):
            raise ValueError(f"step must be in 0..{len(self.sites) - 1}, got {index}")
        return Step(index, self.sites[index])

    def random_step(self, rng: Any) -> Step:
        """A random function of the codebase; rng is a random.Random or a numpy
        Generator."""
        n = len(self.sites)
        if not n:
            raise ValueError("the recipe wants no function of this codebase")
        i = rng.randrange(n) if hasattr(rng, "randrange") else int(rng.integers(n))
        return self.step_at(i)

    def next_step(self, step: Step, answer: Any) -> Step | None:
        """The next function, whatever the answer was; None after the last."""
        i = step.index + 1
        return Step(i, self.sites[i]) if i < len(self.sites) else None

    def is_solved(self, step: Step | None, last_answer: Any) -> bool:
        return step is None and last_answer is not None

    # --- prompts and parsing ---------------------------------------------------------------

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        return self.recipe.messages(step.input, self.instruction, paraphrase)

    def parse_strict(self, text: str, step: Step | None = None) -> str:
        """The edited function, parsed by the recipe against the step's own function
        and red-flagged by it: any reason is a ParseError (never repaired)."""
        site = self._site(step)
        new = self.recipe.parse(text, site)
        flag = self.recipe.red_flag(site, new)
        if flag is not None:
            raise ParseError(flag)
        self._note(site, new)
        return new

    def parse_lenient(self, text: str, step: Step | None = None) -> str:
        """What the model meant: the function in any code fence (or the bare reply),
        without the red flags (calibration scores it against the truth)."""
        site = self._site(step)
        new = read_function(code_block(text, strict=False), site)
        self._note(site, new)
        return new

    def _site(self, step: Step | None) -> FunctionSite:
        if step is None or not isinstance(step.input, FunctionSite):
            raise ParseError("a code answer is read against its own function's step")
        return step.input

    def key(self, answer: str) -> Hashable:
        return canonical(answer)

    def describe(self, key: Hashable) -> str:
        """The edit's first changed line (when this process has seen it against its
        function) and a short hash of the key, so different edits never read alike."""
        text = str(key)
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        if text.startswith("unparsable:"):
            return f"does not parse #{digest}"
        line = self._lines.get(text)
        return f"{line} #{digest}" if line else f"edit #{digest}"

    def _note(self, site: FunctionSite, answer: str) -> None:
        """Remember the answer's first changed line for `describe`."""
        key = canonical(answer)
        if key in self._lines:
            return
        if len(self._lines) >= _MEMO_MAX:
            self._lines.clear()
        self._lines[key] = _first_change(site, answer)

    # --- truth ---------------------------------------------------------------------------

    def truth(self, step: Step) -> str:
        """The reference edit; without a reference the simulated right edit when the run
        is simulated, else ValueError (no truth: the runner counts the step unknown)."""
        site: FunctionSite = step.input
        known = self._truths.get(site)
        if known is not None:
            return known
        if self.recipe.has_reference:
            answer = self.recipe.reference(site)
            if answer is None:
                raise ValueError(f"{site.path}: {site.qualname}: the reference changes nothing")
        elif self.simulated:
            answer = self.recipe.simulated_right(site)
        else:
            raise ValueError(f"the {self.recipe.name} recipe has no reference edit")
        self._note(site, answer)
        if len(self._truths) >= _MEMO_MAX:
            self._truths.clear()
        self._truths[site] = answer  # the sampler, the runner and the writer all ask
        return answer

    def wrong_answers(self, step: Step, count: int) -> list[str]:
        site: FunctionSite = step.input
        out = self.recipe.simulated_wrong(site, count)
        for answer in out:
            self._note(site, answer)
        return out

    # --- JSON, for the run store -----------------------------------------------------------

    def dump_step(self, step: Step) -> dict[str, Any]:
        return dataclasses.asdict(step.input)

    def reuse_key(self, step: Step) -> dict[str, Any]:
        """The step's input for a reused result (learning's L0 key): its site without the
        line numbers, so a function that moved in its file is still the same step."""
        site = dataclasses.asdict(step.input)
        del site["start"], site["end"]
        return site

    def load_step(self, index: int, data: Any) -> Step:
        if not isinstance(data, dict) or set(data) != set(_FIELDS):
            raise ParseError(f"a code step is a function site, not {str(data)[:60]!r}")
        for name in ("path", "qualname", "source", "module", "signature"):
            if not isinstance(data[name], str):
                raise ParseError(f"a code step's {name} is not text")
        if not (isinstance(data["start"], int) and isinstance(data["end"], int)):
            raise ParseError("a code step's lines are not integers")
        if data["class_name"] is not None and not isinstance(data["class_name"], str):
            raise ParseError("a code step's class_name is not text")
        return Step(index, FunctionSite(**data))

    def dump_answer(self, answer: str) -> str:
        return answer

    def load_answer(self, data: Any) -> str:
        if not isinstance(data, str):
            raise ParseError(f"a code answer is source text, not {str(data)[:60]!r}")
        return data


def _cap(chars: int) -> int:
    """Tokens for the recipes' character cap on an edit of a `chars`-long function
    (3x the function + 400), at about 3 characters a token (code tokenises densely)."""
    return (3 * chars + 400) // 3 + 1


def _first_change(site: FunctionSite, answer: str) -> str:
    """'L12: <text>' for the answer's first line that differs from the function's (its
    number in the file), shortened; 'same text' when only layout differs."""
    old = [line.strip() for line in site.source.split("\n")]
    new = [line.strip() for line in answer.split("\n")]
    for i, line in enumerate(new):
        if i >= len(old) or line != old[i]:
            shown = line if len(line) <= 60 else line[:57] + "..."
            return f"L{site.start + i}: {shown}"
    return "same text"


def build(params: Mapping[str, Any]) -> CodeDomain:
    """The registry's entry point (imported by name: see voting/domains/registry.py)."""
    return CodeDomain(params)
