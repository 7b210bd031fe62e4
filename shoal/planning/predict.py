"""Predictions per task at the run's SLA: how long a task runs on a size, how much CPU it
keeps busy, how many bytes it outputs and how much memory it needs.

Durations on a size never seen follow a scaling law fitted to what was seen. From the
run time ``D`` and the CPU time ``W`` measured on ``c`` CPUs, a task splits into time
that CPUs do not shorten (``i``: waiting, I/O), serial work ``s`` and parallel work
``q``, and on ``c'`` CPUs it takes ``i + s / min(c', 1) + q / c'``. A task that kept at
most one CPU busy is serial (``q = 0``, ``i = D - W``); one that kept more busy gives
``q = (W - D) c / (c - 1)`` and ``s = W - q``. On Lambda ``c'`` is the share of a vCPU its
memory buys. Where a function ran on two sizes of one CPU or more, the law is fitted to its
run times there instead (what the times show wins: where workers share a machine's CPUs,
more CPUs may buy nothing); else it is the one measured on the most CPUs it ran on (only
there can parallel work show). The prediction is the statistic the SLA names (the mean,
or a percentile) on the size seen nearest one CPU, moved by the law; where a function's
run time (or output) follows its input bytes (a fit explaining most of the variance),
the line gives the mean, moved the same way. A function never seen is predicted at
:data:`UNSEEN`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..backends import Size
from ..decisions import SMALL_TASK_S
from ..history.records import (
    COLUMN,
    FunctionStats,
    RunRecord,
    StatsKey,
    handing_out,
    unneeded_writes,
)
from .model import BackendModel

#: A fit of duration or output against input bytes is used when it explains this much.
FIT_R2 = 0.6


class Unseen(NamedTuple):
    duration_s: float
    output_bytes: float
    peak_mb: float | None


#: What a function never seen in this workflow on this backend is predicted to take.
UNSEEN = Unseen(duration_s=0.1, output_bytes=1024.0, peak_mb=None)


@dataclass(frozen=True, slots=True)
class Law:
    """A task's time on ``c`` CPUs: ``idle + serial / min(c, 1) + parallel / c``."""

    idle: float
    serial: float
    parallel: float

    def time(self, cpus: float) -> float:
        return self.idle + self.serial / min(cpus, 1.0) + self.parallel / cpus

    def demand(self, cpus: float) -> float:
        """CPUs kept busy on average while it runs on ``cpus``."""
        t = self.time(cpus)
        return min(cpus, (self.serial + self.parallel) / t) if t > 0 else 0.0

    @classmethod
    def measured(cls, run_s: float, cpu_s: float | None, cpus: float) -> Law:
        """The law of a task that ran ``run_s`` seconds using ``cpu_s`` CPU seconds on
        ``cpus`` CPUs (CPU time unknown: all serial work)."""
        share = min(cpus, 1.0)
        if cpu_s is None:
            return cls(0.0, run_s * share, 0.0)
        if cpu_s <= run_s * share * 1.1 or cpus <= 1.0:
            serial = min(cpu_s, run_s * share)
            return cls(max(0.0, run_s - serial / share), serial, 0.0)
        parallel = min(cpu_s, (cpu_s - run_s) * cpus / (cpus - 1.0))
        serial = max(0.0, cpu_s - parallel)
        return cls(max(0.0, run_s - serial - parallel / cpus), serial, parallel)


