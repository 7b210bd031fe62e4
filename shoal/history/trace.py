"""A run's events folded into what the history keeps: the run's record (each task planned
vs real) and the statistics it adds. :class:`RunTrace` collects the events as the client
reads them; :meth:`RunTrace.fold` is a pure function of them, the graph and the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..events import Event, EventKind
from ..graph.maps import Grown
from ..metrics import TaskMetrics
from .records import (
    BackendStats,
    Cost,
    FunctionStats,
    RunRecord,
    StatsKey,
    handing_out,
    unneeded_writes,
    us,
)
from .stats import Fit, Summary

if TYPE_CHECKING:
    from ..graph import Graph
    from ..planning import Plan

# A record's fields, by position: records stay the plain sequences they arrived as (a named
# tuple per task would cost the fold a microsecond each).
TASK, READ_S, READ_BYTES, RUN_S, CPU_S, PEAK_MB, OUT_BYTES, UPLOAD_S = range(
    len(TaskMetrics._fields)
)
Metrics = Sequence[Any]  # a TaskMetrics' fields
#: Two invocations of one invoker sent within this share of the quickest hand-out of the
#: run went out together (one gather), not one as the other was answered.
TOGETHER = 0.25
#: Bytes from which a transfer takes a store longer than its round trips do (Redis on
#: loopback: ~1 GB/s, a round trip ~0.3 ms): smaller ones do not slow others down.
SHARED_ABOVE = 1 << 20


@dataclass
class _Worker:
    name: str
    started: float
    stopped: float | None = None
    cold: bool = False
    start_s: float = 0.0
    handout_s: float | None = None  # from the hand-out to the start, queueing left out
    cpus: float = 1.0
    memory_mb: int = 2048
    forwards: int = 0  # invocations it sent on as it started (a tree's share)
    parent: str | None = None  # the invocation that handed it out ("": the client)
    request_s: float | None = None  # the request whose place its invocation took
    tasks: list[int] = field(default_factory=list)


class RunTrace:
    """The events of one run that the history needs, collected as they are read."""

    def __init__(self) -> None:
        self.finished: dict[int, Event] = {}
        self.metrics: dict[int, Metrics] = {}
        self.workers: dict[str, _Worker] = {}
        #: CPU seconds the machine was busy while the run went, where the workers (and
        #: their store and platform) share the client's machine.
        self.machine_cpu_s: float | None = None

    def add(self, events: Iterable[Event]) -> None:
        finished, workers = self.finished, self.workers
        for ev in events:
            kind = ev.kind
            if kind is EventKind.TASK_FINISHED:
                finished[ev.task] = ev  # type: ignore[index]
            elif kind is EventKind.TASK_METRICS:
                data = ev.data or {}
                for row in data.get("tasks", ()):
                    self.metrics[row[TASK]] = row
            elif kind is EventKind.WORKER_STARTED:
                data = ev.data or {}
                cpus, memory_mb = data.get("size") or (1.0, 2048)
                workers[ev.worker] = _Worker(
                    ev.worker,
                    ev.time,
                    cold=bool(data.get("cold")),
                    start_s=float(data.get("start_s") or 0.0),
                    handout_s=_unqueued(data.get("handout_s"), data.get("queued_s")),
                    cpus=float(cpus),
                    memory_mb=int(memory_mb),
                    forwards=int(data.get("forwards") or 0),
                    parent=data.get("parent"),
                    request_s=data.get("request_s"),
                )
            elif kind is EventKind.WORKER_STOPPED:
                worker = workers.get(ev.worker)
                if worker is not None:
                    worker.stopped = ev.time

    def task_seconds(self, graph: Graph) -> list[float]:
        """How long each task of ``graph`` ran, as its metrics tell; a task without them,
        its function's mean (0.0 if none did): what :func:`~shoal.planning.rank_tasks`
        reads from the run's record, before the record is written."""
        sums: dict[int, list[float]] = {}
        seconds = [-1.0] * len(graph)
        for task, m in self.metrics.items():
            if task < len(seconds) and m[RUN_S] is not None:
                seconds[task] = m[RUN_S]
                total = sums.setdefault(graph.func_of[task], [0.0, 0.0])
                total[0] += m[RUN_S]
                total[1] += 1
        for t, f in enumerate(graph.func_of):
            if seconds[t] < 0:
                ran, count = sums.get(f, (0.0, 0.0))
                seconds[t] = ran / count if count else 0.0
        return seconds

    def fold(
        self, graph: Graph, record: RunRecord, plan: Plan | None = None
    ) -> tuple[dict[StatsKey, FunctionStats], BackendStats]:
        """Fill ``record``'s tasks, workers and cost from the events (and the plan's
        predictions); return the statistics the run adds to the history."""
        from ..planning.cost import price_of

        grown = Grown(graph)  # with the tasks its maps made, numbered after the graph's
        for task, done in self.finished.items():
            if done.data and "first" in done.data:
                grown.expanded(task, done.data)
        ids, func_of, deps = grown.dense()
        record.widths = {str(x): e.n for x, e in grown.expansions.items()}
        if len(ids) > len(graph):
            index = {t: k for k, t in enumerate(ids)}
            self.finished = {index[t]: ev for t, ev in self.finished.items() if t in index}
            self.metrics = {index[t]: m for t, m in self.metrics.items() if t in index}
        finished, metrics, workers = self.finished, self.metrics, self.workers
        for task, done in finished.items():
            if (ran_on := workers.get(done.worker)) is not None:
                ran_on.tasks.append(task)
        origin = min((ev.start for ev in finished.values()), default=0.0)
        n = len(ids)
        out_bytes = [_output_bytes(finished.get(t), metrics.get(t)) for t in range(n)]
        samples: dict[StatsKey, _Samples] = {}
        rows = []
        functions, backend = graph.functions, record.backend
        record.functions = [[fn.key, fn.name] for fn in functions]
        record.worker_names = list(workers)
        worker_index = {name: i for i, name in enumerate(workers)}
        for task in range(n):
            f = func_of[task]
            fn = functions[f]
            in_bytes = sum([out_bytes[d] or 0 for d in deps[task]])
            group = p_start = p_end = None
            if plan is not None and task < len(graph):
                group = plan.groups[task]
                p_start, p_end = (round(x * 1e6) for x in plan.times[task])
            ev = finished.get(task)
            if ev is None:
                rows.append(_row(task, f, in_bytes, group, p_start, p_end))
                continue
            worker = workers.get(ev.worker)
            cpus, memory_mb = (worker.cpus, worker.memory_mb) if worker else (0.0, 0)
            start, end = round((ev.start - origin) * 1e6), round((ev.time - origin) * 1e6)
            m = metrics.get(task)
            if m is None:
                measured: tuple[Any, ...] = (None,) * 6
            else:
                measured = (
                    round(m[RUN_S] * 1e6),
                    round(m[READ_S] * 1e6),
                    m[READ_BYTES],
                    round(m[UPLOAD_S] * 1e6),
                    us(m[CPU_S]),
                    m[PEAK_MB],
                )
                if worker is not None:
                    key = StatsKey(fn.key, cpus, memory_mb, backend)
                    if (kept := samples.get(key)) is None:
                        kept = samples[key] = _Samples()
                    kept.add(m, in_bytes, out_bytes[task])
            run_s, read_s, read_bytes, upload_s, cpu_s, peak_mb = measured
            rows.append([  # ROW_COLUMNS, in order (seconds in microseconds)
                task, f, cpus, memory_mb, worker_index.get(ev.worker), group, start, end,
                p_start, p_end, run_s, read_s, read_bytes, in_bytes, out_bytes[task],
                ev.stored, upload_s, cpu_s, peak_mb,
            ])  # fmt: skip
        record.rows = rows
        record.deps = [list(d) for d in deps]
        record.worker_spans = [
            [us(w.started - origin), us((w.stopped or w.started) - origin), us(w.start_s), w.cold]
            for w in workers.values()
        ]
        record.workers = len(workers)
        record.cold_starts = sum(w.cold for w in workers.values())
        record.cost = _cost(workers.values(), price_of(backend))
        platform = self._backend_stats(deps, planned=plan is not None)
        return {k: v.stats() for k, v in samples.items()}, platform

    def _start_spacing(self) -> tuple[set[str], list[float], list[float]]:
        """The workers whose invocation was due before the worker started ahead of them
        (a burst: it may have waited for that start), and the time from that start to
        theirs: after a warm start, and after a cold one (a gateway forks a worker while
        the invocations behind it wait). Due: sent, plus the run's quickest hand-out (the
        invoke request and a start that waits for nothing). Merely sent is not enough: a
        flat hand-out sends its next round as the platform answers the last, before it
        starts those workers, and the round's invoke latency is no pace of the
        platform's. The others' hand-outs are what one invocation alone takes."""
        queued: set[str] = set()
        spacing: tuple[list[float], list[float]] = ([], [])  # after a warm start, a cold one
        previous: _Worker | None = None
        quickest = min((w.handout_s for w in self.workers.values() if w.handout_s is not None),
                       default=0.0)  # fmt: skip
        for w in sorted(self.workers.values(), key=lambda w: w.started):
            sent = None if w.handout_s is None else w.started - w.handout_s
            if (
                sent is not None
                and previous is not None
                and (
                    sent + quickest < previous.started
                    # Or sent together with it by the same invoker (the client's roots, a few
                    # hand-outs at once): the platform took that one first, this one next. (A
                    # round sent as the last was answered comes a request's time later.)
                    or (
                        previous.handout_s is not None
                        and w.parent == previous.parent
                        and sent - (previous.started - previous.handout_s) < quickest * TOGETHER
                    )
                )
            ):
                queued.add(w.name)
                spacing[previous.cold].append(w.started - previous.started)
            previous = w
        return queued, spacing[0], spacing[1]

    def _worker_cpu(self, planned: bool) -> list[float]:
        """The CPU seconds the machine spent per worker besides its tasks' code (the
        workers' starts, loops and stops; the client, store and platform serving them),
        where it is this run's alone to know: the machine is the client's, and every
        task's CPU time is measured. Runs with a cold start teach none (a Python start and
        its imports are the cold hand-out's time, tens of times a warm worker's CPU), nor
        runs that moved large outputs (their pickling and copying are the transfers' time,
        which the store's rates charge, and not known apart here), nor runs without a plan
        (what the simulator plays): their few workers each ran many tasks, whose steps
        made 14 times a planned run's CPU per worker (Cycles: 0.2 s against 0.014), and
        plans of 58 workers were predicted at 2.3 times their makespan."""
        if not planned or self.machine_cpu_s is None or not self.workers:
            return []
        if any(w.cold for w in self.workers.values()):
            return []
        moved = sum(m[READ_BYTES] or 0 for m in self.metrics.values())
        moved += sum(ev.stored or 0 for ev in self.finished.values())
        if moved > SHARED_ABOVE * len(self.workers):
            return []
        tasks: list[float] = []
        for t in self.finished:
            if t not in self.metrics or (cpu := self.metrics[t][CPU_S]) is None:
                return []
            tasks.append(cpu)
        return [max(0.0, self.machine_cpu_s - sum(tasks)) / len(self.workers)]

    def _request_waits(self) -> list[float]:
        """From sending an invocation to sending the next in its place, in flat hand-outs
        of more invocations than an invoker has in flight (it sends the next as one is
        answered): an invoke request as its invoker waits for it, its own turnaround
        included, as the invoker timed it (:func:`~shoal.backends.base.invoke_all`): an
        invoker's sends taken together here mixed its hand-outs, seconds apart."""
        return [w.request_s for w in self.workers.values() if w.request_s is not None]

    def _handing_out(self, deps: Sequence[Sequence[int]]) -> set[int]:
        if len(self.workers) <= 1:  # one worker hands nothing out
            return set()
        finished = self.finished
        worker = [finished[t].worker if t in finished else None for t in range(len(deps))]
        end = [finished[t].time if t in finished else None for t in range(len(deps))]
        return handing_out(deps, worker, end)

    def _backend_stats(self, deps: Sequence[Sequence[int]], planned: bool) -> BackendStats:
        finished, metrics = self.finished, self.metrics
        starts: dict[str, list[float]] = {"cold": [], "warm": [], "hand_cold": [], "hand_warm": []}
        gaps: list[float] = []
        leads: list[float] = []
        # As the simulator plays them: a gap without the hand-out and the upload it holds,
        # nor the wait for the next task's inputs from other workers, until they landed
        # (see Predictor._learn_gaps). An output written for the store to drop, and inputs
        # read ahead as they landed (pre-load), are the simulator's to charge by their
        # bytes, which the backend's rates are not known here to take out: no samples.
        worker_of = [finished[t].worker if t in finished else None for t in range(len(deps))]
        stored = [finished[t].stored if t in finished else None for t in range(len(deps))]
        no_sample = self._handing_out(deps) | unneeded_writes(deps, worker_of, stored)

        def landed(t: int) -> float:
            return finished[t].time + (metrics[t][UPLOAD_S] if t in metrics else 0.0)

        queued, spacing, cold_spacing = self._start_spacing()
        for worker in self.workers.values():
            temp = "cold" if worker.cold else "warm"
            starts[temp].append(worker.start_s)
            if worker.handout_s is not None and worker.name not in queued:
                starts["hand_" + temp].append(worker.handout_s)
            ran = sorted(worker.tasks, key=lambda t: finished[t].start)
            # A share sent on is the simulator's to play; a cold worker's lead also imports
            # what its first task needs (tens of milliseconds), part of a cold start.
            if ran and not worker.forwards and not worker.cold:
                read_s = metrics[ran[0]][READ_S] if ran[0] in metrics else 0.0
                leads.append(finished[ran[0]].start - worker.started - read_s)
            for before, after in zip(ran, ran[1:], strict=False):
                if before in no_sample:
                    continue
                others = [d for d in deps[after] if worker_of[d] != worker.name]
                if others and any(d not in finished for d in others):
                    continue
                read_s = metrics[after][READ_S] if after in metrics else 0.0
                if others and (after not in metrics or metrics[after][READ_BYTES] == 0):
                    continue  # read ahead
                upload_s = metrics[before][UPLOAD_S] if before in metrics else 0.0
                ready = max([landed(d) for d in others], default=finished[before].time)
                since = max(finished[before].time, ready)
                gaps.append(finished[after].start - since - read_s - upload_s)
        # A cold worker's first read also imports what its values need (numpy: ~50 ms).
        fresh = {
            min(w.tasks, key=lambda t: finished[t].start)
            for w in self.workers.values()
            if w.cold and w.tasks
        }
        # Each read and each stored output, against the bytes the store moved meanwhile
        # (see _moved_meanwhile). An output the store judged unneeded and dropped may
        # have been written too: its bytes and time are not known apart (it stored 0).
        read_spans, reads_fresh, write_spans = [], [], []
        for t, m in metrics.items():
            if (done := finished.get(t)) is None:
                continue
            if m[READ_BYTES] > 0:
                read_spans.append((done.start - m[READ_S], m[READ_S], m[READ_BYTES]))
                reads_fresh.append(t in fresh)
            if m[UPLOAD_S] > 0 and m[OUT_BYTES] > 0:
                write_spans.append((done.time, m[UPLOAD_S], m[OUT_BYTES]))
        reads = [
            (b, d, x) for (_, d, b), x in zip(read_spans, _moved_meanwhile(read_spans), strict=True)
        ]
        reads = [r for r, cold in zip(reads, reads_fresh, strict=True) if not cold]
        writes = [
            (b, d, x)
            for (_, d, b), x in zip(write_spans, _moved_meanwhile(write_spans), strict=True)
        ]
        return BackendStats(
            worker_cpu=Summary.of(self._worker_cpu(planned)),
            cold_start=Summary.of(starts["cold"]),
            warm_start=Summary.of(starts["warm"]),
            handout_cold=Summary.of(starts["hand_cold"]),
            handout_warm=Summary.of(starts["hand_warm"]),
            gap=Summary.of(gaps),
            start_spacing=Summary.of(spacing),
            cold_spacing=Summary.of(cold_spacing),
            request_wait=Summary.of(self._request_waits()),
            lead=Summary.of(leads),
            read_fit=Fit.of([b for b, _, _ in reads], [d for _, d, _ in reads]),
            write_fit=Fit.of([b for b, _, _ in writes], [d for _, d, _ in writes]),
            read_shared_fit=Fit.of([x for _, _, x in reads], [d for _, d, _ in reads]),
            write_shared_fit=Fit.of([x for _, _, x in writes], [d for _, d, _ in writes]),
        )


