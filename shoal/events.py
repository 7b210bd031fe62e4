"""What happens in a run, as plain data: the events of the run's stream.

Every state change is an :class:`Event` appended to the run's event stream. The client waits
on the stream for its sinks or the first failure; the progress bar, the run summary and the
dashboard are folds over the same events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, NamedTuple


class EventKind(StrEnum):
    RUN_STARTED = "run-started"
    TASK_STARTED = "task-started"
    TASK_RETRIED = "task-retried"
    TASK_FINISHED = "task-finished"
    TASK_FAILED = "task-failed"
    TASK_METRICS = "task-metrics"
    WORKER_STARTED = "worker-started"
    WORKER_STOPPED = "worker-stopped"
    WORKER_FAILED = "worker-failed"
    WORKER_LOST = "worker-lost"  # the client gave a lost worker's tasks to a new one


class Event(NamedTuple):
    """One entry of a run's event stream. ``data`` holds kind-specific details.

    A ``task-finished`` event carries the task's whole span: ``start`` and ``time`` (the
    end), so one event per task gives timelines and makespans. ``task-started`` is sent on
    its own only where a task is visibly under way before it finishes (a retry): a second
    event per task would cost every task a store step. Which tasks are running follows
    from the graph: those whose inputs have all finished and that have not finished.
    """

    kind: EventKind
    worker: str
    task: int | None = None
    time: float = 0.0
    data: dict[str, Any] | None = None
    start: float = 0.0
    stored: int = 0  # bytes of the task's output written to the store (task-finished)


def encode_events(events: Sequence[Event]) -> str:
    """Events as one JSON array: the form of a Redis stream entry (``stored`` is left to
    the store, which alone knows it)."""
    return json.dumps([[e.kind.value, e.worker, e.task, e.time, e.data, e.start] for e in events])


def decode_events(text: str | bytes, stored: str | bytes | None = None) -> list[Event]:
    """Events from :func:`encode_events`; ``stored``: the bytes stored per event (a JSON
    array; -1 drops the event of a redelivered completion)."""
    rows = json.loads(text)
    sizes = json.loads(stored) if stored else [0] * len(rows)
    return [
        Event(EventKind(kind), worker, task, time_, data, start, size)
        for (kind, worker, task, time_, data, start), size in zip(rows, sizes, strict=True)
        if size >= 0
    ]


def event(
    kind: EventKind, worker: str, task: int | None = None, data: dict[str, Any] | None = None
) -> Event:
    """An event stamped with the wall clock (comparable across processes)."""
    return Event(kind, worker, task, time.time(), data)
