"""The user's keymap (config `ui.keymap`): binding ids to keys, e.g.
`{"app.quit": "ctrl+x", "chat.stop": "escape,ctrl+g"}`.

Every binding nanobot declares carries an id ("area.action"); the keymap replaces the
keys of the ids it names. An id that no binding carries, or a key Textual does not know
(`"notakey"`, `"ctl+x"`, `"f99"`), is left out with one warning line each, and that
binding keeps its default: a typo never stops the app, nor takes a key away.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from typing import Any

from textual import keys as textual_keys
from textual.app import App
from textual.binding import Binding
from textual.dom import DOMNode

# Modules whose screens load lazily: imported here so that their bindings' ids count.
LAZY_MODULES = (
    "nanobot_tui.ui.screens.help",
    "nanobot_tui.ui.screens.viewer",
    "nanobot_tui.ui.screens.setup",
    "nanobot_tui.ui.screens.channels",
)
# One key: modifiers joined by "+", then a key name or a single character.
KEY = re.compile(r"^([a-z]+\+)*([a-z0-9_]+|[^\s,+])$")
MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})


def _key_names() -> frozenset[str]:
    """Every key name Textual can send: its named keys (f1..f24, escape, pageup, ...),
    their aliases, and the names it gives printable characters ("question_mark", "plus")."""
    names = {
        key.value.rsplit("+", 1)[-1] for key in textual_keys.Keys if not key.value.startswith("<")
    }
    for name, aliases in textual_keys.KEY_ALIASES.items():
        names.update(alias.rsplit("+", 1)[-1] for alias in [name, *aliases])
    names.update(textual_keys.KEY_TO_UNICODE_NAME, textual_keys.KEY_NAME_REPLACEMENTS.values())
    names.update(textual_keys._character_to_key(chr(c)) for c in range(0x21, 0x7F))
    return frozenset(names)


KEY_NAMES = _key_names()


def known_key(key: str) -> bool:
    """Whether `key` (e.g. "ctrl+x", "f5", "?") names a key Textual can report: each
    modifier at most once, then a known key name or one printable character."""
    if not KEY.match(key):
        return False
    *mods, name = key.split("+")
    if len(set(mods)) != len(mods) or not MODIFIERS.issuperset(mods):
        return False
    return name in KEY_NAMES or (len(name) == 1 and name.isprintable())


def _subclasses(cls: type) -> Iterator[type]:
    subclasses: list[type] = cls.__subclasses__()
    for sub in subclasses:
        yield sub
        yield from _subclasses(sub)


def declaring_classes() -> list[type[DOMNode]]:
    """The nanobot widgets, screens and app that declare bindings of their own."""
    for module in LAZY_MODULES:
        importlib.import_module(module)
    classes = {
        cls
        for cls in _subclasses(DOMNode)
        if cls.__module__.startswith("nanobot_tui.") and cls.__dict__.get("BINDINGS")
    }
    return sorted(classes, key=lambda cls: (cls.__module__, cls.__qualname__))


def nanobot_bindings() -> dict[str, tuple[type[DOMNode], Binding]]:
    """Every binding with an id that nanobot declares, by id, with its class."""
    found: dict[str, tuple[type[DOMNode], Binding]] = {}
    for cls in declaring_classes():
        for binding in Binding.make_bindings(cls.__dict__["BINDINGS"]):
            if binding.id is not None:
                found.setdefault(binding.id, (cls, binding))
    return found


def check_keymap(keymap: dict[str, str], known: set[str]) -> tuple[dict[str, str], list[str]]:
    """(the entries that can be applied, a warning line for each that cannot)."""
    usable: dict[str, str] = {}
    warnings: list[str] = []
    for binding_id, keys in keymap.items():
        if binding_id not in known:
            near = [k for k in sorted(known) if k.split(".")[0] == binding_id.split(".")[0]]
            hint = f" (known here: {', '.join(near)})" if near else " (F1 lists the keys)"
            warnings.append(f"keymap: no binding has the id {binding_id!r}{hint}")
            continue
        parts = [part.strip() for part in str(keys).split(",")]
        if not keys or not all(known_key(part) for part in parts):
            warnings.append(f"keymap: {binding_id}: not a key: {keys!r} (e.g. 'ctrl+x' or 'f5')")
            continue
        usable[binding_id] = ",".join(parts)
    return usable, warnings


def apply_keymap(app: App[Any], keymap: dict[str, str]) -> list[str]:
    """Set the app's keymap from the config's; returns the warnings."""
    if not keymap:
        return []
    usable, warnings = check_keymap(keymap, set(nanobot_bindings()))
    app.set_keymap(usable)
    return warnings
