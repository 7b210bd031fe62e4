"""Shoal: task graphs on short-lived workers that coordinate through a shared store,
with no central scheduler.

    import shoal

    @shoal.task
    def add(a, b):
        return a + b

    shoal.compute(add(add(1, 2), 3))   # -> (6,)
"""

import logging

from .api import compute
from .errors import (
    BadSignature,
    ConfigError,
    RemoteTraceback,
    RunCancelled,
    RunNotFound,
    RunTimeout,
    ShoalError,
    StoreUnavailable,
    TaskFailed,
    WorkerLost,
)
from .events import Event, EventKind
from .graph import Node, TaskFunction, task
from .history import history
from .summary import RunSummary, last_run

__version__ = "0.1.0"

__all__ = [
    "BadSignature",
    "ConfigError",
    "Event",
    "EventKind",
    "Node",
    "RemoteTraceback",
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