def _fit_law(seen: Sequence[_Seen]) -> Law | None:
    """The law through the run times seen on one CPU or more, where a function ran on
    two or more such sizes: least squares of ``time = a + b / cpus`` over their means
    (weighted by their counts); ``a`` the work CPUs do not share, ``b`` the work they
    do. What the times show wins over what CPU time suggests: where workers share a
    machine's CPUs, a larger size may buy nothing. Of ``a``, only what the CPU time
    measured leaves beside ``b`` is work; the rest is waiting (a task that sleeps 50 ms
    on 1 ms of CPU, taken for 50 ms of work, was predicted to crowd out others)."""
    points = [
        (1.0 / s.cpus, s.stats.duration.mean, s.stats.duration.n) for s in seen if s.cpus >= 1
    ]
    if len({x for x, _, _ in points}) < 2:
        return None
    w = sum(n for _, _, n in points)
    mx = sum(x * n for x, _, n in points) / w
    my = sum(y * n for _, y, n in points) / w
    sxx = sum(n * (x - mx) ** 2 for x, _, n in points)
    slope = sum(n * (x - mx) * (y - my) for x, y, n in points) / sxx
    slope = max(0.0, slope)
    fixed = max(0.0, my - slope * mx)
    cpu = [(s.stats.cpu.mean, s.stats.cpu.n) for s in seen if s.cpus >= 1 and s.stats.cpu.n]
    if not cpu:  # CPU time unknown: all work
        return Law(0.0, fixed, slope)
    cpu_s = sum(c * n for c, n in cpu) / sum(n for _, n in cpu)
    serial = min(fixed, max(0.0, cpu_s - slope))
    return Law(fixed - serial, serial, slope)


@dataclass(slots=True)
class _TaskSeen:
    function: str
    seconds: list[float] = field(default_factory=list)  # on one CPU
    read: list[float] = field(default_factory=list)  # bytes it read from the store, per run
    outputs: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # its worker's time before the next
    home_gaps: list[float] = field(default_factory=list)  # the same, its output kept home


@dataclass(frozen=True, slots=True)
class _Seen:
    cpus: float
    stats: FunctionStats
    law: Law


def _split_reads(seen: _TaskSeen) -> tuple[list[float], list[float]]:
    """A task's run times: those of runs that read none of its inputs from the store,
    and those of runs that read some. Apart only where at least two runs read none: one
    alone is no baseline (a 2 ms task that stalled 40 ms once, its inputs held, was
    predicted at 40 ms although ten runs that read them took 2); else all are ``read``."""
    held = [s for s, b in zip(seen.seconds, seen.read, strict=True) if not b]
    if len(held) < 2:
        return [], list(seen.seconds)
    read = [s for s, b in zip(seen.seconds, seen.read, strict=True) if b]
    return held, read


