"""Recipes: what one micro-step does to one function, and what it may not do.

A recipe decides which functions need it (`wants`), asks for the edit with minimal
context (the strategy, the function with its signature, class and module, one
instruction: `messages`), reads the reply strictly (`parse`: one ```python block holding
exactly the same function) and red-flags, never repairs, an edit that goes beyond what
it may change (`red_flag`). A recipe with a reference knows the right edit from a
deterministic tool (`reference`); the others have a simulated right edit (and every
recipe simulated wrong ones) for the simulated sampler, named as simulated everywhere.

Shipped: `fstrings` (reference: flynt), `docstrings`, `error-handling`, `instruction`.
"""

from __future__ import annotations

import ast
import logging
from collections import Counter
from functools import lru_cache

from nanobot_tui.engine.voting.domains import ParseError
from nanobot_tui.engine.work import pysource
from nanobot_tui.engine.work.codebase import FunctionSite
from nanobot_tui.engine.work.formats import same_but_formatting
from nanobot_tui.engine.work.pysource import Def, canonical, dump
from nanobot_tui.errors import UsageError

__all__ = ["RECIPES", "Recipe", "RecipeError", "canonical", "code_block", "get_recipe"]


class RecipeError(UsageError, ValueError):
    """No such recipe, or a recipe without what it needs (an instruction)."""


_STRATEGY = (
    "You edit one Python function of a larger codebase, one function at a time. {rule} "
    "Keep the function's name, parameters, return annotation and decorators exactly as "
    "they are, and do not add other functions or imports. Reply with the whole edited "
    "function, decorators included, in one ```python code block.",
    "A codebase is being changed function by function; this step is one function. "
    "{rule} The name, the parameters, the return annotation and the decorators stay "
    "unchanged; no new functions, no imports. Answer with the complete function, its "
    "decorators too, inside a single ```python block.",
    "Task: change a single Python function. {rule} Leave its signature (name, "
    "parameters, return annotation) and its decorators untouched and write nothing "
    "outside it. Give back the full function, decorators included, as one ```python "
    "code block.",
)


# --- reading a reply -------------------------------------------------------------------


def code_block(text: str, *, strict: bool = True) -> str:
    """The contents of the reply's ```python block, up to its last line that is a bare
    ``` (so a docstring may hold an indented fence of its own). Strict: a ```python or
    ```py fence on a line of its own and one block only; lenient: any fence, else the
    reply itself if it starts like a function. ParseError for no block, an unclosed
    (truncated) one, or two."""
    lines = text.split("\n")
    fences = ("```python", "```py")
    opening = next((i for i, line in enumerate(lines) if line.strip().lower() in fences), -1)
    if opening < 0 and not strict:
        opening = next((i for i, line in enumerate(lines) if line.lstrip().startswith("```")), -1)
        if opening < 0:
            stripped = text.strip()
            if stripped.startswith(("def ", "async def ", "@")):
                return stripped + "\n"
    if opening < 0:
        raise ParseError("no ```python code block")
    closing = next((i for i in range(len(lines) - 1, opening, -1) if lines[i].strip() == "```"), -1)
    if closing < 0:
        raise ParseError("truncated: the code block is not closed")
    inside = lines[opening + 1 : closing]
    if strict and any(line.startswith("```") for line in inside):  # a fence at column 0
        raise ParseError("more than one code block")
    return "".join(line + "\n" for line in inside)


