"""Durable processes: a run's tree of steps persisted as it goes (store), executed by a
runner that resumes after any crash (durable), controlled and detached (control), traced
(traces). The engine never imports textual.

Names are imported lazily, so `from nanobot_tui.engine.runs.store import RunStore`
(the process tree pane, the inspect screen) does not load the runner and numpy."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Control": "control",
    "RunLock": "control",
    "RunLocked": "control",
    "RunError": "durable",
    "execute": "durable",
    "start_run": "durable",
    "summary": "durable",
    "Budgets": "spec",
    "RetryPolicy": "spec",
    "RunSpec": "spec",
    "SpecError": "spec",
    "NodeRow": "store",
    "RunNotFound": "store",
    "RunStatus": "store",
    "RunStore": "store",
    "SampleRow": "store",
    "StepRow": "store",
    "StoreError": "store",
    "export_json": "store",
    "list_runs": "store",
    "resolve_run_id": "store",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