def _moved_meanwhile(spans: Sequence[tuple[float, float, int]]) -> list[int]:
    """For each transfer of one kind (start, seconds, bytes): the bytes the store moved
    while it lasted, its own and those of the large others of its kind at once (from
    :data:`SHARED_ABOVE`), each spread evenly over its own span, in whole bytes. Where
    the store serves transfers at once by sharing its pace (one Redis thread), a
    transfer's time follows these (20 MB written while two others are takes three times
    as long); where it serves them side by side (files on several CPUs), its own bytes.
    Reads and writes apart: a read of a blob maps a file, moving next to nothing."""
    if len(spans) < 2:
        return [b for _, _, b in spans]
    points = sorted({t for s, d, _ in spans for t in (s, s + d)})
    at = {t: i for i, t in enumerate(points)}
    change = [0.0] * len(points)  # of the bytes per second moved, at each point
    for s, d, b in spans:
        if d > 0 and b >= SHARED_ABOVE:
            change[at[s]] += b / d
            change[at[s + d]] -= b / d
    moved = [0.0] * len(points)  # bytes moved from the first point to each
    rate = 0.0
    for i in range(1, len(points)):
        rate += change[i - 1]
        moved[i] = moved[i - 1] + rate * (points[i] - points[i - 1])
    return [
        b + round(moved[at[s + d]] - moved[at[s]]) - (b if b >= SHARED_ABOVE else 0) if d > 0 else b
        for s, d, b in spans
    ]