def read_function(code: str, site: FunctionSite) -> str:
    """`code` as the new span of `site`: exactly one function of the same name, moved to
    the original indentation, ending in a newline; ParseError otherwise."""
    lines = code.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ParseError("the code block is empty")
    code = "\n".join(line.rstrip("\r") for line in lines) + "\n"
    try:
        node = pysource.parse_function(code)
    except SyntaxError as exc:
        raise ParseError(f"does not parse: line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:
        raise ParseError(f"not one function: {exc}") from None
    if node.name != site.name:
        raise ParseError(f"the function is {node.name!r}, not {site.name!r}")
    indent = pysource.first_indent(site.source)
    return pysource.reindent(code, indent)


# --- what an edit changed -------------------------------------------------------------


def _signature(node: Def) -> str:
    parts = [type(node).__name__, node.name, dump(node.args)]
    parts.append(dump(node.returns) if node.returns is not None else "")
    parts += [dump(p) for p in getattr(node, "type_params", [])]
    return "\n".join(parts)


def _without_docstring(node: Def) -> str:
    body = node.body[1:] if pysource.docstring_node(node) is not None else node.body
    return dump(ast.FunctionDef(node.name, node.args, body, node.decorator_list, node.returns))


_LOG_NAMES = frozenset({"logging", "logger", "log", "_log", "_logger", "LOGGER", "LOG"})
_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical"})


def _is_logging(stmt: ast.stmt) -> bool:
    """`logging.x(...)`, `logger.x(...)`, `self.log.x(...)` for a logging method x."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    func = stmt.value.func
    if not (isinstance(func, ast.Attribute) and func.attr in _LOG_METHODS | {"log"}):
        return False
    owner = func.value
    return (isinstance(owner, ast.Name) and owner.id in _LOG_NAMES) or (
        isinstance(owner, ast.Attribute) and owner.attr in _LOG_NAMES
    )


def _is_guard(stmt: ast.stmt) -> bool:
    """`if COND: raise ...` (logging allowed beside the raise), without an else."""
    return (
        isinstance(stmt, ast.If)
        and not stmt.orelse
        and any(isinstance(s, ast.Raise) for s in stmt.body)
        and all(isinstance(s, ast.Raise) or _is_logging(s) for s in stmt.body)
    )


def _handler_ok(handler: ast.ExceptHandler) -> bool:
    """An added except clause may only log, add a note to the exception, pass or raise."""
    for stmt in handler.body:
        if isinstance(stmt, ast.Raise | ast.Pass) or _is_logging(stmt):
            continue
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "add_note"
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == handler.name
        ):
            continue
        return False
    return True


class _Flatten:
    """A function with its error handling taken out: try blocks and with blocks replaced
    by their statements, raises, guards and logging calls removed; what was taken out
    is counted in `removed` (handlers and with items as such)."""

    def __init__(self) -> None:
        self.removed: Counter[str] = Counter()
        self.handlers: list[ast.ExceptHandler] = []

    def stmts(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in stmts:
            if isinstance(stmt, ast.Try | ast.TryStar):
                for handler in stmt.handlers:
                    self.removed["handler " + dump(handler)] += 1
                    self.handlers.append(handler)
                out += self.stmts(stmt.body) + self.stmts(stmt.orelse)
                out += self.stmts(stmt.finalbody)
            elif isinstance(stmt, ast.With | ast.AsyncWith):
                for item in stmt.items:
                    self.removed["with " + dump(item)] += 1
                out += self.stmts(stmt.body)
            elif isinstance(stmt, ast.Raise) or _is_logging(stmt) or _is_guard(stmt):
                self.removed[dump(stmt)] += 1
            else:
                out.append(self.inside(stmt))
        return out

    def inside(self, stmt: ast.stmt) -> ast.stmt:
        """`stmt` with its own statement lists flattened (loops, ifs, nested defs)."""
        for field in ("body", "orelse", "finalbody"):
            value = getattr(stmt, field, None)
            if isinstance(value, list) and all(isinstance(s, ast.stmt) for s in value):
                setattr(stmt, field, self.stmts(value))
        if isinstance(stmt, ast.Match):
            for case in stmt.cases:
                case.body = self.stmts(case.body)
        return stmt


def _error_handling_flag(old: Def, new: Def) -> str | None:
    before, after = _Flatten(), _Flatten()
    old_body = before.stmts(old.body)
    new_body = after.stmts(new.body)
    if [dump(s) for s in old_body] != [dump(s) for s in new_body]:
        return "changes code beyond error handling (try/except/raise/with/logging)"
    if before.removed - after.removed:
        return "removes or changes existing error handling"
    old_handlers = Counter(dump(h) for h in before.handlers)
    for handler in after.handlers:
        if old_handlers[dump(handler)] > 0:
            old_handlers[dump(handler)] -= 1
        elif not _handler_ok(handler):
            return "an except clause does more than log, note or raise"
    return None


# --- the recipes ----------------------------------------------------------------------


def _words(name: str) -> str:
    words = " ".join(part for part in name.strip("_").split("_") if part)
    return words[:1].upper() + words[1:] if words else "Do the work"


def _clean(text: str, limit: int = 80) -> str:
    """Free text as the inside of a one-line string literal: no quotes, backslashes or
    line breaks, at most `limit` characters."""
    flat = " ".join(text.split()).replace("\\", "/").replace('"', "'")
    return flat[:limit].rstrip()


def _insert(source: str, statement: str, *, after_docstring: bool) -> str:
    """`source` with one line `statement` added at the start of the body (after the
    docstring when asked), at the body's indentation."""
    source = pysource.own_lines(source)
    node = pysource.parse_function(source)
    indent = pysource.body_indent(source, node)
    doc = pysource.docstring_node(node)
    at = (doc.end_lineno or doc.lineno) if doc is not None and after_docstring else None
    lines = source.split("\n")
    index = at if at is not None else pysource.body_start(node) - 1
    lines.insert(index, indent + statement)
    return "\n".join(lines)


class Recipe:
    """A recipe with no restriction beyond the signature: the `instruction` one. The
    others override `rule`, `wants`, `_allowed` and the simulated right edit."""

    name = "instruction"
    summary = "apply a free-text instruction to every function"
    may_change = "the body and docstring (not the name, parameters, annotations, decorators)"
    has_reference = False
    default_instruction = ""

    def rule(self, instruction: str) -> str:
        return f"Apply this instruction to the function: {instruction}"

    def wants(self, site: FunctionSite) -> bool:
        return True

    def messages(
        self, site: FunctionSite, instruction: str, paraphrase: int = 0
    ) -> list[dict[str, str]]:
        """The strategy, the state (module, class, signature, the function) and one
        instruction; `paraphrase` > 0 rewords the strategy."""
        text = instruction or self.default_instruction
        system = _STRATEGY[paraphrase % len(_STRATEGY)].format(rule=self.rule(text))
        code = pysource.reindent(site.source, "")
        user = (
            f"Module: {site.module}\nClass: {site.class_name or '(none)'}\n"
            f"Signature: {site.signature}\n\n```python\n{code}```\n\nInstruction: {text}"
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse(self, text: str, site: FunctionSite) -> str:
        """The new span, at the original indentation; ParseError for no code block, a
        truncated one, code that does not parse, or not exactly the same function."""
        return read_function(code_block(text), site)

    def red_flag(self, site: FunctionSite, new: str) -> str | None:
        """Why the edit `new` (a parsed span) is discarded, or None: too long, does not
        parse, changes the signature or the decorators, changes nothing, or changes what
        the recipe may not."""
        cap = 3 * len(site.source) + 400
        if len(new) > cap:
            return f"too long: {len(new)} characters (cap {cap})"
        try:
            old_node = pysource.parse_function(site.source)
            new_node = pysource.parse_function(new)
        except (SyntaxError, ValueError):
            return "does not parse as one function"
        pysource.normalise_docstrings(old_node)
        pysource.normalise_docstrings(new_node)
        if _signature(old_node) != _signature(new_node):
            return "changes the signature"
        if [dump(d) for d in old_node.decorator_list] != [dump(d) for d in new_node.decorator_list]:
            return "changes the decorators"
        if canonical(new) == canonical(site.source):
            return "unchanged"
        return self._allowed(old_node, new_node)

    def _allowed(self, old: Def, new: Def) -> str | None:
        return None

    def reference(self, site: FunctionSite) -> str | None:
        """The right edit from a deterministic tool; None without one (or no change)."""
        return None

    def simulated_right(self, site: FunctionSite) -> str:
        """A simulated right edit (a real one needs the model): a string statement
        `"Simulated edit."` after the docstring, or as the docstring."""
        return _insert(site.source, '"""Simulated edit."""', after_docstring=True)

    def simulated_wrong(self, site: FunctionSite, count: int) -> list[str]:
        """Distinct simulated wrong edits, none equal to the right one: one that also
        touches code it may not, one that changes the signature, one that does not
        parse, then more of the first kind."""
        right = self.simulated_right(site)
        seen = {canonical(right)}
        out: list[str] = []
        name = _clean(site.qualname, 60)
        candidates = [
            _insert(right, f'print("{name} called")', after_docstring=True),
            _change_signature(right),
            _insert(right, "value = (", after_docstring=True),
        ]
        extra = 0
        while len(out) < count:
            if candidates:
                edit = candidates.pop(0)
            else:
                extra += 1
                edit = _insert(right, f'print("{name} called", {extra})', after_docstring=True)
            key = canonical(edit)
            if key not in seen:
                seen.add(key)
                out.append(edit)
        return out


def _change_signature(source: str) -> str:
    """`source` with its return annotation changed (or one added): a signature change
    that always parses."""
    node = pysource.parse_function(source)
    lines = source.split("\n")
    ret = node.returns
    if ret is not None and ret.end_lineno is not None and ret.end_col_offset is not None:
        first, last = lines[ret.lineno - 1], lines[ret.end_lineno - 1]
        text = "\n".join(lines[ret.lineno - 1 : ret.end_lineno])
        was = text[ret.col_offset : len(text) - len(last) + ret.end_col_offset]
        new = "None" if was == "object" else "object"
        joined = first[: ret.col_offset] + new + last[ret.end_col_offset :]
        lines[ret.lineno - 1 : ret.end_lineno] = [joined]
    else:
        row, col = pysource.header_colon(source, node)
        line = lines[row - 1]
        lines[row - 1] = line[:col].rstrip() + " -> object" + line[col:]
    return "\n".join(lines)


class Docstrings(Recipe):
    """A docstring for every public function without one; only the docstring node may
    change."""

    name = "docstrings"
    summary = "add a docstring to every public function that lacks one"
    may_change = "the docstring only"
    default_instruction = "Add a concise docstring that says what the function does."

    def rule(self, instruction: str) -> str:
        return f"{instruction} Change nothing else: only the docstring may be added."

    def wants(self, site: FunctionSite) -> bool:
        public = not site.name.startswith("_") or site.name == "__init__"
        if not public or (site.class_name or "").startswith("_"):
            return False
        return pysource.docstring_node(pysource.parse_function(site.source)) is None

    def _allowed(self, old: Def, new: Def) -> str | None:
        if _without_docstring(old) != _without_docstring(new):
            return "changes code, not only the docstring"
        if pysource.docstring_node(new) is None:
            return "removes the docstring"
        return None

    def simulated_right(self, site: FunctionSite) -> str:
        """A simulated right edit: a one-line docstring made from the name."""
        text = _clean(_words(site.name)) + "."
        return _insert(site.source, f'"""{text}"""', after_docstring=False)


class ErrorHandling(Recipe):
    """Error handling for functions that have none: only try/except/raise/with
    statements and logging calls may be added, around the original statements, which
    keep their order (checked by taking them out again: see `_Flatten`)."""

    name = "error-handling"
    summary = "add comprehensive error handling to every function that has none"
    may_change = "adds try/except, raise, guard clauses, with blocks and logging calls only"
    default_instruction = (
        "Add error handling: catch the exceptions this code can raise where it can act on "
        "them, log them, and re-raise with context; validate arguments with guard clauses."
    )

    def rule(self, instruction: str) -> str:
        return (
            f"{instruction} You may only add try/except blocks, raise statements, "
            "`if ...: raise` guards, with blocks and logging calls; every existing "
            "statement stays, in its order."
        )

    def wants(self, site: FunctionSite) -> bool:
        node = pysource.parse_function(site.source)
        if any(isinstance(sub, ast.Try | ast.TryStar) for sub in ast.walk(node)):
            return False
        body = node.body[1:] if pysource.docstring_node(node) is not None else node.body
        trivial = all(
            isinstance(s, ast.Pass | ast.Raise)
            or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            for s in body
        )
        return not trivial

    def _allowed(self, old: Def, new: Def) -> str | None:
        return _error_handling_flag(old, new)

    def simulated_right(self, site: FunctionSite) -> str:
        """A simulated right edit: the body after the docstring wrapped in a try whose
        handler notes the function's name on the exception and re-raises it (the
        behaviour stays the same, so the codebase's own tests still pass)."""
        source = pysource.own_lines(site.source)
        node = pysource.parse_function(source)
        indent = pysource.body_indent(source, node)
        doc = pysource.docstring_node(node)
        first = node.body[1] if doc is not None else node.body[0]
        start = first.lineno
        if isinstance(first, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            start = first.decorator_list[0].lineno if first.decorator_list else start
        lines = source.split("\n")
        head, body = "\n".join(lines[: start - 1]), "\n".join(lines[start - 1 :])
        body = pysource.reindent(body, indent + "    ")
        note = _clean(f"simulated error handling: in {site.module}.{site.qualname}")
        tail = (
            f"{indent}except Exception as exc:\n"
            f'{indent}    exc.add_note("{note}")\n'
            f"{indent}    raise\n"
        )
        return f"{head}\n{indent}try:\n{body.rstrip()}\n{tail}"


@lru_cache(maxsize=4096)
def _flynt(source: str) -> str | None:
    """flynt applied to one dedented function; None when it changes nothing."""
    from flynt.api import fstringify_code  # imported on first use: a second or so
    from flynt.state import State

    # flynt logs each string it declines or fails to convert (with a traceback): its own
    # decision, not a user's problem.
    logging.getLogger("flynt").setLevel(logging.CRITICAL)
    result = fstringify_code(source, State(quiet=True))
    if result is None or not result.n_changes or result.content == source:
        return None
    return str(result.content)


class Fstrings(Recipe):
    """Old-style `%` and `str.format` strings to f-strings, with flynt's conversion as
    the reference (its conservative default: it skips conversions that would change
    behaviour, such as `%d` on a value that may not be an int)."""

    name = "fstrings"
    summary = "turn %-formatting and str.format calls into f-strings"
    may_change = "string formatting expressions only"
    has_reference = True
    default_instruction = (
        "Rewrite every '%' formatting and str.format() call on a string literal as an "
        "equivalent f-string."
    )

    def rule(self, instruction: str) -> str:
        return f"{instruction} Change nothing else."

    def wants(self, site: FunctionSite) -> bool:
        if "%" not in site.source and ".format" not in site.source:
            return False  # nothing flynt converts (and flynt costs milliseconds a function)
        # flynt converts only `%` and `.format` (asking it costs ~1 ms a function).
        if "%" not in site.source and ".format" not in site.source:
            return False
        ref = self.reference(site)
        return ref is not None and self.red_flag(site, ref) is None

    def _allowed(self, old: Def, new: Def) -> str | None:
        if not same_but_formatting(old, new):
            return "changes code other than string formatting"
        return None

    def reference(self, site: FunctionSite) -> str | None:
        """flynt's edit of the function, at its original indentation."""
        flat = pysource.reindent(site.source, "")
        done = _flynt(flat)
        if done is None:
            return None
        return pysource.reindent(done, pysource.first_indent(site.source))

    def simulated_right(self, site: FunctionSite) -> str:
        """The reference edit (a recipe with a reference simulates nothing right)."""
        ref = self.reference(site)
        if ref is None:
            raise ValueError(f"{site.qualname}: flynt changes nothing")
        return ref


RECIPES: dict[str, Recipe] = {
    r.name: r for r in (Fstrings(), Docstrings(), ErrorHandling(), Recipe())
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; RecipeError (a UsageError) naming the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(RECIPES)
        raise RecipeError(f"unknown recipe {name!r} (known: {known})") from None
