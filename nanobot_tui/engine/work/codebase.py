"""A codebase decomposed by structure: its Python files, and in each file its functions.

`python_files` lists the `.py` files a process may edit (the ingest's walk, so
.gitignore is honoured as git does, minus the folders no one edits by hand: hidden ones,
caches, virtual environments, build output, vendored packages). `function_sites` cuts a
file into `FunctionSite`s: module-level functions and the methods of module-level
classes, each with its exact span (decorators included), so an edit of one never
overlaps another and can be spliced back by line numbers alone.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

from nanobot_tui.engine.context.walk import walk
from nanobot_tui.engine.work.pysource import Def, body_start

# Folders never edited: caches, environments, build output, vendored dependencies.
SKIPPED_DIRS = frozenset(
    {"__pycache__", "venv", ".venv", "build", "dist", "node_modules", "site-packages"}
)


def _skipped_dir(root: Path, rel_dir: str, name: str, seen: dict[str, bool]) -> bool:
    """Whether folder `rel_dir` (its last part `name`) holds no files to edit; a folder
    with a pyvenv.cfg is a virtual environment whatever its name."""
    skip = seen.get(rel_dir)
    if skip is None:
        skip = (
            name.startswith(".")
            or name in SKIPPED_DIRS
            or (root / rel_dir / "pyvenv.cfg").is_file()
        )
        seen[rel_dir] = skip
    return skip


def python_files(root: Path) -> list[str]:
    """The `.py` files under `root` as sorted posix paths relative to it; VolumeInputError
    (a UsageError) when `root` cannot be read."""
    scan = walk(os.fspath(root), lambda _found, _rel: None)
    seen: dict[str, bool] = {}
    out: list[str] = []
    for source in scan.sources:
        rel = source.rel.replace(os.sep, "/")
        if not rel.endswith(".py") or rel.rsplit("/", 1)[-1].startswith("."):
            continue
        parts = rel.split("/")[:-1]
        if any(
            _skipped_dir(root, "/".join(parts[: i + 1]), part, seen) for i, part in enumerate(parts)
        ):
            continue
        out.append(rel)
    return sorted(out)


@dataclass(frozen=True, slots=True)
class FunctionSite:
    """One function's place in a file and its text, the state a micro-step edits."""

    path: str  # relative posix path of the file
    qualname: str  # "Class.method" or "func"
    start: int  # 1-based first line of the span: the first decorator's, else the def's
    end: int  # last line of the span, inclusive
    source: str  # the span's exact text, original indentation, ending in "\n"
    module: str  # dotted module name, e.g. "pkg.sub.mod"
    class_name: str | None
    signature: str  # the def line(s) as written, up to and including the colon

    @property
    def name(self) -> str:
        """The function's own name (the last part of the qualname)."""
        return self.qualname.rsplit(".", 1)[-1]


def module_name(path: str) -> str:
    """'pkg/sub/mod.py' -> 'pkg.sub.mod'; 'pkg/__init__.py' -> 'pkg'."""
    parts = path.removesuffix(".py").split("/")
    if len(parts) > 1 and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def signature_text(lines: list[str], node: Def) -> str:
    """The def line(s) as written, from `def` (or `async def`) to its colon, for the
    prompt."""
    start = node.lineno - 1
    body_line = body_start(node)
    if body_line - 1 <= start:  # the body shares the def's line: cut before it
        return lines[start][: node.body[0].col_offset].strip()
    header = [line.rstrip() for line in lines[start : body_line - 1]]
    # Comment and blank lines between the colon and the body are not the signature.
    while len(header) > 1 and (not header[-1].strip() or header[-1].lstrip().startswith("#")):
        header.pop()
    return "\n".join(header).strip()


def function_sites(path: str, text: str) -> list[FunctionSite]:
    """The functions of one file: module-level ones and the methods of module-level
    classes (async too; never defs nested in functions, so spans never overlap), in
    file order. A file that does not parse yields [] (the caller reports it)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):  # ValueError: a null byte in the source
        return []
    # Split on "\n" only, as the parser counts lines (str.splitlines also splits on form
    # feeds and other separators); a "\r" of CRLF stays in the line, as in the file.
    lines = text.split("\n")
    module = module_name(path)
    out: list[FunctionSite] = []

    def add(node: Def, class_name: str | None) -> None:
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        end = node.end_lineno or node.lineno
        source = "\n".join(lines[start - 1 : end]) + "\n"
        qualname = f"{class_name}.{node.name}" if class_name else node.name
        out.append(
            FunctionSite(
                path, qualname, start, end, source, module, class_name,
                signature_text(lines, node),
            )
        )  # fmt: skip

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            add(node, None)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    add(item, node.name)
    return out
