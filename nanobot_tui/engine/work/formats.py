"""What an f-string conversion may change: each string-formatting expression reduced to
its literal text (the format fields taken out) and the expressions it formats, so
`"Hello, %s!" % name`, `"Hello, {}!".format(name)` and `f"Hello, {name}!"` all read
the same, and anything else in the function must stay exactly as it was.

The literal text is scanned by hand (no regular expression on code a model wrote).
Conversions and format specs are not compared (`%r` against `{x!r}`): an approximation
that lets the vote, not the red flag, judge those.
"""

from __future__ import annotations

import ast

from nanobot_tui.engine.work.pysource import dump

_PERCENT_FLAGS = "#0- +"
_PERCENT_LENGTH = "hlL"


def percent_literal(template: str) -> str:
    """`template`'s literal text, its %-conversions taken out ('%%' is a '%')."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        i += 1
        if ch != "%":
            out.append(ch)
            continue
        if i < n and template[i] == "%":
            out.append("%")
            i += 1
            continue
        if i < n and template[i] == "(":  # a mapping key: up to its closing parenthesis
            close = template.find(")", i)
            i = n if close < 0 else close + 1
        while i < n and template[i] in _PERCENT_FLAGS:
            i += 1
        while i < n and (template[i].isdigit() or template[i] in ".*"):
            i += 1
        while i < n and template[i] in _PERCENT_LENGTH:
            i += 1
        i += 1  # the conversion character
    return "".join(out)


def brace_literal(template: str) -> str:
    """`template`'s literal text for str.format, its {fields} taken out ('{{' is '{')."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch in "{}" and i + 1 < n and template[i + 1] == ch:
            out.append(ch)
            i += 2
            continue
        if ch != "{":
            out.append(ch)
            i += 1
            continue
        depth = 0
        while i < n:  # a field, with any nested {spec} fields
            if template[i] == "{":
                depth += 1
            elif template[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        i += 1
    return "".join(out)


def _values(node: ast.expr) -> list[ast.expr]:
    """The expressions a %-format's right operand formats."""
    if isinstance(node, ast.Tuple):
        return list(node.elts)
    if isinstance(node, ast.Dict):
        return [v for v in node.values if v is not None]
    return [node]


def _placeholder(literal: str, values: list[ast.expr]) -> ast.Name:
    formatted = sorted(dump(v) for v in values)
    return ast.Name(f"__format__{literal!r}{formatted!r}", ast.Load())


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


class Formats(ast.NodeTransformer):
    """Every formatting expression (`'...' % x`, `'...'.format(...)`, an f-string)
    replaced by a placeholder naming its literal text and formatted expressions."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        left = node.left
        if isinstance(node.op, ast.Mod) and isinstance(left, ast.Constant) and _is_str(left):
            return _placeholder(percent_literal(str(left.value)), _values(node.right))
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "format" and _is_str(func.value):
            assert isinstance(func.value, ast.Constant)
            values = [a.value if isinstance(a, ast.Starred) else a for a in node.args]
            values += [k.value for k in node.keywords]
            return _placeholder(brace_literal(str(func.value.value)), values)
        return self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        literal = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
        values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        return _placeholder(literal, values)


def same_but_formatting(old: ast.AST, new: ast.AST) -> bool:
    """Whether `new` differs from `old` only in how strings are formatted."""
    return dump(Formats().visit(old)) == dump(Formats().visit(new))
