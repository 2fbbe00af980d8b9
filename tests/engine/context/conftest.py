"""Fixtures shared by the context store's tests."""

from __future__ import annotations

import pytest

from nanobot_tui.engine.context import ripgrep


@pytest.fixture(params=["rg", "re2"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each grep engine in turn: ripgrep, then RE2 over the volume's text."""
    monkeypatch.setenv(ripgrep.ENGINE_ENV, request.param)
    return str(request.param)