def _unqueued(handout_s: float | None, queued_s: float | None) -> float | None:
    """The hand-out delay without the wait for the concurrency cap (the simulator adds its
    own queueing)."""
    if handout_s is None:
        return None
    return max(0.0, handout_s - (queued_s or 0.0))


def _output_bytes(ev: Event | None, m: Metrics | None) -> int | None:
    if m is not None:
        return m[OUT_BYTES]
    if ev is not None and ev.stored > 0:
        return ev.stored
    return None


def _row(
    task: int, function: int, in_bytes: int, group: Any, p_start: Any, p_end: Any
) -> list[Any]:
    """The row of a task that did not finish."""
    return [task, function, 0.0, 0, None, group, None, None, p_start, p_end,
            None, None, None, in_bytes, None, None, None, None, None]  # fmt: skip


class _Samples:
    """One function's samples of one run, summarized once at the end (see Summary.of)."""

    __slots__ = ("duration", "cpu", "peak_mb", "output", "input", "output_input")

    def __init__(self) -> None:
        self.duration: list[float] = []
        self.cpu: list[float] = []
        self.peak_mb: list[float] = []
        self.output: list[float] = []
        self.input: list[float] = []
        self.output_input: list[float] = []  # the input bytes of each output sample

    def add(self, m: Metrics, in_bytes: int, out_bytes: int | None) -> None:
        self.duration.append(m[RUN_S])
        self.input.append(in_bytes)
        if m[CPU_S] is not None:
            self.cpu.append(m[CPU_S])
        if m[PEAK_MB] is not None:
            self.peak_mb.append(m[PEAK_MB])
        if out_bytes is not None:
            self.output.append(out_bytes)
            self.output_input.append(in_bytes)

    def stats(self) -> FunctionStats:
        return FunctionStats(
            duration=Summary.of(self.duration),
            cpu=Summary.of(self.cpu),
            output=Summary.of(self.output),
            peak_mb=Summary.of(self.peak_mb),
            input=Summary.of(self.input),
            duration_fit=Fit.of(self.input, self.duration),
            output_fit=Fit.of(self.output_input, self.output),
        )


def _cost(workers: Iterable[_Worker], price: Any) -> Cost:
    """Each worker billed from its start to its stop, at its size."""
    cost = Cost()
    for w in workers:
        seconds = max(0.0, (w.stopped if w.stopped is not None else w.started) - w.started)
        cost.gb_s += seconds * w.memory_mb / 1024
        cost.vcpu_s += seconds * w.cpus
        cost.requests += 1
    cost.usd = price.usd(cost.gb_s, cost.requests)
    return cost
