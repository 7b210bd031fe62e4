"""Shoal: task graphs on short-lived workers that coordinate through a shared store,
with no central scheduler.

    import shoal

    @shoal.task
    def add(a, b):
        return a + b

    shoal.compute(add(add(1, 2), 3))   # -> (6,)
"""

import importlib
import logging
import sys
import types
from typing import TYPE_CHECKING, Any

from .errors import (
    BadSignature,
    ConfigError,
    EnvironmentBuildError,
    RemoteTraceback,
    RequirementsUnsatisfied,
    RunCancelled,
    RunNotFound,
    RunTimeout,
    ShoalError,
    StoreUnavailable,
    TaskFailed,
    WorkerLost,
)
from .events import Event, EventKind

if TYPE_CHECKING:
    from .api import compute
    from .graph import Node, TaskFunction, task
    from .history import history
    from .summary import RunSummary, last_run

# Imported on first use: a gateway, its template process and every worker import this
# package, and most of them never call compute() (its imports cost ~60 ms per process).
_LAZY = {
    "compute": "api",
    "Node": "graph",
    "TaskFunction": "graph",
    "task": "graph",
    "RunSummary": "summary",
    "last_run": "summary",
}


def __getattr__(name: str) -> Any:
    if name == "history":  # the module is callable: shoal.history(url) and shoal.history.*
        return importlib.import_module(".history", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "BadSignature",
    "ConfigError",
    "EnvironmentBuildError",
    "Event",
    "EventKind",
    "Node",
    "RemoteTraceback",
    "RequirementsUnsatisfied",
    "RunCancelled",
    "RunNotFound",
    "RunSummary",
    "RunTimeout",
    "ShoalError",
    "StoreUnavailable",
    "TaskFailed",
    "TaskFunction",
    "WorkerLost",
    "__version__",
    "compute",
    "history",
    "last_run",
    "task",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def _defer_httpx_cli() -> None:
    """``import httpx`` imports its command line whenever click, rich and pygments are
    installed, as they are beside Shoal (encode/httpx#3547): ~30 ms, and as much again in
    the anyio imports after it, in every client and gateway worker. A stand-in for that
    module imports the real one only if its ``main`` is called."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return

    def main(*args: Any, **kwargs: Any) -> Any:
        del sys.modules["httpx._main"]
        return importlib.import_module("httpx._main").main(*args, **kwargs)

    stand_in = types.ModuleType("httpx._main")
    stand_in.__dict__["main"] = main
    sys.modules["httpx._main"] = stand_in


_defer_httpx_cli()
