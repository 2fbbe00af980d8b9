"""Recipes: strict reading of a reply, red flags (never repaired), the canonical key,
flynt's reference edit, and the simulated right and wrong edits."""

from __future__ import annotations

import ast

import pytest

from nanobot_tui.engine.voting.domains import ParseError
from nanobot_tui.engine.work.codebase import FunctionSite, function_sites
from nanobot_tui.engine.work.recipes import RECIPES, canonical, get_recipe
from nanobot_tui.errors import UsageError

FILE = '''import logging

log = logging.getLogger(__name__)


def describe(name, count):
    label = "%s has %d items" % (name, count)
    title = "Hello, %s!" % name
    return "{}: {}".format(title, label)


class Store:
    def load(self, path, *, strict=False) -> dict:
        text = """first line
  second line, indented"""
        with open(path) as fh:
            data = fh.read()
        if strict:
            check(data)
        return {"path": path, "data": data, "text": text}

    @property
    def size(self):
        return len(self.items)

    def _private(self):
        return 1


def neighbour():
    return 0
'''


def sites() -> dict[str, FunctionSite]:
    return {s.qualname: s for s in function_sites("pkg/store.py", FILE)}


def reply(code: str) -> str:
    return f"Here is the function:\n```python\n{code}```\nDone."


# --- canonical keys ----------------------------------------------------------------------


def test_canonical_keys_ignore_layout_comments_and_docstring_wrapping() -> None:
    a = 'def f(a, b):\n    """Add two\n    numbers."""\n    return a + b\n'
    b = '    def f(a,  b):  # sum\n        """Add two numbers."""\n\n        return (a + b)\n'
    c = 'def f(a, b):\n    """Add two numbers."""\n    return a - b\n'
    assert canonical(a) == canonical(b)
    assert canonical(a) != canonical(c)
    assert canonical("def f(:\n") != canonical("def f():\n    pass\n")
    assert canonical("def f(:\n").startswith("unparsable:")


# --- reading a reply ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("def size(self):\n    return 1\n", "no ```python code block"),
        ("```python\ndef size(self):\n    return len(", "truncated"),
        ("```python\ndef size(self:\n    return 1\n```", "does not parse"),
        ("```python\ndef other(self):\n    return 1\n```", "not 'size'"),
        ("```python\ndef size(self):\n    return 1\n\ndef more():\n    pass\n```", "not one"),
        ("```python\n```", "empty"),
        ("```python\ndef size(self):\n    return 1\n```\n```python\nx = 1\n```", "more than one"),
    ],
)
def test_parse_refuses_what_is_not_one_function_of_the_same_name(text: str, why: str) -> None:
    site = sites()["Store.size"]
    with pytest.raises(ParseError, match=why):
        RECIPES["instruction"].parse(text, site)


def test_parse_moves_the_reply_to_the_original_indentation_keeping_strings() -> None:
    site = sites()["Store.load"]
    flat = (
        "def load(self, path, *, strict=False) -> dict:\n"
        '    """Load a file."""\n'
        '    text = """first line\n'
        '  second line, indented"""\n'
        "    with open(path) as fh:\n"
        "        data = fh.read()\n"
        "    if strict:\n"
        "        check(data)\n"
        '    return {"path": path, "data": data, "text": text}\n'
    )
    new = RECIPES["docstrings"].parse(reply(flat), site)
    assert new.startswith('    def load(self, path, *, strict=False) -> dict:\n        """Load')
    assert '        text = """first line\n  second line, indented"""\n' in new  # string kept
    assert RECIPES["docstrings"].red_flag(site, new) is None


def test_a_fence_inside_a_docstring_does_not_end_the_block() -> None:
    site = sites()["Store.size"]
    code = (
        "@property\ndef size(self):\n"
        '    """The count.\n\n    ```python\n    store.size\n    ```\n    """\n'
        "    return len(self.items)\n"
    )
    new = RECIPES["docstrings"].parse(reply(code), site)
    assert "        ```python\n        store.size\n        ```\n" in new
    assert RECIPES["docstrings"].red_flag(site, new) is None


# --- red flags ---------------------------------------------------------------------------


def test_red_flags_common_to_every_recipe() -> None:
    site = sites()["describe"]
    recipe = RECIPES["instruction"]
    src = site.source
    assert recipe.red_flag(site, src) == "unchanged"
    assert recipe.red_flag(site, src.replace("# x", "")) == "unchanged"
    renamed = src.replace("def describe(name, count)", "def describe(name, count=0)")
    assert recipe.red_flag(site, renamed) == "changes the signature"
    annotated = src.replace("(name, count):", "(name, count) -> str:")
    assert recipe.red_flag(site, annotated) == "changes the signature"
    decorated = "@staticmethod\n" + src
    assert recipe.red_flag(site, decorated) == "changes the decorators"
    long = src.replace("return", "x = '" + "y" * (3 * len(src) + 400) + "'\n    return")
    assert (recipe.red_flag(site, long) or "").startswith("too long")
    assert recipe.red_flag(site, src.replace("):", ")")) == "does not parse as one function"
    # A candidate that also edits the next function cannot be one function's span.
    with pytest.raises(ParseError, match="not one function"):
        recipe.parse(reply(src + "\n\ndef neighbour():\n    return 1\n"), site)
    assert recipe.red_flag(site, src.replace("items", "things")) is None  # instruction: ok