class Predictor:
    """Predictions for the tasks of one workflow on one backend, at one SLA. Cheap to ask
    many times (a planner asks per task and size): what depends only on the function and
    the CPUs is worked out once.

    The statistics of a function speak for all its tasks; the recent runs of the same
    workflow (``recent``: a bounded few, from the history's run records) speak for each
    task: the same task of the same program. Where a task ran before, its own durations
    and output bytes are used (see :meth:`_own`), moved to the size asked for by the
    function's law."""

    def __init__(
        self,
        stats: Mapping[StatsKey, FunctionStats],
        sla: str,
        model: BackendModel,
        recent: Sequence[RunRecord] = (),
    ) -> None:
        self.sla = sla
        self.model = model
        by_function: dict[str, dict[float, FunctionStats]] = {}
        for key, s in stats.items():
            cpus = model.cpus_of(Size(key.cpus, key.memory_mb))
            merged = by_function.setdefault(key.function, {}).setdefault(cpus, FunctionStats())
            merged.merge(s)
        self._seen: dict[str, list[_Seen]] = {}
        self._all: dict[str, FunctionStats] = {}  # every size merged
        self._laws: dict[str, Law] = {}
        for function, sizes in by_function.items():
            seen, every = [], FunctionStats()
            for cpus, s in sizes.items():
                every.merge(s)
                if s.duration.n:
                    cpu_s = s.cpu.mean if s.cpu.n else None
                    seen.append(_Seen(cpus, s, Law.measured(s.duration.mean, cpu_s, cpus)))
            if seen:
                self._seen[function] = seen
                self._all[function] = every
                self._laws[function] = (
                    _fit_law(seen) or max(seen, key=lambda s: (s.cpus, s.stats.duration.n)).law
                )  # from the most CPUs seen: only there can parallel work show
        self._bases: dict[str, float] = {}  # seconds on one CPU, per function
        self._scales: dict[tuple[str, float], float] = {}
        self._tasks: dict[int, _TaskSeen] = {}
        for run in recent:
            self._learn_tasks(run)

    def _learn_tasks(self, run: RunRecord) -> None:
        """Each task's duration (moved to one CPU by its function's law) and output."""
        col = COLUMN
        task_i, fn_i, cpus_i, mem_i = col["task"], col["function"], col["cpus"], col["memory_mb"]
        run_i, out_i, read_i = col["run_s"], col["out_bytes"], col["read_bytes"]
        functions = [key for key, _ in run.functions]
        self._learn_gaps(run)
        for row in run.rows:
            if row[run_i] is None:
                continue
            run_s = row[run_i] / 1e6  # stored in microseconds
            function = functions[row[fn_i]]
            seen = self._tasks.get(row[task_i])
            if seen is None or seen.function != function:
                seen = self._tasks[row[task_i]] = _TaskSeen(function)
            cpus = self.model.cpus_of(Size(row[cpus_i] or 1.0, row[mem_i] or 2048))
            law = self._law(function)
            seen.seconds.append(run_s * law.time(1.0) / law.time(cpus) if law else run_s)
            seen.read.append(row[read_i] or 0)
            if row[out_i] is not None:
                seen.outputs.append(row[out_i])

    def _learn_gaps(self, run: RunRecord) -> None:
        """What each task's worker did between its end and the start of its next task
        (its completion step, its output's serializing, a collection pause...), less its
        output's upload where it was stored, or its write where the store threw it away
        (:func:`~shoal.history.records.unneeded_writes`): the simulator charges those by
        the bytes a plan writes (a plan that keeps the output local saves them). A
        completion that handed work out is no sample: its time holds the hand-out
        (invocations, in rounds, each taking the platform's latency), which the simulator
        plays by what a plan hands out."""
        col = COLUMN
        task_i, fn_i, worker_i = col["task"], col["function"], col["worker"]
        start_i, end_i, read_i = col["start"], col["end"], col["read_s"]
        upload_i, out_i, stored_i = col["upload_s"], col["out_bytes"], col["stored_bytes"]
        read_bytes_i, run_i = col["read_bytes"], col["run_s"]
        functions = [key for key, _ in run.functions]
        by_worker: dict[int, list[list[Any]]] = {}
        for row in run.rows:
            if row[worker_i] is not None and row[start_i] is not None:
                by_worker.setdefault(row[worker_i], []).append(row)
        n = len(run.deps)  # a record of an older version may have no edges: no hand-outs
        worker: list[Any] = [None] * n
        end: list[Any] = [None] * n
        landed: list[Any] = [None] * n  # its end and its upload: when others could read it
        out: list[float] = [0.0] * n
        stored: list[Any] = [None] * n
        for row in run.rows:
            if (t := row[task_i]) < n:
                worker[t], end[t], stored[t] = row[worker_i], row[end_i], row[stored_i]
                out[t] = row[out_i] or 0.0
                if end[t] is not None:
                    landed[t] = end[t] + (row[upload_i] or 0)
        handed = handing_out(run.deps, worker, end)
        dropped = unneeded_writes(run.deps, worker, stored)
        model = self.model
        has_children = {d for inputs in run.deps for d in inputs}
        for rows in by_worker.values():
            rows.sort(key=lambda r: r[start_i])
            carried = 0.0  # writes of quick completions its next store step took
            for before, after in zip(rows, rows[1:], strict=False):
                t = before[task_i]
                written = (before[upload_i] or 0) / 1e6
                if t in dropped:
                    written += model.write_s(out[t])
                if t in handed:  # urgent: its step took the quick ones before it too
                    carried = 0.0
                    continue
                # A quick task's completion waits for the worker's next step (after its
                # next task: :func:`shoal.decisions.should_flush`), which writes its output:
                # the simulator charges each write after its own task, as one step would.
                # A next task of several inputs was readied by a step: it came first.
                quick = (before[run_i] or 0) < SMALL_TASK_S * 1e6 and t in has_children
                if quick and (after[task_i] >= n or len(run.deps[after[task_i]]) < 2):
                    carried, written = carried + written, 0.0
                else:
                    carried, written = 0.0, written + carried
                # Waiting for the next task's inputs is no gap (a worker holding back for
                # a fan-in waits for the others): the gap runs from the later of its end
                # and the next task's last input's landing in the store. An input of
                # another worker it did not read as it started it read ahead as it landed
                # (pre-load): the simulator charges the read of the last of those.
                deps = run.deps[after[task_i]] if after[task_i] < n else ()
                others = [d for d in deps if worker[d] != after[worker_i]]
                ready = max([landed[d] for d in others if landed[d] is not None], default=0)
                waited = after[start_i] - max(before[end_i], ready) - (after[read_i] or 0)
                gap = waited / 1e6 - written
                read_bytes = after[read_bytes_i]
                if others and read_bytes is not None and read_bytes < sum(out[d] for d in others):
                    last = max(others, key=lambda d: landed[d] or 0)
                    gap -= model.read_s(out[last])
                function = functions[before[fn_i]]
                seen = self._tasks.get(before[task_i])
                if seen is None or seen.function != function:
                    seen = self._tasks[before[task_i]] = _TaskSeen(function)
                home = stored[t] == 0 and t not in dropped and t in has_children
                (seen.home_gaps if home else seen.gaps).append(max(0.0, gap))

    def task_gap(self, task: int, function: str, home: bool = False) -> float:
        """Seconds the worker loop takes after task ``task`` before its next task: from
        its own earlier runs (``home``: those whose completion kept its output home, which
        takes another step than one that stores it, as where a plan clusters it and
        another does not), else the backend's."""
        seen = self._tasks.get(task)
        if seen is None or seen.function != function:
            return self.model.gap_s
        first, other = (seen.home_gaps, seen.gaps) if home else (seen.gaps, seen.home_gaps)
        if first or other:
            return self._own(first or other)
        return self.model.gap_s

    def _law(self, function: str) -> Law | None:
        return self._laws.get(function)

    def task_duration(
        self, task: int, function: str, size: Size, in_bytes: float | None = None
    ) -> float:
        """Seconds task ``task`` (of ``function``) runs on ``size``: from its own earlier
        runs where there are any, else from its function's."""
        base = self.task_base(task, function, in_bytes)
        return base * self.scale(function, self.model.cpus_of(size))

    def task_base(self, task: int, function: str, in_bytes: float | None = None) -> float:
        """Seconds task ``task`` runs on one CPU (see :meth:`scale` for other sizes), its
        inputs in hand: from its runs that read none from the store, where some did and
        some did not (see :meth:`task_touch`)."""
        seen = self._tasks.get(task)
        if seen is None or seen.function != function or not seen.seconds:
            return self._function_base(function) * self.input_factor(function, in_bytes)
        held, _ = _split_reads(seen)
        return self._own(held or seen.seconds)

    def task_touch(self, task: int, function: str) -> float:
        """Seconds per byte task ``task`` runs longer for inputs it read from the store
        than for inputs its worker held: a blob is mapped as it is read, and its pages
        are faulted in as the task touches them (10 MB: ~0.7 ms on /dev/shm). From its
        own runs, where some read inputs and some held them; else nothing."""
        seen = self._tasks.get(task)
        if seen is None or seen.function != function:
            return 0.0
        held, read = _split_reads(seen)
        if not held or len(read) < 2:  # one run that read is no measure either
            return 0.0
        nbytes = sum(b for b in seen.read if b > 0) / len(read)
        return max(0.0, self._own(read) - self._own(held)) / nbytes

    def scale(self, function: str, cpus: float) -> float:
        """How much longer a task of ``function`` runs on ``cpus`` CPUs than on one."""
        key = (function, cpus)
        found = self._scales.get(key)
        if found is None:
            law = self._laws.get(function)
            found = self._scales[key] = law.time(cpus) / law.time(1.0) if law else 1.0
        return found

    def task_output(self, task: int, function: str, in_bytes: float | None = None) -> float:
        """Bytes of task ``task``'s output: its own earlier outputs where there are any."""
        seen = self._tasks.get(task)
        if seen is None or seen.function != function or not seen.outputs:
            return self.output(function, in_bytes)
        return self._own(seen.outputs)

    def _own(self, samples: list[float]) -> float:
        """The SLA statistic of a task's own runs: for ``mean`` their mean with each run
        held to three robust standard deviations above their median (1.4826 times the
        median absolute deviation: Hampel's bound), for a percentile that percentile
        (nearest rank; the slowest of fewer than three). Slow runs within the spread of the
        others count; one far outside it is no guide, as a first run in a fresh process
        (which imports the task's libraries: 13 ms runs once took 120 ms). Two runs have
        no spread to judge by: one over twice the other is taken for such a run, and the
        other speaks (a workflow's second run planned from its first, cold, one predicted
        its tree reduction 76 % too slow)."""
        ordered = sorted(samples)
        if self.sla == "mean" and len(ordered) == 2 and ordered[1] > 2 * ordered[0]:
            return ordered[0]
        if self.sla == "mean":
            median = statistics.median(ordered)
            spread = statistics.median(abs(s - median) for s in ordered)
            cap = median + 3 * 1.4826 * spread
            return sum(min(s, cap) for s in ordered) / len(ordered)
        if len(ordered) < 3:
            return ordered[-1]
        rank = math.ceil(int(self.sla[1:]) / 100 * len(ordered)) - 1
        return ordered[max(0, rank)]

    def known(self, function: str) -> bool:
        return function in self._seen

    def _function_base(self, function: str) -> float:
        """Seconds a task of ``function`` runs on one CPU: the SLA statistic on the size
        seen nearest to one CPU, moved there by the law."""
        found = self._bases.get(function)
        if found is None:
            seen = self._seen.get(function)
            if not seen:
                found = UNSEEN.duration_s
            else:
                near = min(seen, key=lambda s: (abs(math.log(s.cpus)), -s.stats.duration.n))
                law = self._laws[function]
                found = near.stats.duration.at(self.sla) * law.time(1.0) / law.time(near.cpus)
            self._bases[function] = found
        return found

    def duration(self, function: str, size: Size, in_bytes: float | None = None) -> float:
        """Seconds a task of ``function`` runs on ``size`` (given its input bytes)."""
        cpus = self.model.cpus_of(size)
        base = self._function_base(function) * self.input_factor(function, in_bytes)
        return base * self.scale(function, cpus)

    def input_factor(self, function: str, in_bytes: float | None) -> float:
        """How much longer than usual a task runs on ``in_bytes`` of input: its function's
        fit of duration against input bytes, where that explains most of the variance."""
        every = self._all.get(function)
        if in_bytes is None or every is None or every.duration.mean <= 0:
            return 1.0
        if every.duration_fit.r2() < FIT_R2:
            return 1.0
        intercept, slope = every.duration_fit.line()  # type: ignore[misc]
        return max(0.0, intercept + slope * in_bytes) / every.duration.mean

    def demand(self, function: str, size: Size) -> float:
        """CPUs a task of ``function`` keeps busy on ``size`` (for machines they share)."""
        return self.demand_on(function, self.model.cpus_of(size))

    def demand_on(self, function: str, cpus: float) -> float:
        law = self._laws.get(function)
        return law.demand(cpus) if law else min(1.0, cpus)

    def output(self, function: str, in_bytes: float | None = None) -> float:
        """Bytes of a task's output."""
        every = self._all.get(function)
        if every is None or not every.output.n:
            return UNSEEN.output_bytes
        if in_bytes is not None and every.output_fit.r2() >= FIT_R2:
            intercept, slope = every.output_fit.line()  # type: ignore[misc]
            return max(0.0, intercept + slope * in_bytes)
        return every.output.at(self.sla)

    def peak_mb(self, function: str) -> float | None:
        """Resident MB a task's process reaches (None where it was never measured)."""
        every = self._all.get(function)
        if every is None or not every.peak_mb.n:
            return UNSEEN.peak_mb
        return every.peak_mb.at(self.sla)
