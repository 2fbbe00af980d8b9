"""A codebase decomposed by structure: which Python files, and which functions, with
exact spans that never overlap."""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

from nanobot_tui.engine.work.codebase import function_sites, module_name, python_files

SOURCE = '''"""A module."""
import functools


@functools.cache
@staticmethod
def cached(x: int) -> int:
    return x


async def fetch(url,
                timeout=3):  # a comment on the signature
    return url


class Box:
    """A box."""

    size = 3

    def __init__(self, size):
        self.size = size

    @property
    def area(self): return self.size ** 2

    async def load(self):
        def helper():
            return 1

        class Inner:
            def method(self):
                pass

        return helper()


def outer():
    def nested():
        return 2

    return nested()


if True:
    def conditional():
        return 3
'''


def test_function_sites_cover_functions_and_methods_never_nested_ones() -> None:
    sites = function_sites("pkg/sub/mod.py", SOURCE)
    assert [s.qualname for s in sites] == [
        "cached",
        "fetch",
        "Box.__init__",
        "Box.area",
        "Box.load",
        "outer",
    ]
    lines = SOURCE.split("\n")
    by_name = {s.qualname: s for s in sites}
    cached = by_name["cached"]
    assert (cached.start, cached.end) == (5, 8)  # from the first decorator
    assert cached.source.startswith("@functools.cache\n@staticmethod\ndef cached")
    assert cached.signature == "def cached(x: int) -> int:"
    assert cached.module == "pkg.sub.mod" and cached.class_name is None
    fetch = by_name["fetch"]
    assert (
        fetch.signature
        == "async def fetch(url,\n                timeout=3):  # a comment on the signature"
    )
    area = by_name["Box.area"]
    assert area.class_name == "Box" and area.signature == "def area(self):"
    assert area.source == "    @property\n    def area(self): return self.size ** 2\n"
    load = by_name["Box.load"]
    assert "def helper" in load.source and "class Inner" in load.source
    for site in sites:
        # Each span is the exact text of its lines, with the original indentation.
        assert site.source == "\n".join(lines[site.start - 1 : site.end]) + "\n"
        assert site.name == site.qualname.rsplit(".", 1)[-1]
    spans = sorted((s.start, s.end) for s in sites)
    assert all(a[1] < b[0] for a, b in pairwise(spans))  # no overlap


def test_a_file_that_does_not_parse_yields_no_sites() -> None:
    assert function_sites("bad.py", "def broken(:\n    pass\n") == []
    assert function_sites("nul.py", "x = 1\0\n") == []
    assert function_sites("empty.py", "") == []


def test_spans_count_lines_as_the_parser_does() -> None:
    # A form feed is a line break for str.splitlines but not for Python.
    text = "\x0c\ndef a():\n    return '\x0c'\n\n\ndef b():\n    return 2\n"
    sites = function_sites("ff.py", text)
    assert [(s.qualname, s.start, s.end) for s in sites] == [("a", 2, 3), ("b", 6, 7)]
    assert sites[0].source == "def a():\n    return '\x0c'\n"
    ast.parse(sites[1].source)


def test_module_names() -> None:
    assert module_name("a/b/c.py") == "a.b.c"
    assert module_name("a/__init__.py") == "a"
    assert module_name("top.py") == "top"


def test_python_files_skip_environments_caches_builds_and_ignored(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    files = {
        "main.py": "",
        "pkg/__init__.py": "",
        "pkg/core.py": "",
        "pkg/notes.txt": "",
        "pkg/__pycache__/core.cpython-311.py": "",
        ".hidden/x.py": "",
        ".venv/lib/y.py": "",
        "venv/z.py": "",
        "env2/pyvenv.cfg": "home = /usr\n",
        "env2/lib/site.py": "",
        "build/lib/pkg/core.py": "",
        "dist/a.py": "",
        "node_modules/m/setup.py": "",
        "vendor/site-packages/dep.py": "",
        "generated/out.py": "",
        "tests/test_core.py": "",
        ".gitignore": "generated/\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert python_files(root) == ["main.py", "pkg/__init__.py", "pkg/core.py", "tests/test_core.py"]