def test_docstrings_may_change_the_docstring_only() -> None:
    site = sites()["describe"]
    recipe = RECIPES["docstrings"]
    head = "def describe(name, count):\n"
    good = site.source.replace(head, head + '    """Describe a named count."""\n')
    assert recipe.red_flag(site, good) is None
    also_code = good.replace("%d items", "%d things")
    assert recipe.red_flag(site, also_code) == "changes code, not only the docstring"
    moved = good.replace("    return", "    print(label)\n    return")
    assert recipe.red_flag(site, moved) == "changes code, not only the docstring"
    assert recipe.wants(site)
    assert not recipe.wants(sites()["Store._private"])  # private: no docstring wanted
    assert not recipe.wants(function_sites("a.py", 'def f():\n    """Has one."""\n')[0])


def test_fstrings_reference_is_flynt_on_real_percent_and_format_code() -> None:
    site = sites()["describe"]
    recipe = RECIPES["fstrings"]
    assert recipe.has_reference
    # flynt's conservative default: %d is left alone (it would change behaviour on
    # non-integers); %s and str.format become f-strings.
    assert recipe.reference(site) == (
        "def describe(name, count):\n"
        '    label = "%s has %d items" % (name, count)\n'
        '    title = f"Hello, {name}!"\n'
        '    return f"{title}: {label}"\n'
    )
    assert recipe.wants(site) and recipe.simulated_right(site) == recipe.reference(site)
    assert recipe.red_flag(site, recipe.reference(site) or "") is None
    assert recipe.reference(sites()["Store.size"]) is None  # nothing to convert
    assert not recipe.wants(sites()["Store.size"])
    method = function_sites("m.py", "class A:\n    def f(self, x):\n        return 'x=%s' % x\n")
    assert recipe.reference(method[0]) == "    def f(self, x):\n        return f'x={x}'\n"
    beyond = (recipe.reference(site) or "").replace("Hello", "Hi")
    assert recipe.red_flag(site, beyond) == "changes code other than string formatting"
    other_value = (recipe.reference(site) or "").replace("{name}", "{count}")
    assert recipe.red_flag(site, other_value) == "changes code other than string formatting"
    outside = (recipe.reference(site) or "").replace("return", "label = label.strip()\n    return")
    assert recipe.red_flag(site, outside) == "changes code other than string formatting"


def test_error_handling_may_only_add_handling_around_the_original_statements() -> None:
    site = sites()["Store.load"]
    recipe = RECIPES["error-handling"]
    assert recipe.wants(site)
    good = site.source.replace(
        "        with open(path) as fh:\n            data = fh.read()\n",
        "        if not path:\n"
        "            raise ValueError('no path')\n"
        "        try:\n"
        "            with open(path) as fh:\n"
        "                data = fh.read()\n"
        "        except OSError as exc:\n"
        "            log.error('cannot read %s', path)\n"
        "            raise RuntimeError(path) from exc\n",
    )
    assert recipe.red_flag(site, good) is None
    swallowed = good.replace(
        "            raise RuntimeError(path) from exc\n", "            return {}\n"
    )
    assert recipe.red_flag(site, swallowed) == "an except clause does more than log, note or raise"
    swapped = good.replace("        if strict:\n            check(data)\n", "").replace(
        "        if not path:\n",
        "        if strict:\n            check(data)\n        if not path:\n",
    )
    assert recipe.red_flag(site, swapped) == (
        "changes code beyond error handling (try/except/raise/with/logging)"
    )
    no_with = site.source.replace(
        "        with open(path) as fh:\n            data = fh.read()\n",
        "        data = open(path).read()\n",
    )
    assert recipe.red_flag(site, no_with) is not None
    without_with = site.source.replace(
        "        with open(path) as fh:\n            data = fh.read()\n",
        "        data = fh.read()\n",
    )
    assert recipe.red_flag(site, without_with) == "removes or changes existing error handling"


def test_simulated_edits_right_passes_and_wrong_ones_are_distinct() -> None:
    all_sites = list(sites().values())
    for recipe in RECIPES.values():
        for site in all_sites:
            if not recipe.wants(site):
                continue
            right = recipe.simulated_right(site)
            assert recipe.red_flag(site, right) is None, (recipe.name, site.qualname)
            ast.parse("class C:\n" + right if site.class_name else right)
            wrong = recipe.simulated_wrong(site, 5)
            keys = {canonical(w) for w in wrong}
            assert len(wrong) == 5 == len(keys) and canonical(right) not in keys
            flags = []
            for w in wrong:
                try:
                    flags.append(recipe.red_flag(site, recipe.parse(reply(w), site)))
                except ParseError as exc:
                    flags.append(f"parse: {exc}")
            assert flags[1] == "changes the signature"
            assert flags[2] is not None and flags[2].startswith("parse: does not parse")
            if recipe.name != "instruction":  # the instruction recipe allows any body
                assert all(f is not None for f in flags), (recipe.name, flags)


def test_messages_give_minimal_context_and_paraphrases_reword_them() -> None:
    site = sites()["Store.load"]
    recipe = RECIPES["docstrings"]
    first = recipe.messages(site, "Add docstrings.", 0)
    second = recipe.messages(site, "Add docstrings.", 1)
    assert [m["role"] for m in first] == ["system", "user"]
    user = first[1]["content"]
    assert "Module: pkg.store" in user and "Class: Store" in user
    assert "Signature: def load(self, path, *, strict=False) -> dict:" in user
    assert "```python\ndef load(self" in user and user.endswith("Instruction: Add docstrings.")
    assert "```python" in first[0]["content"] and first[0] != second[0]
    assert first[1] == second[1]


def test_unknown_recipe_names_the_known_ones() -> None:
    with pytest.raises(
        UsageError, match="known: fstrings, docstrings, error-handling, instruction"
    ):
        get_recipe("tidy")
    for recipe in RECIPES.values():
        assert recipe.summary and recipe.may_change and isinstance(recipe.has_reference, bool)
