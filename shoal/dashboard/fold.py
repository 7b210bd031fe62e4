"""What the dashboard shows, as pure functions over plain data: a live run folded from its
events (:class:`LiveRun`), and a finished run's record folded into a timeline, its
critical path, planned vs real and where the time went. No Streamlit here: the app
(:mod:`.app`) only draws what these return, so all of it is tested without a browser.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from ..events import Event, EventKind
from ..history import RunRecord, TaskRecord


class State(StrEnum):
    """A task's state in the live view."""

    WAITING = "waiting"  # some input is not finished
    READY = "ready"  # every input finished; no worker has it yet
    RUNNING = "running"  # on a worker (it runs, or is next on a worker that is up)
    RETRIED = "retried"  # an attempt failed or its worker was lost; it runs again
    DONE = "done"
    FAILED = "failed"


STATE_ORDER = tuple(State)
#: Above this many tasks a graph is drawn one node per function (the user may unfold it).
FOLD_ABOVE = 2000


@dataclass
class Shape:
    """A run's graph as the dashboard needs it: each task's function (an index into
    ``functions``, the display names) and inputs."""

    functions: list[str]
    func_of: list[int]
    deps: list[list[int]]
    #: Per map expander: what its expansion makes (ShippedGraph.shape's "maps").
    maps: dict[int, dict[str, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.children: list[list[int]] = [[] for _ in self.deps]
        for task, deps in enumerate(self.deps):
            for d in deps:
                self.children[d].append(task)
        self.ids: list[int] = list(range(len(self.deps)))  # the run's id of each task
        self.index: dict[int, int] = {}  # the run's id of a task a map made -> its place
        self.at: dict[int, int] = {}  # a map's element (its place) -> its index in the map

    def name(self, task: int) -> str:
        at = self.at.get(task)
        element = "" if at is None else f"[{at}]"
        return f"{self.functions[self.func_of[task]]}{element}-{self.ids[task]}"

    def place(self, task: int) -> int:
        """Where the run's task ``task`` is in this shape."""
        return self.index.get(task, task)

    def grow(self, expander: int, first: int, n: int) -> None:
        """Add the tasks map ``expander``'s expansion made: ``n`` elements from ``first``
        (:mod:`shoal.graph.maps`), each an input of its stage's collector."""
        family = self.maps.get(expander)
        if family is None or first in self.index:
            return
        funcs, parents, collectors = family["funcs"], family["parents"], family["collectors"]
        stages = len(funcs)
        for i in range(n):
            for s in range(stages):
                task, place = first + i * stages + s, len(self.deps)
                parent = parents[s]
                deps = [expander] if parent < 0 else [self.index[first + i * stages + parent]]
                self.index[task] = place
                self.at[place] = i
                self.ids.append(task)
                self.func_of.append(funcs[s])
                self.deps.append(deps)
                self.children.append([])
                for d in deps:
                    self.children[d].append(place)
                if collectors[s] >= 0:
                    self.deps[collectors[s]].append(place)
                    self.children[place].append(collectors[s])

    def to_json(self) -> dict[str, Any]:
        return {"functions": self.functions, "func_of": self.func_of, "deps": self.deps}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shape:
        maps = {int(x): family for x, family in data.get("maps", {}).items()}
        deps = [list(d) for d in data["deps"]]
        return cls(list(data["functions"]), list(data["func_of"]), deps, maps)

    @classmethod
    def of_record(cls, record: RunRecord) -> Shape:
        names = [name for _, name in record.functions]
        func_of = [0] * len(record.rows)
        for row in record.rows:
            func_of[row[0]] = row[1]
        return cls(names, func_of, record.deps or [[] for _ in record.rows])


@dataclass
class LiveRun:
    """A run as its events tell it so far. Which tasks run follows from the graph: a task
    whose inputs all finished is on a worker when a worker that is up started with it or
    finished its last input (it keeps such children); else it waits for one."""

    shape: Shape
    finished: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    retried: set[int] = field(default_factory=set)
    finished_by: dict[int, str] = field(default_factory=dict)
    started_with: dict[int, str] = field(default_factory=dict)  # a task -> the worker it began
    workers_up: set[str] = field(default_factory=set)
    workers_warm: int = 0
    workers_cold: int = 0
    bytes_moved: int = 0
    moved: dict[int, int] = field(default_factory=dict)  # task -> output bytes stored
    first_start: float | None = None
    last_time: float | None = None
    predicted_makespan_s: float | None = None

    def add(self, events: Iterable[Event]) -> None:
        for ev in events:
            kind, data = ev.kind, ev.data or {}
            if ev.time and (self.last_time is None or ev.time > self.last_time):
                self.last_time = ev.time
            if kind is EventKind.TASK_FINISHED:
                assert ev.task is not None
                if "first" in data:  # a map's expansion: the graph grows
                    self.shape.grow(ev.task, int(data["first"]), int(data["n"]))
                task = self.shape.place(ev.task)
                self.finished.add(task)
                self.retried.discard(task)
                self.finished_by[task] = ev.worker
                if ev.stored > 0:
                    self.bytes_moved += ev.stored
                    self.moved[task] = ev.stored
                if self.first_start is None or ev.start < self.first_start:
                    self.first_start = ev.start
            elif kind is EventKind.WORKER_STARTED:
                self.workers_up.add(ev.worker)
                if data.get("cold"):
                    self.workers_cold += 1
                else:
                    self.workers_warm += 1
                for task in data.get("tasks", ()):
                    self.started_with[self.shape.place(task)] = ev.worker
            elif kind is EventKind.WORKER_STOPPED:
                self.workers_up.discard(ev.worker)
            elif kind is EventKind.TASK_RETRIED and ev.task is not None:
                self.retried.add(self.shape.place(ev.task))
            elif kind is EventKind.WORKER_LOST:
                self.workers_up.discard(str(data.get("worker", "")))
                self.retried.update(map(self.shape.place, data.get("tasks", ())))
            elif kind is EventKind.TASK_FAILED and ev.task is not None:
                self.failed.add(self.shape.place(ev.task))

    def states(self) -> list[State]:
        shape, finished, up = self.shape, self.finished, self.workers_up
        out = []
        for task, deps in enumerate(shape.deps):
            if task in finished:
                out.append(State.DONE)
            elif task in self.failed:
                out.append(State.FAILED)
            elif not all(d in finished for d in deps):
                out.append(State.WAITING)
            elif task in self.retried:
                out.append(State.RETRIED)
            elif self.started_with.get(task) in up or any(
                self.finished_by.get(d) in up for d in deps
            ):
                out.append(State.RUNNING)
            else:
                out.append(State.READY)
        return out

    def elapsed_s(self, now: float) -> float:
        return 0.0 if self.first_start is None else max(0.0, now - self.first_start)


# --------------------------------------------------------------------------- folding by function


class FoldedNode(NamedTuple):
    function: str
    tasks: int
    states: dict[str, int]  # how many of its tasks are in each state


def fold_by_function(
    shape: Shape, states: Sequence[State]
) -> tuple[list[FoldedNode], dict[tuple[int, int], int]]:
    """One node per function (with how many of its tasks are in each state) and the edges
    between functions (with how many task edges each stands for): a graph of thousands of
    tasks drawn as a few nodes."""
    counts: list[dict[str, int]] = [{} for _ in shape.functions]
    for task, state in enumerate(states):
        c = counts[shape.func_of[task]]
        c[state.value] = c.get(state.value, 0) + 1
    edges: dict[tuple[int, int], int] = {}
    for task, deps in enumerate(shape.deps):
        for d in deps:
            key = (shape.func_of[d], shape.func_of[task])
            edges[key] = edges.get(key, 0) + 1
    nodes = [
        FoldedNode(name, sum(c.values()), c)
        for name, c in zip(shape.functions, counts, strict=True)
    ]
    return nodes, edges


def depths(deps: Sequence[Sequence[int]]) -> list[int]:
    """Each task's layer: the longest path from a root to it. (A graph's ids are in
    topological order, but not the tasks a map adds: its collector comes before them.)"""
    out: dict[int, int] = {}
    for root in range(len(deps)):
        stack = [root]
        while stack:
            task = stack[-1]
            if task in out:
                stack.pop()
                continue
            missing = [d for d in deps[task] if d not in out]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            out[task] = 1 + max(out[d] for d in deps[task]) if deps[task] else 0
    return [out[t] for t in range(len(deps))]


# --------------------------------------------------------------------------- a finished run


def critical_path(deps: Sequence[Sequence[int]], end: Sequence[float | None]) -> list[int]:
    """The chain of tasks that set the makespan: from the task that ended last, back
    through the input that ended last each time, to a root; first task first."""
    ended = [float("-inf") if e is None else e for e in end]
    if not any(e is not None for e in end):
        return []
    task = max(range(len(ended)), key=ended.__getitem__)
    path = [task]
    while deps[task]:
        task = max(deps[task], key=ended.__getitem__)
        path.append(task)
    return path[::-1]


class Bar(NamedTuple):
    """One span of a worker's timeline: a cold start, or a task's input read, run or
    upload (seconds from the run's first task start)."""

    worker: str
    kind: str  # "start", "read", "run", "upload"
    task: int | None
    name: str
    start: float
    end: float


def timeline(record: RunRecord) -> list[Bar]:
    """The per-worker timeline of a finished run (a Gantt chart's rows)."""
    bars = []
    for name, span in zip(record.worker_names, record.worker_spans, strict=False):
        started, _, start_s, cold = span
        if cold and start_s:
            begin = (started or 0) / 1e6
            bars.append(Bar(name, "start", None, "cold start", begin - start_s / 1e6, begin))
    for t in record.tasks:
        if t.start is None or t.end is None:
            continue
        if t.read_s:
            bars.append(Bar(t.worker, "read", t.task, t.name, t.start - t.read_s, t.start))
        bars.append(Bar(t.worker, "run", t.task, t.name, t.start, t.end))
        if t.upload_s:
            bars.append(Bar(t.worker, "upload", t.task, t.name, t.end, t.end + t.upload_s))
    return bars


def where_the_time_went(record: RunRecord) -> dict[str, float]:
    """Worker-seconds by what they went to: running tasks, reading and writing the store,
    starting cold, and the rest of the workers' lives (waiting, the protocol's steps)."""
    tasks = record.tasks
    compute = sum(t.run_s if t.run_s is not None else _span(t) for t in tasks)
    io = sum((t.read_s or 0.0) + (t.upload_s or 0.0) for t in tasks)
    starts = sum(span[2] / 1e6 for span in record.worker_spans if span[3] and span[2])
    alive = sum(max(0.0, (span[1] - span[0]) / 1e6) for span in record.worker_spans)
    return {
        "compute": compute,
        "I/O": io,
        "cold starts": starts,
        "waiting": max(0.0, alive - compute - io),
    }


def _span(t: TaskRecord) -> float:
    return (t.end - t.start) if t.start is not None and t.end is not None else 0.0


class PlannedVsReal(NamedTuple):
    task: int
    name: str
    function: str
    predicted_s: float
    real_s: float
    error: float  # (predicted - real) / real


def planned_vs_real(record: RunRecord) -> list[PlannedVsReal]:
    """Each planned task's predicted and real duration, the predictions furthest off in
    seconds first (a millisecond task twice as long as planned matters less than a
    ten-second one off by a fifth)."""
    rows = []
    for t in record.tasks:
        if None in (t.predicted_start, t.predicted_end, t.start, t.end):
            continue
        predicted = t.predicted_end - t.predicted_start  # type: ignore[operator]
        real = t.end - t.start  # type: ignore[operator]
        error = (predicted - real) / real if real > 0 else 0.0
        rows.append(PlannedVsReal(t.task, t.name, t.function, predicted, real, error))
    return sorted(rows, key=lambda r: -abs(r.predicted_s - r.real_s))


def history_rows(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """One row per run for the history view: when, how long (the one makespan, and the
    client's wall time beside it), the prediction and its error, the cost, the planner."""
    return [
        {
            "run": r.run_id,
            "workflow": r.name,
            "started": r.started,
            "ok": r.ok,
            "tasks": r.tasks_total,
            "makespan_s": r.makespan_s,
            "wall_s": r.wall_s,
            "predicted_s": r.predicted_makespan_s,
            "error": r.prediction_error,
            "cost_usd": r.cost.usd,
            "gb_s": r.cost.gb_s,
            "planner": r.planner,
            "sla": r.sla,
            "backend": r.backend,
        }
        for r in records
    ]
