"""What the history keeps, as plain data: run records with their tasks (planned vs real),
per-function statistics, and per-backend statistics. Everything here is JSON-able, and
merging statistics is adding them up (see :mod:`.stats`).

    FunctionStats  per (workflow, function, size, backend kind): the task's duration, CPU
                   time, output bytes and peak memory, and fits of duration and output
                   bytes against input bytes
    BackendStats   per backend kind: worker starts (cold and warm), the delay from a
                   hand-out to a worker's start and between the starts of a burst, a
                   worker's lead to its first task, the worker loop's gap between tasks,
                   and fits of store reads and writes (seconds against bytes)
    RunRecord      one run: what was planned, what happened, what it cost; with a
                   TaskRecord per task
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

from .stats import Fit, Summary


class StatsKey(NamedTuple):
    """Which tasks a :class:`FunctionStats` describes (within one workflow)."""

    function: str
    cpus: float
    memory_mb: int
    backend: str

    def text(self) -> str:
        return f"{self.function}|{self.cpus:g}|{self.memory_mb}|{self.backend}"

    @classmethod
    def parse(cls, text: str) -> StatsKey:
        function, cpus, memory_mb, backend = text.rsplit("|", 3)
        return cls(function, float(cpus), int(memory_mb), backend)


@dataclass
class FunctionStats:
    duration: Summary = field(default_factory=Summary)  # seconds the function ran
    cpu: Summary = field(default_factory=Summary)  # CPU seconds of its process meanwhile
    output: Summary = field(default_factory=Summary)  # bytes
    peak_mb: Summary = field(default_factory=Summary)  # resident memory of its process
    input: Summary = field(default_factory=Summary)  # bytes of its inputs
    duration_fit: Fit = field(default_factory=Fit)  # duration against input bytes
    output_fit: Fit = field(default_factory=Fit)  # output bytes against input bytes

    def merge(self, other: FunctionStats) -> None:
        for f in fields(self):
            getattr(self, f.name).merge(getattr(other, f.name))

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name).to_json() for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FunctionStats:
        return _load(cls(), data)


@dataclass
class BackendStats:
    cold_start: Summary = field(default_factory=Summary)  # platform start, cold (seconds)
    warm_start: Summary = field(default_factory=Summary)
    #: From a hand-out (its sending) to the worker's start, of invocations that did not
    #: wait for another worker's start (those teach ``start_spacing``).
    handout_cold: Summary = field(default_factory=Summary)
    handout_warm: Summary = field(default_factory=Summary)
    gap: Summary = field(default_factory=Summary)  # a task's end to the worker's next start
    #: Between two worker starts, where the second was due (sent, plus the run's quickest
    #: hand-out) before the first started: how fast the platform starts a burst of workers
    #: (one after another on one machine).
    start_spacing: Summary = field(default_factory=Summary)
    #: The same after a cold start (a gateway forks a worker while the others wait).
    cold_spacing: Summary = field(default_factory=Summary)
    #: From sending an invocation to sending the next in its place, in a hand-out wider
    #: than an invoker's invocations in flight: a request as the invoker waits for it.
    #: (Not ``request``: that one timed sends across all the hand-outs of an invoker, its
    #: queued ones' too, and histories that hold it are better without it.)
    request_wait: Summary = field(default_factory=Summary)
    lead: Summary = field(default_factory=Summary)  # a worker's start to its first task
    #: CPU seconds a worker's machine spends on an invocation besides its tasks' code (its
    #: process's start, loop and stop; the client, store and platform serving it there).
    worker_cpu: Summary = field(default_factory=Summary)
    read_fit: Fit = field(default_factory=Fit)  # store read seconds against bytes
    write_fit: Fit = field(default_factory=Fit)  # an output's store seconds against bytes
    #: The same against the bytes the store moved meanwhile (each transfer's own and the
    #: large ones of its kind at once): a store that serves them one at a time shows so.
    read_shared_fit: Fit = field(default_factory=Fit)
    write_shared_fit: Fit = field(default_factory=Fit)

    merge = FunctionStats.merge
    to_json = FunctionStats.to_json

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackendStats:
        return _load(cls(), data)


def _load(out: Any, data: dict[str, Any]) -> Any:
    """Fill the summaries and fits of ``out`` from JSON (fields it lacks stay empty)."""
    for f in fields(out):
        if f.name in data:
            kind = Fit if f.name.endswith("_fit") else Summary
            setattr(out, f.name, kind.from_json(data[f.name]))
    return out


@dataclass(slots=True)
class TaskRecord:
    """One task of a run: where it ran, when (seconds from the run's first task start),
    what it cost in time and bytes, and what the plan predicted (None when unplanned)."""

    task: int
    name: str
    function: str
    cpus: float = 0.0
    memory_mb: int = 0
    worker: str = ""
    group: int | None = None
    start: float | None = None
    end: float | None = None
    predicted_start: float | None = None
    predicted_end: float | None = None
    run_s: float | None = None
    read_s: float | None = None
    read_bytes: int | None = None
    in_bytes: int | None = None
    out_bytes: int | None = None
    stored_bytes: int | None = None
    upload_s: float | None = None
    cpu_s: float | None = None
    peak_mb: float | None = None

    @property
    def error_s(self) -> float | None:
        """Predicted minus real duration (None unless both are known)."""
        if None in (self.start, self.end, self.predicted_start, self.predicted_end):
            return None
        predicted = self.predicted_end - self.predicted_start  # type: ignore[operator]
        return predicted - (self.end - self.start)  # type: ignore[operator]


#: The columns of a run's task table, as stored: :class:`TaskRecord`'s fields, but the
#: name (made of the function's and the task id), and the function and the worker as
#: indices into the run's tables of them (a run of 100 000 tasks stays cheap to record).
ROW_COLUMNS = (
    "task", "function", "cpus", "memory_mb", "worker", "group", "start", "end",
    "predicted_start", "predicted_end", "run_s", "read_s", "read_bytes", "in_bytes",
    "out_bytes", "stored_bytes", "upload_s", "cpu_s", "peak_mb",
)  # fmt: skip
COLUMN = {name: i for i, name in enumerate(ROW_COLUMNS)}
#: Columns of seconds, stored as whole microseconds (JSON writes an int five times faster
#: than a float, and shorter).
MICROSECONDS = frozenset(
    COLUMN[c]
    for c in ("start", "end", "predicted_start", "predicted_end", "run_s", "read_s",
              "upload_s", "cpu_s")
)  # fmt: skip


def handing_out(
    deps: Sequence[Sequence[int]], worker: Sequence[Any], end: Sequence[float | None]
) -> set[int]:
    """The tasks whose completion handed work out: it readied a child (it was the child's
    input that finished last) that ran on another worker. Their workers' time before
    their next task holds the hand-out, which the simulator plays itself."""
    out = set()
    for child, inputs in enumerate(deps):
        ran_on = worker[child]
        if ran_on is None or not inputs:
            continue
        if len(inputs) == 1:  # the common case, quickly
            last = inputs[0]
            if end[last] is None:
                continue
        else:
            ended = [(end[d], d) for d in inputs if end[d] is not None]
            if not ended:
                continue
            last = max(ended)[1]
        if worker[last] != ran_on:
            out.add(last)
    return out


def unneeded_writes(
    deps: Sequence[Sequence[int]], worker: Sequence[Any], stored: Sequence[int | None]
) -> set[int]:
    """The tasks whose worker wrote their output for the store to throw it away: the one
    unstored input, made on the worker that ran it, of a child of several inputs. An
    output goes to the store unless its children all stay, and stays there only if one
    waits for more inputs; this one readied its child, kept on its worker, so the store
    dropped it. Two unstored inputs made there went to one store step, which the worker
    could tell settles them (:func:`shoal.decisions.settled_here`): neither was written.
    Their workers' time before their next task holds that write, which the simulator
    plays itself."""
    out = set()
    for child, inputs in enumerate(deps):
        ran_on = worker[child]
        if ran_on is None or len(inputs) < 2:
            continue
        unstored = [d for d in inputs if worker[d] == ran_on and not stored[d]]
        if len(unstored) == 1:
            out.add(unstored[0])
    return out


def us(seconds: float | None) -> int | None:
    """Seconds as whole microseconds (None stays None)."""
    return None if seconds is None else round(seconds * 1e6)


@dataclass
class Cost:
    """What a run's workers cost: memory- and CPU-seconds, invocations, and money."""

    gb_s: float = 0.0
    vcpu_s: float = 0.0
    requests: int = 0
    usd: float = 0.0


@dataclass
class RunRecord:
    """One run as the history keeps it. ``makespan_s`` is the one makespan of Shoal: the
    first task's start to the last task's end, from the run's events; ``wall_s`` is the
    client's whole ``compute()`` call, shown beside it."""

    run_id: str
    workflow: str
    name: str
    started: float  # wall clock of the compute() call
    backend: str
    storage: str
    planner: str = "none"
    sla: str = "mean"
    ok: bool = False
    error: str | None = None
    tasks_total: int = 0
    tasks_done: int = 0
    workers: int = 0
    cold_starts: int = 0
    makespan_s: float = 0.0
    wall_s: float = 0.0
    predicted_makespan_s: float | None = None
    cost: Cost = field(default_factory=Cost)
    predicted_cost: Cost | None = None
    deadline_s: float | None = None
    #: One row per task, in :data:`ROW_COLUMNS` order (seconds in microseconds), and the
    #: tables its function and worker columns index: (key, display name) per function, a
    #: name per worker.
    rows: list[list[Any]] = field(default_factory=list, repr=False)
    functions: list[list[str]] = field(default_factory=list, repr=False)
    worker_names: list[str] = field(default_factory=list, repr=False)
    #: The graph's edges: each task's inputs (for the dashboard's graph and critical path).
    deps: list[list[int]] = field(default_factory=list, repr=False)
    #: Per worker (in ``worker_names`` order): its start and stop (microseconds from the
    #: first task's start), how long its start took, and whether it was cold.
    worker_spans: list[list[Any]] = field(default_factory=list, repr=False)
    #: Each map's width: its expander's task id (a string, as JSON keys are) -> elements.
    widths: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def tasks(self) -> list[TaskRecord]:
        """Each task, planned vs real."""
        functions, workers = self.functions, self.worker_names
        out = []
        for stored in self.rows:
            row = [v / 1e6 if i in MICROSECONDS and v is not None else v
                   for i, v in enumerate(stored)]  # fmt: skip
            task, f, cpus, memory_mb, w, *rest = row
            key, name = functions[f]
            worker = "" if w is None else workers[w]
            out.append(TaskRecord(task, f"{name}-{task}", key, cpus, memory_mb, worker, *rest))
        return out

    def set_tasks(self, tasks: list[TaskRecord]) -> None:
        """Make the task table of ``tasks`` (the fold writes rows directly: this is for
        records made by hand)."""
        functions: dict[str, int] = {}
        workers: dict[str, int] = {}
        self.rows = []
        for t in tasks:
            name = t.name.rsplit("-", 1)[0]
            f = functions.setdefault(t.function, len(functions))
            if f == len(self.functions):
                self.functions.append([t.function, name])
            w = None
            if t.worker:
                w = workers.setdefault(t.worker, len(workers))
                if w == len(self.worker_names):
                    self.worker_names.append(t.worker)
            values = [getattr(t, c) for c in ROW_COLUMNS]
            values[COLUMN["function"]], values[COLUMN["worker"]] = f, w
            for i in MICROSECONDS:
                values[i] = us(values[i])
            self.rows.append(values)

    @property
    def prediction_error(self) -> float | None:
        """(predicted - real) / real makespan, or None when unplanned."""
        if self.predicted_makespan_s is None or self.makespan_s <= 0:
            return None
        return (self.predicted_makespan_s - self.makespan_s) / self.makespan_s

    def to_json(self) -> dict[str, Any]:
        table = ("rows", "functions", "worker_names")
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in table}
        data["cost"] = asdict(self.cost)
        data["predicted_cost"] = asdict(self.predicted_cost) if self.predicted_cost else None
        data["tasks"] = {
            "columns": ROW_COLUMNS,
            "rows": self.rows,
            "functions": self.functions,
            "workers": self.worker_names,
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        table = data.pop("tasks", None) or {}
        known = {f.name for f in fields(cls)} - {"rows", "functions", "worker_names"}
        record = cls(**{k: v for k, v in data.items() if k in known})
        record.cost = Cost(**data.get("cost") or {})
        predicted = data.get("predicted_cost")
        record.predicted_cost = Cost(**predicted) if predicted else None
        record.functions = table.get("functions", [])
        record.worker_names = table.get("workers", [])
        columns, rows = list(table.get("columns", ROW_COLUMNS)), table.get("rows", [])
        if columns == list(ROW_COLUMNS):
            record.rows = rows
        else:  # written by another version: match the columns by name
            where = [columns.index(c) if c in columns else None for c in ROW_COLUMNS]
            record.rows = [[None if i is None else row[i] for i in where] for row in rows]
        return record
