"""The domains a run or a calibration can name, and how each is built.

A domain is built from its params, a JSON-safe dict (a durable run keeps them in its
spec, so a resumed run rebuilds the very same domain); the `nanobot run` and `nanobot
calibrate` options named in `options` give them, under the same names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nanobot_tui.engine.voting.domains import Domain
from nanobot_tui.engine.voting.domains.hanoi import Hanoi
from nanobot_tui.engine.voting.domains.micro import Micro
from nanobot_tui.engine.voting.domains.wordcase import WordCase

Params = Mapping[str, Any]


@dataclass(frozen=True)
class DomainKind:
    name: str
    options: tuple[str, ...]  # the command-line options its params come from
    build: Callable[[Params], Domain]  # ValueError for params it cannot use
    label: Callable[[Params], str]  # the readable part of a run id, e.g. "hanoi20"
    # The command that starts its runs: "run" (`nanobot run` and `nanobot calibrate`
    # offer it, with `options` as flags) or "process" (real work over a codebase or a
    # volume, started by `nanobot process`).
    command: str = "run"


def _hanoi(params: Params) -> Domain:
    return Hanoi(int(params.get("disks", 10)))


def _wordcase(params: Params) -> Domain:
    words = params.get("word_list")
    if words:
        return WordCase(words=list(words))
    return WordCase(count=int(params.get("words", 300)), seed=int(params.get("seed", 0)))


def _micro(params: Params) -> Domain:
    family = str(params.get("family", "wordcase"))
    items = params.get("items")
    if items:
        return Micro(family, items=list(items))
    return Micro(family, count=int(params.get("words", 20)), seed=int(params.get("seed", 0)))


def _micro_label(params: Params) -> str:
    items = params.get("items")
    count = len(items) if items else params.get("words", 20)
    return f"micro-{params.get('family', 'wordcase')}{count}"


def _lazy(module: str, factory: str = "build") -> Callable[[Params], Domain]:
    """A domain built by a layer ABOVE voting (engine.work): this registry may not
    import upward (the import-linter layers), so the module is imported by name, the
    first time such a domain is built, and its `factory(params)` builds it."""

    def build(params: Params) -> Domain:
        built: Domain = getattr(importlib.import_module(module), factory)(params)
        return built

    return build


DOMAINS: dict[str, DomainKind] = {
    kind.name: kind
    for kind in (
        DomainKind("hanoi", ("disks",), _hanoi, lambda p: f"hanoi{p.get('disks', 10)}"),
        DomainKind(
            "wordcase", ("words", "seed"), _wordcase, lambda p: f"wordcase{p.get('words', 300)}"
        ),
        DomainKind("micro", ("family", "words", "seed"), _micro, _micro_label),
        DomainKind(
            "code",
            ("recipe", "instruction"),
            _lazy("nanobot_tui.engine.work.domain"),
            lambda p: f"code-{p.get('recipe') or 'instruction'}",
            command="process",
        ),
        DomainKind(
            "extract",
            ("volume", "instruction"),
            _lazy("nanobot_tui.engine.work.extract"),
            lambda p: f"extract-{p.get('volume') or 'volume'}",
            command="process",
        ),
    )
}
NAMES = tuple(DOMAINS)  # every domain a run spec may name
RUN_NAMES = tuple(name for name, kind in DOMAINS.items() if kind.command == "run")


def build_domain(name: str, params: Params) -> Domain:
    """A fresh domain `name` built from `params`; KeyError for an unknown name,
    ValueError for params it cannot use."""
    return DOMAINS[name].build(params)
