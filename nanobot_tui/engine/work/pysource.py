"""One function's source as text and as a tree: parse a span at any indentation, move
it to another indentation without touching string contents, find where its body starts,
and the canonical form votes compare.

Everything here reads text a model wrote: no regular expressions, only `ast` and
`tokenize`, and SyntaxError (or ValueError) for text that is not one function.
"""

from __future__ import annotations

import ast
import io
import tokenize

Def = ast.FunctionDef | ast.AsyncFunctionDef
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_WRAP = "if 1:\n"  # makes an indented span a valid module without changing its text


def first_indent(source: str) -> str:
    """The indentation of the first non-blank line."""
    for line in source.split("\n"):
        if line.strip():
            return line[: len(line) - len(line.lstrip())]
    return ""


def parse_module(source: str) -> tuple[list[ast.stmt], int]:
    """(statements, line offset) of a span at any indentation: with an indented span
    the reported line numbers are one more than the span's (offset 1). SyntaxError or
    ValueError (a null byte) when it does not parse."""
    if first_indent(source):
        tree = ast.parse(_WRAP + source)
        first = tree.body[0]
        assert isinstance(first, ast.If)
        return first.body, 1
    return ast.parse(source).body, 0


def parse_function(source: str) -> Def:
    """The one function `source` holds (decorators included); SyntaxError when it does
    not parse, ValueError when it is not exactly one function. Line numbers are the
    span's own (1 = its first line)."""
    body, offset = parse_module(source)
    if len(body) != 1 or not isinstance(body[0], ast.FunctionDef | ast.AsyncFunctionDef):
        raise ValueError(f"expected exactly one function, got {len(body)} statement(s)")
    node = body[0]
    if offset:
        ast.increment_lineno(node, -offset)
    return node


def docstring_node(node: ast.AST) -> ast.Expr | None:
    """The docstring statement of a def or class, if it has one."""
    body = getattr(node, "body", None)
    if isinstance(node, _DEFS) and body:
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            return first
    return None


def _string_lines(node: ast.AST) -> set[int]:
    """The lines that continue a multi-line string literal, docstrings aside: their
    leading whitespace is part of the string, so moving the span must keep it."""
    docstrings = {id(d.value) for d in map(docstring_node, ast.walk(node)) if d is not None}
    out: set[int] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant | ast.JoinedStr) and id(sub) not in docstrings:
            end = getattr(sub, "end_lineno", None)
            is_text = isinstance(sub, ast.JoinedStr) or isinstance(sub.value, str | bytes)
            if end is not None and end > sub.lineno and is_text:
                out.update(range(sub.lineno + 1, end + 1))
    return out


def reindent(source: str, new: str) -> str:
    """`source` (one or more statements) moved from its first line's indentation to
    `new`: every line that starts with the old indentation gets the new one instead,
    except the lines inside multi-line strings (docstrings move with the code). Blank
    lines become empty. SyntaxError when it does not parse."""
    old = first_indent(source)
    if old == new:
        return source
    body, offset = parse_module(source)
    keep: set[int] = set()
    for stmt in body:
        keep |= {n - offset for n in _string_lines(stmt)}
    lines = source.split("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if number in keep:
            out.append(line)
        elif not line.strip():
            out.append("")
        elif line.startswith(old):
            out.append(new + line[len(old) :])
        else:  # a comment less indented than the code: left where it was
            out.append(line)
    return "\n".join(out)


def body_start(node: Def) -> int:
    """The 1-based line where the def's body begins (a nested def's decorators count)."""
    first = node.body[0]
    if isinstance(first, _DEFS) and first.decorator_list:
        return first.decorator_list[0].lineno
    return first.lineno


def own_lines(source: str) -> str:
    """`source` with a body that shares the def's line (`def f(): return 1`) moved to a
    line of its own, so every body statement starts a line; unchanged otherwise."""
    node = parse_function(source)
    first = node.body[0]
    lines = source.split("\n")
    line = lines[first.lineno - 1]
    if not line[: first.col_offset].strip():
        return source
    indent = first_indent(source) + "    "
    head, tail = line[: first.col_offset].rstrip(), line[first.col_offset :]
    lines[first.lineno - 1 : first.lineno] = [head, indent + tail]
    return "\n".join(lines)


def body_indent(source: str, node: Def) -> str:
    """The indentation of the def's body (its first statement's line)."""
    line = source.split("\n")[body_start(node) - 1]
    return line[: len(line) - len(line.lstrip())]


def header_colon(source: str, node: Def) -> tuple[int, int]:
    """(line, column) of the colon that ends the def's header: the first `:` outside
    brackets after the `def` keyword (annotations and lambdas sit inside brackets)."""
    text = _WRAP + source if first_indent(source) else source
    offset = 1 if first_indent(source) else 0
    depth = 0
    seen_def = False
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        row = tok.start[0] - offset
        if not seen_def:
            seen_def = tok.type == tokenize.NAME and tok.string == "def" and row == node.lineno
            continue
        if tok.type == tokenize.OP:
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif tok.string == ":" and depth == 0:
                return row, tok.start[1]
    raise ValueError("no colon after the def")


def dump(node: ast.AST) -> str:
    """A node's structure without positions."""
    return ast.dump(node, include_attributes=False)


def normalise_docstrings(node: ast.AST) -> None:
    """Collapse the whitespace of every docstring under `node` (in place): moving code
    to another indentation changes a docstring's text, never its meaning."""
    for sub in ast.walk(node):
        doc = docstring_node(sub)
        if doc is not None:
            assert isinstance(doc.value, ast.Constant)
            doc.value.value = " ".join(str(doc.value.value).split())


def canonical(source: str) -> str:
    """The key votes compare: the tree of the dedented span without positions, each
    docstring's whitespace collapsed, so edits that differ only in layout, comments or
    docstring wrapping vote together. Text that does not parse keys on its stripped
    lines (it can still be told apart, and never equals code that parses)."""
    try:
        body, _ = parse_module(source)
    except (SyntaxError, ValueError):
        lines = (line.rstrip() for line in source.strip().split("\n"))
        return "unparsable:" + "\n".join(lines)
    module = ast.Module(body=body, type_ignores=[])
    normalise_docstrings(module)
    return dump(module)
