"""The run summary: a fold over the run's events, available as ``shoal.last_run()``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .events import Event, EventKind

if TYPE_CHECKING:
    from .planning import Plan


@dataclass(frozen=True)
class Attempt:
    """A failed attempt of a task, or a worker lost while it ran the task: the error, its
    traceback and the tail of what the attempt printed (empty for a lost worker)."""

    task: int | None
    name: str
    attempt: int  # 1 for the first try
    worker: str
    error: str
    traceback: str = ""
    output: str = ""

    @classmethod
    def of(cls, ev: Event) -> Attempt:
        data = ev.data or {}
        return cls(
            ev.task,
            str(data.get("name", ev.task)),
            int(data.get("attempt", 0)),
            str(data.get("worker", ev.worker)),
            str(data.get("error", "")),
            str(data.get("traceback", "")),
            str(data.get("output", "")),
        )


@dataclass
class RunSummary:
    """What a finished (or failed) run did."""

    run_id: str
    structure_hash: str
    tasks: int  # tasks in the graph, and those its maps made (shoal.graph.maps)
    tasks_done: int = 0
    workers: int = 0  # workers started (cold + warm)
    cold_starts: int = 0
    cold_start_s: float = 0.0  # time workers spent starting cold, from invocation to work
    forwarded: int = 0  # invocations workers sent on as they started (a tree of invokers)
    retries: int = 0
    makespan_s: float = 0.0  # first task start to last task end, from the events
    wall_s: float = 0.0  # compute() call, build and clean-up included
    bytes_moved: int = 0  # output bytes written to the store (estimated where not serialized)
    outputs_stored: int = 0  # outputs written to the store (the others stayed on their worker)
    storage: str = ""
    backend: str = ""
    planner: str = "none"
    sla: str = "mean"
    predicted_makespan_s: float | None = None  # by the plan (None without one)
    ok: bool = False
    #: Every failed attempt and every lost worker, in the order they happened.
    errors: list[Attempt] = field(default_factory=list)
    _first_start: float | None = field(default=None, repr=False)
    _last_end: float = field(default=0.0, repr=False)

    def add(self, events: list[Event]) -> None:
        """Fold a batch of events into the summary."""
        for ev in events:
            kind = ev.kind
            if kind is EventKind.TASK_FINISHED:
                self.tasks_done += 1
                if ev.time > self._last_end:
                    self._last_end = ev.time
                if self._first_start is None or ev.start < self._first_start:
                    self._first_start = ev.start
                if ev.stored:
                    self.bytes_moved += ev.stored
                    self.outputs_stored += 1
                if ev.data and "expanded" in ev.data:  # a map made more tasks
                    self.tasks += int(ev.data["expanded"])
            elif kind is EventKind.WORKER_STARTED:
                self.workers += 1
                data = ev.data or {}
                if data.get("cold"):
                    self.cold_starts += 1
                    self.cold_start_s += float(data.get("start_s", 0.0))
                self.forwarded += int(data.get("forwards", 0))
            elif kind is EventKind.TASK_RETRIED:
                self.retries += 1
                self.errors.append(Attempt.of(ev))
            elif kind is EventKind.TASK_FAILED or kind is EventKind.WORKER_LOST:
                self.errors.append(Attempt.of(ev))
        if self._first_start is not None and self._last_end:
            self.makespan_s = max(0.0, self._last_end - self._first_start)

    def planned(self, plan: Plan | None, planner: str, sla: str) -> None:
        """Note which planner ran (``none`` when it fell back) and what it predicted."""
        self.planner = planner if plan is not None else "none"
        self.sla = sla
        self.predicted_makespan_s = None if plan is None else plan.makespan_s

    @property
    def prediction_error(self) -> float | None:
        """(predicted - real) / real makespan; None without a plan."""
        if self.predicted_makespan_s is None or self.makespan_s <= 0:
            return None
        return (self.predicted_makespan_s - self.makespan_s) / self.makespan_s

    def __str__(self) -> str:
        status = "ok" if self.ok else "failed"
        predicted = ""
        if self.predicted_makespan_s is not None and self.prediction_error is not None:
            predicted = (
                f", planned {self.predicted_makespan_s:.3f} s by {self.planner} "
                f"({self.prediction_error:+.0%})"
            )
        return (
            f"run {self.run_id} {status}: {self.tasks_done:,}/{self.tasks:,} tasks on "
            f"{self.workers} worker{'' if self.workers == 1 else 's'}, "
            f"makespan {self.makespan_s:.3f} s{predicted} "
            f"(wall {self.wall_s:.3f} s), "
            f"{_human_bytes(self.bytes_moved)} moved in {self.outputs_stored:,} stored outputs"
        )


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


_last = threading.local()
_listeners: list[Callable[[RunSummary], None]] = []


def record(summary: RunSummary) -> None:
    _last.summary = summary
    for listener in list(_listeners):
        listener(summary)


def last_run() -> RunSummary | None:
    """The summary of the calling thread's most recent run, or None."""
    return getattr(_last, "summary", None)


def add_listener(listener: Callable[[RunSummary], None]) -> Callable[[], None]:
    """Call ``listener`` with every run's summary (any thread); returns its remover."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)
